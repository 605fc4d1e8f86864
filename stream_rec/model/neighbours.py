"""Item neighbours blended into the two-tower score.

The user tower reads a long window; what the user did in the last few steps is often said best
by plain item-to-item statistics of the version's training sequences. Two of them:

* **co-occurrence** (``sim``, symmetric): cosine similarity of user co-occurrence — items the same
  users interacted with, in any order (the ItemKNN baseline's similarity);
* **transitions** (``trans``, directed): how often item ``b`` came within ``TRANS_WINDOW`` steps
  after item ``a`` in a user's sequence (a step ``k`` apart counts ``1/k``), divided by
  ``sqrt((n_a + 1)(n_b + 1))`` with ``n`` the items' interaction counts — what users go on to
  next, which the symmetric statistic cannot say.

A user's part of each is the sum of the rows of the last ``last`` history items, the newest
weighted 1 and each older one ``decay`` times the one after it. The served score is

    z(two-tower) + weight * z(co-occurrence part) + trans_weight * z(transition part)

with ``z`` standardising each user's row over the catalogue, so the weights do not depend on the
scale of any part (with both weights 0 the served score is ``z(two-tower)``: same ranking).
This module fits and stores the matrices and lays out what scoring reads (:meth:`recent`,
:meth:`stacked`); the score itself is computed by
:func:`stream_rec.model.ranking.served_scores` (torch) and by the ONNX runtime's serving graph
(:func:`stream_rec.model.ort_graph.serving_graph`), checked equal by the tests.
``last``, ``decay`` and the two weights are chosen on the validation targets at training time
(:func:`stream_rec.model.train.fit_neighbour_blend`) and live in the model config
(``knn_last``, ``knn_decay``, ``knn_weight``, ``trans_weight``); the matrices live in the
version folder (``neighbours.npy``, ``transitions.npy``).

An item without interactions (held out of training, or added from the stream) has no row or
column: no evidence either way, so its neighbour parts are its own two-tower part.

The matrices are dense (items × items float32: 11 MB each for MovieLens-100K's 1,682 items,
400 MB at 10,000): right for catalogues of a few thousand items. Keeping only each item's top-k
co-occurrence neighbours cost validation NDCG@10 here (k = 100: 0.1194 against 0.1224 dense),
so a large catalogue would need sparse top-k lists with a larger k, not these matrices.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from stream_rec.eval.baselines import cooccurrence_cosine

STANDARDISE_EPS = 1e-18
"""``z`` is a layer norm without scale or shift; this is added to the variance, so a constant
row (variance 0) stays all zeros."""

LASTS = ((1, 1.0), (5, 0.7), (10, 0.7))
"""(last, decay) pairs the validation fit tries."""
WEIGHTS = (0.0, 0.25, 0.5, 0.75)
"""Co-occurrence weights the validation fit tries."""
TRANS_WEIGHTS = (0.0, 0.25, 0.4, 0.6)
"""Transition weights the validation fit tries."""
TRANS_WINDOW = 20
FILE = "neighbours.npy"
TRANS_FILE = "transitions.npy"


class BlendParams(NamedTuple):
    last: int = 0
    decay: float = 1.0
    weight: float = 0.0
    trans_weight: float = 0.0

    @property
    def on(self) -> bool:
        return self.last > 0 and (self.weight > 0 or self.trans_weight > 0)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> BlendParams:
        """From a model config (versions written before the transition part read as
        co-occurrence only, undecayed)."""
        return cls(
            int(cfg.get("knn_last", 0)),
            float(cfg.get("knn_decay", 1.0)),
            float(cfg.get("knn_weight", 0.0)),
            float(cfg.get("trans_weight", 0.0)),
        )


def transitions(
    seqs: Sequence[Sequence[int]], n_items: int, window: int = TRANS_WINDOW
) -> np.ndarray:
    """[n_items, n_items] float32 directed transition strength (see the module docstring)."""
    arrays = [np.asarray(s, dtype=np.int64) for s in seqs if len(s) > 1]
    counts = np.zeros(n_items, dtype=np.float64)
    for s in arrays:
        np.add.at(counts, s, 1.0)
    out = np.zeros((n_items, n_items), dtype=np.float64)
    for k in range(1, window + 1):
        pairs = [(s[:-k], s[k:]) for s in arrays if len(s) > k]
        if not pairs:
            break
        a = np.concatenate([p[0] for p in pairs])
        b = np.concatenate([p[1] for p in pairs])
        np.add.at(out, (a, b), 1.0 / k)
    deg = np.sqrt(counts + 1.0)
    out /= deg[:, None] * deg[None, :]
    np.fill_diagonal(out, 0.0)
    return out.astype(np.float32)


@dataclass
class Neighbours:
    sim: np.ndarray
    """[n_items, n_items] float32 cosine similarity of user co-occurrence, 0 on the diagonal."""
    trans: np.ndarray | None = None
    """[n_items, n_items] float32 directed transitions (:func:`transitions`); None in versions
    written before it existed."""

    @property
    def n_items(self) -> int:
        return int(self.sim.shape[0])

    @classmethod
    def fit(cls, seqs: Sequence[Sequence[int]], n_items: int) -> Neighbours:
        """Both statistics over the version's training sequences (the co-occurrence is the
        ItemKNN baseline's similarity)."""
        sim, _ = cooccurrence_cosine(seqs, n_items)
        return cls(sim.astype(np.float32), transitions(seqs, n_items))

    @functools.cached_property
    def _has_statistics(self) -> np.ndarray:
        has = self.sim.any(axis=1)
        if self.trans is not None:
            has = has | self.trans.any(axis=1) | self.trans.any(axis=0)
        return np.asarray(has)

    def has_statistics(self) -> np.ndarray:
        """[n_items] bool: items with a row or column in either matrix (interactions in the
        fitted sequences). An item without (held out, or first seen after the fit) gets its
        own two-tower part in place of its neighbour parts at serving. Computed once (the
        matrices of a version never change; a scorer asks again at every catalogue change)."""
        return self._has_statistics

    def without_statistics(self, n_items: int) -> np.ndarray:
        """[n_items] bool for a catalogue of ``n_items`` (rows beyond the fit included):
        True where :meth:`has_statistics` is not."""
        out = np.ones(n_items, dtype=bool)
        k = min(n_items, self.n_items)
        out[:k] = ~self.has_statistics()[:k]
        return out

    def own_part(self, text_only: np.ndarray) -> np.ndarray:
        """[n_items] bool: the items whose neighbour parts are their own two-tower part in the
        blend: those without an ID part (``text_only``) and those without statistics (their
        interactions came after the fit, in fine-tunes). Torch and ONNX Runtime both use it."""
        return np.asarray(text_only, dtype=bool) | self.without_statistics(len(text_only))

    def matrices(self, params: BlendParams) -> tuple[list[np.ndarray], list[float]]:
        """The matrices the blend uses (weight above 0) and their weights."""
        pairs = [(self.sim, params.weight), (self.trans, params.trans_weight)]
        used = [(m, w) for m, w in pairs if m is not None and w > 0]
        return [m for m, _ in used], [w for _, w in used]

    def stacked(
        self, matrices: Sequence[np.ndarray], n_items: int, rows: int | None = None
    ) -> np.ndarray:
        """``matrices`` side by side, each padded with zero columns to ``n_items`` (items added
        after the fit): [rows, len(matrices) * n_items] float32 (``rows`` ≥ the fit's items,
        zero beyond them; default: the fit's items), the input the serving graph and the torch
        ranker gather history rows from."""
        n = self.n_items
        out = np.zeros((max(rows or n, n), len(matrices) * n_items), dtype=np.float32)
        for k, m in enumerate(matrices):
            out[:n, k * n_items : k * n_items + min(n, n_items)] = m[:, :n_items]
        return out

    def recent(
        self, histories: Sequence[Sequence[int]], last: int, decay: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Row indices [users, last] and weights of each history's last ``last`` items: the
        newest 1, each older one ``decay`` times the next; padding and items outside the fitted
        catalogue (added later: no row) weigh 0."""
        n = self.n_items
        idx = np.zeros((len(histories), max(last, 1)), dtype=np.int64)
        w = np.zeros(idx.shape, dtype=np.float32)
        for row, h in enumerate(histories):
            for age, i in enumerate(reversed(list(h)[-last:])):
                if 0 <= i < n:
                    idx[row, age] = i
                    w[row, age] = decay**age
        return idx, w

    def save(self, folder: Path) -> None:
        np.save(Path(folder) / FILE, self.sim)
        if self.trans is not None:
            np.save(Path(folder) / TRANS_FILE, self.trans)

    @classmethod
    def load(cls, folder: Path) -> Neighbours | None:
        path, tpath = Path(folder) / FILE, Path(folder) / TRANS_FILE
        if not path.is_file():
            return None
        trans = np.load(tpath).astype(np.float32) if tpath.is_file() else None
        return cls(np.load(path).astype(np.float32), trans)
