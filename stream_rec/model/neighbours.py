"""Item neighbours blended into the two-tower score.

The user tower reads a long window; what the user did in the last few steps is often said best
by plain item-to-item co-occurrence: cosine similarity of user co-occurrence over the version's
training sequences; a user's neighbour score is the sum of the similarity rows of the last
``last`` items of the history. The served score is

    z(two-tower score) + weight * z(neighbour score)

with ``z`` standardising each user's row over the catalogue, so the weight does not depend on the
scale of either part (with weight 0 the served score is ``z(two-tower score)``: same ranking).
``last`` and ``weight`` are chosen on the validation targets at training
time (``weight`` 0 = the two-tower score alone) and live in the model config
(``knn_last``/``knn_weight``); the similarity matrix lives in the version folder
(``neighbours.npy``). Items added after the fit have no row or column and score 0 there.

The matrix is dense (items × items float32: 11 MB for MovieLens-100K's 1,682 items, 400 MB at
10,000): right for catalogues of a few thousand items. Keeping only each item's top-k neighbours
cost validation NDCG@10 here (k = 100: 0.1194 against 0.1224 dense), so a large catalogue would
need sparse top-k lists with a larger k, not this matrix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stream_rec.eval.baselines import cooccurrence_cosine

LASTS = (1, 3, 5)
WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
FILE = "neighbours.npy"


@dataclass
class Neighbours:
    sim: np.ndarray
    """[n_items, n_items] float32 cosine similarity of user co-occurrence, 0 on the diagonal."""

    @property
    def n_items(self) -> int:
        return int(self.sim.shape[0])

    @classmethod
    def fit(cls, seqs: Sequence[Sequence[int]], n_items: int) -> Neighbours:
        """The same similarity as the ItemKNN baseline, over the version's training sequences."""
        sim, _ = cooccurrence_cosine(seqs, n_items)
        return cls(sim.astype(np.float32))

    def scores(self, histories: Sequence[Sequence[int]], last: int, n_items: int) -> np.ndarray:
        """[len(histories), n_items] neighbour scores: the similarity rows of the last ``last``
        items of each history, summed. Items outside the fitted catalogue (added later) have
        no row and no column: they add nothing and score 0."""
        n = self.n_items
        idx = np.zeros((len(histories), max(last, 1)), dtype=np.int64)
        valid = np.zeros(idx.shape, dtype=bool)
        for row, h in enumerate(histories):
            recent = [i for i in list(h)[-last:] if 0 <= i < n]
            idx[row, : len(recent)] = recent
            valid[row, : len(recent)] = True
        rows = self.sim[idx]  # [users, last, n]
        rows[~valid] = 0.0
        near: np.ndarray = rows.sum(axis=1)
        if n_items > n:
            near = np.pad(near, ((0, 0), (0, n_items - n)))
        return near[:, :n_items]

    def save(self, folder: Path) -> None:
        np.save(Path(folder) / FILE, self.sim)

    @classmethod
    def load(cls, folder: Path) -> Neighbours | None:
        path = Path(folder) / FILE
        return cls(np.load(path).astype(np.float32)) if path.is_file() else None


def standardise(scores: np.ndarray) -> np.ndarray:
    """Each row to mean 0, standard deviation 1 over the catalogue."""
    mean = scores.mean(axis=1, keepdims=True)
    std = scores.std(axis=1, keepdims=True)
    out: np.ndarray = (scores - mean) / np.maximum(std, 1e-9)
    return out


def blend(
    two_tower: np.ndarray,
    neighbour: np.ndarray | None,
    weight: float,
    new: np.ndarray | None = None,
) -> np.ndarray:
    """The served score: ``z(two_tower) + weight * z(neighbour)``; ``z(two_tower)`` alone when
    the weight is 0 (same ranking as the raw score, and the units the new-item offset of
    :mod:`stream_rec.model.calibrate` is fitted in).

    ``new`` marks items without interactions: they have no co-occurrence evidence at all (not
    evidence of no co-occurrence), so their neighbour part is the two-tower part instead of the
    zero the matrix holds; otherwise a new item would trail every warm item by the neighbour
    weight and never be shown (on the 10 % cold split: cold HR@10 0.0 without this)."""
    out = standardise(two_tower)
    if weight and neighbour is not None:
        near = standardise(neighbour)
        if new is not None and new.any():
            near = np.where(new[None, :], out, near)
        out = out + np.float32(weight) * near
    return out.astype(np.float32, copy=False)


def served(
    raw: np.ndarray,
    histories: Sequence[Sequence[int]],
    neighbours: Neighbours | None,
    last: int,
    weight: float,
    new: np.ndarray,
    new_item_offset: float,
) -> np.ndarray:
    """Raw two-tower scores [users, items] → served scores: the blend, then the new-item offset
    of :mod:`stream_rec.model.calibrate` on ``new`` items. The one definition the torch ranker and
    the ONNX runtime share."""
    near = None
    if weight and neighbours is not None:
        near = neighbours.scores(histories, last, raw.shape[1])
    out = blend(raw, near, weight, new)
    if new_item_offset:
        out[:, new] += np.float32(new_item_offset)
    return out
