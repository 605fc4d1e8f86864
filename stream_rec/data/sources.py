"""Training data from the pipeline's own topics: the catalogue (``items``) and the behaviour
history (``behavior``), read into the same dataset shape as MovieLens.

Both topics are read from their earliest offset (``behavior`` from ``since``, a timestamp, when
given) up to the end offsets taken when the read starts, so a read always ends. Every record is
validated by the topic contract's own decoders; what fails is counted by reason in
``bad_rows``, never a crash and never dropped in silence. A ``forget`` event or a tombstone on a
user's key removes that user's earlier interactions; a tombstone on an item's key removes the
item. Every behaviour event is an interaction (implicit feedback, as in the MovieLens protocol);
interactions with an item the catalogue does not hold are counted as ``unknown_item``.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stream_rec.data.movielens import Interaction, MovieLens
from stream_rec.schemas import InvalidEvent, decode_behavior, decode_item
from stream_rec.serving.scorer import CatalogItem
from stream_rec.settings import Settings
from stream_rec.topics import Topics, topic_partitions

Progress = Callable[[int, int], None]  # (records read, records to read)


@dataclass(frozen=True)
class TopicItem:
    """A catalogue item as the ``items`` topic has it; ``text`` is what the item tower reads
    (the workers embed the same text)."""

    item_id: str
    title: str
    text: str
    attrs: dict[str, str] = field(default_factory=dict)

    def attributes(self) -> dict[str, str]:
        return dict(self.attrs)


@dataclass
class TopicDataset(MovieLens):
    bad_rows: dict[str, int] = field(default_factory=dict)


async def _read_all(
    settings: Settings, topic: str, since: float | None, progress: Progress | None, done: int
) -> tuple[list[Any], int]:
    """Every record of ``topic`` up to its end offsets now (from ``since`` if given)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_list,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
        **settings.kafka_client_kwargs(),
    )
    tps = [TopicPartition(topic, p) for p in await topic_partitions(settings, topic)]
    if not tps:
        return [], done
    await consumer.start()
    try:
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        if since is not None:
            found = await consumer.offsets_for_times({tp: int(since * 1000) for tp in tps})
            starts = {tp: (found[tp].offset if found.get(tp) else ends[tp]) for tp in tps}
        for tp in tps:
            consumer.seek(tp, starts[tp])
        total = done + sum(ends[tp] - starts[tp] for tp in tps)
        left = {tp for tp in tps if ends[tp] > starts[tp]}
        out: list[Any] = []
        while left:
            batches = await consumer.getmany(*left, timeout_ms=1000, max_records=5000)
            for tp, recs in batches.items():
                out.extend(r for r in recs if r.offset < ends[tp])
                if recs and recs[-1].offset >= ends[tp] - 1:
                    left.discard(tp)
            for tp in list(left):  # a compacted or deleted tail: nothing more to read
                if await consumer.position(tp) >= ends[tp]:
                    left.discard(tp)
            if progress is not None:
                progress(done + len(out), total)
        return out, done + len(out)
    finally:
        await consumer.stop()


async def read_kafka(
    settings: Settings, *, since: float | None = None, progress: Progress | None = None
) -> TopicDataset:
    """The ``items`` and ``behavior`` topics as a dataset (see the module docstring)."""
    topics = Topics(settings.topic_prefix)
    lim: dict[str, Any] = {
        "max_bytes": settings.max_payload_bytes,
        "max_text": settings.max_text_chars,
        "max_skew": settings.max_future_skew_s,
    }
    bad: Counter[str] = Counter()
    item_recs, n = await _read_all(settings, topics.items, None, progress, 0)
    items: dict[str, TopicItem] = {}
    for rec in item_recs:
        if rec.value is None:  # compaction tombstone: the item is gone
            if rec.key:
                items.pop(rec.key.decode(errors="replace"), None)
            continue
        try:
            it = decode_item(rec.value, **lim)
        except InvalidEvent as exc:
            bad[f"items:{exc.code}"] += 1
            continue
        text = CatalogItem(it.item_id, it.title, it.text, dict(it.attributes)).embed_text
        items[it.item_id] = TopicItem(it.item_id, it.title, text, dict(it.attributes))
    behavior_recs, _ = await _read_all(settings, topics.behavior, since, progress, n)
    behavior_recs.sort(key=lambda r: (r.timestamp, r.partition, r.offset))
    by_user: dict[str, list[Interaction]] = {}
    for rec in behavior_recs:
        key = rec.key.decode(errors="replace") if rec.key else None
        if rec.value is None:
            if key:
                by_user.pop(key, None)
            continue
        try:
            ev = decode_behavior(rec.value, **lim)
        except InvalidEvent as exc:
            bad[f"behavior:{exc.code}"] += 1
            continue
        if key is not None and key != ev.user_id:
            bad["behavior:key_mismatch"] += 1
            continue
        if ev.event == "forget":
            by_user.pop(ev.user_id, None)
            continue
        if ev.item_id not in items:
            bad["behavior:unknown_item"] += 1
            continue
        value = float(ev.value) if ev.value is not None else 1.0
        by_user.setdefault(ev.user_id, []).append(
            Interaction(ev.user_id, ev.item_id, value, ev.ts)  # type: ignore[arg-type]
        )
    interactions = [x for seq in by_user.values() for x in seq]
    ds = TopicDataset(f"kafka:{settings.topic_prefix}", items, interactions)  # type: ignore[arg-type]
    ds.bad_rows = dict(bad)
    return ds


def load_kafka(
    settings: Settings, *, since: float | None = None, progress: Progress | None = None
) -> TopicDataset:
    """:func:`read_kafka` from synchronous code (a command, a worker thread)."""
    return asyncio.run(read_kafka(settings, since=since, progress=progress))
