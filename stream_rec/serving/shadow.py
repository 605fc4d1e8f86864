"""Shadow scoring: a candidate version's online hit rate beside the serving model's, on the same
live events, before the trainer promotes it.

A fine-tune that passed the trainer's offline gate is announced as the *candidate* (key
``candidate`` on the model-updates topic, :mod:`stream_rec.records`). Every worker loads it
beside the serving model (:mod:`stream_rec.agents.models`) and, for a share of behaviour events
(``STREAM_REC_SHADOW_SHARE``; chosen by the event's ``rec_id``, so a replayed event is chosen
again), scores the event's request with it too, without serving what it ranks. When that
user's next behaviour event arrives (on the same worker: a user's events stay on one
partition), both lists are judged: a **hit** when the event's item is among the list's top
:data:`HIT_K`. The counts (events judged, hits of each, and the pairs where only one of the two
hit) go into the worker's snapshot on the metrics topic (:mod:`stream_rec.agents.telemetry`);
the trainer sums the workers' latest counts and decides with :func:`verdict`. Plain Python, no
Faust; everything here runs on the worker's event loop.

A judgement waiting for the user's next event lives in memory only: a rebalance or restart
loses it, and the next candidate starts from zero.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

HIT_K = 10  # a hit: the user's next item among the list's first HIT_K
NOISE_Z = 1.96  # "worse beyond noise": McNemar's z below -NOISE_Z (two-sided 5 %)
_MAX_PENDING = 100_000  # users waiting for their next event (oldest dropped beyond)


@dataclass
class ShadowStats:
    """One worker's shadow figures for one candidate (cumulative since it was announced)."""

    candidate: str
    scored: int = 0  # events the candidate scored in shadow
    judged: int = 0  # of those, judged by the user's next event
    hits_serving: int = 0
    hits_candidate: int = 0
    only_candidate: int = 0  # the candidate hit and the serving model missed
    only_serving: int = 0  # the serving model hit and the candidate missed


class ShadowBook:
    """The candidate a worker scores in shadow, and its judgements so far."""

    def __init__(self, share: float, max_pending: int = _MAX_PENDING) -> None:
        self.share = share
        self.scorer: Any = None
        self.stats: ShadowStats | None = None
        self._cut = int(share * 2**32)
        self._pending: OrderedDict[str, tuple[frozenset[str], frozenset[str]]] = OrderedDict()
        self._max_pending = max_pending

    @property
    def version(self) -> str | None:
        return self.stats.candidate if self.stats is not None else None

    @property
    def active(self) -> bool:
        return self.scorer is not None

    def start(self, scorer: Any) -> None:
        """Shadow-score with ``scorer`` from now on (figures from zero)."""
        self.scorer = scorer
        self.stats = ShadowStats(scorer.version)
        self._pending.clear()

    def stop(self) -> Any:
        """No candidate any more; returns the scorer it had (None if none)."""
        scorer, self.scorer, self.stats = self.scorer, None, None
        self._pending.clear()
        return scorer

    def chosen(self, rec_id: str) -> bool:
        """Whether the event of ``rec_id`` (a uuid's hex) is scored in shadow too."""
        return self.active and int(rec_id[:8], 16) < self._cut

    def judge(self, user_id: str, item_id: str) -> None:
        """The user's next event: judge the lists waiting for it, if any."""
        lists = self._pending.pop(user_id, None)
        if lists is None or self.stats is None:
            return
        serving, candidate = item_id in lists[0], item_id in lists[1]
        s = self.stats
        s.judged += 1
        s.hits_serving += serving
        s.hits_candidate += candidate
        s.only_candidate += candidate and not serving
        s.only_serving += serving and not candidate

    def remember(self, user_id: str, served: Sequence[str], candidate: Sequence[str]) -> None:
        """Both lists of one event, to be judged by the user's next event."""
        if self.stats is None:
            return
        self.stats.scored += 1
        self._pending[user_id] = (frozenset(served[:HIT_K]), frozenset(candidate[:HIT_K]))
        self._pending.move_to_end(user_id)
        while len(self._pending) > self._max_pending:
            self._pending.popitem(last=False)

    def snapshot(self) -> dict[str, Any] | None:
        return asdict(self.stats) if self.stats is not None else None


def verdict(
    per_worker: Iterable[Mapping[str, Any]], min_events: int, z: float = NOISE_Z
) -> tuple[str, dict[str, Any]]:
    """``wait``, ``promote`` or ``refuse`` from the workers' latest shadow figures of one
    candidate, and the summed figures.

    Waits until ``min_events`` events are judged in all. Then the candidate is refused when it
    is worse beyond noise: McNemar's test on the paired judgements (same events, two lists),
    ``z = (only_candidate - only_serving) / sqrt(only_candidate + only_serving)`` below ``-z``.
    Otherwise (better, or a difference within noise) it is promoted.
    """
    total = {f.name: 0 for f in fields(ShadowStats) if f.name != "candidate"}
    workers = 0
    for stats in per_worker:
        workers += 1
        for k in total:
            total[k] += int(stats.get(k, 0) or 0)
    n = total["judged"]
    b, c = total["only_candidate"], total["only_serving"]
    out: dict[str, Any] = {
        **total,
        "workers": workers,
        "min_events": min_events,
        "hr10_serving": total["hits_serving"] / n if n else None,
        "hr10_candidate": total["hits_candidate"] / n if n else None,
        "z": (b - c) / math.sqrt(b + c) if b + c else 0.0,
    }
    if n < min_events:
        return "wait", out
    return ("refuse" if out["z"] < -z else "promote"), out
