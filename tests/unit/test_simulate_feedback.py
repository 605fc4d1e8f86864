"""``stream-rec simulate``'s click model, new items and chart (stream_rec.ops.clicks/simulate)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stream_rec.ops.clicks import ClickModel
from stream_rec.ops.simulate import SimResult, block_rates, new_item_ids, plot
from tests.unit.test_simulate_protocol import dataset

ITEMS = [f"i{r}" for r in range(1, 11)]


def test_oracle_clicks_exactly_the_relevant_items() -> None:
    m = ClickModel("oracle")
    labels = m.labels(ITEMS, {"i2", "i9", "zz"}, m.rng_for("u1", 0))
    assert [i for i, lab in zip(ITEMS, labels, strict=True) if lab == "click"] == ["i2", "i9"]
    assert labels.count("impression") == 8  # every shown item gets an answer
    assert "oracle" in m.describe()


def test_position_model_rates_follow_its_parameters() -> None:
    m = ClickModel("position", relevant=0.7, noise=0.05, eta=1.0, seed=3)
    n = 20_000
    clicks = [0] * 10
    relevant_clicks = irrelevant_clicks = 0
    for place in range(n):
        labels = m.labels(ITEMS, {"i1", "i2"}, m.rng_for("u", place))  # ranks 1 and 2 relevant
        for r, lab in enumerate(labels):
            clicks[r] += lab == "click"
        relevant_clicks += labels[:2].count("click")
        irrelevant_clicks += labels[2:].count("click")
    assert clicks[0] / n == pytest.approx(0.7, abs=0.02)  # examined always, relevant
    assert clicks[1] / n == pytest.approx(0.7 / 2, abs=0.02)  # examined half the time
    assert clicks[9] / n == pytest.approx(0.05 / 10, abs=0.003)  # noise, rarely examined
    assert irrelevant_clicks > 0 and relevant_clicks > irrelevant_clicks


def test_one_event_draws_the_same_clicks_in_every_mode_whatever_the_order() -> None:
    # Common random numbers: an event's draws depend on the seed and the event alone, so two
    # modes answered in different orders still see the same clicks on the same list.
    a, b = ClickModel(seed=5), ClickModel(seed=5)
    events = [(f"u{n % 7}", n) for n in range(200)]
    first = {e: a.labels(ITEMS, {"i3"}, a.rng_for(*e)) for e in events}
    second = {e: b.labels(ITEMS, {"i3"}, b.rng_for(*e)) for e in reversed(events)}
    assert first == second
    assert len({tuple(v) for v in first.values()}) > 1  # not one draw for all
    other_seed = ClickModel(seed=6)
    assert any(other_seed.labels(ITEMS, {"i3"}, other_seed.rng_for(*e)) != first[e] for e in events)


def test_paired_difference_over_the_same_events() -> None:
    from stream_rec.ops.simulate import paired

    a, b = SimResult("learning"), SimResult("frozen")
    for n in range(100):
        a.outcomes[("u", n)] = n < 30  # 30 hits
        b.outcomes[("u", n)] = 10 <= n < 30  # 20 hits, all of them also a's
    b.outcomes[("only-b", 0)] = True  # answered by one run only: not paired
    d = paired(a, b)
    assert d["events"] == 100 and d["only_a"] == 10 and d["only_b"] == 0
    assert d["difference"] == pytest.approx(0.10)
    assert d["se"] == pytest.approx((0.1 * 0.9 * 100 / 99) ** 0.5 / 10)  # sd of 0/1 diffs
    sub = paired(a, b, [("u", n) for n in range(10, 30)])  # both hit all of these
    assert sub == {"events": 20, "difference": 0.0, "se": 0.0, "only_a": 0, "only_b": 0}


@pytest.mark.parametrize(
    ("kw", "match"),
    [({"kind": "cascade"}, "use one of"), ({"relevant": 1.5}, "probability"),
     ({"noise": -0.1}, "probability"), ({"eta": -1.0}, "eta")],
)  # fmt: skip
def test_bad_click_model_parameters_are_refused(kw: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ClickModel(**kw)  # type: ignore[arg-type]


def test_block_rates_undo_the_cumulative_points() -> None:
    # 100 recs at 0.2 (20 hits), then 100 more with 40 hits: 0.3 cumulative
    assert block_rates([(100, 0.2), (200, 0.3)]) == [(100, 0.2), (200, pytest.approx(0.4))]
    assert block_rates([]) == []


def test_new_items_come_from_the_registry_manifest(tmp_path: Path) -> None:
    ds = dataset()
    version = tmp_path / "versions" / "v1"
    version.mkdir(parents=True)
    (tmp_path / "CURRENT").write_text("v1\n")
    manifest = {"version": "v1", "cold_items": ["3", "7", "not-in-the-data"]}
    (version / "manifest.json").write_text(json.dumps(manifest))
    assert new_item_ids(tmp_path, ds) == {"3", "7"}
    manifest["cold_items"] = []
    (version / "manifest.json").write_text(json.dumps(manifest))
    from stream_rec.data.frame import DatasetError

    with pytest.raises(DatasetError, match="--cold-items"):
        new_item_ids(tmp_path, ds)


def test_plot_writes_a_png_with_the_promotions(tmp_path: Path) -> None:
    runs = {
        m: SimResult(m, recommendations=300, hits=60 + n * 10,
                     blocks=[(100, 0.15 + n / 20), (200, 0.2 + n / 20), (300, 0.2 + n / 30)])
        for n, m in enumerate(("frozen", "signals", "learning"))
    }  # fmt: skip
    result = {"events": 300, "rate": 50.0, "click_model": {"kind": "position"},
              "promotions_at": {"v2": 140, "v3": 260}}  # fmt: skip
    out = tmp_path / "sim.png"
    plot(runs, result, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_learning_against_signals_split_at_the_first_promotion() -> None:
    from stream_rec.ops.simulate import split_at_first_promotion

    learning, signals = SimResult("learning"), SimResult("signals")
    for n in range(10):
        learning.outcomes[("u", n)] = n >= 6  # the promoted version hits from the 7th answer
        signals.outcomes[("u", n)] = False
    learning.version_at = {"base": 0, "v2": 6}
    split = split_at_first_promotion(learning, signals)
    before = split["learning_vs_signals_before_first_promotion"]
    after = split["learning_vs_signals_after_first_promotion"]
    assert (before["events"], before["difference"]) == (6, 0.0)
    assert (after["events"], after["difference"], after["only_a"]) == (4, 1.0, 4)
    assert split_at_first_promotion(SimResult("learning"), signals) == {}  # none promoted
