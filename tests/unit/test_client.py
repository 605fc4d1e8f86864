"""The client's messages are what the workers decode, in both codecs; recommendations decode
in either output codec."""

from __future__ import annotations

import msgpack
import pytest
from pydantic import ValidationError

from stream_rec.client import (
    Codec,
    behavior_message,
    decode_recommendation,
    feedback_message,
    item_message,
)
from stream_rec.schemas import (
    InvalidEvent,
    decode_behavior,
    decode_feedback,
    decode_item,
    encode_recommendation,
)
from stream_rec.serving.scorer import ScoredItem


@pytest.mark.parametrize("codec", ["json", "msgpack"])
def test_messages_are_what_the_workers_decode(codec: Codec) -> None:
    raw = behavior_message("u1", "i1", "rate", value=4, ts=10, codec=codec)
    assert (raw[:1] == b"{") == (codec == "json")
    ev = decode_behavior(raw)
    assert (ev.user_id, ev.item_id, ev.event, ev.value, ev.ts) == ("u1", "i1", "rate", 4.0, 10.0)
    raw = item_message("i1", "Heat", text="a heist", attributes={"year": "1995"}, codec=codec)
    it = decode_item(raw)
    assert (it.item_id, it.title, it.text, it.attributes) == ("i1", "Heat", "a heist",
                                                              {"year": "1995"})  # fmt: skip
    fb = decode_feedback(feedback_message("u1", "i1", "click", rec_id="r1", codec=codec))
    assert (fb.user_id, fb.item_id, fb.label, fb.rec_id, fb.value) == ("u1", "i1", "click",
                                                                       "r1", None)  # fmt: skip


def test_ts_defaults_to_now() -> None:
    import time

    before = time.time()
    assert before <= decode_behavior(behavior_message("u1", "i1", "view")).ts <= time.time()


@pytest.mark.parametrize(
    "make",
    [
        lambda: behavior_message("u1", "i1", "like"),
        lambda: behavior_message("", "i1", "view"),
        lambda: item_message("i1", ""),
        lambda: feedback_message("u1", "i1", "love"),
        lambda: behavior_message("u1", "i1", "view", value=float("nan")),
    ],
)
def test_a_record_the_workers_would_dead_letter_is_refused_before_kafka(make) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValidationError):
        make()


@pytest.mark.parametrize("codec", ["json", "msgpack"])
def test_recommendations_decode_in_either_output_codec(codec: str) -> None:
    items = [ScoredItem("i2", 0.5, "because you watched Heat"), ScoredItem("i3", 0.25)]
    raw = encode_recommendation("u1", "r1", items, "v1", 1.0, 2.0, codec)
    rec = decode_recommendation(raw)
    assert (rec.user_id, rec.rec_id, rec.model_version, rec.event_ts, rec.emitted_ts) == (
        "u1", "r1", "v1", 1.0, 2.0,
    )  # fmt: skip
    assert [(i.item_id, i.score, i.reason) for i in rec.items] == [
        ("i2", 0.5, "because you watched Heat"), ("i3", 0.25, None),
    ]  # fmt: skip


@pytest.mark.parametrize(
    "raw", [b"\xc1", b"[1]", msgpack.packb({"user_id": "u1"}), b'{"user_id": "u1", "items": 3}']
)
def test_what_is_not_a_recommendation_raises_invalid_event(raw: bytes) -> None:
    with pytest.raises(InvalidEvent):
        decode_recommendation(raw)
