"""The re-ranker (stream_rec.serving.rerank) and its hooks in both scorers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stream_rec.eval.protocol import rank_topk
from stream_rec.model.runtime import OnnxScorer
from stream_rec.serving.fallback import PopularityCooccurrenceScorer
from stream_rec.serving.rerank import (
    HeadCache,
    RerankParams,
    attribute_vector,
    head_items,
    pool_size,
    rerank,
    top_reranked,
)
from stream_rec.serving.scorer import CatalogItem, ScoreRequest
from stream_rec.settings import ConfigError, load_settings


def unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def reference_mmr(
    rel: np.ndarray, unit: np.ndarray, head: np.ndarray, k: int, d: float, t: float
) -> list[int]:
    """MMR written the slow, obvious way (one row, Python loops) to check the numpy one."""
    lo, hi = rel.min(), rel.max()
    scaled = (rel - lo) / (hi - lo)
    chosen: list[int] = []
    for _ in range(k):
        best, best_obj = -1, -np.inf
        for j in range(len(rel)):
            if j in chosen:
                continue
            near = max((float(unit[j] @ unit[c]) for c in chosen), default=-1.0)
            obj = (1 - d) * (scaled[j] - t * head[j]) - d * near
            if obj > best_obj + 1e-6:
                best, best_obj = j, obj
        chosen.append(best)
    return chosen


def test_off_serves_the_pool_order() -> None:
    cand = np.array([[4, 2, 0, 1]])
    rel = np.array([[3.0, 2.0, 1.0, 0.5]])
    pos = rerank(cand, rel, np.eye(5, dtype=np.float32), np.zeros(5), 3, RerankParams())
    assert pos.tolist() == [[0, 1, 2]]
    assert pool_size(RerankParams(), 10, 1000) == 10
    assert pool_size(RerankParams(diversity=0.1, pool=50), 10, 1000) == 50
    assert pool_size(RerankParams(long_tail=0.1, pool=50), 10, 30) == 30


def test_matches_the_reference_mmr_on_random_pools() -> None:
    rng = np.random.default_rng(0)
    n, p, k = 40, 12, 6
    unit = unit_rows(rng.normal(size=(n, 8)))
    head = head_items(rng.integers(0, 100, size=n)).astype(np.float32)
    for d, t in ((0.3, 0.0), (0.0, 0.7), (0.4, 0.5), (0.9, 1.0)):
        cand = np.stack([rng.choice(n, size=p, replace=False) for _ in range(5)])
        rel = np.sort(rng.normal(size=(5, p)), axis=1)[:, ::-1].astype(np.float32)
        pos = rerank(cand, rel, unit, head, k, RerankParams(d, t))
        for row in range(5):
            want = reference_mmr(rel[row], unit[cand[row]], head[cand[row]], k, d, t)
            assert pos[row].tolist() == want, (d, t, row)
            # a batch of one request takes the 1-D path: the same answer
            one = rerank(cand[row : row + 1], rel[row : row + 1], unit, head, k, RerankParams(d, t))
            assert one.tolist() == [want], (d, t, row)


def test_diversity_passes_over_a_near_duplicate() -> None:
    unit = unit_rows(np.array([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0]]))
    cand = np.array([[0, 1, 2]])
    rel = np.array([[1.0, 0.95, 0.7]])
    plain = rerank(cand, rel, unit, np.zeros(3), 2, RerankParams(long_tail=1e-9))
    assert plain.tolist() == [[0, 1]]
    diverse = rerank(cand, rel, unit, np.zeros(3), 2, RerankParams(diversity=0.5))
    assert diverse.tolist() == [[0, 2]]


def test_long_tail_lifts_an_unpopular_item() -> None:
    cand = np.array([[0, 1, 2]])
    rel = np.array([[1.0, 0.9, 0.0]])
    head = head_items(np.array([1000.0, 2.0, 50.0])).astype(np.float32)  # the first alone
    unit = np.eye(3, dtype=np.float32)
    assert rerank(cand, rel, unit, head, 3, RerankParams(long_tail=0.05)).tolist() == [[0, 1, 2]]
    assert rerank(cand, rel, unit, head, 3, RerankParams(long_tail=0.5)).tolist() == [[1, 0, 2]]


def test_non_candidates_come_last_and_no_slot_repeats() -> None:
    unit = np.eye(4, dtype=np.float32)
    cand = np.array([[3, 1, 0, 2]])
    rel = np.array([[2.0, -np.inf, 1.0, -np.inf]])
    pos = rerank(cand, rel, unit, np.zeros(4), 4, RerankParams(diversity=0.5))
    assert pos[0, :2].tolist() == [0, 2]
    assert sorted(pos[0].tolist()) == [0, 1, 2, 3]


def test_head_items() -> None:
    assert head_items(np.array([0.0, 2.0, 4.0])).tolist() == [False, False, True]
    assert head_items(np.array([3.0, 1.0, 3.0, 0.0]), 0.5).tolist() == [True, False, True, False]
    assert not head_items(np.zeros(3)).any()  # nobody interacted yet: no head
    assert head_items(np.zeros(0)).shape == (0,)
    cache = HeadCache()
    counts = np.array([5.0, 1.0, 0.0, 0.0, 0.0])
    assert cache.get(counts).tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]
    counts[1] = 9.0  # changed in place: only a stale flag tells
    assert cache.get(counts)[0] == 1.0
    assert cache.get(counts, stale=True).tolist() == [0.0, 1.0, 0.0, 0.0, 0.0]


def test_attribute_vectors() -> None:
    a = attribute_vector({"genres": "Drama|Comedy"})
    b = attribute_vector({"genres": "Comedy|Drama"})
    c = attribute_vector({"genres": "Horror"})
    assert float(np.linalg.norm(a)) == pytest.approx(1.0)
    assert float(a @ b) == pytest.approx(1.0)
    assert float(a @ attribute_vector({"genres": "Drama"})) == pytest.approx(2**-0.5)
    assert float(np.abs(a @ c)) < 1.0
    assert not attribute_vector({}).any()


def test_top_reranked_off_is_the_protocols_ranking() -> None:
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 5, size=(6, 30)).astype(np.float64)  # many ties
    scores[0, :3] = -np.inf
    unit = unit_rows(rng.normal(size=(30, 4)))
    got = top_reranked(scores, unit, np.zeros(30), 10, RerankParams())
    assert got.tolist() == rank_topk(scores, 10).tolist()
    # on, the pool is the protocol's top-pool and the list comes from it
    got = top_reranked(scores, unit, np.zeros(30), 10, RerankParams(diversity=0.5, pool=15))
    pool = rank_topk(scores, 15)
    for row in range(6):
        assert set(got[row].tolist()) <= set(pool[row].tolist())
        assert len(set(got[row].tolist())) == 10


def test_settings_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load_settings(diversity=0.3, long_tail=0.5, rerank_pool=40)
    assert RerankParams.from_settings(s) == RerankParams(0.3, 0.5, 40)
    for name, bad in (("DIVERSITY", "1.5"), ("LONG_TAIL", "-1"), ("RERANK_POOL", "0")):
        monkeypatch.setenv(f"STREAM_REC_{name}", bad)
        with pytest.raises(ConfigError, match=f"STREAM_REC_{name}"):
            load_settings()
        monkeypatch.delenv(f"STREAM_REC_{name}")


# --- the fallback scorer -----------------------------------------------------------------


def fallback(params: RerankParams) -> PopularityCooccurrenceScorer:
    s = PopularityCooccurrenceScorer(rerank=params)
    genres = {"A": "Drama", "B": "Drama", "C": "Drama", "D": "Comedy", "E": "Horror"}
    s.upsert_items(CatalogItem(i, f"title {i}", None, {"genres": g}) for i, g in genres.items())
    # co-occurrence with A: B strongest, then C, D, E
    for n, item in enumerate(("B", "B", "B", "B", "C", "C", "C", "D", "D", "E")):
        s.observe(f"u{n}", ["A"], item, "view")
    return s


def test_fallback_reranks_its_candidate_list() -> None:
    req = [ScoreRequest("x", ["A"])]
    plain = [x.item_id for x in fallback(RerankParams()).score(req, 3)[0]]
    assert plain == ["B", "C", "D"]
    diverse = [x.item_id for x in fallback(RerankParams(diversity=0.5)).score(req, 3)[0]]
    assert diverse == ["B", "D", "E"]  # a second drama waits behind other genres
    assert "A" not in diverse
    out = fallback(RerankParams(diversity=0.5)).score([ScoreRequest("x", ["A"], frozenset("D"))], 3)
    assert [x.item_id for x in out[0]] == ["B", "E", "C"]


def test_fallback_long_tail_and_short_catalogue() -> None:
    s = fallback(RerankParams(long_tail=2.0))
    got = [x.item_id for x in s.score([ScoreRequest("x", ["A"])], 3)[0]]
    assert got == ["C", "D", "E"]  # B, the head (the top 20 % of 5 items), goes last
    assert len(set(got)) == 3
    assert [len(x) for x in s.score([ScoreRequest("x", ["A", "B", "C"])], 10)] == [2]
    assert PopularityCooccurrenceScorer(rerank=RerankParams(0.5)).score(
        [ScoreRequest("x", [])], 5
    ) == [[]]


# --- the model scorer ------------------------------------------------------------------------


def test_onnx_scorer_serves_what_eval_measures(exported_version: Path) -> None:
    on = load_settings(device="cpu", diversity=0.4, long_tail=0.5, rerank_pool=20)
    off = load_settings(device="cpu", diversity=0.0, long_tail=0.0)
    scorer = OnnxScorer(exported_version, on)
    plain = OnnxScorer(exported_version, off)
    reqs = [ScoreRequest("u1", ["3", "4", "5"]), ScoreRequest("u2", ["10", "11"], frozenset("1"))]
    served = scorer.score(reqs, 5)
    unit, head = scorer.rerank_inputs()
    scores = scorer.score_matrix([r.history for r in reqs])
    for row, req in enumerate(reqs):
        for iid in [*req.history, *req.exclude]:
            scores[row, scorer.index[iid]] = -np.inf
    want = top_reranked(scores, unit, head, 5, scorer.rerank_params)
    for row, items in enumerate(served):
        assert [scorer.index[x.item_id] for x in items] == want[row].tolist()
        assert not {x.item_id for x in items} & {*reqs[row].history, *reqs[row].exclude}
    assert [x.item_id for x in plain.score(reqs, 5)[0]] != [x.item_id for x in served[0]]
    assert plain.rerank_params == RerankParams(0.0, 0.0, 50)
