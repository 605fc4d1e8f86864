"""Full training from the topics: the first model (bootstrap) and periodic retrains.

The model is what users get, so a deployment must not depend on someone running
``stream-rec train`` by hand:

* **bootstrap** — with an empty registry, once the ``behavior`` topic holds at least
  ``bootstrap_min_events`` events and the ``items`` topic at least two items, the trainer reads
  both topics (:func:`stream_rec.data.sources.load_kafka`: the same frame, split, training and
  export as ``stream-rec train --source kafka``), exports the first version (parity-checked),
  makes it current and announces it. Workers swap from the fallback between two micro-batches.
  Too little data to train (no user with enough interactions) is retried after another
  ``bootstrap_min_events`` events.
* **retrain** — ``retrain_every_events`` new behaviour events or ``retrain_every_hours`` after the
  last full training, a full retrain from the topics, so the model does not live on LoRA windows
  for ever. It goes through the fine-tunes' rule: promoted only if its NDCG@10 on each user's
  newest interaction (the leave-one-out test targets, never trained on) is not worse than the
  serving version's on the same targets by more than ``promote_tolerance``. The serving version
  is scored as the workers serve it: ONNX Runtime, with every catalogue item it did not know
  embedded from its text.

What the last full training saw is kept in ``full_train.json`` in the registry root (time, and
the behaviour topic's summed end offsets), so a restarted trainer keeps the schedule.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stream_rec.settings import Settings

log = logging.getLogger(__name__)
STATE_FILE = "full_train.json"
MIN_ITEMS = 2


@dataclass(frozen=True)
class TopicSizes:
    events: int  # behaviour messages in the log now (end minus start offsets, all partitions)
    written: int  # behaviour messages ever written (summed end offsets): grows monotonically
    items: int  # messages in the items topic's log (an upper bound of the catalogue size)


def prewarm() -> None:
    """Import what a training run needs (torch, transformers, peft, the model pipeline) now.

    The first bootstrap starts the moment enough events have come, while the workers serve
    beside the trainer on the same machine (in the demo: the first second of its live phase);
    importing these then costs seconds of CPU and most of a gigabyte of memory faulted in at
    once (``python -c "import torch, transformers, peft; from transformers import AutoModel"``).
    At the trainer's start that work is out of the way of every later run."""
    import peft  # noqa: F401
    import torch  # noqa: F401
    from transformers import AutoModel, AutoTokenizer  # noqa: F401 - resolves its lazy modules

    from stream_rec.data import sources  # noqa: F401
    from stream_rec.model import pipeline  # noqa: F401


def read_state(root: Path) -> dict[str, Any] | None:
    path = Path(root) / STATE_FILE
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def write_state(root: Path, state: dict[str, Any]) -> None:
    path = Path(root) / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2), encoding="utf-8")
    tmp.replace(path)


def due(
    settings: Settings, sizes: TopicSizes, state: dict[str, Any] | None, empty: bool, now: float
) -> str | None:
    """``"bootstrap"``, ``"retrain"`` or None: what full training is due now."""
    if empty:
        if sizes.events < settings.trainer.bootstrap_min_events or sizes.items < MIN_ITEMS:
            return None
        retry_at = int((state or {}).get("retry_at_written", 0))
        return "bootstrap" if sizes.written >= retry_at else None
    if state is None:
        return None
    since_events = sizes.written - int(state.get("written", 0))
    if (
        settings.trainer.retrain_every_events
        and since_events >= settings.trainer.retrain_every_events
    ):
        return "retrain"
    hours = settings.trainer.retrain_every_hours
    if hours and now - float(state.get("ts", now)) >= hours * 3600.0:
        return "retrain"
    return None


async def topic_sizes(settings: Settings, consumer: Any) -> TopicSizes:
    """Offsets of the two input topics, read with a group-less aiokafka consumer."""
    from stream_rec.topics import Topics, topic_partitions

    topics = Topics(settings.kafka.topic_prefix)
    tps = await topic_partitions(settings, topics.behavior, topics.items)
    ends = await consumer.end_offsets(tps) if tps else {}
    starts = await consumer.beginning_offsets(tps) if tps else {}
    beh = [tp for tp in tps if tp.topic == topics.behavior]
    return TopicSizes(
        events=sum(ends[tp] - starts[tp] for tp in beh),
        written=sum(ends[tp] for tp in beh),
        items=sum(ends[tp] - starts[tp] for tp in tps if tp.topic == topics.items),
    )


def train_threads(settings: Settings) -> int:
    """torch CPU threads of a full training (``STREAM_REC_TRAIN_THREADS``, 0 = one per core)."""
    return settings.trainer.train_threads or os.cpu_count() or 1


def model_configs(settings: Settings, text_dim: int) -> tuple[Any, Any]:
    """The model and training configuration of a full training, from the settings."""
    from stream_rec.model.net import ModelConfig
    from stream_rec.model.train import TrainConfig

    mcfg = ModelConfig(
        text_dim=text_dim,
        dim=settings.trainer.train_dim,
        layers=settings.trainer.train_layers,
        max_len=settings.trainer.train_max_len,
    )
    tcfg = TrainConfig(
        epochs=settings.trainer.train_epochs,
        seed=0,
        final_fit=True,
        eval_every=min(10, settings.trainer.train_epochs),
        patience=3,
        device=settings.model.device,
        threads=train_threads(settings),
    )
    return mcfg, tcfg


def serving_ndcg10(settings: Settings, version_dir: Path, prepared: Any) -> float:
    """Test NDCG@10 of a registry version as the workers serve it (ONNX Runtime), on the
    split of ``prepared``; catalogue items the version does not know are embedded from text."""
    from stream_rec.eval.protocol import evaluate
    from stream_rec.model.pipeline import OnnxRanker
    from stream_rec.model.runtime import OnnxScorer
    from stream_rec.serving.scorer import CatalogItem

    scorer = OnnxScorer(version_dir, settings)
    items = prepared.dataset.items
    missing = [i for i in prepared.split.item_ids if i not in scorer.index]
    if missing:
        scorer.upsert_items(
            [
                CatalogItem(i, items[i].title, items[i].text, dict(items[i].attributes))
                for i in missing
            ]
        )
    metrics, _ = evaluate(OnnxRanker(scorer, prepared.split), prepared.split, "test")
    return float(metrics.ndcg10)


def full_train(
    settings: Settings,
    root: Path,
    kind: str,
    sizes: TopicSizes,
    load: Callable[[Settings], Any] | None = None,
) -> dict[str, Any]:
    """One full training from the topics (runs in a worker thread); ``load`` reads the frame
    (default :func:`stream_rec.data.sources.load_kafka`). Returns the outcome:
    ``{"outcome": promoted|rejected, "version": str, ...}``; raises if training failed."""
    from stream_rec.model import registry
    from stream_rec.model.pipeline import prepare, train_and_export
    from stream_rec.progress import log_epochs

    if load is None:
        from stream_rec.data.sources import load_kafka

        load = load_kafka
    t0 = time.perf_counter()
    base_dir = None if kind == "bootstrap" else registry.resolve(root)
    ds = load(settings)
    out: dict[str, Any] = {
        "kind": kind,
        "interactions": len(ds.interactions),
        "items": len(ds.items),
        "users": len({x.user_id for x in ds.interactions}),
        "bad_rows": dict(getattr(ds, "bad_rows", {})),
    }
    try:
        import torch

        torch.set_num_threads(train_threads(settings))  # the text encoding runs before training
        prepared = prepare(settings, ds, encoder_path=settings.model.encoder_path)
        mcfg, tcfg = model_configs(settings, int(prepared.text_vectors.shape[1]))
        _, metrics, path = train_and_export(
            settings, prepared, mcfg, tcfg, registry_dir=root,
            encoder_path=settings.model.encoder_path, make_current=False,
            on_epoch=log_epochs(log, kind),
        )  # fmt: skip
    except Exception:
        # Too little data for a split, or a failed run: try again after more events, not
        # in a loop on the same data.
        state = read_state(root) or {}
        state["retry_at_written"] = sizes.written + settings.trainer.bootstrap_min_events
        if kind == "retrain":
            state.update(ts=time.time(), written=sizes.written)
        write_state(root, state)
        raise
    assert path is not None  # noqa: S101 - export=True always writes a version
    version = path.name
    try:  # what workers will load: never announce a version that fails its own check
        registry.verify(path)
    except registry.RegistryError:
        shutil.rmtree(path, ignore_errors=True)  # nothing may resolve to it
        raise
    out.update(
        version=version,
        test_ndcg10=metrics["test"]["ndcg10"],
        test_hr10=metrics["test"]["hr10"],
        train_wall_s=metrics["train_wall_s"],
    )
    if base_dir is not None:
        base = serving_ndcg10(settings, base_dir, prepared)
        out.update(parent=base_dir.name, gate_base=base, gate_new=metrics["test"]["ndcg10"])
        if metrics["test"]["ndcg10"] < base - settings.trainer.promote_tolerance:
            out.update(outcome="rejected")
        else:
            registry.set_current(root, version)
            out.update(outcome="promoted")
    else:
        registry.set_current(root, version)
        out.update(outcome="promoted")
    if out["outcome"] == "promoted":
        pruned = registry.prune(root, settings.trainer.registry_keep)
        if pruned:
            out["pruned"] = len(pruned)
    write_state(root, {"ts": time.time(), "written": sizes.written, "version": version,
                       "outcome": out["outcome"]})  # fmt: skip
    out["wall_s"] = time.perf_counter() - t0
    return out
