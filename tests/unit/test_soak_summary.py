"""The soak bench's summary: growth is measured after the warm-up pass, not across it."""

from __future__ import annotations

import math

from stream_rec.bench.soak import Sample, summarize


def _s(t: float, phase: str, rss: float, lag: int = 0) -> Sample:
    return Sample(t_s=t, phase=phase, rss_mb=rss, lag=lag, recs_per_s=100.0, sent=0)


def test_growth_after_warm_up_ignores_the_state_filling_pass() -> None:
    warm = [_s(t, "warm", 80.0 + t) for t in range(0, 40, 5)]  # state fills: +35 MB
    load = [_s(40.0 + t, "load", 120.0 + (t % 2), lag=t) for t in range(10)]
    drain = [_s(60.0, "drain", 121.0)]
    out = summarize(warm + load + drain)
    assert out["rss_mb_start"] == 80.0
    assert out["rss_mb_after_warmup"] == 120.0
    # first three load samples 120, 121, 120 against the last three 121, 120, 121
    assert math.isclose(out["rss_growth_after_warmup_pct"], round(100 * (1 / 3) / (361 / 3), 2))
    # warm-up: first three 80, 85, 90 against 110, 115 and the first load sample 120
    assert out["rss_growth_during_warmup_pct"] == round(100 * 30 / 85, 2)
    assert out["max_lag"] == 9
    assert out["mean_recs_per_s_after_warmup"] == 100.0


def test_without_warm_up_everything_is_measured() -> None:
    load = [_s(t, "load", 100.0 + t) for t in range(6)]
    out = summarize(load)
    assert math.isnan(out["rss_growth_during_warmup_pct"])  # one sample: nothing to compare
    assert out["rss_growth_after_warmup_pct"] == round(100 * 3 / 101, 2)
