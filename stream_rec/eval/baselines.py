"""Baselines ranked by the same evaluator as the model: MostPopular and ItemKNN (co-occurrence).

Both learn only from the training sequences of a split (cold items already removed there).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class MostPopular:
    """Score = number of training interactions of the item."""

    def __init__(self, train: Sequence[Sequence[int]], n_items: int) -> None:
        counts = np.zeros(n_items, dtype=np.float64)
        for seq in train:
            np.add.at(counts, np.asarray(seq, dtype=np.int64), 1.0)
        self.counts = counts

    def score(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        return np.tile(self.counts, (len(histories), 1))


def cooccurrence_cosine(
    train: Sequence[Sequence[int]], n_items: int
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarity of user co-occurrence ([n_items, n_items] float32, 0 on the diagonal)
    and the number of users per item."""
    x = np.zeros((len(train), n_items), dtype=np.float32)
    for u, seq in enumerate(train):
        if len(seq):
            x[u, np.asarray(seq, dtype=np.int64)] = 1.0
    co = x.T @ x
    users_per_item = np.diag(co).copy()
    deg = np.sqrt(np.maximum(users_per_item, 1.0))
    sim = co / deg[:, None] / deg[None, :]
    np.fill_diagonal(sim, 0.0)
    return sim, users_per_item


class ItemKNN:
    """Cosine item-item similarity of user co-occurrence, summed over the last ``last`` items.

    Popularity (scaled far below one similarity step) breaks ties, so users whose recent items
    have few neighbours still get a sensible tail.
    """

    def __init__(self, train: Sequence[Sequence[int]], n_items: int, last: int = 5) -> None:
        sim, users_per_item = cooccurrence_cosine(train, n_items)
        self.sim = sim.astype(np.float64)
        pop = users_per_item.astype(np.float64)
        self.tiebreak = 1e-6 * pop / max(float(pop.max()), 1.0)
        self.last = last

    def score(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        out = np.tile(self.tiebreak, (len(histories), 1))
        for row, h in enumerate(histories):
            recent = np.asarray(list(h)[-self.last :], dtype=np.int64)
            if len(recent):
                out[row] += self.sim[recent].sum(axis=0)
        return out
