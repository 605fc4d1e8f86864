"""Typed records of the public topic contract, with decoding, validation and encoding.

Agents hand raw Kafka bytes to :func:`decode_behavior` / :func:`decode_item` /
:func:`decode_feedback`; each returns a validated record or raises :class:`InvalidEvent` with a
short reason code (for metrics) and a message (for the dead letter). Inputs may be JSON or
msgpack (detected from the first byte); outputs are encoded by :func:`encode` in the configured
codec. Unknown extra fields are ignored so producers can add fields before consumers learn them.
"""

from __future__ import annotations

import base64
import json
import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

import msgpack
import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

if TYPE_CHECKING:
    from stream_rec.serving.scorer import ScoredItem

BehaviorEvent = Literal["view", "click", "cart", "purchase", "rate", "forget"]
EVENT_TYPES: tuple[str, ...] = get_args(BehaviorEvent)
FeedbackLabel = Literal["impression", "click", "purchase", "dismiss", "rate"]
Id = Annotated[str, StringConstraints(min_length=1, max_length=256)]


class InvalidEvent(ValueError):
    """An input message that breaks the contract. ``code`` is a stable metric label."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True, allow_inf_nan=False)


class Behavior(_Record):
    user_id: Id
    item_id: Annotated[str, StringConstraints(max_length=256)]
    event: BehaviorEvent
    value: float | None = None
    ts: float


class Item(_Record):
    item_id: Id
    title: Annotated[str, StringConstraints(min_length=1)]
    text: str | None = None
    attributes: dict[str, str] = Field(default_factory=dict)
    ts: float


class Feedback(_Record):
    user_id: Id
    rec_id: str | None = None
    item_id: Id
    label: FeedbackLabel
    value: float | None = None
    ts: float


class RecItem(_Record):
    item_id: str
    score: float
    reason: str | None = None


class Recommendation(_Record):
    user_id: str
    rec_id: str
    items: list[RecItem]
    model_version: str
    event_ts: float
    emitted_ts: float


class DeadLetter(_Record):
    topic: str
    partition: int
    offset: int
    error: str
    payload_b64: str


def _loads(raw: bytes | None, max_bytes: int) -> dict[str, Any]:
    if raw is None:
        raise InvalidEvent("empty", "message has no value")
    if len(raw) > max_bytes:
        msg = f"payload of {len(raw)} bytes exceeds the {max_bytes}-byte limit"
        raise InvalidEvent("oversized", msg)
    head = raw.lstrip()[:1]
    try:
        if head in (b"{", b"["):
            obj = json.loads(raw)  # strict UTF-8; NaN/Infinity literals are caught below
        else:
            obj = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise InvalidEvent("undecodable", f"neither JSON nor msgpack: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - msgpack raises assorted errors on garbage
        msg = f"neither JSON nor msgpack: {type(exc).__name__}: {exc}"
        raise InvalidEvent("undecodable", msg) from None
    if not isinstance(obj, dict):
        raise InvalidEvent("not_an_object", f"top level is {type(obj).__name__}, not an object")
    return obj


def _coerce_numbers(obj: dict[str, Any], fields: tuple[str, ...]) -> None:
    # JSON has one number type: accept ints where the contract says float (ts, value, score).
    for f in fields:
        v = obj.get(f)
        if isinstance(v, int) and not isinstance(v, bool):
            try:
                obj[f] = float(v)
            except OverflowError:
                raise InvalidEvent("invalid_field", f"{f}: integer out of range") from None


def _check_ts(ts: float, max_future_skew_s: float) -> None:
    if not math.isfinite(ts) or ts < 0:
        raise InvalidEvent("invalid_field", f"ts: {ts!r} is not a non-negative epoch time")
    if ts > time.time() + max_future_skew_s:
        raise InvalidEvent("invalid_field", f"ts: {ts!r} is too far in the future")


def _validate(model: type[_Record], obj: dict[str, Any], max_text: int) -> Any:
    try:
        rec = model.model_validate(obj)
    except ValidationError as exc:
        errs = exc.errors(include_url=False, include_input=False)
        first = errs[0]
        where = ".".join(str(p) for p in first["loc"]) or "record"
        code = "unknown_event" if first["loc"][:1] in (("event",), ("label",)) else "invalid_field"
        if first["type"] == "missing":
            code = "missing_field"
        more = f" (+{len(errs) - 1} more)" if len(errs) > 1 else ""
        raise InvalidEvent(code, f"{where}: {first['msg']}{more}") from None
    for name, value in rec:
        if isinstance(value, str) and len(value) > max_text:
            raise InvalidEvent("invalid_field", f"{name}: longer than {max_text} characters")
        if isinstance(value, dict):
            for k, v in value.items():
                if len(k) > max_text or len(v) > max_text:
                    msg = f"{name}.{k[:32]}: longer than {max_text} characters"
                    raise InvalidEvent("invalid_field", msg)
    return rec


def decode_behavior(
    raw: bytes | None, *, max_bytes: int = 65536, max_text: int = 4096, max_skew: float = 86400
) -> Behavior:
    obj = _loads(raw, max_bytes)
    _coerce_numbers(obj, ("ts", "value"))
    rec: Behavior = _validate(Behavior, obj, max_text)
    _check_ts(rec.ts, max_skew)
    if rec.event != "forget" and not rec.item_id:
        raise InvalidEvent("invalid_field", "item_id: must not be empty")
    return rec


def decode_item(
    raw: bytes | None, *, max_bytes: int = 65536, max_text: int = 4096, max_skew: float = 86400
) -> Item:
    obj = _loads(raw, max_bytes)
    _coerce_numbers(obj, ("ts",))
    rec: Item = _validate(Item, obj, max_text)
    _check_ts(rec.ts, max_skew)
    return rec


def decode_feedback(
    raw: bytes | None, *, max_bytes: int = 65536, max_text: int = 4096, max_skew: float = 86400
) -> Feedback:
    obj = _loads(raw, max_bytes)
    _coerce_numbers(obj, ("ts", "value"))
    rec: Feedback = _validate(Feedback, obj, max_text)
    _check_ts(rec.ts, max_skew)
    return rec


def check_key(key: bytes | None, user_id: str) -> None:
    """A keyed message must be keyed by its own ``user_id`` (the user's partition); an unkeyed
    one passes (the score agent re-keys it)."""
    if key is not None and key != user_id.encode():
        msg = f"message key {key[:64]!r} is not the event's user_id {user_id[:64]!r}"
        raise InvalidEvent("key_mismatch", msg)


def encode(record: BaseModel | dict[str, Any], codec: str = "json") -> bytes:
    data = record.model_dump() if isinstance(record, BaseModel) else record
    if codec == "msgpack":
        return bytes(msgpack.packb(data, use_bin_type=True))
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def encode_recommendation(
    user_id: str,
    rec_id: str,
    items: Sequence[ScoredItem],
    model_version: str,
    event_ts: float,
    emitted_ts: float,
    codec: str = "json",
) -> bytes:
    """A :class:`Recommendation` encoded without building the pydantic record: the same fields
    and types (the score agent's own values, already valid), once per event on the hot path.
    JSON through orjson (compact UTF-8 like :func:`encode`, ~30x faster than ``json.dumps``
    for a 10-item recommendation)."""
    data = {
        "user_id": user_id,
        "rec_id": rec_id,
        "items": [
            {"item_id": i.item_id, "score": float(i.score), "reason": i.reason} for i in items
        ],
        "model_version": model_version,
        "event_ts": event_ts,
        "emitted_ts": emitted_ts,
    }
    if codec == "msgpack":
        return bytes(msgpack.packb(data, use_bin_type=True))
    return orjson.dumps(data)


def decode_output(raw: bytes) -> dict[str, Any]:
    """Decode a recommendation/dead-letter/metrics message in either output codec."""
    obj = _loads(raw, max(len(raw), 1))
    return obj


def dead_letter(
    topic: str, partition: int, offset: int, error: str, payload: bytes | None
) -> DeadLetter:
    return DeadLetter(
        topic=topic,
        partition=partition,
        offset=offset,
        error=error,
        payload_b64=base64.b64encode(payload or b"").decode(),
    )
