"""Figures beyond accuracy (stream_rec.eval.beyond) and the protocol's re-ranking hook."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from stream_rec.data.frame import Dataset, Interaction
from stream_rec.data.movielens import movielens_item
from stream_rec.eval import beyond
from stream_rec.eval.protocol import (
    evaluate,
    list_ranks,
    make_split,
    metrics_from_ranks,
    rank_topk,
    target_ranks,
)


def test_head_items_and_shares() -> None:
    counts = np.array([50.0, 0.0, 30.0, 10.0, 10.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    head = beyond.head_items(counts)  # 20 % of 10 = the 2 most popular
    assert head.tolist() == [True, False, True] + [False] * 7
    assert beyond.tail_interaction_share(counts, head) == pytest.approx(20 / 100)
    lists = np.array([[0, 2, 3], [0, 4, 5]])
    assert beyond.tail_slot_share(lists, head) == pytest.approx(3 / 6)
    assert beyond.coverage(lists, 10) == pytest.approx(5 / 10)
    ties = beyond.head_items(np.array([1.0, 1.0, 1.0, 1.0, 1.0]))
    assert ties.tolist() == [True, False, False, False, False]


def test_intra_list_distance_and_genres() -> None:
    vecs = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0]])
    assert beyond.intra_list_distance(np.array([[0, 1]]), vecs) == pytest.approx(0.0)
    assert beyond.intra_list_distance(np.array([[0, 2]]), vecs) == pytest.approx(1.0)
    # a list of three: pairs (0,1)=0, (0,2)=1, (1,2)=1 → 2/3; two lists average
    got = beyond.intra_list_distance(np.array([[0, 1, 2], [0, 2, 1]]), vecs)
    assert got == pytest.approx(2 / 3)
    genres = [frozenset({"A"}), frozenset({"A", "B"}), frozenset()]
    assert beyond.distinct_genres(np.array([[0, 1], [0, 2]]), genres) == pytest.approx(1.5)


def test_precision_counts_recommended_items_among_the_next_interactions() -> None:
    lists = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    nexts = [[2, 9, 4], [0]]
    assert beyond.precision_at_k(lists, nexts) == pytest.approx((2 / 4 + 0 / 4) / 2)


def _timed_dataset() -> Dataset:
    items = {str(i): movielens_item(str(i), f"t{i}", 1990, ("Drama",)) for i in range(1, 8)}
    rows = [
        ("u1", "1", 1.0), ("u1", "2", 2.0), ("u1", "3", 5.0), ("u1", "4", 6.0),
        ("u2", "5", 6.0), ("u2", "6", 7.0),  # nothing before the cutoff
        ("u3", "7", 1.0), ("u3", "1", 2.0),  # nothing after it
    ]  # fmt: skip
    inter = [Interaction(u, i, "view", None, ts) for u, i, ts in rows]
    return Dataset("timed", items, inter)


def test_chronological_split() -> None:
    ds = _timed_dataset()
    split = make_split(ds)
    chrono = beyond.chronological_split(ds, split.index, cutoff=4.0, n_next=1)
    idx = split.index
    assert chrono.cutoff == 4.0
    assert chrono.histories == [[idx["1"], idx["2"]]]
    assert chrono.nexts == [[idx["3"]]]
    auto = beyond.chronological_split(ds, split.index)
    assert auto.cutoff == pytest.approx(np.quantile([x.ts for x in ds.interactions], 0.8))


def test_list_ranks_read_the_served_list() -> None:
    scores = np.array([[5.0, 4.0, 3.0, 2.0, 1.0]] * 3)
    targets = np.array([2, 4, 0])
    top = np.array([[2, 0], [1, 0], [1, 3]])
    # in the list: its place; outside: max(full rank, list length)
    assert list_ranks(top, scores, targets).tolist() == [0, 4, 2]
    ident = rank_topk(scores, 5)
    assert list_ranks(ident, scores, targets).tolist() == target_ranks(scores, targets).tolist()


class _Fixed:
    """A ranker with a fixed random score table."""

    def __init__(self, n_items: int) -> None:
        self.table = np.random.default_rng(0).normal(size=(500, n_items))
        self.calls = 0

    def score(self, histories: Any) -> np.ndarray:
        out = self.table[self.calls : self.calls + len(histories)]
        self.calls += len(histories)
        return out


def test_evaluate_with_the_identity_rerank_is_the_protocol(planted: Dataset) -> None:
    split = make_split(planted)
    plain, dump_plain = evaluate(_Fixed(split.n_items), split, dump_k=20)
    hooked, dump_hooked = evaluate(
        _Fixed(split.n_items), split, dump_k=20, rerank=lambda s: rank_topk(s, 20)
    )
    assert hooked == plain
    assert dump_hooked == dump_plain


def test_exposure_figures_and_sweep(planted: Dataset, planted_text_vectors: Any) -> None:
    split = make_split(planted)
    exposed = beyond.score_exposure(_Fixed(split.n_items), split, planted, planted_text_vectors)
    plain = exposed.figures(lambda s, k: rank_topk(s, k))
    m = evaluate(_Fixed(split.n_items), split)[0]
    assert (plain.hr10, plain.ndcg10) == pytest.approx((m.hr10, m.ndcg10))
    assert plain.users == len(split.user_ids)
    assert 0 < plain.coverage10 <= 1 and 0 <= plain.tail_slots <= 1

    def served(d: float, t: float) -> Any:
        # a stand-in re-ranker whose knob pushes the lists to the least popular items
        counts = exposed.counts

        def lists(s: np.ndarray, k: int) -> np.ndarray:
            return rank_topk(s - t * 100 * np.log1p(counts), k)

        return lists

    rows = beyond.sweep(exposed, served, diversity=(0.0,), long_tail=(0.0, 1.0))
    assert rows[0][2] == plain
    assert rows[1][2].tail_slots > plain.tail_slots
    best = beyond.pick(rows)
    ok = [r for r in rows if r[2].tail_slots >= r[2].tail_interactions]
    ok = [r for r in ok if r[2].ndcg10 >= 0.98 * plain.ndcg10]
    assert best == (max(ok, key=lambda r: (r[2].ild, r[2].ndcg10)) if ok else None)
    assert metrics_from_ranks([0, 30]).hr10 == 0.5
