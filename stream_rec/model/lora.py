"""LoRA (peft) fine-tuning, merged before export: the trainer service's incremental updates.

``finetune_incremental`` adapts a published version on a new feedback window plus a replay
sample of older sequences (so the model does not forget), with low-rank adapters on the linear
layers of the user tower and the item text head, and the ID vectors of items seen in the
window. Items that reached the catalogue after the version (``new_items``) get rows first
(:func:`grow_catalogue`): their text vectors from the version's own text encoder, an ID vector
learnt from the window's interactions, and evidence counted from them. Adapters are merged
into plain weights before export, so serving never sees peft.
``lora_text_encoder`` puts adapters on the item text encoder (attention projections) for the
cases where fine-tuning the language model pays; merge with :func:`merge_lora`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from stream_rec.model import registry
from stream_rec.model.export import export_version, load_torch_model
from stream_rec.model.net import TwoTower
from stream_rec.model.train import (
    TrainConfig,
    epoch_batches,
    item_counts,
    resolve_device,
    train_epoch,
)

USER_TOWER_TARGETS = ["qkv", "out", "ff1", "ff2", "lin", "mlp.0", "mlp.3"]
TEXT_ENCODER_TARGETS = ["query", "key", "value", "dense"]

if TYPE_CHECKING:
    from stream_rec.data.frame import Item
    from stream_rec.settings import Settings


def add_lora(module: nn.Module, targets: Sequence[str], rank: int = 8, alpha: int = 16) -> Any:
    """Wrap ``module`` with LoRA adapters on the named linear layers (base weights frozen)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=list(targets))
    return get_peft_model(module, config)


def merge_lora(peft_model: Any) -> nn.Module:
    """Fold the adapters into the base weights and drop peft: a plain module for export."""
    merged: nn.Module = peft_model.merge_and_unload()
    return merged


def lora_text_encoder(encoder: nn.Module, rank: int = 8, alpha: int = 16) -> Any:
    """LoRA on the attention/FFN projections of a (pooled) HF encoder."""
    return add_lora(encoder, TEXT_ENCODER_TARGETS, rank, alpha)


def grow_catalogue(model: TwoTower, text_vectors: np.ndarray) -> TwoTower:
    """``model`` with rows for ``len(text_vectors)`` more items after its own: those text
    vectors, no evidence yet (count 0, so the ID gate is shut) and an ID vector of zeros, which
    training moves once the item has interactions. The neighbour statistics keep the items
    they were fitted on: a new item has no row there, so its neighbour parts are its own
    two-tower part (as for an item embedded at serving)."""
    if not len(text_vectors):
        return model
    extra = torch.from_numpy(np.asarray(text_vectors, dtype=np.float32))
    state = model.state_dict()
    state["text_vectors"] = torch.cat([state["text_vectors"], extra])
    state["counts"] = torch.cat([state["counts"], torch.zeros(len(extra))])
    ids = state["item.id_emb.weight"]
    state["item.id_emb.weight"] = torch.cat([ids, ids.new_zeros((len(extra), ids.shape[1]))])
    grown = TwoTower(model.cfg, state["text_vectors"], state["counts"])
    grown.load_state_dict(state)
    grown.neighbours = model.neighbours
    return grown.eval()


def finetune_incremental(
    base_version_dir: Path,
    examples: Sequence[Sequence[str]],
    replay: Sequence[Sequence[str]],
    out_dir: Path,
    settings: Settings | None = None,
    *,
    epochs: int = 3,
    lr: float = 1e-3,
    rank: int = 8,
    threads: int = 2,
    seed: int = 0,
    gate: Callable[[TwoTower], float] | None = None,
    min_gain: float = 0.0,
    make_current: bool = True,
    new_items: Sequence[Item] = (),
) -> Path | None:
    """Fine-tune version ``base_version_dir`` on ``examples`` (new sequences of raw item ids,
    oldest first) + ``replay`` (older sequences) and publish a new version under the registry
    root ``out_dir``. With ``gate`` (higher = better, e.g. held-out NDCG@10), the new model is
    published only if ``gate(new) >= gate(base) + min_gain``; otherwise returns None.
    ``rank``: of the adapters (alpha = 2 x rank); ``threads``: torch's on a CPU.
    ``new_items``: catalogue items (``text`` = what the item tower reads) that the base version
    lacks get rows (:func:`grow_catalogue`) and are trained on like the others; items neither
    in the base version nor in ``new_items`` are skipped."""
    base_dir = registry.resolve(Path(base_version_dir))
    manifest = registry.read_manifest(base_dir)
    meta = _items(base_dir)
    known = set(meta["item_ids"])
    added = [it for it in {it.item_id: it for it in new_items}.values() if it.item_id not in known]
    item_ids = [*meta["item_ids"], *(it.item_id for it in added)]
    titles = [*meta["titles"], *(it.title for it in added)]
    index = {iid: i for i, iid in enumerate(item_ids)}
    seqs = [[index[i] for i in s if i in index] for s in [*examples, *replay]]
    seqs = [s for s in seqs if len(s) >= 2]
    base = load_torch_model(base_dir)
    base_score = gate(base) if gate is not None else 0.0
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    dev = resolve_device(settings.model.device if settings is not None else "auto")
    if dev.type == "cpu":
        torch.set_num_threads(threads)
    model = load_torch_model(base_dir)
    if added:  # the version's own text encoder embeds them, as a worker would
        from stream_rec.model.runtime import OnnxScorer

        encoder = OnnxScorer(base_dir, settings, threads=threads, verify=False)
        model = grow_catalogue(model, encoder.text_vectors([it.text for it in added]))
    # evidence grows with the new window: the ID gate opens for items that earned it
    new_counts = item_counts([[index[i] for i in s if i in index] for s in examples], model.n_items)
    model.counts += torch.from_numpy(new_counts)
    model.to(dev)
    peft_model = add_lora(model, USER_TOWER_TARGETS, rank, 2 * rank)
    inner: TwoTower = peft_model.base_model.model
    inner.item.id_emb.weight.requires_grad_(True)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    cfg = TrainConfig(seed=seed, cold_drop=0.15, label_smoothing=0.1, batch_size=128)
    losses = []
    for _ in range(epochs):
        batches = epoch_batches(seqs, inner.cfg.max_len, cfg.batch_size, rng)
        losses.append(train_epoch(inner, opt, batches, cfg))
    merged = merge_lora(peft_model)
    assert isinstance(merged, TwoTower)  # noqa: S101
    merged.cpu().eval()  # gate, export and parity check on CPU
    wall = time.perf_counter() - t0
    metrics: dict[str, Any] = {
        "finetune_wall_s": wall,
        "finetune_losses": losses,
        "examples": len(examples),
        "replay": len(replay),
        "items_added": len(added),
    }
    if gate is not None:
        new_score = gate(merged)
        metrics.update({"gate_base": base_score, "gate_new": new_score})
        if new_score < base_score + min_gain:
            return None
    return export_version(
        merged,
        item_ids=item_ids,
        titles=titles,
        texts=[],
        registry_dir=Path(out_dir),
        base_model=str(manifest["base_model"]),
        metrics=metrics,
        extra={"parent": manifest["version"], "finetune": f"lora-r{rank}"},
        text_encoder_from=base_dir,
        make_current=make_current,
    )


def _items(version_dir: Path) -> dict[str, list[str]]:
    import json

    data: dict[str, list[str]] = json.loads((version_dir / "items.json").read_text("utf-8"))
    return data
