"""Re-ranking after scoring: diversity (maximal marginal relevance) and long-tail exposure.

Both scorers rank the catalogue, take a candidate pool of the best ``pool`` items (seen and
excluded items already out), and hand it here; what comes back is the served top-k. Plain
numpy over the whole micro-batch at once, no Faust.

* **Long tail.** Each candidate's relevance (min-max scaled to [0, 1] within its pool) loses
  ``long_tail`` when the item is in the head: the ``HEAD_SHARE`` (20 %) most popular items of
  the catalogue (:func:`head_items`, the same head the offline figures use). A penalty on
  head membership, not on popularity itself, moves slots from the head to the tail and leaves
  the order within each of them to the scorer.
* **Diversity.** Maximal marginal relevance (Carbonell & Goldstein, 1998): the list is built
  greedily, each slot taking the candidate that maximises
  ``(1 - diversity) * relevance - diversity * max cosine to the items already chosen``
  over the scorer's item vectors.

With both knobs at 0 the pool's order is served unchanged (and the pool is not even built).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from stream_rec.settings import Settings

_NOT_A_CANDIDATE = -1e30  # below any real objective, above the -inf of chosen slots


@dataclass(frozen=True)
class RerankParams:
    """The re-ranker's knobs (``STREAM_REC_DIVERSITY``, ``_LONG_TAIL``, ``_RERANK_POOL``)."""

    diversity: float = 0.0
    long_tail: float = 0.0
    pool: int = 50

    @property
    def on(self) -> bool:
        return self.diversity > 0.0 or self.long_tail > 0.0

    @classmethod
    def from_settings(cls, settings: Settings | None) -> RerankParams:
        if settings is None:
            return cls()
        return cls(
            settings.serving.diversity, settings.serving.long_tail, settings.serving.rerank_pool
        )


def pool_size(params: RerankParams, k: int, n_items: int) -> int:
    """How many candidates a scorer ranks before re-ranking: ``k`` when re-ranking is off."""
    return min(max(k, params.pool) if params.on else k, n_items)


HEAD_SHARE = 0.2


def head_items(popularity: np.ndarray, share: float = HEAD_SHARE) -> np.ndarray:
    """Mask of the head: the ceil(``share`` x catalogue) most popular items (any monotone
    popularity measure; ties by lower row). Nothing is head while nobody interacted."""
    p = np.asarray(popularity, dtype=np.float64)
    head = np.zeros(len(p), dtype=bool)
    if p.max(initial=0.0) > 0.0:
        head[np.argsort(-p, kind="stable")[: int(np.ceil(share * len(p)))]] = True
    return head


class HeadCache:
    """:func:`head_items` as float weights, recomputed only when the popularity array is
    replaced (the scorers replace theirs, never change them in place, except the fallback's
    counts, which say when through ``stale``)."""

    def __init__(self) -> None:
        self._key: np.ndarray | None = None
        self._head = np.zeros(0, dtype=np.float32)

    def get(self, popularity: np.ndarray, stale: bool = False) -> np.ndarray:
        if stale or popularity is not self._key:
            self._head = head_items(popularity).astype(np.float32)
            self._key = popularity
        return self._head


def rerank(
    candidates: np.ndarray,
    relevance: np.ndarray,
    unit: np.ndarray,
    head: np.ndarray,
    k: int,
    params: RerankParams,
) -> np.ndarray:
    """Positions (into each pool row) of the served top-``k``, best first.

    ``candidates`` [B, P]: catalogue rows of each pool; ``relevance`` [B, P]: the scorer's
    scores of them, higher is better, -inf for a slot that is no candidate (those come last);
    ``unit`` [N, D]: unit-length item vectors; ``head`` [N]: 1 for a head item, 0 for the
    tail (:func:`head_items`). Ties keep pool order.
    """
    cand = np.asarray(candidates, dtype=np.int64)
    b, p = cand.shape
    k = min(k, p)
    if not params.on or k == 0 or b == 0:
        return np.tile(np.arange(k), (b, 1))
    rel = np.asarray(relevance, dtype=np.float32)
    valid = np.isfinite(rel)
    lam = np.float32(params.diversity)
    tail = np.float32(params.long_tail) * head[cand]
    if valid.all():  # the usual pool: every slot a candidate (fewer steps, same figures)
        lo = rel.min(axis=1, keepdims=True)
        hi = rel.max(axis=1, keepdims=True)
        base = ((1.0 - lam) * ((rel - lo) / np.where(hi > lo, hi - lo, 1.0) - tail)).astype(
            np.float32
        )
    else:
        lo = np.where(valid, rel, np.inf).min(axis=1, keepdims=True)
        hi = np.where(valid, rel, -np.inf).max(axis=1, keepdims=True)
        span = np.where(hi > lo, hi - lo, 1.0)
        lo = np.where(valid.any(axis=1, keepdims=True), lo, 0.0)
        scaled = np.where(valid, (rel - lo) / span, 0)
        base = np.where(valid, (1.0 - lam) * (scaled - tail), _NOT_A_CANDIDATE).astype(np.float32)
    if lam == 0.0:  # long tail alone: a re-sort of the pool
        return np.argsort(-base, axis=1, kind="stable")[:, :k]
    vecs = unit[cand]  # [B, P, D]
    # lam x cosine: the same products as lam x (max cosine), taken once
    sims = lam * np.matmul(vecs, vecs.transpose(0, 2, 1))  # [B, P, P]
    if b == 1:  # one request (one-event batches): plain 1-D steps, no row indexing
        return _mmr_row(base[0], sims[0], lam, k)[None, :]
    rows = np.arange(b)
    nearest = np.full((b, p), -lam, dtype=np.float32)  # lam x max cosine to the chosen
    out = np.empty((b, k), dtype=np.int64)
    for slot in range(k):
        pick = np.argmax(base - nearest, axis=1)
        out[:, slot] = pick
        base[rows, pick] = -np.inf
        np.maximum(nearest, sims[rows, pick], out=nearest)
    return out


def _mmr_row(base: np.ndarray, sims: np.ndarray, lam: np.float32, k: int) -> np.ndarray:
    """:func:`rerank`'s greedy loop for one pool: ``base`` [P] (changed in place), ``sims``
    [P, P] already times ``lam``."""
    nearest = np.full(len(base), -lam, dtype=np.float32)
    out = np.empty(k, dtype=np.int64)
    for slot in range(k):
        pick = int(np.argmax(base - nearest))
        out[slot] = pick
        base[pick] = -np.inf
        np.maximum(nearest, sims[pick], out=nearest)
    return out


def top_reranked(
    scores: np.ndarray, unit: np.ndarray, head: np.ndarray, k: int, params: RerankParams
) -> np.ndarray:
    """The served top-``k`` catalogue rows of each row of full catalogue ``scores`` [B, N]
    (-inf = seen or excluded): the pool of the best ``params.pool`` by score (ties by lower
    row, the offline protocol's order), then :func:`rerank`. The offline protocol's path; the
    scorers build their pool on their own hot path and call :func:`rerank`."""
    s = np.asarray(scores)
    top = np.argsort(-s, axis=1, kind="stable")[:, : pool_size(params, k, s.shape[1])]
    pos = rerank(top, np.take_along_axis(s, top, axis=1), unit, head, k, params)
    return np.take_along_axis(top, pos, axis=1)


ATTR_DIM = 256


def attribute_vector(attributes: Mapping[str, str], dim: int = ATTR_DIM) -> np.ndarray:
    """A unit vector of an item's attributes (each ``key=value``, values split on ``|``, hashed
    into ``dim`` slots): the item vectors of a scorer without a model (genres, year, …). An
    item without attributes gets zeros (no likeness to any other)."""
    v = np.zeros(dim, dtype=np.float32)
    for key, value in attributes.items():
        for part in str(value).split("|"):
            if part:
                v[zlib.crc32(f"{key}={part}".encode()) % dim] += 1.0
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v
