"""New-item score offset, fitted on the validation targets.

A new item (no training interactions) is scored from its text alone, while a warm item also
carries its learned ID vector: on the held-out split the text-only scores of new items come out
systematically low, so a new item that is exactly what the user picks next still sits below
many warm items. The served score (standardised per user, see
:func:`stream_rec.model.ranking.served_scores`) of every item without interactions gets a constant
offset ``delta``, in standard deviations, added (``ModelConfig.new_item_offset``; the ONNX
runtime applies it to every catalogue row without an ID part, items added from the stream
included).

``delta`` is chosen on the validation stage, never on test: over a grid, the per-user NDCG@10
of every user with a validation target; the largest ``delta`` whose mean loss against the best
grid point stays within one paired standard error (the one-standard-error rule: surface new items
as much as the validation ranking allows without a measurable loss). It is only fitted when at
least ``min_users`` validation targets are new items; otherwise the offset stays 0 (no evidence).

Two rules read the same grid (both picks are kept in ``OffsetFit.picks``):

* ``one_se``: the objective is the NDCG@10 of all validation users (each user weighs the
  same); the rule above.
* ``balanced``: the objective is the mean of two group means, users whose target is a new item
  and the others, so the new-item group weighs as much as the warm one however few new items
  the validation stage happens to hold (the neighbour blend's guardrail treats the groups the
  same way); the largest offset within one paired standard error of the best, the error of the
  two-group mean.
* ``balanced_best``: the same two-group objective at its best grid point, without the push to
  the largest offset within one error (between the two: new items lifted as far as the
  two-group objective gains, not as far as noise allows).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stream_rec.eval.protocol import Ranker, Stage, ndcg_gains, stage_scores, target_ranks

GRID = tuple(round(0.1 * i, 1) for i in range(21))  # 0.0 … 2.0 standard deviations
MIN_USERS = 30
RULES = ("one_se", "balanced", "balanced_best")


@dataclass
class OffsetFit:
    offset: float
    new_target_users: int
    reason: str
    table: list[dict[str, float]] = field(default_factory=list)
    picks: dict[str, float] = field(default_factory=dict)
    """The offset each rule of :data:`RULES` picks on this grid."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "offset": self.offset,
            "new_target_users": self.new_target_users,
            "reason": self.reason,
            "picks": self.picks,
            "table": self.table,
        }


def _largest_within_one_se(
    grid: Sequence[float], values: list[np.ndarray], weights: np.ndarray
) -> tuple[int, int, list[tuple[float, float]]]:
    """``values[i]``: per-user NDCG@10 at ``grid[i]``; the objective is ``weights @ values``.
    Returns (best index, chosen index, (loss against the best, paired standard error) per
    grid point): the chosen point is the largest one whose loss is within one paired standard
    error of the best (the error of a weighted mean: ``sqrt(sum(w_u^2) var(diff))``)."""
    scores = [float(weights @ v) for v in values]
    best = int(np.argmax(scores))
    chosen = best
    out = []
    for i in range(len(grid)):
        diff = values[i] - values[best]
        centred = diff - weights @ diff / weights.sum()
        n = len(diff)
        var = float((centred**2).sum() / (n - 1)) if n > 1 else 0.0
        se = float(np.sqrt(var * (weights**2).sum()))
        loss = float(-(weights @ diff))
        out.append((loss, se))
        if loss <= se and grid[i] > grid[chosen]:
            chosen = i
    return best, chosen, out


def fit_new_item_offset(
    ranker: Ranker,
    split: Any,
    new: np.ndarray,
    stage: Stage = "valid",
    grid: Sequence[float] = GRID,
    min_users: int = MIN_USERS,
    batch_size: int = 256,
    rule: str = "one_se",
) -> OffsetFit:
    """``new``: boolean mask over the catalogue of items without training interactions.
    ``ranker`` must score *without* an offset of its own; ``rule``: one of :data:`RULES`."""
    if rule not in RULES:
        msg = f"unknown new-item offset rule {rule!r} (one of {', '.join(RULES)})"
        raise ValueError(msg)
    base, seen, targets, _ = stage_scores(ranker, split, stage, batch_size)
    is_new = new[targets] if len(targets) else np.zeros(0, dtype=bool)
    n_new = int(is_new.sum())
    if n_new < min_users:
        return OffsetFit(0.0, n_new, f"{n_new} {stage} targets are new items (< {min_users})")
    base[seen] = -np.inf
    bump = new.astype(np.float64)
    per_user = []
    table = []
    for delta in grid:
        ranks = target_ranks(base + delta * bump, targets)
        ndcg = ndcg_gains(ranks)
        per_user.append(ndcg)
        table.append(
            {
                "offset": float(delta),
                "ndcg10": float(ndcg.mean()),
                "hr10": float((ranks < 10).mean()),
                "new_target_hr10": float((ranks[is_new] < 10).mean()),
                "new_target_ndcg10": float(ndcg[is_new].mean()),
                "warm_target_ndcg10": float(ndcg[~is_new].mean()) if (~is_new).any() else 0.0,
            }
        )
    n = len(targets)
    n_warm = n - n_new
    balanced = np.where(is_new, 0.5 / n_new, 0.5 / max(n_warm, 1)) if n_warm else 1.0 / n_new
    weights = {"one_se": np.full(n, 1.0 / n), "balanced": np.broadcast_to(balanced, (n,))}
    picks: dict[str, float] = {}
    bests: dict[str, int] = {}
    for name, w in weights.items():
        best, chosen, losses = _largest_within_one_se(grid, per_user, np.asarray(w, dtype=float))
        picks[name] = float(grid[chosen])
        bests[name] = best
        if name == "balanced":
            picks["balanced_best"] = float(grid[best])
            bests["balanced_best"] = best
        for row, (loss, se) in zip(table, losses, strict=True):
            key = "" if name == "one_se" else f"_{name}"
            row[f"loss_vs_best{key}"] = loss
            row[f"paired_se{key}"] = se
    objective = "NDCG@10" if rule == "one_se" else "mean of the new- and warm-target NDCG@10"
    how = (
        "best"
        if rule == "balanced_best"
        else "largest offset within one paired standard error of the best"
    )
    reason = (
        f"{rule}: {how} {stage} {objective} (best at {grid[bests[rule]]:.2f}), {n_new} "
        f"{stage} targets are new items"
    )
    return OffsetFit(picks[rule], n_new, reason, table, picks)
