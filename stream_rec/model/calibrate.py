"""New-item score offset, fitted on the validation targets.

A new item (no training interactions) is scored from its text alone, while a warm item also
carries its learned ID vector: on the held-out split the text-only scores of new items come out
systematically low, so a new item that is exactly what the user picks next still sits below
many warm items. The served score (standardised per user, see
:func:`stream_rec.model.train.served_scores`) of every item without interactions gets a constant
offset ``delta``, in standard deviations, added (``ModelConfig.new_item_offset``; the ONNX
runtime applies it to every catalogue row without an ID part, items added from the stream
included).

``delta`` is chosen on the validation stage, never on test: over a grid, the per-user NDCG@10
of every user with a validation target; the largest ``delta`` whose mean loss against the best
grid point stays within one paired standard error (the one-standard-error rule: surface new items
as much as the validation ranking allows without a measurable loss). It is only fitted when at
least ``min_users`` validation targets are new items; otherwise the offset stays 0 (no evidence).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stream_rec.eval.protocol import Ranker, Stage, ndcg_gains, stage_scores, target_ranks

GRID = tuple(round(0.1 * i, 1) for i in range(21))  # 0.0 … 2.0 standard deviations
MIN_USERS = 30


@dataclass
class OffsetFit:
    offset: float
    new_target_users: int
    reason: str
    table: list[dict[str, float]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "offset": self.offset,
            "new_target_users": self.new_target_users,
            "reason": self.reason,
            "table": self.table,
        }


def fit_new_item_offset(
    ranker: Ranker,
    split: Any,
    new: np.ndarray,
    stage: Stage = "valid",
    grid: Sequence[float] = GRID,
    min_users: int = MIN_USERS,
    batch_size: int = 256,
) -> OffsetFit:
    """``new``: boolean mask over the catalogue of items without training interactions.
    ``ranker`` must score *without* an offset of its own."""
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
            }
        )
    best = int(np.argmax([t["ndcg10"] for t in table]))
    chosen = best
    for i in range(len(grid)):
        diff = per_user[i] - per_user[best]
        se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0
        table[i]["loss_vs_best"] = float(-diff.mean())
        table[i]["paired_se"] = se
        if float(diff.mean()) >= -se and grid[i] > grid[chosen]:
            chosen = i
    reason = (
        f"largest offset within one paired standard error of the best {stage} NDCG@10 "
        f"(best at {grid[best]:.2f}), {n_new} {stage} targets are new items"
    )
    return OffsetFit(float(grid[chosen]), n_new, reason, table)
