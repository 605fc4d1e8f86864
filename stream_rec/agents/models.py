"""``model_updates``: every worker follows the model-updates topic and hot-swaps its scorer.

The trainer (or ``stream-rec model promote|rollback``) writes a version to the registry, then
announces it: a msgpack ``{"version": str, ...}`` under the key ``current`` on the compacted,
single-partition ``model-updates`` topic. Each worker reads that topic in full (outside the
consumer group), loads the announced version from ``STREAM_REC_MODEL_PATH`` (sha256 verified),
embeds the current catalogue into it, and only then swaps it in — between two micro-batches,
so no event is lost or scored twice and each recommendation names the model that made it. A
version that fails to load is counted and logged; the serving model stays.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from stream_rec.agents.replica import follow_topic
from stream_rec.records import decode_announcement

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
        latest = None
        for rec in records:
            ann = decode_announcement(rec.value)
            if ann is not None:
                latest = ann
        if latest is not None and latest["version"] != pipeline.scorer.current.version:
            await swap_to(pipeline, latest["version"])


async def swap_to(pipeline: Pipeline, version: str) -> bool:
    """Load ``version`` off the event loop, give it the catalogue, then swap. False on failure."""
    settings, metrics = pipeline.settings, pipeline.metrics
    if settings.model_path is None:
        log.warning("model %s announced, but STREAM_REC_MODEL_PATH is not set", version)
        metrics.model_load_failures.labels(reason="no_model_path").inc()
        return False
    loop = asyncio.get_running_loop()

    def load() -> Any:
        from stream_rec.model import registry
        from stream_rec.model.runtime import OnnxScorer

        assert settings.model_path is not None  # noqa: S101 - checked above
        scorer = OnnxScorer(
            registry.resolve(settings.model_path, version), settings, threads=settings.ort_threads
        )
        scorer.upsert_items(list(pipeline.catalog.values()))
        scorer.warm_up()  # here, not in the first batches it serves
        return scorer

    try:
        new = await loop.run_in_executor(None, load)
    except Exception as exc:  # noqa: BLE001 - never let a bad version take the worker down
        reason = type(exc).__name__
        log.error("refusing model %s: %s", version, exc)  # noqa: TRY400 - the reason is enough
        metrics.model_load_failures.labels(reason=reason).inc()
        return False
    # Items that arrived while the new model loaded: add them in the scoring thread, which
    # also orders this swap after the batch being scored now.
    await loop.run_in_executor(pipeline.executor, new.upsert_items, list(pipeline.catalog.values()))
    old = pipeline.scorer.swap(new)
    metrics.model_swaps.inc()
    metrics.set_model(new.version)
    log.info("serving model %s (was %s)", new.version, old.version)
    return True
