"""Per-user session state (stream_rec.core.session): apply_event and from_stored."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from stream_rec.core.session import Session, apply_event, from_stored, new_session
from stream_rec.schemas import Behavior


def ev(item: str, ts: float = 100.0, event: str = "view", user: str = "u1") -> Behavior:
    return Behavior(user_id=user, item_id=item, event=event, ts=ts)  # type: ignore[arg-type]


def play(events: list[Behavior], *, max_items: int = 50, max_seen: int = 1000) -> Session:
    s = new_session()
    for e in events:
        s = apply_event(s, e, max_items=max_items, max_seen=max_seen)
    return s


NO_SIGNALS: dict[str, Any] = {"signals": {"liked": {}, "passed": {}, "dismissed": {}}}


def test_new_session_is_empty() -> None:
    assert new_session() == {
        "items": [], "seen": [], "n": 0, "counts": {}, "last_ts": 0.0, **NO_SIGNALS,
    }  # fmt: skip
    assert new_session() is not new_session()
    a = new_session()
    a["items"].append("x")
    assert new_session()["items"] == []


def test_items_are_kept_oldest_first() -> None:
    s = play([ev("a", 1), ev("b", 2), ev("c", 3)])
    assert s["items"] == ["a", "b", "c"]
    assert s["seen"] == ["a", "b", "c"]
    assert s["n"] == 3
    assert s["last_ts"] == 3.0


def test_repeated_item_moves_to_the_end_without_duplicates() -> None:
    s = play([ev("a", 1), ev("b", 2), ev("c", 3), ev("a", 4)])
    assert s["items"] == ["b", "c", "a"]
    assert s["seen"] == ["a", "b", "c"]  # seen holds each item once
    assert s["n"] == 4


def test_same_item_twice_in_a_row() -> None:
    s = play([ev("a", 1), ev("a", 2)])
    assert s["items"] == ["a"]
    assert s["seen"] == ["a"]
    assert s["n"] == 2
    assert s["counts"] == {"view": 2}


def test_max_items_keeps_the_most_recent() -> None:
    s = play([ev(str(i), i) for i in range(10)], max_items=3)
    assert s["items"] == ["7", "8", "9"]
    assert s["seen"] == [str(i) for i in range(10)]  # seen is bounded separately
    assert s["n"] == 10


def test_max_seen_drops_the_oldest() -> None:
    s = play([ev(str(i), i) for i in range(10)], max_items=2, max_seen=4)
    assert s["seen"] == ["6", "7", "8", "9"]
    assert s["items"] == ["8", "9"]


def test_bounds_hold_at_every_step() -> None:
    s = new_session()
    for i in range(40):
        s = apply_event(s, ev(f"i{i % 13}", i), max_items=5, max_seen=7)
        assert len(s["items"]) <= 5
        assert len(s["seen"]) <= 7
        assert len(set(s["items"])) == len(s["items"])
        assert len(set(s["seen"])) == len(s["seen"])
        assert s["items"][-1] == f"i{i % 13}"


def test_counts_per_event_type() -> None:
    s = play(
        [
            ev("a", 1, "view"),
            ev("a", 2, "click"),
            ev("b", 3, "view"),
            ev("a", 4, "purchase"),
            ev("c", 5, "view"),
        ]
    )
    assert s["counts"] == {"view": 3, "click": 1, "purchase": 1}
    assert s["n"] == sum(s["counts"].values()) == 5


def test_last_ts_is_monotone_under_out_of_order_events() -> None:
    s = play([ev("a", 100), ev("b", 50), ev("c", 75)])
    assert s["last_ts"] == 100.0
    # Order of items follows arrival, not ts.
    assert s["items"] == ["a", "b", "c"]
    s = apply_event(s, ev("d", 200), max_items=50)
    assert s["last_ts"] == 200.0


def test_input_session_is_not_mutated() -> None:
    s = play([ev("a", 1), ev("b", 2)])
    snapshot = copy.deepcopy(s)
    after = apply_event(s, ev("a", 3, "click"), max_items=1, max_seen=1)
    assert s == snapshot
    assert after is not s
    assert after["items"] is not s["items"]
    assert after["counts"] is not s["counts"]
    # Mutating the result's items/counts does not reach the input either.
    after["items"].append("zzz")
    after["counts"]["view"] = 99
    assert s == snapshot


def test_apply_event_result_round_trips_through_from_stored() -> None:
    s = play([ev("a", 1), ev("b", 2, "cart")])
    assert from_stored(s) == s
    assert from_stored(copy.deepcopy(s)) == s


@pytest.mark.parametrize("value", [None, b"\x81\xa1x", "garbage", 42, 3.5, ["a", "b"], ()])
def test_from_stored_non_dict_gives_a_new_session(value: Any) -> None:
    assert from_stored(value) == new_session()


def test_from_stored_old_shape_missing_fields() -> None:
    # An older worker stored only the items.
    s = from_stored({"items": ["a", "b"]})
    assert s == {
        "items": ["a", "b"], "seen": [], "n": 0, "counts": {}, "last_ts": 0.0, **NO_SIGNALS,
    }  # fmt: skip
    assert apply_event(s, ev("c", 5), max_items=10)["items"] == ["a", "b", "c"]


def test_from_stored_normalises_types_and_ignores_unknown_fields() -> None:
    s = from_stored(
        {
            "items": [1, 2],
            "seen": [1, "x"],
            "n": "3",
            "counts": {"view": "2", 5: 1},
            "last_ts": 7,
            "future_field": {"whatever": True},
        }
    )
    assert s == {
        "items": ["1", "2"],
        "seen": ["1", "x"],
        "n": 3,
        "counts": {"view": 2, "5": 1},
        "last_ts": 7.0,
        **NO_SIGNALS,
    }
    assert isinstance(s["last_ts"], float)
    assert "future_field" not in s


def test_from_stored_does_not_alias_the_stored_value() -> None:
    stored = {"items": ["a"], "seen": ["a"], "n": 1, "counts": {"view": 1}, "last_ts": 1.0}
    s = from_stored(stored)
    s["items"].append("b")
    s["counts"]["view"] = 5
    assert stored == {"items": ["a"], "seen": ["a"], "n": 1, "counts": {"view": 1}, "last_ts": 1.0}


@pytest.mark.parametrize(
    "stored",
    [{"items": None}, {"counts": None}, {"last_ts": None}, {"n": "not a number"}],
    ids=["items-null", "counts-null", "last_ts-null", "n-str"],
)
def test_from_stored_tolerates_garbage_field_values(stored: dict[str, Any]) -> None:
    # A corrupt or hand-written table value must not crash the score agent (a poison pill that
    # would stop the partition); the damaged field falls back to its default.
    s = from_stored(stored)
    assert set(s) == {"items", "seen", "n", "counts", "last_ts", "signals"}
    assert isinstance(s["items"], list) and isinstance(s["seen"], list)
    assert isinstance(s["n"], int) and isinstance(s["counts"], dict)
    assert isinstance(s["last_ts"], float)
