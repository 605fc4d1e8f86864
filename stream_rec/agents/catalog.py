"""``catalog_items``: validates the ``items`` topic, and keeps every worker's scorer in sync.

Two parts. The agent (one consumer group, so each item once) dead-letters invalid items. The
catalogue itself is the compacted ``items`` topic: each worker reads all of its partitions from
the beginning with a group-less consumer (``catalog_replica``) and upserts items into its
scorer, so new items become scorable from their text (cold start). The replica starts with the
app, and the worker joins the consumer group (takes behaviour partitions) only once it has
caught up: a worker never scores against a catalogue it has not loaded yet.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from stream_rec.agents.common import limits, send_dead_letter
from stream_rec.agents.replica import follow_topic
from stream_rec.schemas import InvalidEvent, decode_item
from stream_rec.serving.scorer import CatalogItem

if TYPE_CHECKING:
    from stream_rec.app import Pipeline

log = logging.getLogger(__name__)


def register(pipeline: Pipeline) -> None:
    app, settings = pipeline.app, pipeline.settings
    topic = app.topic(
        pipeline.topics.items,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.kafka.partitions,
    )

    @app.agent(topic, name="catalog_items")
    async def catalog_items(stream: Any) -> None:
        lim = limits(pipeline)
        async for event in stream.events():
            if event.value is None:  # compaction tombstone: an item deletion, valid
                continue
            try:
                decode_item(event.value, **lim)
                pipeline.metrics.events_in.labels(topic="items", event="item").inc()
            except InvalidEvent as exc:
                await send_dead_letter(pipeline, event, exc)

    loaded = app.join_gate("catalogue")

    @app.before_join
    async def catalog_replica() -> None:
        await replicate_catalog(pipeline, loaded.set)


async def replicate_catalog(
    pipeline: Pipeline, on_loaded: Callable[[], None] | None = None
) -> None:
    """Read the whole items topic into this worker's scorer, then follow it; ``on_loaded``
    once the scorer holds every item that was in the topic when the replica started."""
    lim = limits(pipeline)
    loop = asyncio.get_running_loop()

    async def on_records(records: Sequence[Any]) -> None:
        items: dict[str, CatalogItem] = {}
        for rec in records:
            if rec.value is None:
                continue
            try:
                it = decode_item(rec.value, **lim)
            except InvalidEvent:
                continue  # the catalog_items agent dead-letters it (once per group)
            items[it.item_id] = CatalogItem(it.item_id, it.title, it.text, it.attributes)
        if not items:
            return
        pipeline.catalog.update(items)
        scorer = pipeline.scorer.current
        # Not on the scoring thread: embedding new items from text can take a while, and
        # scorers keep a consistent catalogue under concurrent reads (Scorer contract).
        await loop.run_in_executor(None, scorer.upsert_items, list(items.values()))
        if (candidate := pipeline.shadow.scorer) is not None:  # same catalogue in shadow
            await loop.run_in_executor(None, candidate.upsert_items, list(items.values()))
        n = getattr(scorer, "n_items", None)
        pipeline.catalog_size = n if isinstance(n, int) else pipeline.catalog_size + len(items)
        pipeline.metrics.catalog_items.set(pipeline.catalog_size)

    def caught_up() -> None:
        pipeline.catalog_caught_up = True
        log.info("catalogue loaded: %d items", pipeline.catalog_size)
        if pipeline.settings.serving.gc_freeze:
            gc.collect()  # what is garbage now is not kept for ever
            gc.freeze()
            log.info("%d objects of the started worker frozen (gc.freeze)", gc.get_freeze_count())
        if on_loaded is not None:
            on_loaded()

    await follow_topic(pipeline.settings, pipeline.topics.items, on_records, caught_up)
