"""Popularity + item co-occurrence scorer, learned from the behaviour stream itself.

The scorer the pipeline serves before any trained model exists, and the cold-start fallback
after: it needs no training run. ``observe`` counts item popularity and "watched B after A"
pairs over each user's last few items; ``score`` sums the co-occurrence of the user's recent
items (normalised by the candidate's popularity, as item-kNN does) and falls back to popularity
for users with no history. Counts are a per-worker cache derived from the stream, not state of
record: a restarted worker relearns them as events flow.
"""

from __future__ import annotations

import math
import threading
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from stream_rec.serving.rerank import (
    ATTR_DIM,
    HEAD_SHARE,
    RerankParams,
    attribute_vector,
    rerank,
)
from stream_rec.serving.scorer import CatalogItem, ScoredItem, ScoreRequest

_WINDOW = 5  # how many previous items co-occur with a new one
_MAX_NEIGHBOURS = 200  # per item; the weakest half is pruned beyond twice this
_REFRESH_S = 1.0  # how stale a cached neighbour list may get while its counts change

_Cand = tuple[int, float, str | None, str | None]
"""A ranked candidate: catalogue row, score, and either the recent item it co-occurs with most
(its reason, "because you watched" that item) or a reason of its own."""


class PopularityCooccurrenceScorer:
    """A real, simple scorer: popularity + co-occurrence counts from the stream."""

    def __init__(
        self, version: str = "fallback-cooc-1", rerank: RerankParams | None = None
    ) -> None:
        self._version = version
        self._rerank = rerank or RerankParams()
        # Item vectors of the re-ranker's diversity: the items' attributes, hashed (no model);
        # kept only while diversity is on (catalogue x ATTR_DIM floats).
        self._attr = np.zeros((0, ATTR_DIM), dtype=np.float32)
        # The long tail's head (1.0 per head row): the first HEAD_SHARE of the popularity
        # ranking below, among items observed at least once, kept as the ranking moves.
        self._head = np.zeros(0, dtype=np.float32)
        self._titles: dict[str, str] = {}
        self._pop: Counter[str] = Counter()
        self._pop_total = 0
        # Popularity ranking of the catalogue (count, then id, both descending) as rows of
        # ``self._ids``, kept sorted as counts grow: an observation moves its item up by two
        # binary searches (re-sorting the catalogue per request cost more than the scoring).
        # Rebuilt by one lexsort when the catalogue grows.
        self._counts = np.zeros(0, dtype=np.int64)  # observed count per catalogue row
        self._count_of: list[int] = []  # the same counts as Python ints (the sort keys)
        self._id_rank: list[int] = []  # row's place in the ids' string order
        self._pop_rank: list[int] = []
        self._co: dict[str, Counter[str]] = {}
        self._index: dict[str, int] = {}  # catalogue item → row in self._ids
        self._ids: list[str] = []
        self._nb_cache: dict[str, tuple[float, np.ndarray, np.ndarray]] = {}
        self._dirty: set[str] = set()
        # observe() and score() run on the event loop or in the scoring thread (a batch's
        # cost decides), upsert_items() in another thread (the catalogue agent's executor):
        # one lock for the counts and the catalogue
        self._lock = threading.Lock()

    @property
    def version(self) -> str:
        return self._version

    @property
    def n_items(self) -> int:
        return len(self._titles)

    def upsert_items(self, items: Iterable[CatalogItem]) -> None:
        with self._lock:
            n_old = len(self._ids)
            vecs: dict[str, np.ndarray] = {}
            for it in items:
                self._titles[it.item_id] = it.title
                if self._rerank.diversity > 0:
                    vecs[it.item_id] = attribute_vector(it.attributes)
                if it.item_id not in self._index:
                    self._index[it.item_id] = len(self._ids)
                    self._ids.append(it.item_id)
                    self._dirty.update(self._co.get(it.item_id, ()))
            if len(self._ids) > n_old:
                self._count_of += [self._pop.get(i, 0) for i in self._ids[n_old:]]
                self._counts = np.array(self._count_of, dtype=np.int64)
                by_id = sorted(range(len(self._ids)), key=self._ids.__getitem__)
                id_rank = np.empty(len(self._ids), dtype=np.int64)
                id_rank[by_id] = np.arange(len(self._ids))
                self._id_rank = id_rank.tolist()
                self._pop_rank = np.lexsort((-id_rank, -self._counts)).tolist()
                top = np.asarray(self._pop_rank[: self._head_size()], dtype=np.int64)
                self._head = np.zeros(len(self._ids), dtype=np.float32)
                self._head[top] = self._counts[top] > 0
            if vecs:
                attr = np.zeros((len(self._ids), ATTR_DIM), np.float32)
                attr[: len(self._attr)] = self._attr
                for iid, v in vecs.items():
                    attr[self._index[iid]] = v
                self._attr = attr  # replaced, never changed in place

    def observe(self, user_id: str, history: Sequence[str], item_id: str, event: str) -> None:
        if event == "forget" or not item_id:
            return
        with self._lock:
            self._pop[item_id] += 1
            self._pop_total += 1
            row = self._index.get(item_id)
            if row is not None:
                self._count_up(row)
            for prev in history[-_WINDOW:]:
                if prev == item_id:
                    continue
                for a, b in ((prev, item_id), (item_id, prev)):
                    nb = self._co.setdefault(a, Counter())
                    nb[b] += 1
                    self._dirty.add(a)
                    if len(nb) > 2 * _MAX_NEIGHBOURS:
                        self._co[a] = Counter(dict(nb.most_common(_MAX_NEIGHBOURS)))

    def _count_up(self, row: int) -> None:
        """One more observation of catalogue ``row``: its count, and its place in the ranking
        (keys are unique, so the row is found by its key and moves ahead of every row that
        its new count now beats)."""
        count_of, id_rank, order = self._count_of, self._id_rank, self._pop_rank

        def key(r: int) -> tuple[int, int]:
            return -count_of[r], -id_rank[r]

        at = bisect_left(order, key(row), key=key)
        count_of[row] += 1
        self._counts[row] += 1
        to = bisect_left(order, key(row), 0, at, key=key)
        if to < at:
            del order[at]
            order.insert(to, row)
        m = self._head_size()
        if to < m:
            self._head[row] = 1.0
            if at >= m:  # it took a head place: the row it pushed out leaves the head
                self._head[order[m]] = 0.0

    def _head_size(self) -> int:
        return math.ceil(HEAD_SHARE * len(self._ids))

    def score(self, requests: Sequence[ScoreRequest], k: int) -> list[list[ScoredItem]]:
        with self._lock:
            if not self._rerank.on:
                return [self._served(self._score_one(r, k)) for r in requests]
            pools = [self._score_one(r, max(k, self._rerank.pool)) for r in requests]
            return [self._served(c) for c in self._reranked(pools, k)]

    def _served(self, cands: Sequence[_Cand]) -> list[ScoredItem]:
        """The served items of ranked candidates, with their reasons: built only for the items
        kept (a re-ranker's pool is five times longer than what it serves)."""
        ids, titles = self._ids, self._titles
        return [
            ScoredItem(ids[row], score,
                       reason if src is None else f"because you watched {titles.get(src, src)}")
            for row, score, src, reason in cands
        ]  # fmt: skip

    def _reranked(self, pools: list[list[_Cand]], k: int) -> list[list[_Cand]]:
        """Diversity and long tail over each request's candidate list (one call for the
        batch): the list's order is the relevance (its two parts, co-occurrence and
        popularity, score on different scales)."""
        width = max(map(len, pools), default=0)
        if width == 0:
            return pools
        cand = np.zeros((len(pools), width), dtype=np.int64)
        rel = np.full((len(pools), width), -np.inf, dtype=np.float32)
        for row, items in enumerate(pools):
            cand[row, : len(items)] = [x[0] for x in items]
            rel[row, : len(items)] = -np.arange(len(items), dtype=np.float32)
        pos = rerank(cand, rel, self._attr, self._head, k, self._rerank)  # no vectors read at 0
        return [
            [items[j] for j in row if j < len(items)]
            for items, row in zip(pools, pos.tolist(), strict=True)
        ]

    def _popular(self, k: int, exclude: frozenset[str]) -> list[_Cand]:
        """Catalogue items by observed count; never-observed (cold) items after them."""
        total = self._pop_total or 1
        ranked: list[int] = []
        ids = self._ids
        for row in self._pop_rank:
            if ids[row] not in exclude:
                ranked.append(row)
                if len(ranked) == k:
                    break
        counts = self._count_of
        return [
            (row, counts[row] / total, None, "popular now")
            if counts[row]
            else (row, 0.0, None, "new in the catalogue")
            for row in ranked
        ]

    def _neighbours(self, src: str, now: float) -> tuple[np.ndarray, np.ndarray]:
        """``src``'s co-occurring catalogue items and popularity-normalised weights (cached).

        Rebuilt when ``src`` gained counts and the cache is older than ``_REFRESH_S``: a
        slightly stale neighbour list is fine for a fallback and keeps scoring vectorised.
        """
        cached = self._nb_cache.get(src)
        if cached is not None and (src not in self._dirty or now - cached[0] < _REFRESH_S):
            return cached[1], cached[2]
        nb = self._co.get(src)
        index = self._index
        pairs = [(index[c], n) for c, n in nb.items() if c in index] if nb else []
        both = np.array(pairs, dtype=np.int64).reshape(len(pairs), 2)
        idx = both[:, 0]
        w = both[:, 1] / np.sqrt(np.maximum(self._counts[idx], 1))
        self._nb_cache[src] = (now, idx, w)
        self._dirty.discard(src)
        return idx, w

    def _score_one(self, req: ScoreRequest, k: int) -> list[_Cand]:
        if not req.adjust:
            return self._ranked(req, k)
        # Feedback signals: rank more candidates (and the liked items) with the adjustments
        # in units of the candidates' score spread.
        cands = {self._ids[x[0]]: x for x in self._ranked(req, k + len(req.adjust))}
        banned = req.exclude | set(req.history)
        floor = min((x[1] for x in cands.values()), default=0.0)
        for iid, a in req.adjust.items():
            if a > 0 and iid not in cands and iid in self._titles and iid not in banned:
                cands[iid] = (self._index[iid], floor, None, "you showed interest in it")
        spread = float(np.std([x[1] for x in cands.values()])) or 1.0
        adjusted = {iid: x[1] + req.adjust.get(iid, 0.0) * spread for iid, x in cands.items()}
        best = sorted(cands, key=lambda iid: (-adjusted[iid], iid))[:k]
        return [(cands[iid][0], adjusted[iid], cands[iid][2], cands[iid][3]) for iid in best]

    def _ranked(self, req: ScoreRequest, k: int) -> list[_Cand]:
        """The top ``k`` co-occurrence candidates (ties by catalogue row), then popularity.

        Array operations over the catalogue's rows: per-candidate Python ran for every item
        of every neighbour list and was most of this scorer's time (docs/hot-path.md).
        """
        if k <= 0:
            return []
        recent = list(req.history[-_WINDOW:])
        now = time.monotonic()
        parts = []
        for pos, src in enumerate(recent):
            idx, w = self._neighbours(src, now)
            if len(idx):
                parts.append((pos, idx, w * 0.5 ** (len(recent) - 1 - pos)))  # latest: most
        out: list[_Cand] = []
        index = self._index
        banned = [index[i] for i in req.exclude.union(req.history) if i in index]
        if parts:
            n = len(self._ids)
            all_idx = np.concatenate([idx for _, idx, _ in parts])
            scores = np.bincount(all_idx, weights=np.concatenate([w for _, _, w in parts]),
                                 minlength=n)  # fmt: skip
            live = np.zeros(n, dtype=bool)
            live[all_idx] = True
            live[banned] = False
            cand = np.flatnonzero(live)
            if len(cand) > k:  # every candidate scoring at least the k-th best, then exact
                kth = np.partition(scores[cand], len(cand) - k)[len(cand) - k]
                cand = cand[scores[cand] >= kth]
            top = cand[np.lexsort((cand, -scores[cand]))][:k]
            if len(top):
                # each recent item's part of each top score: the reason names the largest
                dense = np.zeros((len(recent), n))
                for pos, idx, w in parts:
                    dense[pos, idx] = w
                best = dense[:, top].argmax(axis=0)  # ties: the older item, as listed
                out = [
                    (j, s, recent[b], None)
                    for j, s, b in zip(top.tolist(), scores[top].tolist(), best.tolist(),
                                       strict=True)
                ]  # fmt: skip
        if len(out) < k:
            have = req.exclude | set(req.history) | {self._ids[x[0]] for x in out}
            out.extend(self._popular(k - len(out), frozenset(have)))
        return out
