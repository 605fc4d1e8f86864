"""Helpers shared by the agents: dead letters and decoding with the configured limits."""

from __future__ import annotations

import logging
import weakref
from typing import TYPE_CHECKING, Any

from faust.streams import _current_event as _current_event_var

from stream_rec.schemas import InvalidEvent, dead_letter, encode

if TYPE_CHECKING:
    from stream_rec.app import Pipeline

log = logging.getLogger(__name__)


def limits(pipeline: Pipeline) -> dict[str, Any]:
    s = pipeline.settings
    return {
        "max_bytes": s.max_payload_bytes,
        "max_text": s.max_text_chars,
        "max_skew": s.max_future_skew_s,
    }


async def send_dead_letter(pipeline: Pipeline, event: Any, error: InvalidEvent) -> None:
    """Publish the original bytes with the reason; count it. Never raises on bad input."""
    msg = event.message
    short = msg.topic.removeprefix(pipeline.settings.topic_prefix)
    pipeline.metrics.dead_letters.labels(topic=short, reason=error.code).inc()
    dl = dead_letter(msg.topic, msg.partition, msg.offset, f"{error.code}: {error}", event.value)
    await pipeline.app.topic(pipeline.topics.dead_letters).send(
        key=event.key,
        value=encode(dl, pipeline.settings.output_codec),
        key_serializer="raw",
        value_serializer="raw",
    )
    log.debug("dead letter %s[%d]@%d: %s", msg.topic, msg.partition, msg.offset, error)


def make_current(event: Any) -> None:
    """Make ``event`` Faust's current event in this task only.

    Table reads/writes use the current event's partition (RocksDB shard and changelog
    partition), and after ``take_events`` it is the batch's last event. Only the task-local
    context variable is set: the stream's own ``current_event`` attribute belongs to the
    buffering task and must not be touched.
    """
    _current_event_var.set(weakref.ref(event))
