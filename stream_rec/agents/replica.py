"""Replicated topics: every worker reads a whole (compacted) topic, outside the consumer group.

The catalogue (``items``) and the current model (``model-updates``) must be known to every
worker, whatever partitions the group gave it. A group-less consumer is assigned every
partition, starts from the beginning, and then follows the topic.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from stream_rec.settings import Settings

OnRecords = Callable[[Sequence[Any]], Awaitable[None]]


async def follow_topic(
    settings: Settings,
    topic: str,
    on_records: OnRecords,
    on_caught_up: Callable[[], None] | None = None,
    poll_ms: int = 500,
) -> None:
    """Feed every record of ``topic`` to ``on_records`` in batches, forever."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka.bootstrap_list,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **settings.kafka.kafka_client_kwargs(),
    )
    await consumer.start()
    try:
        end: dict[Any, int] | None = None
        while True:
            batches = await consumer.getmany(timeout_ms=poll_ms, max_records=2000)
            records = [r for tp in sorted(batches, key=lambda t: t.partition) for r in batches[tp]]
            if records:
                await on_records(records)
            if on_caught_up is not None:
                tps = consumer.assignment()
                if tps and end is None:
                    end = await consumer.end_offsets(list(tps))
                if end is not None:
                    reached = [await _reached(consumer, tp, o) for tp, o in end.items()]
                    if all(reached):
                        on_caught_up()
                        on_caught_up = None
    finally:
        await consumer.stop()


async def _reached(consumer: Any, tp: Any, offset: int) -> bool:
    try:
        return bool(await consumer.position(tp) >= offset)
    except Exception:  # noqa: BLE001 - the partition is being (re)assigned; try again later
        await asyncio.sleep(0)
        return False
