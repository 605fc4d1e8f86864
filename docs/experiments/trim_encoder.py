"""A copy of the bundled encoder that embeds MovieLens-100K's item texts exactly, small enough to
carry to a lent GPU machine (its transfer limit is 64 MiB; the encoder is 87 MiB).

The rows of the word-embedding matrix for tokens that no item text (or title) of the catalogue
uses are set to zero; nothing else changes, so every item's text vector is the same bit for bit
(checked here on the whole catalogue), and LoRA on the encoder (``--tune-text``: attention and
dense projections, not the embeddings) trains the same. The gzip of the weights is ~45 MB.

    PYTHONPATH=. python docs/experiments/trim_encoder.py OUT_FOLDER
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(out: Path) -> None:
    from safetensors.numpy import load_file, save_file
    from transformers import AutoTokenizer

    from stream_rec.data.movielens import load_movielens
    from stream_rec.model.text import default_encoder_path, encode_texts, load_encoder
    from stream_rec.settings import load_settings

    src = default_encoder_path()
    shutil.copytree(src, out, ignore=shutil.ignore_patterns("model.safetensors"))
    ds = load_movielens("movielens-100k", load_settings().observability.home)
    texts = [it.text for it in ds.items.values()] + [it.title for it in ds.items.values()]
    tok = AutoTokenizer.from_pretrained(src)
    used = set(tok.all_special_ids)
    for t in texts:
        used.update(tok(t, truncation=False)["input_ids"])
    weights = load_file(src / "model.safetensors")
    key = next(k for k in weights if k.endswith("word_embeddings.weight"))
    emb = weights[key].copy()
    keep = np.zeros(len(emb), dtype=bool)
    keep[sorted(used)] = True
    emb[~keep] = 0.0
    weights[key] = emb
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    a = encode_texts(*load_encoder(src), texts)
    b = encode_texts(*load_encoder(out), texts)
    diff = float(np.abs(a - b).max())
    print(f"{key}: kept {int(keep.sum())} of {len(emb)} rows; max |diff| over {len(texts)} texts:")
    print(diff)
    if diff:
        sys.exit("the trimmed encoder does not embed the catalogue the same")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
