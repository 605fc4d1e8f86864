"""Per-user feedback signals (stream_rec.core.signals)."""

from __future__ import annotations

import msgpack
import pytest

from stream_rec.core.session import apply_event, decode_session, encode_session, new_session
from stream_rec.core.signals import (
    Kind,
    Signals,
    adjustments,
    kind_of,
    new_signals,
    record,
    signals_from,
)
from stream_rec.schemas import Behavior

TTL, MAX = 100.0, 3


def rec(sig: Signals, item: str, kind: Kind, now: float) -> Signals:
    return record(sig, item, kind, now, ttl_s=TTL, max_items=MAX)


@pytest.mark.parametrize(
    ("label", "value", "kind"),
    [
        ("click", None, "liked"),
        ("purchase", None, "liked"),
        ("rate", 5.0, "liked"),
        ("rate", 2.0, "dismissed"),
        ("dismiss", None, "dismissed"),
        ("impression", None, "passed"),
    ],
)
def test_labels_map_to_signals(label: str, value: float | None, kind: str) -> None:
    assert kind_of(label, value, 4.0) == kind


def test_feedback_turns_into_adjustments_and_exclusions() -> None:
    s = new_signals()
    s = rec(s, "a", "liked", 1.0)
    s = rec(s, "b", "passed", 2.0)
    s = rec(s, "b", "passed", 3.0)
    s = rec(s, "c", "dismissed", 4.0)
    s = rec(s, "a", "passed", 5.0)  # shown again unclicked: the click is the stronger evidence
    adjust, out = adjustments(s, 10.0, ttl_s=TTL, boost=2.0, discount=0.25)
    assert adjust == {"a": 2.0, "b": -0.5}
    assert out == {"c"}
    # a click after impressions lifts the item; a dismissal overrides a click
    s = rec(rec(s, "b", "liked", 6.0), "a", "dismissed", 7.0)
    adjust, out = adjustments(s, 10.0, ttl_s=TTL, boost=2.0, discount=0.25)
    assert adjust == {"b": 2.0} and out == {"a", "c"}
    # weights of 0 switch a kind off; dismissals always exclude
    adjust, out = adjustments(s, 10.0, ttl_s=TTL, boost=0.0, discount=0.0)
    assert adjust == {} and out == {"a", "c"}


def test_signals_expire_and_stay_bounded() -> None:
    s = rec(new_signals(), "old", "liked", 0.0)
    s = rec(s, "x", "passed", 50.0)
    adjust, _ = adjustments(s, 120.0, ttl_s=TTL, boost=1.0, discount=1.0)
    assert adjust == {"x": -1.0}  # "old" is 120 s old, past the 100 s TTL
    s = rec(s, "y", "liked", 200.0)  # recording also drops what has expired
    assert s["liked"] == {"y": 200.0} and s["passed"] == {}
    for n in range(5):
        s = rec(s, f"i{n}", "liked", 201.0 + n)
    assert list(s["liked"]) == ["i2", "i3", "i4"]


def test_signals_are_part_of_the_session_and_survive_storage() -> None:
    s = rec(rec(new_signals(), "a", "liked", 1.0), "b", "passed", 2.0)
    session = new_session()
    session["signals"] = s
    back = decode_session(encode_session(session))
    assert back["signals"] == s
    after = apply_event(back, Behavior(user_id="u", item_id="c", event="view", ts=3.0), max_items=5)
    assert after["signals"] == s  # behaviour keeps the feedback signals
    # sessions stored before signals existed, and damaged signals, read as no signals
    old = msgpack.packb({"items": ["x"], "seen": ["x"], "n": 1, "counts": {}, "last_ts": 1.0})
    assert decode_session(old)["signals"] == new_signals()
    odd = {"liked": {"a": "soon", "b": 3}, "passed": {"c": [1]}, "x": 1}
    assert signals_from(odd) == {"liked": {"b": 3.0}, "passed": {}, "dismissed": {}}
    assert signals_from([1, 2]) == new_signals()
