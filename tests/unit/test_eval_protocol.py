"""The offline protocol on hand-computed examples: split, exclusion, ties, metrics, dump."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from stream_rec.data.frame import Dataset, Interaction
from stream_rec.data.movielens import movielens_item
from stream_rec.eval.baselines import ItemKNN, MostPopular
from stream_rec.eval.protocol import (
    evaluate,
    make_split,
    metrics_from_ranks,
    rank_topk,
    select_cold_items,
    standard_errors,
    write_topk,
)


def _ds(seqs: dict[str, list[tuple[str, int]]], n_items: int = 5) -> Dataset:
    items = {str(i): movielens_item(str(i), f"m{i}", None, ()) for i in range(1, n_items + 1)}
    inter = [Interaction(u, i, "rate", 4.0, ts) for u, s in seqs.items() for i, ts in s]
    return Dataset("hand", items, inter)


class Fixed:
    def __init__(self, row: Sequence[float]) -> None:
        self.row = np.asarray(row, dtype=np.float64)

    def score(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        return np.tile(self.row, (len(histories), 1))


def test_split_orders_ties_by_numeric_item_id() -> None:
    ds = _ds({"7": [("10", 5), ("9", 5), ("3", 1), ("2", 5)]}, n_items=10)
    split = make_split(ds)
    assert [split.item_ids[i] for i in split.histories[0]] == ["3", "2", "9", "10"]
    assert split.item_ids[split.target(0, "test")] == "10"
    assert split.item_ids[split.target(0, "valid")] == "9"
    assert [split.item_ids[i] for i in split.history(0, "test")] == ["3", "2", "9"]
    assert [split.item_ids[i] for i in split.training_sequences()[0]] == ["3", "2"]


def test_hand_computed_metrics_with_history_exclusion() -> None:
    # A: 1,2,3,4 → target 4, history {1,2,3}; B: 5,1,2 → target 2, history {5,1}
    ds = _ds({"A": [("1", 1), ("2", 2), ("3", 3), ("4", 4)], "B": [("5", 1), ("1", 2), ("2", 3)]})
    split = make_split(ds)
    m, top = evaluate(Fixed([0.1, 0.2, 0.3, 0.4, 0.5]), split, "test", dump_k=3)
    # A: candidates 4 (0.4), 5 (0.5) → rank 1; B: candidates 2, 3, 4 → target 2 rank 2
    assert m.users == 2
    assert m.hr10 == 1.0 and m.hr20 == 1.0
    assert m.ndcg10 == pytest.approx((1 / math.log2(3) + 1 / math.log2(4)) / 2)
    assert m.mrr10 == pytest.approx((1 / 2 + 1 / 3) / 2)
    assert [[split.item_ids[i] for i in t][:2] for t in top] == [["5", "4"], ["4", "3"]]


def test_ties_rank_by_item_index() -> None:
    ds = _ds({"A": [("5", 1), ("1", 2), ("3", 3)]})
    split = make_split(ds)
    m, _ = evaluate(Fixed([1.0] * 5), split, "test")
    # history {5,1}; candidates 2,3,4 tie → target 3 is behind 2 → rank 1
    assert m.mrr10 == pytest.approx(0.5)
    assert rank_topk(np.array([[1.0, 2.0, 2.0, 0.0]]), 3).tolist() == [[1, 2, 0]]


def test_metrics_from_ranks_cutoffs() -> None:
    m = metrics_from_ranks([0, 9, 10, 19, 20])
    assert m.hr10 == pytest.approx(2 / 5)
    assert m.hr20 == pytest.approx(4 / 5)
    assert m.ndcg10 == pytest.approx((1 + 1 / math.log2(11)) / 5)
    assert m.ndcg20 == pytest.approx(
        (1 + 1 / math.log2(11) + 1 / math.log2(12) + 1 / math.log2(21)) / 5
    )
    assert m.mrr10 == pytest.approx((1 + 1 / 10) / 5)


def test_standard_errors_over_users() -> None:
    ranks = [0, 9, 10, 19, 20]
    m = metrics_from_ranks(ranks)
    hits = np.array([1.0, 1.0, 0.0, 0.0, 0.0])  # HR@10 per user
    assert m.se["hr10"] == pytest.approx(hits.std(ddof=1) / math.sqrt(5))
    mrr = np.array([1.0, 0.1, 0.0, 0.0, 0.0])
    assert m.se["mrr10"] == pytest.approx(mrr.std(ddof=1) / math.sqrt(5))
    d = m.as_dict()
    assert set(d) >= {"hr10", "hr10_se", "ndcg10_se", "hr20_se", "ndcg20_se", "mrr10_se"}
    assert "±" in m.line()
    # the same target rank for every user: no spread, no error; one user: no estimate
    assert standard_errors([3, 3, 3]) == dict.fromkeys(m.se, 0.0)
    assert standard_errors([3]) == dict.fromkeys(m.se, 0.0)


def test_baselines_on_the_same_evaluator() -> None:
    ds = _ds(
        {
            "A": [("1", 1), ("2", 2), ("3", 3), ("4", 4)],
            "B": [("1", 1), ("2", 2), ("5", 3), ("4", 4)],
            "C": [("2", 1), ("1", 2), ("4", 3), ("3", 4)],
        }
    )
    split = make_split(ds)
    pop = MostPopular(split.training_sequences(), split.n_items)
    assert pop.counts.tolist() == [3, 3, 0, 0, 0]
    knn = ItemKNN(split.training_sequences(), split.n_items, last=5)
    s = knn.score([[0]])[0]
    assert s.argmax() == 1  # item 2 co-occurs with item 1 in every training history
    m, _ = evaluate(knn, split, "test")
    assert m.users == 3


def test_cold_items_by_fraction_and_file(tmp_path: Path) -> None:
    ids = [str(i) for i in range(1, 101)]
    a = select_cold_items(ids, 0.1, seed=3)
    assert len(a) == 10 and a == select_cold_items(ids, 0.1, seed=3)
    assert a != select_cold_items(ids, 0.1, seed=4)
    f = tmp_path / "cold.txt"
    f.write_text("5\n7\n")
    assert select_cold_items(ids, file=f) == ["5", "7"]
    f.write_text('["8", "9"]')
    assert select_cold_items(ids, file=f) == ["8", "9"]
    with pytest.raises(ValueError):
        select_cold_items(ids, 1.5)


def test_cold_users_and_dump_covers_everyone(tmp_path: Path) -> None:
    ds = _ds({"A": [("1", 1), ("2", 2), ("3", 3)], "B": [("1", 1), ("2", 2), ("4", 3)]})
    split = make_split(ds, ["4"])
    assert split.cold_users() == [1]
    assert all(split.index["4"] not in s for s in split.training_sequences(True))
    m, top = evaluate(
        Fixed([0.5, 0.4, 0.3, 0.2, 0.1]), split, "test", split.cold_users(), dump_k=20
    )
    assert m.users == 1
    out = tmp_path / "top.jsonl"
    write_topk(out, split, top, "test")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["user_id"] for r in rows] == ["A", "B"]
    assert rows[1]["items"] == ["3", "4", "5"]  # all not-seen items, best first (k capped)
