"""``record_feedback``: validates the ``feedback`` topic and counts labels.

Invalid feedback goes to dead letters like any other input. Turning feedback into labelled
training windows is the learning loop's job (its own agent, built on this one).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stream_rec.agents.common import limits, send_dead_letter
from stream_rec.schemas import InvalidEvent, decode_feedback

if TYPE_CHECKING:
    from stream_rec.app import Pipeline


def register(pipeline: Pipeline) -> None:
    app = pipeline.app
    topic = app.topic(
        pipeline.topics.feedback,
        key_serializer="raw",
        value_serializer="raw",
        partitions=pipeline.settings.partitions,
    )

    @app.agent(topic, name="record_feedback")
    async def record_feedback(stream: Any) -> None:
        lim = limits(pipeline)
        async for event in stream.events():
            try:
                fb = decode_feedback(event.value, **lim)
            except InvalidEvent as exc:
                await send_dead_letter(pipeline, event, exc)
                continue
            pipeline.metrics.events_in.labels(topic="feedback", event=fb.label).inc()
