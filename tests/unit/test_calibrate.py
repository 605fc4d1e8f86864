"""The new-item score offset: rank helper, fit on validation, the one-standard-error rule."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from stream_rec.eval.protocol import LeaveOneOut, target_ranks
from stream_rec.model.calibrate import fit_new_item_offset

N_WARM, N_NEW = 30, 10
NEW = np.arange(N_WARM + N_WARM + N_NEW) >= N_WARM + N_WARM  # items 60..69 are new


def test_target_ranks_counts_higher_scores_and_lower_index_ties() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=(50, 30)).astype(np.float64)
    scores[:, 3] = -np.inf
    targets = rng.integers(0, 30, size=50)
    want = [
        int((s > s[t]).sum() + (s[:t] == s[t]).sum()) for s, t in zip(scores, targets, strict=True)
    ]
    assert target_ranks(scores, targets).tolist() == want


class Table:
    """Scores by user row: ``rows[u]`` for the user whose history is ``[u]``."""

    def __init__(self, rows: np.ndarray) -> None:
        self.rows = rows

    def score(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        return self.rows[[h[0] for h in histories]]


def _split(valid_targets: list[int]) -> LeaveOneOut:
    """User u: history [u], validation target ``valid_targets[u]``, test target item 0."""
    n = len(NEW)
    hists = [[u, t, 0] for u, t in enumerate(valid_targets)]
    return LeaveOneOut([str(i) for i in range(n)], [str(u) for u in range(len(hists))], hists)


def _scores(n_users: int, warm_rest: float, new_rest: float) -> np.ndarray:
    rows = np.empty((N_WARM + N_WARM, len(NEW)))
    rows[:, :] = warm_rest - 0.001 * np.arange(len(NEW))  # warm items, slightly decreasing
    rows[:, NEW] = new_rest
    return rows[:n_users]


def test_offset_lifts_new_targets_when_nothing_is_lost() -> None:
    # 30 users pick a warm item that always stays on top; 30 pick a new item scored just below
    # 29 warm items: an offset of 0.6 or more brings it first, so the largest grid point wins.
    targets = [N_WARM + u for u in range(N_WARM)] + [60 + u % N_NEW for u in range(N_WARM)]
    rows = _scores(60, warm_rest=8.5, new_rest=7.0)
    for u in range(N_WARM):
        rows[u, N_WARM + u] = 20.0
        rows[N_WARM + u, 60 + u % N_NEW] = 8.0
    fit = fit_new_item_offset(Table(rows), _split(targets), NEW, min_users=5)
    assert fit.offset == 2.0
    first = fit.table[0]
    last = fit.table[-1]
    assert first["new_target_hr10"] == 0.0 and last["new_target_hr10"] == 1.0
    assert last["ndcg10"] > first["ndcg10"]


def test_offset_stops_before_new_items_push_warm_targets_out() -> None:
    # Warm targets score 9.8, the 10 new items 9.6: from an offset of 0.25 up the new items
    # fill the top 10 above every warm target; new-target users are already in the top 10.
    targets = [N_WARM + u for u in range(N_WARM)] + [60 + u % N_NEW for u in range(N_WARM)]
    rows = _scores(60, warm_rest=9.0, new_rest=9.6)
    for u in range(N_WARM):
        rows[u, N_WARM + u] = 9.8
    fit = fit_new_item_offset(Table(rows), _split(targets), NEW, min_users=5)
    assert fit.offset == 0.2  # ties at 0.2 keep the warm target ahead (lower index)
    assert fit.table[5]["ndcg10"] < fit.table[0]["ndcg10"]


def test_no_offset_without_enough_new_targets() -> None:
    targets = [N_WARM + u for u in range(N_WARM)]
    rows = _scores(30, warm_rest=8.5, new_rest=7.0)
    fit = fit_new_item_offset(Table(rows), _split(targets), NEW)
    assert fit.offset == 0.0 and fit.new_target_users == 0 and not fit.table
    assert "< 30" in fit.reason


def test_balanced_rule_weighs_new_target_users_as_a_group() -> None:
    # 50 users pick a warm item at rank 3; from an offset of 1.6 the 10 new items pass it.
    # 10 users pick a new item that reaches the top 2 from 1.9. All users alike: the warm
    # group's loss outweighs (offset below 1.6); the two groups alike: the new group's gain
    # wins (1.9 or more).
    n_warm_users, n_new_users = 50, 10
    rows = np.empty((n_warm_users + n_new_users, len(NEW)))
    rows[:, :] = 9.0 - 0.001 * np.arange(len(NEW))
    targets = []
    for u in range(n_warm_users):  # history [u]: items 0..49
        t = 50 + u % 10
        rows[u, 50:53] = 9.9
        rows[u, NEW] = 8.0
        rows[u, t] = 9.5
        targets.append(t)
    for u in range(n_warm_users, n_warm_users + n_new_users):
        t = 60 + u % N_NEW
        rows[u, NEW] = 7.0
        rows[u, t] = 7.1
        targets.append(t)
    fit = fit_new_item_offset(Table(rows), _split(targets), NEW, min_users=5, rule="balanced")
    assert fit.picks["one_se"] < 1.6
    assert fit.offset == fit.picks["balanced"] >= 1.9
    assert "balanced" in fit.reason
    # balanced_best: the objective's best point, never above the one-error push of balanced
    best = fit_new_item_offset(Table(rows), _split(targets), NEW, min_users=5, rule="balanced_best")
    assert best.offset == best.picks["balanced_best"] == fit.picks["balanced_best"]
    assert 1.9 <= best.offset <= fit.picks["balanced"]
    table = {r["offset"]: r for r in best.table}
    assert table[best.offset]["loss_vs_best_balanced"] == 0.0
    assert "balanced_best: best valid" in best.reason
    with pytest.raises(ValueError, match="unknown new-item offset rule"):
        fit_new_item_offset(Table(rows), _split(targets), NEW, rule="best")
