"""Model side: training, export parity, registry, runtime scoring, cold start, LoRA."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from stream_rec.eval.protocol import evaluate, make_split
from stream_rec.model import registry
from stream_rec.model.export import ParityError, check_parity, export_version, load_torch_model
from stream_rec.model.neighbours import BlendParams
from stream_rec.model.net import ModelConfig
from stream_rec.model.ort_graph import choose_providers
from stream_rec.model.ranking import TorchRanker
from stream_rec.model.runtime import OnnxScorer
from stream_rec.model.train import TrainConfig, train
from stream_rec.serving.scorer import CatalogItem, Scorer, ScoreRequest
from stream_rec.settings import load_settings


def test_training_reduces_loss(trained_planted) -> None:  # type: ignore[no-untyped-def]
    _, result = trained_planted
    losses = [r["loss"] for r in result.history]
    assert losses[-1] < 0.6 * losses[0]
    assert result.valid_ndcg10 > 0.5  # the +1 walk is learnable


def test_training_is_reproducible(planted, planted_text_vectors) -> None:  # type: ignore[no-untyped-def]
    split = make_split(planted)
    mcfg = ModelConfig(text_dim=32, dim=8, head_hidden=16, layers=1, heads=1, max_len=8)
    tcfg = TrainConfig(epochs=2, batch_size=16, final_fit=False, eval_every=1, seed=3)
    a = train(split, planted_text_vectors, mcfg, tcfg)
    b = train(split, planted_text_vectors, mcfg, tcfg)
    assert [r["loss"] for r in a.history] == [r["loss"] for r in b.history]


def test_export_parity_and_manifest(exported_version: Path) -> None:
    manifest = registry.verify(exported_version)
    parity = manifest["metrics"]["parity_max_abs_diff"]
    assert set(parity) == {"user_tower", "item_head", "text_encoder"}
    assert max(parity.values()) <= 1e-4
    for name in ("user_tower.onnx", "item_head.onnx", "text_encoder.onnx", "items.json"):
        assert name in manifest["files"]
    root = exported_version.parent.parent
    assert registry.resolve(root) == exported_version
    assert not list((root / "versions").glob(".tmp-*"))


def test_registry_detects_tampering(exported_version: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "v"
    shutil.copytree(exported_version, copy)
    with open(copy / "popularity.npy", "ab") as f:
        f.write(b"x")
    with pytest.raises(registry.RegistryError):
        registry.verify(copy)


def test_parity_check_fails_loudly(exported_version: Path) -> None:
    head = load_torch_model(exported_version).item.head
    with torch.no_grad():
        head.lin.bias += 1.0  # the ONNX file no longer matches this module
    feeds = {"text_vectors": np.random.default_rng(0).normal(size=(4, 32)).astype(np.float32)}
    with pytest.raises(ParityError):
        check_parity(exported_version / "item_head.onnx", head, feeds)


def test_runtime_ranks_planted_item_first(exported_version: Path) -> None:
    scorer = OnnxScorer.load(exported_version.parent.parent, load_settings(device="cpu"))
    assert isinstance(scorer, Scorer)
    assert scorer.version == exported_version.name
    reqs = [
        ScoreRequest("u1", ["3", "4", "5"]),
        ScoreRequest("u2", ["10", "11", "12", "13"], exclude=frozenset({"1"})),
        ScoreRequest("u3", []),
    ]
    out = scorer.score(reqs, k=5)
    assert out[0][0].item_id == "6"
    assert out[0][0].reason is not None and out[0][0].reason.startswith("because you watched ")
    assert out[1][0].item_id == "14"
    assert all(r.item_id not in {"10", "11", "12", "13", "1"} for r in out[1])
    assert len(out[2]) == 5  # no history: popularity


def test_runtime_matches_torch_ranking(exported_version: Path, trained_planted) -> None:  # type: ignore[no-untyped-def]
    split, _ = trained_planted
    model = load_torch_model(exported_version)
    scorer = OnnxScorer.load(exported_version, load_settings(device="cpu"))
    for n in (1, 5, 20):
        hists = [split.history(u, "test") for u in range(n)]
        want = TorchRanker(model).score(hists)
        got = scorer.score_matrix([[split.item_ids[i] for i in h] for h in hists])
        assert np.abs(got - want).max() <= 1e-4
    # users without history get the popularity row, the others their own scores
    raw = [[split.item_ids[i] for i in split.history(u, "test")] for u in range(10)]
    mixed = scorer.score_matrix([[], *raw, []])
    assert np.array_equal(mixed[0], scorer.pop_score) and np.array_equal(mixed[-1], mixed[0])
    assert np.abs(mixed[1:-1] - scorer.score_matrix(raw)).max() <= 1e-5


def test_new_item_offset_lifts_new_items(exported_version: Path, trained_planted) -> None:  # type: ignore[no-untyped-def]
    split, _ = trained_planted
    model = load_torch_model(exported_version)
    base = OnnxScorer.load(exported_version, load_settings(device="cpu"))
    bumped = OnnxScorer.load(exported_version, load_settings(device="cpu", new_item_offset=3.0))
    hists = [split.history(u, "test") for u in range(20)]
    raw = [[split.item_ids[i] for i in h] for h in hists]
    # the offset alone (the neighbour blend, if the version has one, rescales every score)
    base.set_blend(BlendParams())
    bumped.set_blend(BlendParams())
    model.cfg.knn_weight = model.cfg.trans_weight = 0.0
    # the version's torch model with the same offset agrees (no interactions = no ID part)
    model.cfg.new_item_offset = 3.0
    assert np.abs(bumped.score_matrix(raw) - TorchRanker(model).score(hists)).max() <= 1e-4
    new_item = CatalogItem("new-1", "robot ghost", "robot ghost. genres Horror")
    for scorer in (base, bumped):
        scorer.upsert_items([new_item])
    new = ~bumped.id_part.any(axis=1)
    assert new[bumped.index["new-1"]] and not new.all()
    for n in (1, 20):  # both product paths
        diff = bumped.score_matrix(raw[:n]) - base.score_matrix(raw[:n])
        assert np.allclose(diff[:, new], 3.0, atol=1e-5)
        assert np.allclose(diff[:, ~new], 0.0, atol=1e-6)


def test_int8_scorer_agrees_on_top_item(exported_version: Path) -> None:
    scorer = OnnxScorer.load(exported_version, load_settings(device="cpu"), precision="int8")
    assert scorer.score([ScoreRequest("u", ["7", "8", "9"])], k=3)[0][0].item_id == "10"


def test_precision_is_the_workers_setting(exported_version: Path) -> None:
    assert OnnxScorer.load(exported_version, load_settings(device="cpu")).precision == "fp32"
    int8 = OnnxScorer.load(exported_version, load_settings(device="cpu", precision="int8"))
    assert int8.precision == "int8" and int8._text_file.name == "text_encoder.int8.onnx"
    # an explicit argument (stream-rec eval/bench --precision) wins over the setting
    fp32 = OnnxScorer.load(
        exported_version, load_settings(device="cpu", precision="int8"), precision="fp32"
    )
    assert fp32._text_file.name == "text_encoder.onnx"


def test_a_stream_items_new_text_is_embedded_again(exported_version: Path) -> None:
    scorer = OnnxScorer.load(exported_version, load_settings(device="cpu"))
    scorer.upsert_items([CatalogItem("new-1", "robot ghost", "robot ghost. genres Horror")])
    first = scorer.items[scorer.index["new-1"]].copy()
    scorer.upsert_items([CatalogItem("new-1", "robot ghost", "a quiet love story. genres Romance")])
    assert np.abs(scorer.items[scorer.index["new-1"]] - first).max() > 1e-3


def test_upsert_cold_item_from_text(exported_version: Path, planted) -> None:  # type: ignore[no-untyped-def]
    scorer = OnnxScorer.load(exported_version, load_settings(device="cpu"))
    # an existing item re-embedded from the same text gets the same text-path vector
    it = planted.items["5"]
    before = scorer.items[scorer.index["5"]].copy()
    scorer.upsert_items([CatalogItem("5", it.title, it.text)])
    assert np.abs(scorer.items[scorer.index["5"]] - before).max() <= 1e-4
    scorer.upsert_items([CatalogItem("new-1", "robot ghost", "robot ghost. genres Horror")])
    assert "new-1" in scorer.index
    out = scorer.score([ScoreRequest("u", ["1", "2"])], k=len(scorer.item_ids))
    assert "new-1" in {s.item_id for s in out[0]}


def test_providers_follow_settings() -> None:
    assert choose_providers("cpu") == ["CPUExecutionProvider"]
    if not torch.cuda.is_available():
        assert choose_providers("auto") == ["CPUExecutionProvider"]


def test_cold_items_excluded_from_training(planted, planted_text_vectors) -> None:  # type: ignore[no-untyped-def]
    cold = ["3", "4", "17"]
    split = make_split(planted, cold)
    cold_idx = {split.index[c] for c in cold}
    for seq in split.training_sequences(True):
        assert not cold_idx & set(seq)
    mcfg = ModelConfig(text_dim=32, dim=8, head_hidden=16, layers=1, heads=1, max_len=8)
    res = train(split, planted_text_vectors, mcfg, TrainConfig(epochs=2, batch_size=16))
    counts = res.model.counts.numpy()
    assert all(counts[i] == 0 for i in cold_idx)
    gate = res.model.item.gate(res.model.counts)
    assert all(float(gate[i]) == 0.0 for i in cold_idx)  # cold items: text path only
    assert counts.sum() > 0
    # held-out items remain rankable: metrics over users whose test target is cold
    metrics, _ = evaluate(TorchRanker(res.model), split, "test", users=split.cold_users())
    assert metrics.users == len(split.cold_users())


def test_lora_text_encoder_merge_then_export_parity(
    trained_planted,
    tiny_encoder_dir: Path,
    planted,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    from stream_rec.model.lora import lora_text_encoder, merge_lora
    from stream_rec.model.text import load_encoder, tokenize

    split, result = trained_planted
    enc, tok = load_encoder(tiny_encoder_dir)
    texts = [planted.items[i].text for i in split.item_ids]
    batch = tokenize(tok, texts[:8])
    with torch.no_grad():
        base_out = enc(**batch).clone()
    peft_enc = lora_text_encoder(enc, rank=4)
    opt = torch.optim.SGD([p for p in peft_enc.parameters() if p.requires_grad], lr=0.5)
    for _ in range(3):
        loss = -(peft_enc(**batch)[:, 0]).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    merged = merge_lora(peft_enc).eval()
    assert not any("lora" in n for n, _ in merged.named_parameters())
    with torch.no_grad():
        assert (merged(**batch) - base_out).abs().max() > 1e-3  # the adapters did something
    out = export_version(
        result.model,
        item_ids=split.item_ids,
        titles=split.item_ids,
        texts=texts,
        registry_dir=tmp_path,
        encoder=merged,  # type: ignore[arg-type]
        tokenizer=tok,
        base_model="tiny-bert+lora",
        int8=False,
    )
    parity = registry.verify(out)["metrics"]["parity_max_abs_diff"]
    assert parity["text_encoder"] <= 1e-4


def test_finetune_incremental_publishes_merged_version(
    exported_version: Path, tmp_path: Path
) -> None:
    from stream_rec.model.lora import finetune_incremental

    examples = [["20", "21", "22", "23", "24"], ["1", "2", "3", "4"]]
    replay = [["5", "6", "7", "8", "9"]]
    new_dir = finetune_incremental(exported_version, examples, replay, tmp_path, epochs=2)
    assert new_dir is not None
    manifest = registry.verify(new_dir)
    assert manifest["parent"] == exported_version.name
    assert not any(
        "lora" in k for k in torch.load(new_dir / "model.pt", weights_only=True)["state"]
    )
    scorer = OnnxScorer.load(tmp_path, load_settings(device="cpu"))
    assert scorer.version == new_dir.name
    assert scorer.score([ScoreRequest("u", ["3", "4", "5"])], k=1)[0][0].item_id == "6"
    items = json.loads((new_dir / "items.json").read_text())
    assert len(items["item_ids"]) == 24
    # the serving blend travels with the fine-tuned version
    parent_cfg = json.loads((exported_version / "config.json").read_text())["model"]
    new_cfg = json.loads((new_dir / "config.json").read_text())["model"]
    for key in ("knn_last", "knn_decay", "knn_weight", "trans_weight", "new_item_offset"):
        assert new_cfg[key] == parent_cfg[key]
    for version in (exported_version, new_dir):
        assert (version / "neighbours.npy").is_file() and (version / "transitions.npy").is_file()
    # a gate that never passes publishes nothing
    assert (
        finetune_incremental(
            exported_version, examples, replay, tmp_path, gate=lambda m: 0.0, min_gain=1.0
        )
        is None
    )


def test_feedback_adjustments_move_items_in_units_of_the_score_spread(
    exported_version: Path,
) -> None:
    scorer = OnnxScorer.load(exported_version, load_settings(device="cpu"))
    hist = ["7", "8", "9"]
    n = len(scorer.item_ids)
    ranked = [x.item_id for x in scorer.score([ScoreRequest("u", hist)], k=n)[0]]
    top, low = ranked[0], ranked[-1]
    spread = float(scorer.score_matrix([hist])[0].std())
    out = scorer.score([ScoreRequest("u", hist, adjust={low: 100.0, top: -100.0})], k=n)[0]
    got = [x.item_id for x in out]
    assert got[0] == low and got[-1] == top  # a liked item first, a passed one last
    plain = {x.item_id: x.score for x in scorer.score([ScoreRequest("u", hist)], k=n)[0]}
    moved = {x.item_id: x.score for x in out}
    assert np.isclose(moved[low] - plain[low], 100.0 * spread, rtol=1e-4)
    assert all(np.isclose(moved[i], plain[i]) for i in ranked[1:-1])
    # unknown items in the adjustments are ignored; excluded items stay out whatever the boost
    out = scorer.score([ScoreRequest("u", hist, frozenset({low}), {low: 100.0, "nope": 1.0})], k=3)
    assert low not in {x.item_id for x in out[0]}


def test_warm_up_changes_nothing_the_scorer_serves(exported_version: Path) -> None:
    """The warm-up runs the serving session before the first event; what is served after it
    is what a scorer without it serves."""
    cold = OnnxScorer.load(exported_version, load_settings(device="cpu"))
    warm = OnnxScorer.load(exported_version, load_settings(device="cpu"))
    warm.warm_up()
    reqs = [ScoreRequest(f"u{n}", cold.item_ids[n : n + 3]) for n in range(5)]
    assert warm.score(reqs, 5) == cold.score(reqs, 5)
    assert len(warm._serve_sess) == 1  # the one serving graph, already built and run


def test_prewarm_leaves_no_heavy_import_for_the_first_swap(exported_version: Path) -> None:
    """A fallback worker prewarms at start; loading its first version then imports nothing
    from onnx, onnxruntime, tokenizers or torch (imports hold the interpreter, events wait)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from stream_rec.model.ort_graph import prewarm\n"
        "from stream_rec.model.runtime import OnnxScorer\n"
        "from stream_rec.settings import load_settings\n"
        "settings = load_settings(device='cpu')\n"
        "prewarm(settings.model.device)\n"
        "before = set(sys.modules)\n"
        f"OnnxScorer({str(exported_version)!r}, settings).warm_up()\n"
        "heavy = ('onnx', 'onnxruntime', 'tokenizers', 'torch')\n"
        "print(sorted(m for m in set(sys.modules) - before if m.split('.')[0] in heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr
