"""Shared fixtures of the model/eval unit tests: a tiny random BERT and a planted dataset.

Nothing is downloaded: the WordPiece vocabulary is written to a temporary folder and the BERT
weights are randomly initialised with a fixed seed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

WORDS = (
    "action comedy drama horror thriller romance sci fi war western animation documentary "
    "movie film story night day star love life man woman city space robot ghost king queen "
    "genres year alpha beta gamma delta red blue green black white big small old new"
).split()
N_ITEMS = 24


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
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


def planted_dataset(n_users: int = 48, length: int = 10, seed: int = 0):  # type: ignore[no-untyped-def]
    """Users walk the catalogue in steps of +1 (item i is followed by i+1): a planted pattern."""
    import random

    from stream_rec.data.movielens import Interaction, Item, MovieLens

    rng = random.Random(seed)
    items = {}
    for i in range(1, N_ITEMS + 1):
        title = f"{WORDS[i % len(WORDS)]} {WORDS[(3 * i) % len(WORDS)]}"
        genres = (WORDS[i % 11].capitalize(),)
        items[str(i)] = Item(str(i), title, 1990 + i, genres)
    inter = []
    for u in range(1, n_users + 1):
        start = rng.randrange(N_ITEMS)
        for t in range(length):
            iid = (start + t) % N_ITEMS + 1
            inter.append(Interaction(str(u), str(iid), 4.0, 1000 + t))
    return MovieLens("planted", items, inter)


@pytest.fixture(scope="session")
def planted():  # type: ignore[no-untyped-def]
    return planted_dataset()


@pytest.fixture(scope="session")
def planted_text_vectors(tiny_encoder_dir: Path, planted):  # type: ignore[no-untyped-def]
    from stream_rec.eval.protocol import make_split
    from stream_rec.model.text import cached_text_vectors

    split = make_split(planted)
    return cached_text_vectors(
        [planted.items[i].text for i in split.item_ids], tiny_encoder_dir, None
    )


@pytest.fixture(scope="session")
def trained_planted(planted, planted_text_vectors):  # type: ignore[no-untyped-def]
    from stream_rec.eval.protocol import make_split
    from stream_rec.model.net import ModelConfig
    from stream_rec.model.train import TrainConfig, train

    split = make_split(planted)
    mcfg = ModelConfig(
        text_dim=32, dim=16, head_hidden=32, layers=1, heads=2, max_len=16, dropout=0.0
    )
    tcfg = TrainConfig(
        epochs=40,
        batch_size=16,
        lr=1e-2,
        eval_every=10,
        patience=10,
        final_fit=False,
        cold_drop=0.0,
    )
    return split, train(split, planted_text_vectors, mcfg, tcfg)


@pytest.fixture(scope="session")
def exported_version(trained_planted, tiny_encoder_dir: Path, planted, tmp_path_factory):  # type: ignore[no-untyped-def]
    from stream_rec.model.export import export_version
    from stream_rec.model.text import load_encoder

    split, result = trained_planted
    enc, tok = load_encoder(tiny_encoder_dir)
    root = tmp_path_factory.mktemp("registry")
    return export_version(
        result.model,
        item_ids=split.item_ids,
        titles=[planted.items[i].title for i in split.item_ids],
        texts=[planted.items[i].text for i in split.item_ids],
        registry_dir=root,
        encoder=enc,
        tokenizer=tok,
        base_model="tiny-bert",
        metrics={"valid_ndcg10": result.valid_ndcg10},
    )
