"""Per-user feedback signals (stream_rec.core.signals)."""

from __future__ import annotations

import msgpack
import pytest

from stream_rec.core.signals import (
    Kind,
    Signals,
    adjustments,
    decode_signals,
    encode_signals,
    kind_of,
    new_signals,
    record,
)

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


def test_stored_values_round_trip_and_damage_is_tolerated() -> None:
    s = rec(rec(new_signals(), "a", "liked", 1.0), "b", "passed", 2.0)
    assert decode_signals(encode_signals(s)) == s
    assert decode_signals(None) == new_signals()
    assert decode_signals(b"\xc1 not msgpack") == new_signals()
    odd = msgpack.packb({"liked": {"a": "soon", "b": 3}, "passed": {"c": [1]}, "x": 1})
    assert decode_signals(odd) == {"liked": {"b": 3.0}, "passed": {}, "dismissed": {}}
