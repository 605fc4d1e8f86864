"""``--tune-text``: LoRA on the text encoder trained with the towers, merged, exported."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from stream_rec.eval.protocol import make_split
from stream_rec.model import registry
from stream_rec.model.export import export_version
from stream_rec.model.net import ModelConfig
from stream_rec.model.text import encode_texts, load_encoder
from stream_rec.model.train import TrainConfig, train
from stream_rec.model.tune import TuneConfig


def _train(planted: Any, vectors: np.ndarray, enc_dir: Path, tune_text: bool) -> Any:
    split = make_split(planted)
    texts = [planted.items[i].text for i in split.item_ids]
    mcfg = ModelConfig(text_dim=32, dim=16, head_hidden=32, layers=1, heads=2, max_len=16)
    tcfg = TrainConfig(
        epochs=3, batch_size=16, lr=1e-2, eval_every=1, final_fit=True, tune_text=tune_text
    )
    tune = TuneConfig(rank=4, alpha=8, lr=1e-2, items_per_step=8, refresh_every=2)
    return (
        split,
        texts,
        train(split, vectors, mcfg, tcfg, texts=texts, encoder_path=enc_dir, tune=tune),
    )


def test_tuned_encoder_moves_is_merged_and_embeds_new_items(
    planted: Any, planted_text_vectors: np.ndarray, tiny_encoder_dir: Path, tmp_path: Path
) -> None:
    import onnxruntime as ort

    split, texts, res = _train(planted, planted_text_vectors, tiny_encoder_dir, tune_text=True)
    enc = res.text_encoder
    assert enc is not None
    assert not any("lora" in n for n, _ in enc.named_parameters())  # merged, no peft left
    _, tok = load_encoder(tiny_encoder_dir)
    tuned = encode_texts(enc, tok, texts)
    assert np.abs(tuned - planted_text_vectors).max() > 1e-3  # the adapters learned something
    # the model's text vectors are the tuned encoder's output (served = trained)
    assert np.allclose(res.model.text_vectors.numpy(), tuned, atol=1e-5)
    out = export_version(
        res.model,
        item_ids=split.item_ids,
        titles=split.item_ids,
        texts=texts,
        registry_dir=tmp_path,
        encoder=enc,
        tokenizer=tok,
        int8=False,
    )
    assert registry.verify(out)["metrics"]["parity_max_abs_diff"]["text_encoder"] <= 1e-4
    # an item added from the stream is embedded by the tuned encoder, not the pretrained one
    new_text = ["alpha beta gamma (2001). Drama"]
    sess = ort.InferenceSession(str(out / "text_encoder.onnx"), providers=["CPUExecutionProvider"])
    batch = tok(new_text, return_tensors="np")
    got = sess.run(
        None, {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    )
    want = encode_texts(enc, tok, new_text)
    assert np.abs(got[0] - want).max() <= 1e-4


def test_frozen_encoder_is_the_default(
    planted: Any, planted_text_vectors: np.ndarray, tiny_encoder_dir: Path
) -> None:
    _, _, res = _train(planted, planted_text_vectors, tiny_encoder_dir, tune_text=False)
    assert res.text_encoder is None
    assert torch.equal(res.model.text_vectors, torch.from_numpy(planted_text_vectors))
