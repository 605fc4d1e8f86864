"""Decoding, validation and encoding of the public topic contract (stream_rec.schemas)."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import msgpack
import pytest

from stream_rec.schemas import (
    Behavior,
    DeadLetter,
    Feedback,
    InvalidEvent,
    Item,
    RecItem,
    Recommendation,
    dead_letter,
    decode_behavior,
    decode_feedback,
    decode_item,
    decode_output,
    encode,
)

TS = 1_700_000_000.5


def _json(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def _mp(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def behavior(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "user_id": "u1",
        "item_id": "i1",
        "event": "click",
        "value": 4.5,
        "ts": TS,
    }
    base.update(over)
    return base


def item(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "item_id": "i1",
        "title": "Toy Story",
        "text": "A toy story.",
        "attributes": {"year": "1995", "genres": "Animation|Comedy"},
        "ts": TS,
    }
    base.update(over)
    return base


def feedback(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "user_id": "u1",
        "rec_id": "r1",
        "item_id": "i1",
        "label": "click",
        "value": None,
        "ts": TS,
    }
    base.update(over)
    return base


def _without(d: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k != key}


def _code(fn: Any, raw: bytes | None, **kw: Any) -> str:
    with pytest.raises(InvalidEvent) as ei:
        fn(raw, **kw)
    assert str(ei.value), "an InvalidEvent must carry a message for the dead letter"
    return ei.value.code


# --- happy paths ---------------------------------------------------------------------------


@pytest.mark.parametrize("pack", [_json, _mp], ids=["json", "msgpack"])
def test_decode_behavior_both_codecs(pack: Any) -> None:
    rec = decode_behavior(pack(behavior()))
    assert isinstance(rec, Behavior)
    assert (rec.user_id, rec.item_id, rec.event, rec.value, rec.ts) == (
        "u1",
        "i1",
        "click",
        4.5,
        TS,
    )


@pytest.mark.parametrize("pack", [_json, _mp], ids=["json", "msgpack"])
def test_decode_item_both_codecs(pack: Any) -> None:
    rec = decode_item(pack(item()))
    assert isinstance(rec, Item)
    assert rec.item_id == "i1"
    assert rec.title == "Toy Story"
    assert rec.text == "A toy story."
    assert rec.attributes == {"year": "1995", "genres": "Animation|Comedy"}
    assert rec.ts == TS


@pytest.mark.parametrize("pack", [_json, _mp], ids=["json", "msgpack"])
def test_decode_feedback_both_codecs(pack: Any) -> None:
    rec = decode_feedback(pack(feedback(label="rate", value=3)))
    assert isinstance(rec, Feedback)
    assert (rec.user_id, rec.rec_id, rec.item_id, rec.label) == ("u1", "r1", "i1", "rate")
    assert rec.value == 3.0 and isinstance(rec.value, float)


def test_optional_fields_default() -> None:
    b = decode_behavior(_json(_without(behavior(), "value")))
    assert b.value is None
    it = decode_item(_json(_without(_without(item(), "text"), "attributes")))
    assert it.text is None and it.attributes == {}
    fb = decode_feedback(_json(_without(_without(feedback(), "rec_id"), "value")))
    assert fb.rec_id is None and fb.value is None


def test_json_with_leading_whitespace_is_detected_as_json() -> None:
    assert decode_behavior(b"  \n" + _json(behavior())).user_id == "u1"


@pytest.mark.parametrize("pack", [_json, _mp], ids=["json", "msgpack"])
def test_ints_are_accepted_for_float_fields(pack: Any) -> None:
    b = decode_behavior(pack(behavior(ts=1_700_000_000, value=5)))
    assert b.ts == 1_700_000_000.0 and isinstance(b.ts, float)
    assert b.value == 5.0 and isinstance(b.value, float)
    it = decode_item(pack(item(ts=1_700_000_000)))
    assert isinstance(it.ts, float)
    fb = decode_feedback(pack(feedback(ts=0, value=1)))
    assert fb.ts == 0.0 and fb.value == 1.0


@pytest.mark.parametrize("pack", [_json, _mp], ids=["json", "msgpack"])
def test_extra_fields_are_ignored(pack: Any) -> None:
    b = decode_behavior(pack(behavior(session="abc", nested={"x": [1, 2]}, price=9.99)))
    assert b.item_id == "i1"
    assert not hasattr(b, "session")
    assert "session" not in b.model_dump()
    it = decode_item(pack(item(vendor="acme")))
    assert "vendor" not in it.model_dump()


def test_forget_event_may_have_empty_item_id() -> None:
    rec = decode_behavior(_json(behavior(event="forget", item_id="", value=None)))
    assert rec.event == "forget" and rec.item_id == ""


@pytest.mark.parametrize("event", ["view", "click", "cart", "purchase", "rate", "forget"])
def test_every_contract_event_is_accepted(event: str) -> None:
    assert decode_behavior(_json(behavior(event=event))).event == event


@pytest.mark.parametrize("label", ["impression", "click", "purchase", "dismiss", "rate"])
def test_every_contract_label_is_accepted(label: str) -> None:
    assert decode_feedback(_json(feedback(label=label))).label == label


def test_records_are_frozen() -> None:
    rec = decode_behavior(_json(behavior()))
    with pytest.raises(ValueError, match="frozen"):
        rec.user_id = "other"  # type: ignore[misc]


# --- rejections: decoding ------------------------------------------------------------------


@pytest.mark.parametrize("fn", [decode_behavior, decode_item, decode_feedback])
def test_none_value_is_empty(fn: Any) -> None:
    assert _code(fn, None) == "empty"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json at all",
        b'{"user_id": "u1", "item_id":',  # truncated JSON
        b"[1, 2",  # truncated JSON array
        b"\xc1",  # a byte msgpack never uses
        b"\x92\x01",  # msgpack array of 2 with only one element
        b'"just a string"',  # not JSON-detected; msgpack sees trailing bytes
    ],
    ids=["empty-bytes", "text", "truncated-json", "truncated-array", "c1", "short-mp", "string"],
)
def test_undecodable_bytes(raw: bytes) -> None:
    assert _code(decode_behavior, raw) == "undecodable"


def test_invalid_utf8_in_json_is_undecodable() -> None:
    raw = b'{"user_id": "\xff\xfe", "item_id": "i1", "event": "view", "ts": 1}'
    assert _code(decode_behavior, raw) == "undecodable"


def test_invalid_utf8_in_msgpack_str_is_undecodable() -> None:
    # A msgpack *str* (not bin) whose bytes are not UTF-8.
    raw = msgpack.packb(
        {"user_id": b"\xff\xfe", "item_id": "i1", "event": "view", "ts": 1.0},
        use_bin_type=False,
    )
    assert _code(decode_behavior, raw) == "undecodable"


def test_msgpack_non_string_map_key_is_undecodable() -> None:
    raw = msgpack.packb({1: "x", "user_id": "u"}, use_bin_type=True)
    assert _code(decode_behavior, raw) == "undecodable"


@pytest.mark.parametrize(
    "raw",
    [
        b"[1, 2, 3]",
        b"[]",
        msgpack.packb([1, 2, 3]),
        msgpack.packb("a string"),
        msgpack.packb(42),
        msgpack.packb(None),
    ],
    ids=["json-list", "json-empty-list", "mp-list", "mp-str", "mp-int", "mp-nil"],
)
@pytest.mark.parametrize("fn", [decode_behavior, decode_item, decode_feedback])
def test_non_object_top_level(fn: Any, raw: bytes) -> None:
    assert _code(fn, raw) == "not_an_object"


@pytest.mark.parametrize("fn", [decode_behavior, decode_item, decode_feedback])
def test_oversized_payload(fn: Any) -> None:
    raw = _json(behavior(pad="x" * 2000))
    assert len(raw) > 1000
    assert _code(fn, raw, max_bytes=1000) == "oversized"
    with pytest.raises(InvalidEvent, match=str(len(raw))):
        fn(raw, max_bytes=1000)


def test_payload_exactly_at_limit_is_accepted() -> None:
    raw = _json(behavior())
    assert decode_behavior(raw, max_bytes=len(raw)).user_id == "u1"
    assert _code(decode_behavior, raw, max_bytes=len(raw) - 1) == "oversized"


def test_oversize_is_checked_before_decoding() -> None:
    # Garbage that is too large is reported as oversized, not as undecodable.
    assert _code(decode_behavior, b"\xc1" * 100, max_bytes=10) == "oversized"


# --- rejections: fields --------------------------------------------------------------------


@pytest.mark.parametrize("field", ["user_id", "item_id", "event", "ts"])
def test_behavior_missing_required_field(field: str) -> None:
    raw = _json(_without(behavior(), field))
    with pytest.raises(InvalidEvent) as ei:
        decode_behavior(raw)
    assert ei.value.code == "missing_field"
    assert field in str(ei.value)


@pytest.mark.parametrize("field", ["item_id", "title", "ts"])
def test_item_missing_required_field(field: str) -> None:
    assert _code(decode_item, _mp(_without(item(), field))) == "missing_field"


@pytest.mark.parametrize("field", ["user_id", "item_id", "label", "ts"])
def test_feedback_missing_required_field(field: str) -> None:
    assert _code(decode_feedback, _json(_without(feedback(), field))) == "missing_field"


@pytest.mark.parametrize(
    "over",
    [
        {"user_id": 123},
        {"user_id": None},
        {"user_id": ["u1"]},
        {"item_id": 7},
        {"ts": "1700000000"},
        {"ts": True},  # bool is not a number here, even though bool subclasses int
        {"ts": None},
        {"value": "4.5"},
        {"value": False},
        {"user_id": ""},
    ],
    ids=lambda o: "-".join(f"{k}={v!r}" for k, v in o.items()),
)
@pytest.mark.parametrize("pack", [_json, _mp], ids=["json", "msgpack"])
def test_behavior_wrong_types(pack: Any, over: dict[str, Any]) -> None:
    assert _code(decode_behavior, pack(behavior(**over))) == "invalid_field"


def test_wrong_type_message_names_the_field() -> None:
    with pytest.raises(InvalidEvent, match="user_id"):
        decode_behavior(_json(behavior(user_id=5)))


@pytest.mark.parametrize(
    "over",
    [
        {"title": ""},
        {"title": 5},
        {"text": 5},
        {"attributes": {"year": 1995}},  # values must be strings
        {"attributes": ["a", "b"]},
        {"item_id": ""},
    ],
    ids=lambda o: "-".join(f"{k}={v!r}" for k, v in o.items()),
)
def test_item_wrong_types(over: dict[str, Any]) -> None:
    assert _code(decode_item, _json(item(**over))) == "invalid_field"


@pytest.mark.parametrize(
    "over",
    [{"rec_id": 5}, {"item_id": ""}, {"value": True}, {"user_id": 1.5}],
    ids=lambda o: "-".join(f"{k}={v!r}" for k, v in o.items()),
)
def test_feedback_wrong_types(over: dict[str, Any]) -> None:
    assert _code(decode_feedback, _json(feedback(**over))) == "invalid_field"


@pytest.mark.parametrize("event", ["like", "VIEW", "", "dismiss"])
def test_unknown_behavior_event(event: str) -> None:
    assert _code(decode_behavior, _json(behavior(event=event))) == "unknown_event"


@pytest.mark.parametrize("label", ["view", "share", "Click", ""])
def test_unknown_feedback_label(label: str) -> None:
    assert _code(decode_feedback, _mp(feedback(label=label))) == "unknown_event"


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("field", ["ts", "value"])
def test_json_nan_and_infinity_literals(field: str, literal: str) -> None:
    obj = behavior()
    obj[field] = "__X__"
    raw = json.dumps(obj).replace('"__X__"', literal).encode()
    assert literal.encode() in raw
    assert _code(decode_behavior, raw) == "invalid_field"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("field", ["ts", "value"])
def test_msgpack_nan_and_infinity(field: str, bad: float) -> None:
    assert _code(decode_behavior, _mp(behavior(**{field: bad}))) == "invalid_field"


def test_feedback_and_item_reject_non_finite_ts() -> None:
    assert _code(decode_feedback, _mp(feedback(ts=float("nan")))) == "invalid_field"
    assert _code(decode_item, _mp(item(ts=float("inf")))) == "invalid_field"


@pytest.mark.parametrize("fn,make", [(decode_behavior, behavior), (decode_item, item)])
@pytest.mark.parametrize("ts", [-1, -0.001, -1e9])
def test_negative_ts(fn: Any, make: Any, ts: float) -> None:
    with pytest.raises(InvalidEvent, match="non-negative") as ei:
        fn(_json(make(ts=ts)))
    assert ei.value.code == "invalid_field"


def test_negative_ts_feedback() -> None:
    assert _code(decode_feedback, _json(feedback(ts=-5))) == "invalid_field"


def test_ts_zero_is_valid() -> None:
    assert decode_behavior(_json(behavior(ts=0))).ts == 0.0


@pytest.mark.parametrize("fn,make", [(decode_behavior, behavior), (decode_item, item)])
def test_far_future_ts(fn: Any, make: Any) -> None:
    future = time.time() + 3 * 86400
    with pytest.raises(InvalidEvent, match="future") as ei:
        fn(_json(make(ts=future)))
    assert ei.value.code == "invalid_field"


def test_future_skew_is_configurable() -> None:
    soon = time.time() + 600
    assert decode_behavior(_json(behavior(ts=soon))).ts == soon  # default 1 day of skew
    assert _code(decode_behavior, _json(behavior(ts=soon)), max_skew=60) == "invalid_field"
    assert _code(decode_feedback, _json(feedback(ts=soon)), max_skew=0) == "invalid_field"


def test_huge_integer_ts_is_invalid_not_a_crash() -> None:
    # A JSON integer too large for a float must become an InvalidEvent (dead letter), not an
    # OverflowError that escapes the agent's `except InvalidEvent`.
    raw = b'{"user_id": "u1", "item_id": "i1", "event": "view", "ts": 1' + b"0" * 400 + b"}"
    assert _code(decode_behavior, raw) == "invalid_field"


def test_huge_integer_value_is_invalid_not_a_crash() -> None:
    raw = b'{"user_id": "u1", "rec_id": null, "item_id": "i1", "label": "rate", "value": 9'
    raw += b"9" * 400 + b', "ts": 1}'
    assert _code(decode_feedback, raw) == "invalid_field"


@pytest.mark.parametrize("field", ["user_id", "item_id"])
def test_ids_longer_than_256_chars(field: str) -> None:
    assert decode_behavior(_json(behavior(**{field: "x" * 256})))
    assert _code(decode_behavior, _json(behavior(**{field: "x" * 257}))) == "invalid_field"


def test_text_longer_than_max_text() -> None:
    ok = decode_item(_json(item(text="t" * 100)), max_text=100)
    assert ok.text == "t" * 100
    with pytest.raises(InvalidEvent, match="text") as ei:
        decode_item(_json(item(text="t" * 101)), max_text=100)
    assert ei.value.code == "invalid_field"


def test_title_longer_than_max_text() -> None:
    assert _code(decode_item, _mp(item(title="T" * 50)), max_text=20) == "invalid_field"


def test_default_max_text_is_4096_chars() -> None:
    assert decode_item(_json(item(text="t" * 4096))).text == "t" * 4096
    assert _code(decode_item, _json(item(text="t" * 4097))) == "invalid_field"


def test_feedback_rec_id_longer_than_max_text() -> None:
    assert _code(decode_feedback, _json(feedback(rec_id="r" * 40)), max_text=32) == "invalid_field"


@pytest.mark.parametrize("event", ["view", "click", "cart", "purchase", "rate"])
def test_empty_item_id_rejected_for_non_forget(event: str) -> None:
    with pytest.raises(InvalidEvent, match="item_id") as ei:
        decode_behavior(_json(behavior(event=event, item_id="")))
    assert ei.value.code == "invalid_field"


# --- encoding and dead letters ---------------------------------------------------------------


def _rec() -> Recommendation:
    return Recommendation(
        user_id="u1",
        rec_id="abc",
        items=[
            RecItem(item_id="i2", score=0.75, reason="because you watched Héros"),
            RecItem(item_id="i3", score=0.5, reason=None),
        ],
        model_version="fallback-cooc-1",
        event_ts=TS,
        emitted_ts=TS + 0.25,
    )


@pytest.mark.parametrize("codec", ["json", "msgpack"])
def test_encode_decode_output_round_trip(codec: str) -> None:
    rec = _rec()
    raw = encode(rec, codec)
    out = decode_output(raw)
    assert out == rec.model_dump()
    assert Recommendation.model_validate(out) == rec


def test_encode_json_is_compact_readable_utf8() -> None:
    raw = encode(_rec(), "json")
    assert raw.startswith(b"{")
    assert "Héros".encode() in raw  # not \u-escaped: readable in Kafka UIs
    assert b", " not in raw and b": " not in raw
    assert json.loads(raw)["items"][0] == {
        "item_id": "i2",
        "score": 0.75,
        "reason": "because you watched Héros",
    }


def test_encode_msgpack_is_msgpack() -> None:
    raw = encode(_rec(), "msgpack")
    assert not raw.startswith(b"{")
    assert msgpack.unpackb(raw, raw=False)["rec_id"] == "abc"


@pytest.mark.parametrize("codec", ["json", "msgpack"])
def test_encode_plain_dict(codec: str) -> None:
    data = {"name": "events_total", "value": 3, "labels": {"topic": "behavior"}}
    assert decode_output(encode(data, codec)) == data


@pytest.mark.parametrize("codec", ["json", "msgpack"])
def test_encoded_input_record_decodes_back(codec: str) -> None:
    b = decode_behavior(_json(behavior()))
    assert decode_behavior(encode(b, codec)) == b


def test_dead_letter_carries_original_bytes_base64() -> None:
    payload = b"\x00\xffnot json\xc1"
    dl = dead_letter("stream-rec.behavior", 3, 1234, "undecodable: boom", payload)
    assert isinstance(dl, DeadLetter)
    assert (dl.topic, dl.partition, dl.offset, dl.error) == (
        "stream-rec.behavior",
        3,
        1234,
        "undecodable: boom",
    )
    assert base64.b64decode(dl.payload_b64) == payload
    for codec in ("json", "msgpack"):
        out = decode_output(encode(dl, codec))
        assert base64.b64decode(out["payload_b64"]) == payload
        assert out["offset"] == 1234


def test_dead_letter_of_tombstone_has_empty_payload() -> None:
    dl = dead_letter("t", 0, 0, "empty: message has no value", None)
    assert dl.payload_b64 == ""
    assert base64.b64decode(dl.payload_b64) == b""


def test_check_key_passes_the_users_own_key_or_none_and_names_a_mismatch() -> None:
    from stream_rec.schemas import check_key

    check_key("ü-user".encode(), "ü-user")
    check_key(None, "u1")
    with pytest.raises(InvalidEvent) as ei:
        check_key(b"u2", "u1")
    assert ei.value.code == "key_mismatch"
    assert "b'u2'" in str(ei.value) and "'u1'" in str(ei.value)
