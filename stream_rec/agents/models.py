"""``model_updates``: every worker follows the model-updates topic and hot-swaps its scorer.

The trainer (or ``stream-rec model promote|rollback``) writes a version to the registry, then
announces it: a msgpack ``{"version": str, ...}`` under the key ``current`` on the compacted,
single-partition ``model-updates`` topic. Each worker reads that topic in full (outside the
consumer group), loads the announced version from ``STREAM_REC_MODEL_PATH`` (sha256 verified),
embeds the current catalogue into it, and only then swaps it in — between two micro-batches,
so no event is lost or scored twice and each recommendation names the model that made it. A
version that fails to load is counted and logged; the serving model stays.

Under the key ``candidate`` the trainer names a fine-tune it is checking in shadow: the worker
loads it the same way into :attr:`Pipeline.shadow <stream_rec.app.Pipeline>`
(:mod:`stream_rec.serving.shadow`), scores a share of events with it without serving them, and
drops it when the record names no candidate. A promoted candidate is swapped in as loaded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from stream_rec.agents.replica import follow_topic
from stream_rec.records import CANDIDATE_KEY, decode_announcement, decode_candidate

if TYPE_CHECKING:
    from stream_rec.app import Pipeline

log = logging.getLogger(__name__)


def register(pipeline: Pipeline) -> None:
    app = pipeline.app

    caught_up = app.join_gate("model announcements")

    @app.before_join  # a restarted worker serves the announced version from its first event
    async def model_updates() -> None:
        await follow_topic(
            pipeline.settings, pipeline.topics.model_updates, on_records, caught_up.set
        )

    async def on_records(records: Sequence[Any]) -> None:
        latest, candidate = None, None  # candidate: (the newest candidate record's version,)
        for rec in records:
            if rec.key == CANDIDATE_KEY:
                is_candidate, version = decode_candidate(rec.value)
                candidate = (version,) if is_candidate else candidate
                continue
            ann = decode_announcement(rec.value)
            if ann is not None:
                latest = ann
        if latest is not None and latest["version"] != pipeline.scorer.current.version:
            await swap_to(pipeline, latest["version"])
        if candidate is not None:
            await shadow_with(pipeline, candidate[0])


async def shadow_with(pipeline: Pipeline, version: str | None) -> None:
    """Score ``version`` in shadow from now on (None: no candidate any more)."""
    book = pipeline.shadow
    if version == book.version:
        return
    book.stop()
    if version is None or version == pipeline.scorer.current.version or book.share <= 0:
        return
    scorer = await load_version(pipeline, version)
    if scorer is not None:
        book.start(scorer)
        log.info("scoring candidate %s in shadow on %.0f %% of events", version, 100 * book.share)


async def swap_to(pipeline: Pipeline, version: str) -> bool:
    """Load ``version`` off the event loop (or take the candidate in shadow, already loaded),
    give it the catalogue, then swap. False on failure."""
    metrics = pipeline.metrics
    loop = asyncio.get_running_loop()
    if pipeline.shadow.version == version:
        new = pipeline.shadow.stop()
    else:
        new = await load_version(pipeline, version)
    if new is None:
        return False
    # Items that arrived while the new model loaded: add them in the scoring thread, which
    # also orders this swap after the batch being scored now.
    await loop.run_in_executor(pipeline.executor, new.upsert_items, list(pipeline.catalog.values()))
    old = pipeline.scorer.swap(new)
    metrics.model_swaps.inc()
    metrics.set_model(new.version)
    log.info("serving model %s (was %s)", new.version, old.version)
    return True


async def load_version(pipeline: Pipeline, version: str) -> Any:
    """``version`` of the registry loaded, embedded the catalogue and warmed up, off the event
    loop; None (counted and logged) when it cannot be loaded."""
    settings, metrics = pipeline.settings, pipeline.metrics
    if settings.model.model_path is None:
        log.warning("model %s announced, but STREAM_REC_MODEL_PATH is not set", version)
        metrics.model_load_failures.labels(reason="no_model_path").inc()
        return None
    loop = asyncio.get_running_loop()

    def load() -> Any:
        from stream_rec.model import registry
        from stream_rec.model.runtime import OnnxScorer

        assert settings.model.model_path is not None  # noqa: S101 - checked above
        scorer = OnnxScorer(
            registry.resolve(settings.model.model_path, version),
            settings,
            threads=settings.model.ort_threads,
        )
        scorer.upsert_items(list(pipeline.catalog.values()))
        scorer.warm_up()  # here, not in the first batches it serves
        return scorer

    try:
        return await loop.run_in_executor(None, load)
    except Exception as exc:  # noqa: BLE001 - never let a bad version take the worker down
        reason = type(exc).__name__
        log.error("refusing model %s: %s", version, exc)  # noqa: TRY400 - the reason is enough
        metrics.model_load_failures.labels(reason=reason).inc()
        return None
