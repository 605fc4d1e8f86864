"""GPU check (``deploy/gpu_check.sh``): one fine-tune step and batch scoring on torch CUDA.

Self-contained: a randomly initialised model of the production shape (MiniLM-sized text
vectors, the default towers, a MovieLens-sized catalogue) so it needs no dataset or registry on
the GPU machine; ``--device cpu`` runs the same code on CPU (that is how it is tested).
Writes one JSON file.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def run_gpu_check(
    device: str = "cuda",
    n_items: int = 1682,
    users: int = 943,
    seq_len: int = 200,
    steps: int = 20,
    batches: tuple[int, ...] = (1, 32, 256, 1024),
    seed: int = 0,
) -> dict[str, Any]:
    import torch

    from stream_rec.bench.model import hardware
    from stream_rec.model.lora import USER_TOWER_TARGETS, add_lora
    from stream_rec.model.net import ModelConfig, TwoTower
    from stream_rec.model.train import TrainConfig, epoch_batches

    if device == "cuda" and not torch.cuda.is_available():
        msg = "--device cuda but torch sees no CUDA device"
        raise SystemExit(msg)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    dev = torch.device(device)
    cfg = ModelConfig(max_len=seq_len)
    text = torch.nn.functional.normalize(torch.randn(n_items, cfg.text_dim), dim=-1)
    model = TwoTower(cfg, text, torch.randint(0, 50, (n_items,)).float()).to(dev)
    seqs = [rng.integers(0, n_items, size=int(rng.integers(min(20, seq_len), seq_len + 2))).tolist()
            for _ in range(users)]  # fmt: skip
    report: dict[str, Any] = {"device": device, "hardware": hardware(), "n_items": n_items}
    if device == "cuda":
        report["gpu"] = torch.cuda.get_device_name(0)
    tcfg = TrainConfig(batch_size=128)
    # full fine-tune epoch and LoRA fine-tune step timing (index tensors built on CPU, moved)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batches_ = epoch_batches(seqs, seq_len, tcfg.batch_size, rng)

    def to_dev_epoch(m: TwoTower, o: torch.optim.Optimizer, bs: list[list[list[int]]]) -> float:
        return _train_on(m, o, bs, tcfg, dev)

    to_dev_epoch(model, opt, batches_[:2])  # warm-up / cudnn autotune
    _sync(device)
    t = time.perf_counter()
    for i in range(steps):
        to_dev_epoch(model, opt, [batches_[i % len(batches_)]])
    _sync(device)
    report["full_step_ms"] = (time.perf_counter() - t) / steps * 1e3
    peft_model = add_lora(model, USER_TOWER_TARGETS, 8, 16)
    inner = peft_model.base_model.model
    lopt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-3)
    to_dev_epoch(inner, lopt, batches_[:1])
    _sync(device)
    t = time.perf_counter()
    for i in range(steps):
        to_dev_epoch(inner, lopt, [batches_[i % len(batches_)]])
    _sync(device)
    report["lora_step_ms"] = (time.perf_counter() - t) / steps * 1e3
    report["train_batch"] = tcfg.batch_size
    # batch scoring: user tower + exact matmul + top-10 over the catalogue
    model = peft_model.merge_and_unload().eval()
    with torch.no_grad():
        items = model.item_matrix()
        scoring: dict[str, Any] = {}
        for bs in batches:
            idx = torch.from_numpy(rng.integers(0, n_items, size=(bs, 50))).to(dev)

            def score(idx: torch.Tensor = idx) -> torch.Tensor:
                seq, mask = model.embed_sequences(idx, items)
                u = model.user(seq, mask)[:, -1, :]
                return torch.topk(u @ items.T, 10, dim=-1).indices

            for _ in range(5):
                score()
            _sync(device)
            reps = max(10, 2000 // bs)
            t = time.perf_counter()
            for _ in range(reps):
                score()
            _sync(device)
            dt = (time.perf_counter() - t) / reps
            scoring[f"batch_{bs}"] = {"ms": dt * 1e3, "users_per_s": bs / dt}
        report["scoring"] = scoring
    return report


def _train_on(model: Any, opt: Any, batches: list[list[list[int]]], cfg: Any, dev: Any) -> float:
    import torch.nn.functional as F  # noqa: N812

    from stream_rec.model.train import left_pad

    model.train()
    total = 0.0
    for batch in batches:
        idx = left_pad([w[:-1] for w in batch]).to(dev)
        tgt = left_pad([w[1:] for w in batch]).to(dev)
        items = model.item_matrix(cfg.cold_drop)
        seq, mask = model.embed_sequences(idx, items)
        h = model.user(seq, mask)
        valid = tgt >= 0
        loss = F.cross_entropy(h[valid] @ items.T, tgt[valid], label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += float(loss.detach())
    return total


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--out", type=Path, required=True, help="JSON file to write")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--quick", action="store_true", help="tiny shapes (CPU test)")
    a = p.parse_args(argv)
    kw: dict[str, Any] = {"device": a.device, "steps": a.steps}
    if a.quick:
        kw.update(users=32, seq_len=16, steps=2, batches=(1, 8))
    report = run_gpu_check(**kw)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))  # noqa: T201


if __name__ == "__main__":
    main()
