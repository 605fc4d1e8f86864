"""A client of the topic contract: produce behaviour, items and feedback, consume recommendations.

What an application needs to talk to the pipeline, typed and checked against the contract
(:mod:`stream_rec.schemas`) before anything reaches Kafka:

* ``behavior_message`` / ``item_message`` / ``feedback_message``: one validated record as the
  bytes of the input topics, JSON (default) or msgpack (workers read both);
* ``decode_recommendation``: a ``recommendations`` message, in either output codec
  (``STREAM_REC_OUTPUT_CODEC``), as a typed :class:`~stream_rec.schemas.Recommendation`;
* :class:`Producer` and :class:`RecommendationConsumer`: the same over aiokafka, keyed as the
  contract says (behaviour and feedback by ``user_id``, items by ``item_id``).

``stream-rec replay``, ``demo``, ``simulate`` and the benches produce and consume through here.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Any, Literal, Self

from stream_rec.schemas import (
    Behavior,
    Feedback,
    InvalidEvent,
    Item,
    Recommendation,
    decode_output,
    encode,
)
from stream_rec.settings import Settings, load_settings
from stream_rec.topics import Topics

Codec = Literal["json", "msgpack"]
Input = Behavior | Item | Feedback

__all__ = [
    "Producer",
    "Recommendation",
    "RecommendationConsumer",
    "behavior_message",
    "decode_recommendation",
    "feedback_message",
    "item_message",
    "kafka_producer",
]


def _message(
    model: type[Behavior | Item | Feedback], fields: dict[str, Any], codec: Codec
) -> bytes:
    """``fields`` checked by the contract's record (``ts`` defaults to now), then encoded."""
    ts, value = fields.get("ts"), fields.get("value")
    fields["ts"] = time.time() if ts is None else float(ts)
    if value is not None:
        fields["value"] = float(value)  # JSON's one number type: an int rating is a float
    return encode(model.model_validate(fields), codec)


def behavior_message(user_id: str, item_id: str, event: str, *, value: float | None = None,
                     ts: float | None = None, codec: Codec = "json") -> bytes:  # fmt: skip
    """A ``behavior`` value. Raises ``pydantic.ValidationError`` on a record the workers would
    dead-letter (unknown event, empty id, NaN, …); so do the two below."""
    fields = {"user_id": user_id, "item_id": item_id, "event": event, "value": value, "ts": ts}
    return _message(Behavior, fields, codec)


def item_message(item_id: str, title: str, *, text: str | None = None,
                 attributes: Mapping[str, str] | None = None, ts: float | None = None,
                 codec: Codec = "json") -> bytes:  # fmt: skip
    """An ``items`` value."""
    fields = {"item_id": item_id, "title": title, "text": text,
              "attributes": dict(attributes or {}), "ts": ts}  # fmt: skip
    return _message(Item, fields, codec)


def feedback_message(user_id: str, item_id: str, label: str, *, rec_id: str | None = None,
                     value: float | None = None, ts: float | None = None,
                     codec: Codec = "json") -> bytes:  # fmt: skip
    """A ``feedback`` value answering the recommendation ``rec_id``."""
    fields = {"user_id": user_id, "rec_id": rec_id, "item_id": item_id, "label": label,
              "value": value, "ts": ts}  # fmt: skip
    return _message(Feedback, fields, codec)


def decode_recommendation(raw: bytes) -> Recommendation:
    """A ``recommendations`` value in either output codec; :class:`InvalidEvent` if it is not
    one (undecodable, or a field missing or of the wrong type)."""
    from pydantic import ValidationError

    try:
        return Recommendation.model_validate(decode_output(raw))
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "record"
        raise InvalidEvent("invalid_field", f"{where}: {first['msg']}") from None  # noqa: EM101


def kafka_producer(settings: Settings, **kw: Any) -> Any:
    """An aiokafka producer for the contract's topics: idempotent, ``acks=all``, the settings'
    bootstrap servers and security (not started)."""
    from aiokafka import AIOKafkaProducer

    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap_list,
        linger_ms=kw.pop("linger_ms", 2),
        acks=kw.pop("acks", "all"),
        enable_idempotence=True,
        **settings.kafka.kafka_client_kwargs(),
        **kw,
    )


class _Started:
    """``async with``: starts the aiokafka client in ``self.kafka`` and stops it (a producer
    flushes what is pending when it stops)."""

    kafka: Any

    async def __aenter__(self) -> Self:
        await self.kafka.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.kafka.stop()


class Producer(_Started):
    """Produces contract records to the input topics; ``async with Producer() as p: ...``.

    Each method validates the record, encodes it in ``codec`` and hands it to the producer
    (keyed by ``user_id``, items by ``item_id``); :meth:`flush` waits until all are written.
    """

    def __init__(
        self, settings: Settings | None = None, *, codec: Codec = "json", **producer_kw: Any
    ) -> None:
        self.settings = settings or load_settings()
        self.topics = Topics(self.settings.kafka.topic_prefix)
        self.codec: Codec = codec
        self.kafka = kafka_producer(self.settings, **producer_kw)

    async def behavior(
        self, user_id: str, item_id: str, event: str, *, value: float | None = None,
        ts: float | None = None,
    ) -> None:  # fmt: skip
        raw = behavior_message(user_id, item_id, event, value=value, ts=ts, codec=self.codec)
        await self.kafka.send(self.topics.behavior, raw, key=user_id.encode())

    async def item(
        self, item_id: str, title: str, *, text: str | None = None,
        attributes: Mapping[str, str] | None = None, ts: float | None = None,
    ) -> None:  # fmt: skip
        raw = item_message(item_id, title, text=text, attributes=attributes, ts=ts,
                           codec=self.codec)  # fmt: skip
        await self.kafka.send(self.topics.items, raw, key=item_id.encode())

    async def feedback(
        self, user_id: str, item_id: str, label: str, *, rec_id: str | None = None,
        value: float | None = None, ts: float | None = None,
    ) -> None:  # fmt: skip
        raw = feedback_message(user_id, item_id, label, rec_id=rec_id, value=value, ts=ts,
                               codec=self.codec)  # fmt: skip
        await self.kafka.send(self.topics.feedback, raw, key=user_id.encode())

    async def flush(self) -> None:
        await self.kafka.flush()


class RecommendationConsumer(_Started):
    """Consumes the ``recommendations`` topic as typed records, in either output codec:
    ``async with RecommendationConsumer(group_id="app") as recs: async for rec in recs: ...``.

    ``group_id=None`` reads without a consumer group (no commits); ``from_beginning`` starts at
    the oldest retained record instead of new ones. A message that is not a recommendation is
    skipped and counted in :attr:`invalid`.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        group_id: str | None = None,
        from_beginning: bool = False,
        **consumer_kw: Any,
    ) -> None:
        from aiokafka import AIOKafkaConsumer

        self.settings = settings or load_settings()
        self.invalid = 0
        self.kafka = AIOKafkaConsumer(
            Topics(self.settings.kafka.topic_prefix).recommendations,
            bootstrap_servers=self.settings.kafka.bootstrap_list,
            group_id=group_id,
            auto_offset_reset="earliest" if from_beginning else "latest",
            **self.settings.kafka.kafka_client_kwargs(),
            **consumer_kw,
        )

    async def __aiter__(self) -> AsyncIterator[Recommendation]:
        async for msg in self.kafka:
            rec = self._decode(msg.value)
            if rec is not None:
                yield rec

    async def getmany(self, timeout_ms: int = 1000) -> list[Recommendation]:
        """What arrived within ``timeout_ms`` (possibly nothing)."""
        batch = await self.kafka.getmany(timeout_ms=timeout_ms)
        out = [self._decode(m.value) for msgs in batch.values() for m in msgs]
        return [r for r in out if r is not None]

    def _decode(self, raw: bytes | None) -> Recommendation | None:
        try:
            return decode_recommendation(raw or b"")
        except InvalidEvent:
            self.invalid += 1
            return None
