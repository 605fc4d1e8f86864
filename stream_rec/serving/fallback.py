"""Popularity + item co-occurrence scorer, learned from the behaviour stream itself.

The scorer the pipeline serves before any trained model exists, and the cold-start fallback
after: it needs no training run. ``observe`` counts item popularity and "watched B after A"
pairs over each user's last few items; ``score`` sums the co-occurrence of the user's recent
items (normalised by the candidate's popularity, as item-kNN does) and falls back to popularity
for users with no history. Counts are a per-worker cache derived from the stream, not state of
record: a restarted worker relearns them as events flow.
"""

from __future__ import annotations

import heapq
import math
import threading
from collections import Counter
from collections.abc import Iterable, Sequence

from stream_rec.serving.scorer import CatalogItem, ScoredItem, ScoreRequest

_WINDOW = 5  # how many previous items co-occur with a new one
_MAX_NEIGHBOURS = 200  # per item; the weakest half is pruned beyond twice this


class PopularityCooccurrenceScorer:
    """A real, simple scorer: popularity + co-occurrence counts from the stream."""

    def __init__(self, version: str = "fallback-cooc-1") -> None:
        self._version = version
        self._titles: dict[str, str] = {}
        self._pop: Counter[str] = Counter()
        self._co: dict[str, Counter[str]] = {}
        self._lock = threading.Lock()  # observe() runs on the loop, score() in a thread

    @property
    def version(self) -> str:
        return self._version

    @property
    def n_items(self) -> int:
        return len(self._titles)

    def upsert_items(self, items: Iterable[CatalogItem]) -> None:
        with self._lock:
            for it in items:
                self._titles[it.item_id] = it.title

    def observe(self, user_id: str, history: Sequence[str], item_id: str, event: str) -> None:
        if event == "forget" or not item_id:
            return
        with self._lock:
            self._pop[item_id] += 1
            for prev in history[-_WINDOW:]:
                if prev == item_id:
                    continue
                for a, b in ((prev, item_id), (item_id, prev)):
                    nb = self._co.setdefault(a, Counter())
                    nb[b] += 1
                    if len(nb) > 2 * _MAX_NEIGHBOURS:
                        self._co[a] = Counter(dict(nb.most_common(_MAX_NEIGHBOURS)))

    def score(self, requests: Sequence[ScoreRequest], k: int) -> list[list[ScoredItem]]:
        with self._lock:
            return [self._score_one(r, k) for r in requests]

    def _popular(self, k: int, exclude: frozenset[str]) -> list[ScoredItem]:
        """Catalogue items by observed count; never-observed (cold) items after them."""
        total = sum(self._pop.values()) or 1
        ranked = heapq.nlargest(
            k,
            (iid for iid in self._titles if iid not in exclude),
            key=lambda iid: (self._pop.get(iid, 0), iid),
        )
        return [
            ScoredItem(iid, self._pop[iid] / total, "popular now")
            if self._pop.get(iid)
            else ScoredItem(iid, 0.0, "new in the catalogue")
            for iid in ranked
        ]

    def _score_one(self, req: ScoreRequest, k: int) -> list[ScoredItem]:
        exclude = req.exclude | frozenset(req.history)
        recent = list(req.history[-_WINDOW:])
        scores: dict[str, float] = {}
        best_src: dict[str, tuple[float, str]] = {}
        for pos, src in enumerate(recent):
            weight = 0.5 ** (len(recent) - 1 - pos)  # the latest item counts most
            for cand, c in self._co.get(src, Counter()).items():
                if cand in exclude or cand not in self._titles:
                    continue
                s = weight * c / math.sqrt(self._pop[cand] or 1)
                scores[cand] = scores.get(cand, 0.0) + s
                if s > best_src.get(cand, (0.0, ""))[0]:
                    best_src[cand] = (s, src)
        top = heapq.nlargest(k, scores.items(), key=lambda kv: (kv[1], kv[0]))
        out = [
            ScoredItem(
                iid,
                float(s),
                f"because you watched {self._titles.get(best_src[iid][1], best_src[iid][1])}",
            )
            for iid, s in top
        ]
        if len(out) < k:
            have = exclude | {x.item_id for x in out}
            out.extend(self._popular(k - len(out), frozenset(have)))
        return out
