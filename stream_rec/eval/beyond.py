"""Figures beyond accuracy, beside the protocol's HR/NDCG/MRR: what the served lists expose.

Every figure reads each user's served top-10 (after the re-ranker, :mod:`stream_rec.serving.
rerank`) of the leave-one-out test stage (:mod:`stream_rec.eval.protocol`):

* **coverage@10** — distinct items over all lists / catalogue size;
* **long-tail share of slots** — share of list slots given to items outside the head (the 20 %
  most popular items by training interactions, ties by item index:
  :func:`~stream_rec.serving.rerank.head_items`, the head the re-ranker penalises), beside the
  **tail's share of interactions** (of those same training interactions);
* **intra-list diversity** — per list, the mean pairwise cosine distance (1 - cos) of the
  items' text vectors (the frozen sentence encoder's, not the model's), averaged over lists;
  and the mean number of distinct genres (attribute ``genres``, ``|``-separated) per list;
* **precision@10** in the sense of TP / (TP + FP) over 10 recommendations, on a
  chronological split: a time cutoff (the model's ``train_until_ts`` when it was trained on
  the past only, else the 0.8 quantile of interaction times); each user with interactions on
  both sides is recommended 10 items from the history before the cutoff (history items
  excluded), and TP = recommended items among the user's next 10 interactions at or after it.
  With a model trained on all data those next interactions were in its training data (the
  figure is then in-sample; ``stream-rec train --until-quantile 0.8`` makes it honest).

:func:`sweep` evaluates a grid of the re-ranker's two knobs over one scoring of every user.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from stream_rec.data.frame import Dataset
from stream_rec.eval.protocol import LeaveOneOut, Ranker, list_ranks, metrics_from_ranks
from stream_rec.serving.rerank import head_items

LIST_K = 10
NEXT_N = 10
CHRONO_QUANTILE = 0.8


def coverage(lists: np.ndarray, n_items: int) -> float:
    """Distinct items over all lists / catalogue size."""
    return float(len(np.unique(lists)) / n_items) if n_items else 0.0


def tail_slot_share(lists: np.ndarray, head: np.ndarray) -> float:
    """Share of list slots given to items outside ``head``."""
    return float(np.mean(~head[lists])) if lists.size else 0.0


def tail_interaction_share(counts: np.ndarray, head: np.ndarray) -> float:
    """Share of the interactions ``counts`` that fall on items outside ``head``."""
    total = float(np.sum(counts))
    return float(np.sum(np.asarray(counts)[~head]) / total) if total else 0.0


def intra_list_distance(lists: np.ndarray, vectors: np.ndarray) -> float:
    """Mean over lists of the mean pairwise cosine distance of the items' ``vectors``."""
    b, k = lists.shape
    if b == 0 or k < 2:
        return 0.0
    v = np.asarray(vectors, dtype=np.float64)
    unit = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    rows = unit[lists]  # [B, K, D]
    cos = np.matmul(rows, rows.transpose(0, 2, 1))
    off = (cos.sum(axis=(1, 2)) - np.trace(cos, axis1=1, axis2=2)) / (k * (k - 1))
    return float(np.mean(1.0 - off))


def distinct_genres(lists: np.ndarray, genres: Sequence[frozenset[str]]) -> float:
    """Mean number of distinct genres per list."""
    if not len(lists):
        return 0.0
    return float(np.mean([len(frozenset().union(*(genres[i] for i in row))) for row in lists]))


def precision_at_k(lists: np.ndarray, nexts: Sequence[Sequence[int]]) -> float:
    """Mean over users of |list ∩ next interactions| / list length (TP / (TP + FP))."""
    if not len(lists):
        return 0.0
    k = lists.shape[1]
    return float(
        np.mean([len(set(row.tolist()) & set(n)) / k for row, n in zip(lists, nexts, strict=True)])
    )


def item_genres(ds: Dataset, item_ids: Sequence[str]) -> list[frozenset[str]]:
    return [
        frozenset(g for g in ds.items[i].attributes.get("genres", "").split("|") if g)
        for i in item_ids
    ]


@dataclass
class ChronoSplit:
    """Each user's history before the cutoff and next ``NEXT_N`` interactions at or after it."""

    cutoff: float
    histories: list[list[int]]
    nexts: list[list[int]]


def chronological_split(
    ds: Dataset, index: dict[str, int], cutoff: float | None = None, n_next: int = NEXT_N
) -> ChronoSplit:
    """The chronological split of precision@10 (module docstring); users in protocol order."""
    if cutoff is None:
        cutoff = float(np.quantile([x.ts for x in ds.interactions], CHRONO_QUANTILE))
    hists, nexts = [], []
    for seq in ds.user_sequences().values():
        before = [index[x.item_id] for x in seq if x.ts < cutoff and x.item_id in index]
        after = [index[x.item_id] for x in seq if x.ts >= cutoff and x.item_id in index]
        if before and after:
            hists.append(before)
            nexts.append(after[:n_next])
    return ChronoSplit(cutoff, hists, nexts)


def masked_scores(
    ranker: Ranker, histories: Sequence[Sequence[int]], batch_size: int = 256
) -> np.ndarray:
    """Catalogue scores of each history, its own items at -inf (the seen filter)."""
    chunks = [
        np.array(ranker.score(histories[s : s + batch_size]), dtype=np.float64, copy=True)
        for s in range(0, len(histories), batch_size)
    ]
    scores = np.concatenate(chunks)
    for row, h in enumerate(histories):
        if h:
            scores[row, np.asarray(h, dtype=np.int64)] = -np.inf
    return scores


@dataclass
class Exposure:
    """The figures of one served configuration (module docstring)."""

    users: int
    hr10: float
    ndcg10: float
    coverage10: float
    tail_slots: float
    tail_interactions: float
    ild: float
    genres: float
    precision10: float

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


ListFn = Callable[[np.ndarray, int], np.ndarray]
"""Masked scores [B, N], k → served lists [B, k] of item indices."""


@dataclass
class Exposed:
    """Everything the figures need, scored once: the test stage and the chronological split."""

    split: LeaveOneOut
    test_scores: np.ndarray
    targets: np.ndarray
    chrono: ChronoSplit
    chrono_scores: np.ndarray
    counts: np.ndarray
    text_vectors: np.ndarray
    genres: list[frozenset[str]]

    def figures(self, served: ListFn) -> Exposure:
        top = served(self.test_scores, 2 * LIST_K)  # metrics read up to rank 20 (list_ranks)
        m = metrics_from_ranks(list_ranks(top, self.test_scores, self.targets).tolist())
        lists = top[:, :LIST_K]
        head = head_items(self.counts)
        chrono_lists = served(self.chrono_scores, LIST_K)
        return Exposure(
            users=len(lists),
            hr10=m.hr10,
            ndcg10=m.ndcg10,
            coverage10=coverage(lists, self.split.n_items),
            tail_slots=tail_slot_share(lists, head),
            tail_interactions=tail_interaction_share(self.counts, head),
            ild=intra_list_distance(lists, self.text_vectors),
            genres=distinct_genres(lists, self.genres),
            precision10=precision_at_k(chrono_lists, self.chrono.nexts),
        )


def score_exposure(
    ranker: Ranker,
    split: LeaveOneOut,
    ds: Dataset,
    text_vectors: np.ndarray,
    cutoff: float | None = None,
) -> Exposed:
    """Score every test user and every user of the chronological split once."""
    users = [u for u in range(len(split.user_ids)) if split.target(u, "test") >= 0]
    test = masked_scores(ranker, [split.history(u, "test") for u in users])
    targets = np.array([split.target(u, "test") for u in users], dtype=np.int64)
    chrono = chronological_split(ds, split.index, cutoff)
    return Exposed(
        split=split,
        test_scores=test,
        targets=targets,
        chrono=chrono,
        chrono_scores=masked_scores(ranker, chrono.histories),
        counts=split.popularity(include_valid=True),
        text_vectors=text_vectors,
        genres=item_genres(ds, split.item_ids),
    )


DIVERSITY_GRID = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
LONG_TAIL_GRID = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
NDCG_BUDGET = 0.02  # relative NDCG@10 a default may cost


def sweep(
    exposed: Exposed,
    served: Callable[[float, float], ListFn],
    diversity: Sequence[float] = DIVERSITY_GRID,
    long_tail: Sequence[float] = LONG_TAIL_GRID,
) -> list[tuple[float, float, Exposure]]:
    """The figures of every (diversity, long tail) pair; ``served(d, t)`` gives its lists."""
    return [(d, t, exposed.figures(served(d, t))) for d in diversity for t in long_tail]


def pick(rows: Sequence[tuple[float, float, Exposure]]) -> tuple[float, float, Exposure] | None:
    """The default the sweep argues for: within ``NDCG_BUDGET`` of the un-re-ranked NDCG@10
    and giving the long tail at least its share of interactions, the highest intra-list
    diversity (ties: the higher NDCG@10). None when no pair qualifies."""
    base = next(e for d, t, e in rows if d == 0.0 and t == 0.0)
    ok = [
        r
        for r in rows
        if r[2].ndcg10 >= (1.0 - NDCG_BUDGET) * base.ndcg10
        and r[2].tail_slots >= r[2].tail_interactions
    ]
    return max(ok, key=lambda r: (r[2].ild, r[2].ndcg10)) if ok else None
