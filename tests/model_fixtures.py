"""Builders of a tiny, real model for tests: a random BERT and a planted catalogue.

Nothing is downloaded: the WordPiece vocabulary is written to a folder and the BERT weights are
randomly initialised with a fixed seed. The planted dataset walks the catalogue in steps of +1
(item i is followed by i+1), a pattern a trained model must pick up. Used by the unit tests'
fixtures and by the integration tests of the learning loop.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

WORDS = (
    "action comedy drama horror thriller romance sci fi war western animation documentary "
    "movie film story night day star love life man woman city space robot ghost king queen "
    "genres year alpha beta gamma delta red blue green black white big small old new"
).split()
N_ITEMS = 24


def build_tiny_encoder(folder: Path) -> Path:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "'", "(", ")", "-"]
    vocab += [str(d) for d in range(10)] + [f"##{d}" for d in range(10)] + WORDS
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tok = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    tok.save_pretrained(str(folder))
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(cfg, add_pooling_layer=False).save_pretrained(str(folder))
    return folder


def planted_dataset(n_users: int = 48, length: int = 10, seed: int = 0) -> Any:
    """Users walk the catalogue in steps of +1 (item i is followed by i+1)."""
    from stream_rec.data.frame import Dataset, Interaction
    from stream_rec.data.movielens import movielens_item

    rng = random.Random(seed)  # noqa: S311 - test data
    items = {}
    for i in range(1, N_ITEMS + 1):
        title = f"{WORDS[i % len(WORDS)]} {WORDS[(3 * i) % len(WORDS)]}"
        genres = (WORDS[i % 11].capitalize(),)
        items[str(i)] = movielens_item(str(i), title, 1990 + i, genres)
    inter = []
    for u in range(1, n_users + 1):
        start = rng.randrange(N_ITEMS)
        for t in range(length):
            iid = (start + t) % N_ITEMS + 1
            inter.append(Interaction(str(u), str(iid), "rate", 4.0, 1000.0 + t))
    return Dataset("planted", items, inter)


def planted_text_vectors(encoder_dir: Path, planted: Any) -> Any:
    from stream_rec.eval.protocol import make_split
    from stream_rec.model.text import cached_text_vectors

    split = make_split(planted)
    return cached_text_vectors([planted.items[i].text for i in split.item_ids], encoder_dir, None)


def train_planted(planted: Any, text_vectors: Any, epochs: int = 40) -> Any:
    from stream_rec.eval.protocol import make_split
    from stream_rec.model.net import ModelConfig
    from stream_rec.model.train import TrainConfig, train

    split = make_split(planted)
    mcfg = ModelConfig(
        text_dim=32, dim=16, head_hidden=32, layers=1, heads=2, max_len=16, dropout=0.0
    )
    tcfg = TrainConfig(
        epochs=epochs,
        batch_size=16,
        lr=1e-2,
        eval_every=10,
        patience=10,
        final_fit=False,
        cold_drop=0.0,
    )
    return split, train(split, text_vectors, mcfg, tcfg)


def export_planted(trained: Any, encoder_dir: Path, planted: Any, registry_root: Path) -> Path:
    from stream_rec.model.export import export_version
    from stream_rec.model.text import load_encoder

    split, result = trained
    enc, tok = load_encoder(encoder_dir)
    return Path(
        export_version(
            result.model,
            item_ids=split.item_ids,
            titles=[planted.items[i].title for i in split.item_ids],
            texts=[planted.items[i].text for i in split.item_ids],
            registry_dir=registry_root,
            encoder=enc,
            tokenizer=tok,
            base_model="tiny-bert",
            metrics={"valid_ndcg10": result.valid_ndcg10},
        )
    )
