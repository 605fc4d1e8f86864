"""Out-of-sample replay for ``stream-rec simulate``: the model never trained on what is scored."""

from __future__ import annotations

from stream_rec.data.frame import Dataset, Interaction
from stream_rec.data.movielens import movielens_item
from stream_rec.ops.simulate import out_of_sample_events


def dataset() -> Dataset:
    items = {f"{i}": movielens_item(f"{i}", f"Movie {i}", 1990, ("Drama",)) for i in range(1, 40)}
    xs = []
    for u in range(1, 5):
        for t in range(30):
            xs.append(Interaction(f"{u}", f"{(u * 7 + t) % 39 + 1}", "rate", 4.0, 1000.0 * t + u))
    return Dataset("tiny", items, xs)


def test_only_events_after_the_cutoff_are_counted() -> None:
    ds = dataset()
    cutoff = 25_000.0
    events, counted = out_of_sample_events(ds, cutoff, users=None, limit=None, warm=5)
    assert len(events) == len(counted)
    scored = [x for x, c in zip(events, counted, strict=True) if c]
    warm = [x for x, c in zip(events, counted, strict=True) if not c]
    assert scored and all(x.ts >= cutoff for x in scored)
    assert all(x.ts < cutoff for x in warm)
    assert len(warm) == 4 * 5  # each user's last 5 interactions before the cutoff
    assert counted == sorted(counted)  # warm-up first, then the scored events
    assert [x.ts for x in scored] == sorted(x.ts for x in scored)


def test_users_and_limit_select_among_users_active_after_the_cutoff() -> None:
    ds = dataset()
    events, counted = out_of_sample_events(ds, 25_000.0, users=2, limit=7, warm=3)
    scored = [x for x, c in zip(events, counted, strict=True) if c]
    assert len(scored) == 7
    assert len({x.user_id for x in scored}) <= 2
    warm_users = {x.user_id for x, c in zip(events, counted, strict=True) if not c}
    assert warm_users == {x.user_id for x in scored}


def test_training_cut_keeps_only_the_past_and_records_the_cutoff() -> None:
    import pytest

    from stream_rec.model.pipeline import cut_at_quantile

    ds = dataset()
    cutoff = cut_at_quantile(ds, 0.8)
    assert ds.train_until_ts == cutoff
    assert ds.interactions and all(x.ts < cutoff for x in ds.interactions)
    assert 0.75 <= len(ds.interactions) / 120 <= 0.85
    later, counted = out_of_sample_events(dataset(), cutoff, users=None, limit=None)
    assert all(x.ts >= cutoff for x, c in zip(later, counted, strict=True) if c)
    with pytest.raises(ValueError, match="until_quantile"):
        cut_at_quantile(dataset(), 1.0)
