"""The hot path's fast forms say the same as the plain ones they replace (stream_rec.schemas,
stream_rec.core.context, stream_rec.serving.fallback)."""

from __future__ import annotations

import json
from pathlib import Path

import msgpack
import pytest

from stream_rec.core.context import decode_contexts, remember, remember_many
from stream_rec.schemas import (
    RecItem,
    Recommendation,
    decode_output,
    encode,
    encode_recommendation,
)
from stream_rec.serving.fallback import PopularityCooccurrenceScorer
from stream_rec.serving.scorer import CatalogItem, ScoredItem, ScoreRequest

ITEMS = [
    ScoredItem("42", 0.1 + 0.2, "because you watched Amélie (2001)"),
    ScoredItem("7", 1e-7, None),
    ScoredItem("x\u2603", -3.5, "popular now"),
]


@pytest.mark.parametrize("codec", ["json", "msgpack"])
def test_encode_recommendation_is_the_contract_record(codec: str) -> None:
    fast = encode_recommendation("u1", "ab" * 16, ITEMS, "v1", 1.25, 2.5, codec)
    plain = encode(
        Recommendation(
            user_id="u1", rec_id="ab" * 16,
            items=[RecItem(item_id=i.item_id, score=i.score, reason=i.reason) for i in ITEMS],
            model_version="v1", event_ts=1.25, emitted_ts=2.5,
        ),
        codec,
    )  # fmt: skip
    assert decode_output(fast) == decode_output(plain)
    Recommendation.model_validate(decode_output(fast))  # every field, strict types
    if codec == "json":
        assert json.loads(fast) == json.loads(plain)
        assert "☃".encode() in fast  # UTF-8, not \\u escapes, like encode()
    else:
        assert msgpack.unpackb(fast) == msgpack.unpackb(plain)


def test_encode_recommendation_turns_numpy_scores_into_floats() -> None:
    np = pytest.importorskip("numpy")
    out = decode_output(
        encode_recommendation("u", "r", [ScoredItem("1", np.float32(0.5))], "v", 1.0, 2.0)
    )
    assert out["items"][0]["score"] == 0.5


def test_remember_many_is_remember_once_per_entry() -> None:
    start = remember(None, "old", 10.0, ["a"], ["b"], max_recs=3, ttl_s=100.0)
    recs = [(f"r{i}", [f"h{i}", "x"], [f"i{i}"]) for i in range(4)]
    one_by_one = start
    for rec_id, hist, items in recs:
        one_by_one = remember(one_by_one, rec_id, 50.0, hist, items, max_recs=3, ttl_s=100.0)
    together = remember_many(start, recs, 50.0, max_recs=3, ttl_s=100.0)
    assert decode_contexts(together) == decode_contexts(one_by_one)
    assert list(decode_contexts(together)) == ["r1", "r2", "r3"]  # the newest kept, in order


def test_remember_many_drops_expired_entries() -> None:
    start = remember(None, "old", 10.0, ["a"], ["b"], max_recs=5, ttl_s=30.0)
    out = decode_contexts(
        remember_many(start, [("new", ["a"], ["c"])], 50.0, max_recs=5, ttl_s=30.0)
    )
    assert list(out) == ["new"]


def test_fallback_popularity_follows_every_observation() -> None:
    """The cached popularity ranking is rebuilt after counts change, not on a timer."""
    s = PopularityCooccurrenceScorer()
    s.upsert_items([CatalogItem(i, i) for i in "ABCD"])
    assert [x.item_id for x in s.score([ScoreRequest("u", [])], 2)[0]] == ["D", "C"]  # cold: by id
    s.observe("u1", [], "A", "view")
    assert [x.item_id for x in s.score([ScoreRequest("u", [])], 2)[0]] == ["A", "D"]
    s.observe("u2", [], "B", "view")
    s.observe("u3", [], "B", "view")
    assert [x.item_id for x in s.score([ScoreRequest("u", [])], 2)[0]] == ["B", "A"]
    s.upsert_items([CatalogItem("Z", "Z")])  # a new item is ranked at once (cold, by id)
    assert [x.item_id for x in s.score([ScoreRequest("u", [])], 4)[0]] == ["B", "A", "Z", "D"]


def test_dispatch_measures_a_new_scorer_in_the_thread_first() -> None:
    from stream_rec.agents.score import Dispatch

    d, scorer = Dispatch(budget_s=0.002), object()
    assert not d.inline(scorer, 1)  # nothing known: the thread
    d.measured(scorer, 4, 0.0004)  # 100 µs per request
    assert d.inline(scorer, 20)  # 2 ms predicted: within the budget
    assert not d.inline(scorer, 21)
    swapped = object()  # a hot swap: measured anew
    assert not d.inline(swapped, 1)
    d.measured(scorer, 1, 0.0)  # a late figure of the old scorer changes nothing
    assert not d.inline(swapped, 1)


def test_dispatch_follows_the_scorers_cost_and_can_be_off() -> None:
    from stream_rec.agents.score import Dispatch

    d, scorer = Dispatch(budget_s=0.002, alpha=0.5), object()
    d.inline(scorer, 1)
    d.measured(scorer, 10, 0.001)  # 100 µs per request
    assert d.inline(scorer, 20)
    d.measured(scorer, 10, 0.005)  # 500 µs: the average moves to 300 µs
    assert d.inline(scorer, 6)
    assert not d.inline(scorer, 7)
    off = Dispatch(budget_s=0.0)
    off.inline(scorer, 1)
    off.measured(scorer, 10, 0.0)
    assert not off.inline(scorer, 1)


def test_bench_variants_name_real_settings() -> None:
    from stream_rec.bench.pipeline import parse_variants

    got = parse_variants(
        ["thread-only:score_inline_ms=0,STREAM_REC_ORT_THREADS=2", "x:batch_size=8"]
    )
    assert got == {
        "thread-only": {"STREAM_REC_SCORE_INLINE_MS": "0", "STREAM_REC_ORT_THREADS": "2"},
        "x": {"STREAM_REC_BATCH_SIZE": "8"},
    }
    for bad in ["noseparator", "a:", "a:batch_sise=8", "a b:batch_size=8", "a:batch_size"]:
        with pytest.raises(ValueError, match="--variant"):
            parse_variants([bad])


def _ranked_reference(s: PopularityCooccurrenceScorer, req: ScoreRequest, k: int) -> list:
    """The fallback's ranking as it was written first: one candidate at a time in Python."""
    import numpy as np

    recent = list(req.history[-5:])
    parts_idx, parts_w = [], []
    for pos, src in enumerate(recent):
        idx, w = s._neighbours(src, 0.0)
        if len(idx):
            parts_idx.append(idx)
            parts_w.append(w * 0.5 ** (len(recent) - 1 - pos))
    out: list[ScoredItem] = []
    if parts_idx:
        cand, inv = np.unique(np.concatenate(parts_idx), return_inverse=True)
        scores = np.bincount(inv, weights=np.concatenate(parts_w))
        for j in np.argsort(-scores, kind="stable"):
            iid = s._ids[cand[j]]
            if iid in req.exclude or iid in req.history:
                continue
            best, best_w = recent[-1], -1.0
            for pos, src in enumerate(recent):
                nb = s._co.get(src)
                w = (nb.get(iid, 0) if nb else 0) * 0.5 ** (len(recent) - 1 - pos)
                if w > best_w:
                    best, best_w = src, w
            out.append(ScoredItem(iid, float(scores[j]), f"because you watched {best}"))
            if len(out) == k:
                break
    if len(out) < k:
        have = req.exclude | set(req.history) | {x.item_id for x in out}
        out.extend(s._served(s._popular(k - len(out), frozenset(have))))
    return out


def test_fallback_vectorised_ranking_is_the_per_candidate_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Same items, scores, order (ties by catalogue row) and reasons as the Python loop, on a
    random stream with repeated items, excluded items, short and long histories."""
    import random

    import stream_rec.serving.fallback as fb

    monkeypatch.setattr(fb, "_REFRESH_S", 0.0)  # neighbour lists always fresh, as the loop's
    rng = random.Random(7)
    s = PopularityCooccurrenceScorer()
    items = [f"i{n}" for n in range(300)]
    s.upsert_items([CatalogItem(i, i) for i in items])
    hist: dict[str, list[str]] = {}
    checked = 0
    for step in range(6000):
        user = f"u{rng.randrange(60)}"
        h = hist.setdefault(user, [])
        item = items[min(int(rng.expovariate(1 / 40)), 299)]  # popular head, long tail
        s.observe(user, list(h), item, "view")
        h.append(item)
        del h[:-20]
        if step % 7 == 0:
            excl = frozenset(rng.sample(items[:50], 3))
            for k in (1, 10, 40):
                req = ScoreRequest(user, list(h), excl, {})
                got = s._served(s._ranked(req, k))
                want = _ranked_reference(s, req, k)
                assert [(x.item_id, x.score, x.reason) for x in got] == [
                    (x.item_id, x.score, x.reason) for x in want
                ]
                checked += 1
    assert checked > 2000


def test_bench_rounds_give_the_median_and_keep_every_round() -> None:
    from stream_rec.bench.pipeline import combine_rounds

    first = {"events_per_s": 900.0, "records": 20000, "stages_us": {"score": 1.0}}
    got = combine_rounds([first, {"events_per_s": 1500.0}, {"events_per_s": 1100.0}])
    assert got["events_per_s"] == 1100.0
    assert got["events_per_s_rounds"] == [900.0, 1500.0, 1100.0]
    assert got["stages_us"] == {"score": 1.0}  # the first round's
    assert first["events_per_s"] == 900.0  # not changed in place
    assert combine_rounds([{"events_per_s": 2.0}, {"events_per_s": 4.0}])["events_per_s"] == 3.0


def test_bench_finds_the_local_broker_it_measures_only(tmp_path: Path) -> None:
    import os

    from stream_rec.bench.pipeline import local_broker_pid
    from stream_rec.ops.broker import LocalBroker
    from stream_rec.settings import load_settings

    local = load_settings(bootstrap_servers="127.0.0.1:19555", home=tmp_path)
    assert local_broker_pid(local) is None  # not started
    pid_file = LocalBroker(home=tmp_path, port=19555).pid_file
    pid_file.parent.mkdir(parents=True)
    pid_file.write_text(str(os.getpid()))  # a live process stands in for the broker's JVM
    assert local_broker_pid(local) == os.getpid()
    remote = load_settings(bootstrap_servers="kafka.example:19555", home=tmp_path)
    assert local_broker_pid(remote) is None  # another machine's broker: its CPU is not ours


def test_bench_cpu_seconds_counts_this_process_work() -> None:
    import os
    import time

    from stream_rec.bench.pipeline import cpu_seconds

    before = cpu_seconds(os.getpid())
    end = time.process_time() + 0.3
    while time.process_time() < end:  # busy: CPU time, not a sleep
        pass
    spent = cpu_seconds(os.getpid()) - before
    assert 0.2 <= spent <= 5.0


def test_fallback_ranking_and_head_kept_as_counts_grow() -> None:
    """The popularity ranking and the long tail's head, kept in place per observation, are
    what sorting the counts from scratch gives after every step, also as the catalogue grows."""
    import math
    import random

    import numpy as np

    rng = random.Random(3)
    s = PopularityCooccurrenceScorer()
    items = [f"i{n:03d}" for n in range(120)]
    s.upsert_items([CatalogItem(i, i) for i in items[:80]])
    counts: dict[str, int] = {}
    for step in range(1500):
        if step == 700:
            s.upsert_items([CatalogItem(i, i) for i in items[80:]])
        item = items[min(int(rng.expovariate(1 / 25)), 119)]
        s.observe("u", [], item, "view")
        counts[item] = counts.get(item, 0) + 1
        ids = s._ids
        want = sorted(range(len(ids)), key=ids.__getitem__, reverse=True)  # ties: id, desc
        want.sort(key=lambda r: -counts.get(ids[r], 0))  # stable: by count, desc
        assert s._pop_rank == want
        m = math.ceil(0.2 * len(ids))
        head = {ids[r] for r in want[:m] if counts.get(ids[r], 0) > 0}
        assert {ids[r] for r in np.flatnonzero(s._head)} == head


def test_gc_pauses_are_timed_per_generation_until_closed() -> None:
    import gc

    from stream_rec.metrics import Metrics

    m = Metrics()

    def count(generation: str) -> float:
        return (
            m.registry.get_sample_value(
                "stream_rec_gc_pause_seconds_count", {"generation": generation}
            )
            or 0.0
        )

    watch = m.watch_gc()
    try:
        gc.collect(2)
        gc.collect(0)
        assert count("2") >= 1
        assert count("0") >= 1
        seconds = m.registry.get_sample_value(
            "stream_rec_gc_pause_seconds_sum", {"generation": "2"}
        )
        assert seconds is not None and seconds > 0
    finally:
        watch.close()
    before = count("2")
    gc.collect(2)
    assert count("2") == before  # closed: not observed any more


def test_gc_pauses_read_from_a_workers_metrics() -> None:
    from prometheus_client import generate_latest

    from stream_rec.metrics import Metrics, gc_pauses

    m = Metrics()
    for s in (0.0002, 0.003, 0.08, 0.3):
        m.gc_pause_seconds.labels(generation="2").observe(s)
    m.gc_pause_seconds.labels(generation="0").observe(0.0001)
    got = gc_pauses(generate_latest(m.registry).decode())
    assert got["2"]["count"] == 4
    assert got["2"]["seconds"] == pytest.approx(0.3832)
    assert got["2"]["over_50ms"] == 2
    assert got["2"]["up_to_s"]["0.001"] == 1
    assert got["2"]["up_to_s"]["0.1"] == 3
    assert got["2"]["up_to_s"]["1"] == 4
    assert got["0"]["count"] == 1
    assert got["0"]["over_50ms"] == 0
    assert "1" not in got  # no collection of it observed (no watch made its series)
    assert gc_pauses("") == {}
