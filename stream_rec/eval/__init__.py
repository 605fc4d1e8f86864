"""Offline evaluation (docs/model-report.md, "Offline protocol"): leave-one-out on the training
frame of any source, full ranking, baselines.

Plain Python and numpy; no Kafka. The same :func:`evaluate` ranks every model and baseline.
"""

from stream_rec.eval.protocol import (
    LeaveOneOut,
    Metrics,
    Ranker,
    evaluate,
    make_split,
    rank_topk,
    select_cold_items,
)

__all__ = [
    "LeaveOneOut",
    "Metrics",
    "Ranker",
    "evaluate",
    "make_split",
    "rank_topk",
    "select_cold_items",
]
