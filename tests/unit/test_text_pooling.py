"""The item tower's text encoder against the reference: sentence-transformers' own pipeline
(Transformer → Pooling → Normalize) of the shipped all-MiniLM-L6-v2 folder, loaded offline."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stream_rec.model.text import MAX_TEXT_TOKENS, default_encoder_path, encode_texts, load_encoder

TEXTS = [
    "Toy Story (1995). genres Animation, Children's, Comedy",
    "a quiet love story",
    "robot ghost. genres Horror, Sci-Fi",
    "x",
    " ".join(f"item{i} scene" for i in range(80)),  # past MAX_TEXT_TOKENS: truncated alike
]


def test_pooling_matches_sentence_transformers_on_minilm() -> None:
    st = pytest.importorskip("sentence_transformers")
    folder = default_encoder_path()
    pooling = json.loads((folder / "1_Pooling" / "config.json").read_text("utf-8"))
    assert pooling["pooling_mode_mean_tokens"] and not pooling["pooling_mode_cls_token"]
    reference = st.SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    reference.max_seq_length = MAX_TEXT_TOKENS
    want = reference.encode(TEXTS, convert_to_numpy=True, batch_size=2)
    encoder, tok = load_encoder(folder)
    got = encode_texts(encoder, tok, TEXTS, batch_size=3)  # other padding than the reference's
    assert got.shape == want.shape == (len(TEXTS), 384)
    assert np.abs(got - want).max() <= 1e-5
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
