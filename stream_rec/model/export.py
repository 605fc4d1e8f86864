"""Export a trained model into a registry version: ONNX towers, item matrix, parity checks.

Files of a version (all listed with sha256 in ``manifest.json``):

* ``user_tower.onnx``   — [B, L, D] item vectors + [B, L] mask → [B, D] user vector, written
  op by op for ONNX Runtime (:mod:`stream_rec.model.tower_onnx`)
* ``item_head.onnx``    — [N, T] text vectors → [N, D] text-path item vectors (cold start)
* ``text_encoder.onnx`` — token ids + mask → [B, T] pooled text vectors; ``tokenizer/`` beside it
* ``*.int8.onnx``       — dynamically quantised variants for CPU serving (optional)
* ``item_vectors.npy``  — the precomputed catalogue matrix (text path + gated ID part)
* ``id_part.npy``, ``text_vectors.npy``, ``popularity.npy``, ``items.json``, ``config.json``
* ``model.pt``          — torch weights, so the trainer can fine-tune this version further

Every ONNX file is compared with torch on real inputs; a max abs diff above the tolerance
(1e-4, fp32) raises :class:`ParityError` and nothing is published.
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from stream_rec.model import registry
from stream_rec.model.neighbours import Neighbours
from stream_rec.model.net import TwoTower, UserEncoder
from stream_rec.model.text import MAX_TEXT_TOKENS, PooledEncoder, load_encoder, tokenize
from stream_rec.model.tower_onnx import user_tower_graph

PARITY_TOL = 1e-4
OPSET = 17


class ParityError(RuntimeError):
    """ONNX Runtime and torch disagree beyond the tolerance: the export must not be used."""


def onnx_export(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    input_names: list[str],
    output_names: list[str],
    dynamic_axes: dict[str, dict[int, str]],
) -> None:
    """torch.onnx export with dynamic axes (TorchScript exporter: fast and exact here)."""
    module.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            dynamo=False,
        )


def check_parity(
    path: Path, module: nn.Module, feeds: dict[str, np.ndarray], tol: float = PARITY_TOL
) -> float:
    """Max abs diff between ORT (CPU) and torch on ``feeds``; raises :class:`ParityError`."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, feeds)[0]
    with torch.no_grad():
        want = module(*[torch.from_numpy(v) for v in feeds.values()]).numpy()
    if got.shape != want.shape:
        msg = f"{path.name}: ONNX output shape {got.shape} != torch {want.shape}"
        raise ParityError(msg)
    diff = float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max())
    if not np.isfinite(diff) or diff > tol:
        msg = f"{path.name}: ONNX vs torch max abs diff {diff:.3g} > {tol:g}"
        raise ParityError(msg)
    return diff


def quantize_int8(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_dynamic(
            str(src),
            str(dst),
            weight_type=QuantType.QInt8,
            # the ORT-specific operators (BiasGelu, ...) carry no type information for the
            # quantiser's shape inference; everything in these graphs is float32
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )


def _parity_histories(n_items: int, max_len: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    lengths = [1, 3, max_len // 2, max_len, 7, max_len - 1, 2, 5]
    n = max_len
    idx = torch.full((len(lengths), n), -1, dtype=torch.long)
    for r, ln in enumerate(lengths):
        ln = max(1, min(ln, n))
        idx[r, n - ln :] = torch.randint(0, n_items, (ln,), generator=g)
    return idx


def export_version(
    model: TwoTower,
    *,
    item_ids: Sequence[str],
    titles: Sequence[str],
    texts: Sequence[str],
    registry_dir: Path,
    encoder: PooledEncoder | None = None,
    tokenizer: Any = None,
    encoder_path: Path | str | None = None,
    base_model: str = "all-MiniLM-L6-v2",
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    version: str | None = None,
    int8: bool = True,
    make_current: bool = True,
    tol: float = PARITY_TOL,
    text_encoder_from: Path | None = None,
) -> Path:
    """Export ``model`` (+ the item text encoder) as a new version; returns its folder.

    ``text_encoder_from``: a previous version whose (unchanged) text encoder files are reused,
    as incremental fine-tunes do; otherwise the encoder is exported and parity-checked."""
    if text_encoder_from is None and (encoder is None or tokenizer is None):
        encoder, tokenizer = load_encoder(encoder_path)
    model = model.eval()
    version, tmp = registry.begin_version(Path(registry_dir), version)
    try:
        parity: dict[str, float] = {}
        with torch.no_grad():
            items = model.item_matrix()
            text_path = model.item.head(model.text_vectors)
        # user tower
        user = UserEncoder(model.user).eval()
        max_len = model.cfg.max_len
        idx = _parity_histories(model.n_items, min(max_len, 50))
        seq, mask = model.embed_sequences(idx, items)
        onnx.save(user_tower_graph(model.user), str(tmp / "user_tower.onnx"))
        feeds = {"item_vectors": seq.numpy(), "mask": mask.numpy()}
        parity["user_tower"] = check_parity(tmp / "user_tower.onnx", user, feeds, tol)
        # item head (text path of the item tower)
        head = model.item.head.eval()
        onnx_export(
            head,
            (model.text_vectors[:3],),
            tmp / "item_head.onnx",
            ["text_vectors"],
            ["item_vectors"],
            {"text_vectors": {0: "items"}, "item_vectors": {0: "items"}},
        )
        feeds = {"text_vectors": model.text_vectors.numpy()}
        parity["item_head"] = check_parity(tmp / "item_head.onnx", head, feeds, tol)
        # item text encoder
        if text_encoder_from is not None:
            src = Path(text_encoder_from)
            for f in src.glob("text_encoder*.onnx"):
                shutil.copy2(f, tmp / f.name)
            shutil.copytree(src / "tokenizer", tmp / "tokenizer")
            old = registry.read_manifest(src)["metrics"].get("parity_max_abs_diff", {})
            parity["text_encoder"] = float(old.get("text_encoder", 0.0))
            pad_id = int(json.loads((src / "config.json").read_text("utf-8"))["pad_token_id"])
        else:
            assert encoder is not None  # noqa: S101 (narrowing for mypy)
            pad_id = _export_text_encoder(encoder, tokenizer, texts, tmp, parity, tol, int8)
        if int8:
            quantize_int8(tmp / "user_tower.onnx", tmp / "user_tower.int8.onnx")
        np.save(tmp / "item_vectors.npy", items.numpy().astype(np.float32))
        if model.neighbours is not None:
            model.neighbours.save(tmp)
        np.save(tmp / "id_part.npy", (items - text_path).numpy().astype(np.float32))
        np.save(tmp / "text_vectors.npy", model.text_vectors.numpy().astype(np.float32))
        np.save(tmp / "popularity.npy", model.counts.numpy().astype(np.float32))
        (tmp / "items.json").write_text(
            json.dumps({"item_ids": list(item_ids), "titles": list(titles)}), encoding="utf-8"
        )
        config = {
            "model": model.cfg.as_dict(),
            "max_text_tokens": MAX_TEXT_TOKENS,
            "pad_token_id": pad_id,
        }
        (tmp / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
        torch.save({"config": model.cfg.as_dict(), "state": model.state_dict()}, tmp / "model.pt")
        all_metrics = {**(metrics or {}), "parity_max_abs_diff": parity}
        return registry.commit_version(
            tmp, version, base_model, all_metrics, extra, make_current=make_current
        )
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _export_text_encoder(
    encoder: PooledEncoder,
    tokenizer: Any,
    texts: Sequence[str],
    tmp: Path,
    parity: dict[str, float],
    tol: float,
    int8: bool,
) -> int:
    encoder = encoder.eval()
    sample = tokenize(tokenizer, list(texts[:16]) or ["an item"])
    onnx_export(
        encoder,
        (sample["input_ids"][:2], sample["attention_mask"][:2]),
        tmp / "text_encoder.onnx",
        ["input_ids", "attention_mask"],
        ["text_vector"],
        {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
         "text_vector": {0: "batch"}},
    )  # fmt: skip
    feeds = {k: v.numpy() for k, v in sample.items()}
    parity["text_encoder"] = check_parity(tmp / "text_encoder.onnx", encoder, feeds, tol)
    tokenizer.save_pretrained(str(tmp / "tokenizer"))
    if int8:
        quantize_int8(tmp / "text_encoder.onnx", tmp / "text_encoder.int8.onnx")
    return int(getattr(tokenizer, "pad_token_id", 0) or 0)


def load_torch_model(version_dir: Path) -> TwoTower:
    """The torch model of a version (for incremental fine-tunes and the eager benchmark)."""
    from stream_rec.model.net import ModelConfig

    blob = torch.load(Path(version_dir) / "model.pt", map_location="cpu", weights_only=True)
    cfg = ModelConfig(**blob["config"])
    state = blob["state"]
    model = TwoTower(cfg, state["text_vectors"], state["counts"])
    model.load_state_dict(state)
    model.neighbours = Neighbours.load(Path(version_dir))
    return model.eval()
