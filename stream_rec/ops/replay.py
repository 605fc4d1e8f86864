"""Replay a dataset (MovieLens by default) into the pipeline's input topics (``stream-rec replay``).

Items first (keyed by item_id), then behaviour events of the chosen users in chronological
order (keyed by user_id), each with its own event type and value (MovieLens: ``rate`` events
whose value is the rating). By default each event's
``ts`` is stamped at send time so event→recommendation latency can be read off the output;
``keep_ts`` keeps the dataset's timestamps.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from stream_rec.client import Codec, behavior_message, item_message, kafka_producer
from stream_rec.data.frame import Dataset, Interaction, Item
from stream_rec.settings import Settings
from stream_rec.topics import Topics


@dataclass
class ReplayStats:
    items: int = 0
    events: int = 0
    seconds: float = 0.0


def item_payload(item: Item, ts: float, codec: Codec = "json") -> bytes:
    """A catalogue row as an ``items`` message (:func:`stream_rec.client.item_message`)."""
    return item_message(
        item.item_id, item.title, text=item.text, attributes=item.attributes, ts=ts, codec=codec
    )


def behavior_payload(x: Interaction, ts: float, codec: Codec = "json") -> bytes:
    """An interaction as a ``behavior`` message (:func:`stream_rec.client.behavior_message`)."""
    return behavior_message(x.user_id, x.item_id, x.event, value=x.value, ts=ts, codec=codec)


def select_events(ds: Dataset, users: int | None, limit: int | None) -> list[Interaction]:
    seqs = ds.user_sequences()
    chosen = set(list(seqs)[:users]) if users else set(seqs)
    events = [x for x in ds.chronological() if x.user_id in chosen]
    return events[:limit] if limit else events


async def replay(
    settings: Settings,
    ds: Dataset,
    *,
    users: int | None = None,
    limit: int | None = None,
    rate: float | None = None,
    keep_ts: bool = False,
    send_items: bool = True,
    on_send: object = None,
    events: Sequence[Interaction] | None = None,
) -> ReplayStats:
    """Items, then behaviour events: ``events`` if given, else the chosen users' events in
    time order (``select_events``)."""
    topics = Topics(settings.kafka.topic_prefix)
    producer = kafka_producer(settings)
    await producer.start()
    stats = ReplayStats()
    t0 = time.perf_counter()
    try:
        if send_items:
            now = time.time()
            for item in ds.items.values():
                await producer.send(
                    topics.items, item_payload(item, now), key=item.item_id.encode()
                )
                stats.items += 1
            await producer.flush()
        if events is None:
            events = select_events(ds, users, limit)
        await _send_paced(producer, topics.behavior, events, rate, keep_ts, stats, on_send)
        await producer.flush()
    finally:
        await producer.stop()
    stats.seconds = time.perf_counter() - t0
    return stats


async def _send_paced(
    producer: Any,
    topic: str,
    events: Iterable[Interaction],
    rate: float | None,
    keep_ts: bool,
    stats: ReplayStats,
    on_send: object,
) -> None:
    start = time.perf_counter()
    for n, x in enumerate(events):
        if rate:
            due = start + n / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        ts = float(x.ts) if keep_ts else time.time()
        delivery = await producer.send(topic, behavior_payload(x, ts), key=x.user_id.encode())
        if callable(on_send):
            on_send(x, ts, delivery)
        stats.events += 1
