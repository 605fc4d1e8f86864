"""``record_feedback``: feedback → labelled training examples (``training-examples``).

Each valid feedback event is joined to the recommendation it answers through the
``rec_context`` table (same user key, same partition): the user's history when the
recommendation was made becomes the example's context. Feedback with an unknown or expired
``rec_id`` is still used, with the user's current session as context, and counted as
unmatched. Labels: click/purchase/high rating = 1; impression/dismiss/low rating = 0. The
trainer windows the examples (:mod:`stream_rec.training`).

The same feedback also updates the feedback signals in the user's session
(:mod:`stream_rec.core.signals`), which the score agent applies to that user's next
recommendations at once. Feedback on another partition than its user's (a producer with another
partitioner) or without a key is first forwarded to the user's partition
(:mod:`stream_rec.agents.placement`).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import msgpack

from stream_rec.agents.common import limits, send_dead_letter
from stream_rec.agents.placement import Placement
from stream_rec.core.context import example, label_of, lookup
from stream_rec.core.session import decode_session, encode_session
from stream_rec.core.signals import kind_of, record
from stream_rec.schemas import InvalidEvent, check_key, decode_feedback

if TYPE_CHECKING:
    from stream_rec.app import Pipeline

log = logging.getLogger(__name__)


def register(pipeline: Pipeline) -> None:
    app, settings, metrics = pipeline.app, pipeline.settings, pipeline.metrics
    topic = app.topic(
        pipeline.topics.feedback,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.kafka.partitions,
    )
    examples_topic = app.topic(
        pipeline.topics.training_examples, key_serializer="raw", value_serializer="raw"
    )
    sessions, rec_context = pipeline.tables.sessions, pipeline.tables.rec_context
    lim = limits(pipeline)
    placement = Placement(pipeline, pipeline.topics.feedback, "feedback")

    async def handle(event: Any) -> None:
        """One feedback event: the training example, and the user's feedback signals."""
        if placement.misplaced(event):  # another partitioner's placement: to the key's partition
            await placement.forward(event)
            return
        try:
            fb = decode_feedback(event.value, **lim)
            check_key(event.key, fb.user_id)
        except InvalidEvent as exc:
            await send_dead_letter(pipeline, event, exc)
            return
        if event.key is None:  # unkeyed: re-keyed, so its signals land in the user's session
            await placement.forward(event, fb.user_id.encode())
            return
        metrics.events_in.labels(topic="feedback", event=fb.label).inc()
        key = fb.user_id.encode()
        now = time.time()
        ctx = lookup(rec_context.get(key), fb.rec_id, now, settings.trainer.rec_context_ttl_s)
        if ctx is not None:
            history = ctx["history"]
        else:
            history = decode_session(sessions.get(key))["items"]
        label = label_of(fb.label, fb.value, settings.trainer.positive_rating)
        ex = example(fb.user_id, history, fb.item_id, label, fb.ts, fb.rec_id, ctx is not None)
        await examples_topic.send(key=key, value=msgpack.packb(ex, use_bin_type=True))
        metrics.feedback_examples.labels(
            label=str(label), matched="yes" if ctx is not None else "no"
        ).inc()
        if settings.serving.feedback_signals:
            # read here, after the await above (the score agent, on the same event loop, may have
            # updated the session meanwhile), and written with no await between
            session = decode_session(sessions.get(key))
            kind = kind_of(fb.label, fb.value, settings.trainer.positive_rating)
            session["signals"] = record(
                session["signals"], fb.item_id, kind, now,
                ttl_s=settings.serving.feedback_signal_ttl_s,
                max_items=settings.serving.feedback_signal_items,
            )  # fmt: skip
            sessions[key] = encode_session(session)

    @app.agent(topic, name="record_feedback")
    async def record_feedback(stream: Any) -> None:
        async for event in stream.events():
            try:
                await handle(event)
            except Exception as exc:  # noqa: BLE001 - a bug must not stop the stream
                log.exception("record_feedback: unexpected error on one event")
                await send_dead_letter(pipeline, event, InvalidEvent("internal_error", repr(exc)))
