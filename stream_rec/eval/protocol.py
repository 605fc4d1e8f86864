"""The offline protocol (docs/model-report.md, "Offline protocol"): leave-one-out, HR/NDCG/MRR.

Each user's interactions are sorted by (timestamp, numeric item id) — ``user_sequences`` of the
training frame (:mod:`stream_rec.data.frame`) does that, whatever the source. Last interaction =
test target, second-to-last = validation target, the rest = training history. Every item of the
catalogue is ranked; items already in the user's history before the target are excluded. Score
ties are broken by item index (numeric id order), the same order the top-K dump uses, so the dump
and the metrics always agree.

Cold-item mode holds a set of items out of *training* entirely (their interactions are removed
from every training sequence and from popularity counts); at ranking time they stay in the
catalogue and in user histories, exactly as a new item would appear in the stream.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from stream_rec.data.frame import Dataset, num_key

Stage = Literal["valid", "test"]
KS = (10, 20)


class Ranker(Protocol):
    """Anything that scores the whole catalogue for a batch of item-index histories."""

    def score(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        """``[len(histories), n_items]`` scores; higher is better."""
        ...


@dataclass
class LeaveOneOut:
    item_ids: list[str]
    user_ids: list[str]
    histories: list[list[int]]
    """Per user: every interaction (item index) in protocol order, test target last."""
    cold: frozenset[int] = frozenset()
    index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.index:
            self.index = {iid: i for i, iid in enumerate(self.item_ids)}

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def target(self, u: int, stage: Stage) -> int:
        seq = self.histories[u]
        pos = len(seq) - (1 if stage == "test" else 2)
        return seq[pos] if pos >= 1 else -1

    def history(self, u: int, stage: Stage) -> list[int]:
        """What the user did before the target (validation target included for ``test``)."""
        seq = self.histories[u]
        return seq[: len(seq) - (1 if stage == "test" else 2)]

    def training_sequences(self, include_valid: bool = False) -> list[list[int]]:
        """Training data: history before the validation (or test) target, cold items removed."""
        stage: Stage = "test" if include_valid else "valid"
        out = []
        for u in range(len(self.user_ids)):
            out.append([i for i in self.history(u, stage) if i not in self.cold])
        return out

    def popularity(self, include_valid: bool = False) -> np.ndarray:
        counts = np.zeros(self.n_items, dtype=np.float64)
        for seq in self.training_sequences(include_valid):
            np.add.at(counts, np.asarray(seq, dtype=np.int64), 1.0)
        return counts

    def cold_users(self, stage: Stage = "test") -> list[int]:
        return [u for u in range(len(self.user_ids)) if self.target(u, stage) in self.cold]


def make_split(ds: Dataset, cold_items: Iterable[str] = ()) -> LeaveOneOut:
    item_ids = sorted(ds.items, key=num_key)
    index = {iid: i for i, iid in enumerate(item_ids)}
    seqs = ds.user_sequences()
    user_ids = list(seqs)
    histories = [[index[x.item_id] for x in seqs[u]] for u in user_ids]
    cold = frozenset(index[i] for i in cold_items if i in index)
    return LeaveOneOut(item_ids, user_ids, histories, cold, index)


def select_cold_items(
    item_ids: Sequence[str], fraction: float | None = None, seed: int = 0, file: Path | None = None
) -> list[str]:
    """Items to hold out: a seeded random ``fraction`` of the catalogue, or the ids in ``file``
    (a JSON list or one id per line)."""
    if file is not None:
        text = Path(file).read_text(encoding="utf-8").strip()
        ids = json.loads(text) if text.startswith("[") else text.split()
        return [str(i) for i in ids]
    if fraction is None or not 0.0 < fraction < 1.0:
        msg = f"cold-item fraction must be in (0, 1), got {fraction}"
        raise ValueError(msg)
    rng = np.random.default_rng(seed)
    n = int(round(len(item_ids) * fraction))
    chosen = sorted(rng.choice(len(item_ids), size=n, replace=False).tolist())
    return [item_ids[i] for i in chosen]


@dataclass
class Metrics:
    users: int
    hr10: float
    ndcg10: float
    hr20: float
    ndcg20: float
    mrr10: float
    se: dict[str, float] = field(default_factory=dict)
    """Standard error over users of each metric (:func:`standard_errors`)."""

    def as_dict(self) -> dict[str, float]:
        out = {k: float(v) for k, v in asdict(self).items() if k != "se"}
        return out | {f"{k}_se": float(v) for k, v in self.se.items()}

    def line(self) -> str:
        def f(name: str, key: str) -> str:
            se = f"±{self.se[key]:.4f}" if key in self.se else ""
            return f"{name}={getattr(self, key):.4f}{se}"

        cols = (("HR@10", "hr10"), ("NDCG@10", "ndcg10"), ("HR@20", "hr20"))
        rest = (("NDCG@20", "ndcg20"), ("MRR@10", "mrr10"))
        return f"users={self.users} " + " ".join(f(n, k) for n, k in (*cols, *rest))


def ndcg_gains(ranks: np.ndarray, k: int = 10) -> np.ndarray:
    """Per-user NDCG@k of one target at each 0-based rank."""
    r = np.asarray(ranks, dtype=np.float64)
    return np.where(r < k, 1.0 / np.log2(r + 2.0), 0.0)


def per_user_metrics(ranks: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
    """Each metric of :class:`Metrics` per user (0-based target ranks); their means are the
    metrics."""
    r = np.asarray(ranks, dtype=np.float64)
    return {
        "hr10": (r < 10).astype(np.float64),
        "ndcg10": ndcg_gains(r, 10),
        "hr20": (r < 20).astype(np.float64),
        "ndcg20": ndcg_gains(r, 20),
        "mrr10": np.where(r < 10, 1.0 / (r + 1.0), 0.0),
    }


def standard_errors(ranks: Sequence[int] | np.ndarray) -> dict[str, float]:
    """Standard error over users of each metric's mean (sample standard deviation / sqrt(n)),
    so a difference between two models can be read against noise; 0 for fewer than 2 users."""
    n = len(ranks)
    return {
        k: float(v.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0
        for k, v in per_user_metrics(ranks).items()
    }


def metrics_from_ranks(ranks: Sequence[int]) -> Metrics:
    """Ranks are 0-based positions of the target in the filtered full ranking."""
    r = np.asarray(ranks, dtype=np.float64)
    n = max(len(r), 1)

    def hr(k: int) -> float:
        return float((r < k).sum() / n)

    def ndcg(k: int) -> float:
        return float(ndcg_gains(r, k).sum() / n)

    mrr = float(np.where(r < 10, 1.0 / (r + 1.0), 0.0).sum() / n)
    return Metrics(len(r), hr(10), ndcg(10), hr(20), ndcg(20), mrr, standard_errors(r))


def rank_topk(scores: np.ndarray, k: int) -> np.ndarray:
    """Top-``k`` indices per row, best first; ties by lower index (the protocol's tie order)."""
    k = min(k, scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")
    return order[:, :k]


def target_ranks(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based rank of each row's target: items scored higher, plus equal-scored items of a
    lower index (the protocol's tie order)."""
    st = scores[np.arange(len(targets)), targets][:, None]
    cols = np.arange(scores.shape[1])[None, :]
    ahead = (scores > st) | ((scores == st) & (cols < targets[:, None]))
    return ahead.sum(axis=1)


def list_ranks(top: np.ndarray, scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based rank of each row's target in its served list ``top`` [B, L] (re-ranked); a
    target outside the list ranks at L or below (its place in the full ranking ``scores``, if
    lower): every metric reads only the first L places (L ≥ 20)."""
    full = target_ranks(scores, targets)
    hit = np.asarray(top) == targets[:, None]
    return np.where(hit.any(axis=1), hit.argmax(axis=1), np.maximum(full, top.shape[1]))


def stage_scores(
    ranker: Ranker, split: LeaveOneOut, stage: Stage, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[list[int]]]:
    """Every user with a ``stage`` target: catalogue scores, the mask of the user's history
    items (excluded from the ranking), the targets and the histories (what the validation-time
    fits of the model rank on)."""
    users = [u for u in range(len(split.user_ids)) if split.target(u, stage) >= 0]
    hists = [split.history(u, stage) for u in users]
    targets = np.array([split.target(u, stage) for u in users], dtype=np.int64)
    chunks = [
        np.asarray(ranker.score(hists[start : start + batch_size]), dtype=np.float64)
        for start in range(0, len(hists), batch_size)
    ]
    scores = np.concatenate(chunks) if chunks else np.zeros((0, split.n_items))
    seen = np.zeros(scores.shape, dtype=bool)
    for row, h in enumerate(hists):
        seen[row, np.asarray(h, dtype=np.int64)] = True
    return scores, seen, targets, hists


def evaluate(
    ranker: Ranker,
    split: LeaveOneOut,
    stage: Stage = "test",
    users: Sequence[int] | None = None,
    batch_size: int = 256,
    dump_k: int = 0,
    rerank: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[Metrics, list[list[int]]]:
    """Rank all items for each user; return metrics over ``users`` (default all with a target)
    and, when ``dump_k`` > 0, the top-``dump_k`` item indices of *every* user. ``rerank``
    (seen items at -inf → each row's served list of ≥ max(20, ``dump_k``) item indices) puts
    the serving re-ranker between the scores and the metrics (:func:`list_ranks`)."""
    all_users = [u for u in range(len(split.user_ids)) if split.target(u, stage) >= 0]
    wanted = set(all_users if users is None else users)
    todo = all_users if dump_k else [u for u in all_users if u in wanted]
    ranks: list[int] = []
    dumps: list[list[int]] = []
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        hists = [split.history(u, stage) for u in chunk]
        scores = np.array(ranker.score(hists), dtype=np.float64, copy=True)
        for row, h in enumerate(hists):
            if h:
                scores[row, np.asarray(h, dtype=np.int64)] = -np.inf
        served = None if rerank is None else rerank(scores)
        keep = [row for row, u in enumerate(chunk) if u in wanted]
        if keep:
            targets = np.array([split.target(chunk[row], stage) for row in keep], dtype=np.int64)
            if served is None:
                ranks.extend(int(r) for r in target_ranks(scores[keep], targets))
            else:
                ranks.extend(int(r) for r in list_ranks(served[keep], scores[keep], targets))
        if dump_k:
            lists = rank_topk(scores, dump_k) if served is None else served[:, :dump_k]
            for row, top in enumerate(lists):
                dumps.append([int(i) for i in top if np.isfinite(scores[row, i])])
    return metrics_from_ranks(ranks), dumps


def write_topk(path: Path, split: LeaveOneOut, topk: list[list[int]], stage: Stage) -> None:
    """JSON lines ``{"user_id": raw, "items": [raw ids]}``, one per user, in user order."""
    all_users = [u for u in range(len(split.user_ids)) if split.target(u, stage) >= 0]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for u, items in zip(all_users, topk, strict=True):
            row = {"user_id": split.user_ids[u], "items": [split.item_ids[i] for i in items]}
            f.write(json.dumps(row) + "\n")
