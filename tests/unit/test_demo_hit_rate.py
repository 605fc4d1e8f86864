"""The demo's online hit rate: the user's next interaction among the recommended items."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from stream_rec.ops.demo import (
    HitRates,
    ShadowFallback,
    is_fallback,
    next_items,
    percentile,
    shadow_hits,
)


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


@dataclass
class Item:
    item_id: str
    title: str
    text: str
    attributes: dict[str, str]


class Lists(HitRates):
    """Hit rates that also keep every list they are given."""

    def __init__(self) -> None:
        super().__init__(k=3)
        self.lists: list[list[str]] = []

    def add(self, period: str, next_item: str | None, items: Sequence[str]) -> None:
        super().add(period, next_item, items)
        self.lists.append(list(items))


def test_the_fallbacks_lists_after_the_run_are_the_ones_it_had_served_at_each_event() -> None:
    items = [Item(str(i), f"t{i}", f"t{i}", {}) for i in range(12)]
    # four users walk the catalogue in steps of one, each from its own start
    sent = [(f"u{u}", str((step + 3 * u) % 12), "view", float(4 * step + u))
            for step in range(10) for u in range(4)]  # fmt: skip
    answered = {(u, ts): str((int(i) + 1) % 12) for u, i, _, ts in sent[20:]}

    def served(top_after_observe: bool) -> Lists:
        """Inline, as the demo did while the events went out (or, wrongly, before each
        event reached the fallback)."""
        shadow, lists = ShadowFallback(items, 5), Lists()
        for user, item, kind, ts in sent:
            if not top_after_observe and (user, ts) in answered:
                lists.add("fallback, same events", answered[(user, ts)], shadow.top(user, 3))
            shadow.observe(user, item, kind)
            if top_after_observe and (user, ts) in answered:
                lists.add("fallback, same events", answered[(user, ts)], shadow.top(user, 3))
        return lists

    after = Lists()
    shadow_hits(ShadowFallback(items, 5), sent, answered, after)
    assert len(after.lists) == 20
    assert after.lists == served(True).lists and after.hits == served(True).hits
    assert after.lists != served(False).lists  # the test tells the event's place apart
