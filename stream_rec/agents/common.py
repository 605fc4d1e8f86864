"""Helpers shared by the agents: dead letters and decoding with the configured limits."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from stream_rec.schemas import InvalidEvent, dead_letter, encode

if TYPE_CHECKING:
    from stream_rec.app import Pipeline

log = logging.getLogger(__name__)


def limits(pipeline: Pipeline) -> dict[str, Any]:
    s = pipeline.settings
    return {
        "max_bytes": s.limits.max_payload_bytes,
        "max_text": s.limits.max_text_chars,
        "max_skew": s.limits.max_future_skew_s,
    }


async def send_dead_letter(pipeline: Pipeline, event: Any, error: InvalidEvent) -> None:
    """Publish the original bytes with the reason; count it. Never raises on bad input."""
    msg = event.message
    short = msg.topic.removeprefix(pipeline.settings.kafka.topic_prefix)
    pipeline.metrics.dead_letters.labels(topic=short, reason=error.code).inc()
    dl = dead_letter(msg.topic, msg.partition, msg.offset, f"{error.code}: {error}", event.value)
    await pipeline.app.topic(pipeline.topics.dead_letters).send(
        key=event.key,
        value=encode(dl, pipeline.settings.limits.output_codec),
        key_serializer="raw",
        value_serializer="raw",
    )
    log.debug("dead letter %s[%d]@%d: %s", msg.topic, msg.partition, msg.offset, error)
