"""The demo's online hit rate: the user's next interaction among the recommended items."""

from __future__ import annotations

from dataclasses import dataclass

from stream_rec.ops.demo import HitRates, is_fallback, next_items, percentile


@dataclass
class Ev:
    user_id: str
    item_id: str


def test_next_items_follow_each_user_in_replay_order() -> None:
    events = [Ev("a", "1"), Ev("b", "9"), Ev("a", "2"), Ev("a", "3"), Ev("b", "8")]
    nxt = next_items(events)
    assert nxt[("a", 0)] == "2" and nxt[("a", 1)] == "3" and nxt[("a", 2)] is None
    assert nxt[("b", 0)] == "8" and nxt[("b", 1)] is None


def test_hit_rate_per_period_counts_only_events_with_a_next_item() -> None:
    h = HitRates(k=2)
    h.add("fallback", "x", ["x", "y", "z"])
    h.add("fallback", "z", ["x", "y", "z"])  # third place: outside the top 2
    h.add("fallback", None, ["x"])  # last interaction: not counted
    h.add("model", "y", ["x", "y"])
    assert h.n == {"fallback": 2, "model": 1}
    assert h.rate("fallback") == 0.5 and h.rate("model") == 1.0
    assert HitRates().rate("model") != HitRates().rate("model")  # nan without events


def test_periods_and_percentiles() -> None:
    assert is_fallback("fallback-cooc-1") and not is_fallback("20261204T035000Z-ab12cd")
    assert percentile([0.3, 0.1, 0.2], 0.5) == 0.2
