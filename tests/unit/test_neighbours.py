"""Item neighbours: the similarity fit, the per-user scores, the blend, and its serving form."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from stream_rec.model.export import load_torch_model
from stream_rec.model.neighbours import TRANS_FILE, TRANS_WEIGHTS, WEIGHTS, BlendParams, Neighbours
from stream_rec.model.ort_graph import (
    blend_inputs,
    catalogue_inputs,
    left_padded,
    serving_graph,
)
from stream_rec.model.ranking import TorchRanker, neighbour_parts, served_scores
from stream_rec.model.runtime import OnnxScorer
from stream_rec.model.train import NEW_TARGET_FLOOR, fit_neighbour_blend
from stream_rec.settings import load_settings

SEQS = [[0, 1], [0, 1, 2], [2, 3]]


def test_fit_is_cosine_of_user_cooccurrence() -> None:
    nb = Neighbours.fit(SEQS, 4)
    h = 1 / np.sqrt(2)
    want = np.array(
        [[0, 1, 0.5, 0], [1, 0, 0.5, 0], [0.5, 0.5, 0, h], [0, 0, h, 0]], dtype=np.float32
    )
    assert np.allclose(nb.sim, want)


def test_transitions_are_directed_and_decay_with_distance() -> None:
    t = Neighbours.fit(SEQS, 4).trans
    assert t is not None
    # pairs one step apart: 0→1 twice, 1→2, 2→3; two steps apart (weight 1/2): 0→2.
    # Divided by sqrt((n_a + 1)(n_b + 1)) with counts 2, 2, 2, 1.
    want = np.zeros((4, 4))
    want[0, 1], want[1, 2], want[0, 2] = 2 / 3, 1 / 3, 0.5 / 3
    want[2, 3] = 1 / np.sqrt(6)
    assert np.allclose(t, want)


def parts(nb: Neighbours, hists: list[list[int]], last: int, decay: float, n: int) -> np.ndarray:
    idx, w = nb.recent(hists, last, decay)
    assert nb.trans is not None
    stacked = torch.from_numpy(nb.stacked([nb.sim, nb.trans], n))
    return neighbour_parts(stacked, idx, w, n).numpy()


def test_parts_sum_the_rows_of_the_last_items_decayed_by_age() -> None:
    nb = Neighbours.fit(SEQS, 4)
    got = parts(nb, [[3, 0, 1], [3], [], [5, 4]], last=2, decay=1.0, n=6)
    assert got.shape == (4, 2, 6)
    sim, trans = got[:, 0], got[:, 1]
    assert np.allclose(trans[0], [0, 2 / 3, 1 / 2, 0, 0, 0])  # directed: nothing back to 0
    assert np.allclose(sim[0], [1, 1, 1, 0, 0, 0])  # rows of 0 and 1; item 3 is older
    assert np.allclose(sim[1], [0, 0, 1 / np.sqrt(2), 0, 0, 0])
    assert not got[2].any() and not got[3].any()  # no history; items added after the fit
    got = parts(nb, [[3, 0, 1]], last=2, decay=0.5, n=4)
    assert np.allclose(got[0, 0], [1, 0.5, 0.75, 0])  # row of 1 + half the row of 0
    assert np.allclose(got[0, 1], [0, 1 / 3, 1 / 3 + 0.5 * 0.5 / 3, 0])


def z(x: np.ndarray) -> np.ndarray:
    return np.asarray((x - x.mean(-1, keepdims=True)) / x.std(-1, keepdims=True))


def test_served_score_standardises_every_part() -> None:
    tower = torch.tensor([[10.0, 20.0, 30.0, 40.0]])
    near = torch.tensor([[[3.0, 0.0, 0.0, 0.0], [0.0, 0.0, 5.0, 0.0]]])
    old = torch.zeros(4, dtype=torch.bool)

    def served(w: list[float], new: torch.Tensor = old, offset: float = 0.0) -> np.ndarray:
        return served_scores(tower, near, torch.tensor(w), new, offset).numpy()

    base = z(tower.numpy())
    assert np.allclose(served([0.0, 0.0]), base, atol=1e-6)
    assert np.allclose(served_scores(tower, None, torch.zeros(0), old, 0.0).numpy(), base)
    assert np.allclose(base.std(), 1.0, atol=1e-5)
    assert int(np.argmax(served([0.25, 0.0]))) == 3  # a small weight keeps the order
    assert int(np.argmax(served([2.0, 0.0]))) == 0  # a large one lets neighbours win
    n = near.numpy()[0]
    assert np.allclose(served([0.5, 0.25]), base + 0.5 * z(n[0]) + 0.25 * z(n[1]), atol=1e-6)
    # a new item has no co-occurrence evidence: its neighbour parts are its two-tower part
    new = torch.tensor([False, False, False, True])
    got = served([1.0, 0.5], new)
    assert np.isclose(got[0, 3], 2.5 * base[0, 3])
    assert np.isclose(got[0, 0], served([1.0, 0.5])[0, 0])
    assert np.allclose(served([1.0, 0.5], new, 0.7) - got, [0, 0, 0, 0.7], atol=1e-6)


def _sum_tower() -> object:
    """A stand-in user tower for the graph test: the sum of the history's item vectors. Like
    the real tower it masks padding itself (the serving graph leaves it unzeroed)."""
    from onnx import TensorProto, helper

    f32 = TensorProto.FLOAT
    graph = helper.make_graph(
        [
            helper.make_node("Unsqueeze", ["mask", "minus_one"], ["mask3"]),
            helper.make_node("Mul", ["item_vectors", "mask3"], ["real"]),
            helper.make_node("ReduceSum", ["real", "one"], ["user_vector"], keepdims=0),
        ],
        "sum_tower",
        [
            helper.make_tensor_value_info("item_vectors", f32, ["b", "t", "d"]),
            helper.make_tensor_value_info("mask", f32, ["b", "t"]),
        ],
        [helper.make_tensor_value_info("user_vector", f32, ["b", "d"])],
        [
            helper.make_tensor("one", TensorProto.INT64, [1], [1]),
            helper.make_tensor("minus_one", TensorProto.INT64, [1], [-1]),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("n_parts", [0, 1, 2])
def test_serving_graph_computes_the_torch_served_score(n_parts: int) -> None:
    import onnxruntime as ort

    rng = np.random.default_rng(n_parts)
    d, n, fitted, last = 8, 30, 25, 4  # 5 items added after the neighbour fit
    items = rng.normal(size=(n, d)).astype(np.float32)
    new = np.arange(n) >= fitted
    stacked = rng.random((fitted, n_parts * n), dtype=np.float32)
    # long, short (padded) and one-item histories; some hold items without a neighbour row
    hists = [rng.choice(n, 7, replace=False).tolist() for _ in range(4)] + [[3, 27], [fitted + 1]]
    weights = np.array([0.5, 0.25][:n_parts], dtype=np.float32)
    feeds = {"hist": left_padded(hists)} | catalogue_inputs(items, items, new, 0.3)
    if n_parts:  # the runtime's layout: zero rows for items without one and for padding
        rows = np.concatenate([stacked, np.zeros((n + 1 - fitted, n_parts * n), np.float32)])
        feeds |= blend_inputs(rows, last, 0.7, weights)
    graph = serving_graph(_sum_tower(), n_parts, last)
    sess = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    got = sess.run(None, feeds)[0]
    users = np.stack([items[h].sum(axis=0) for h in hists])
    raw = torch.from_numpy(users @ items.T)
    near = None
    if n_parts:
        idx, w = Neighbours(np.zeros((fitted, fitted), np.float32)).recent(hists, last, 0.7)
        near = neighbour_parts(torch.from_numpy(stacked), idx, w, n)
    want = served_scores(raw, near, torch.from_numpy(weights), torch.from_numpy(new), 0.3)
    assert got.shape == (len(hists), n) and np.abs(got - want.numpy()).max() <= 1e-4


def test_save_and_load(tmp_path: Path) -> None:
    nb = Neighbours.fit(SEQS, 4)
    nb.save(tmp_path)
    back = Neighbours.load(tmp_path)
    assert back is not None and np.array_equal(back.sim, nb.sim)
    assert back.trans is not None and nb.trans is not None
    assert np.array_equal(back.trans, nb.trans)
    assert Neighbours.load(tmp_path / "missing") is None
    (tmp_path / TRANS_FILE).unlink()  # a version written before the transition part
    old = Neighbours.load(tmp_path)
    assert old is not None and old.trans is None
    assert BlendParams.from_config({"knn_last": 3, "knn_weight": 0.5}) == (3, 1.0, 0.5, 0.0)


def test_training_picks_the_blend_on_validation(trained_planted) -> None:  # type: ignore[no-untyped-def]
    _, result = trained_planted
    fit = result.neighbour_blend
    assert fit["weight"] in WEIGHTS and fit["trans_weight"] in TRANS_WEIGHTS
    assert len(fit["table"]) == 1 + 3 * (len(WEIGHTS) * len(TRANS_WEIGHTS) - 1)
    assert not fit["guarded"]  # the planted split has (almost) no new-item targets
    best = max(r["valid_ndcg10"] for r in fit["table"])
    keys = ("weight", "trans_weight")
    chosen = [r for r in fit["table"] if all(r[k] == fit[k] for k in keys)]
    assert max(r["valid_ndcg10"] for r in chosen) == best
    assert result.model.neighbours is not None
    cfg = result.model.cfg
    assert (cfg.knn_weight, cfg.trans_weight, cfg.knn_decay) == (
        fit["weight"],
        fit["trans_weight"],
        fit["decay"],
    )


def test_new_item_targets_keep_their_place(trained_planted, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    split, result = trained_planted
    model = copy.deepcopy(result.model)
    users = [u for u in range(len(split.user_ids)) if split.target(u, "valid") >= 0]
    targets = sorted({split.target(u, "valid") for u in users[:5]})
    model.counts[targets] = 0.0  # these items now have no training interactions: new
    monkeypatch.setattr("stream_rec.model.calibrate.MIN_USERS", 1)
    fit = fit_neighbour_blend(model, split)
    assert fit["guarded"] and fit["new_targets"] >= 1
    table = fit["table"]
    floor = NEW_TARGET_FLOOR * max(r["valid_ndcg10_new_targets"] for r in table)
    eligible = [r for r in table if r["valid_ndcg10_new_targets"] >= floor]
    keys = ("weight", "trans_weight")
    chosen = [r for r in eligible if all(r[k] == fit[k] for k in keys)]
    assert chosen and max(r["valid_ndcg10"] for r in chosen) == max(
        r["valid_ndcg10"] for r in eligible
    )


def test_runtime_blend_matches_torch(exported_version: Path, trained_planted, tmp_path) -> None:  # type: ignore[no-untyped-def]
    split, _ = trained_planted
    version = tmp_path / "v"
    shutil.copytree(exported_version, version)
    Neighbours.fit(split.training_sequences(True), len(split.item_ids)).save(version)
    cfg_file = version / "config.json"
    cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    blend_cfg = {"knn_last": 3, "knn_decay": 0.7, "knn_weight": 0.5, "trans_weight": 0.4}
    cfg["model"].update(blend_cfg)
    cfg_file.write_text(json.dumps(cfg), encoding="utf-8")
    blended = OnnxScorer(version, load_settings(device="cpu"), verify=False)
    plain = OnnxScorer(exported_version, load_settings(device="cpu"))
    model = load_torch_model(version)
    assert model.neighbours is not None
    for key, value in blend_cfg.items():
        setattr(model.cfg, key, value)
    for n in (1, 5, 20):
        hists = [split.history(u, "test") for u in range(n)]
        raw = [[split.item_ids[i] for i in h] for h in hists]
        got = blended.score_matrix(raw)
        assert np.abs(got - TorchRanker(model).score(hists)).max() <= 1e-4
        assert not np.allclose(got, plain.score_matrix(raw), atol=1e-3)


def test_histories_are_left_padded_to_the_longest_or_the_blend_window() -> None:
    got = left_padded([[4, 5, 6], [7], [1, 2]])
    assert got.tolist() == [[4, 5, 6], [-1, -1, 7], [-1, 1, 2]]
    assert left_padded([[7]], 3).tolist() == [[-1, -1, 7]]


def test_items_without_statistics_take_their_own_part_and_only_text_only_ones_the_offset() -> None:
    """An item that gained interactions after the neighbour fit (a fine-tune's evidence, or a
    row the fine-tune added) has no neighbour statistics: its parts are its own two-tower part,
    as for an item without interactions; the new-item offset stays with the text-only items."""
    sim = np.zeros((4, 4), dtype=np.float32)
    sim[0, 1] = sim[1, 0] = 0.5
    trans = np.zeros((4, 4), dtype=np.float32)
    trans[2, 0] = 0.3  # item 2 only ever led to item 0: it has statistics too
    nb = Neighbours(sim, trans)
    assert nb.has_statistics().tolist() == [True, True, True, False]
    assert nb.without_statistics(6).tolist() == [False, False, False, True, True, True]
    raw = torch.tensor([[1.0, 2.0, 0.5, 3.0, 0.0, 1.5]])
    parts = torch.zeros((1, 1, 6))
    parts[0, 0, :3] = torch.tensor([1.0, 0.0, 2.0])
    new = torch.from_numpy(nb.without_statistics(6))
    text_only = torch.tensor([False, False, False, False, True, False])
    w = torch.tensor([0.5])
    out = served_scores(raw, parts, w, new, 0.7, text_only)[0]
    base = served_scores(raw, None, w, new, 0.0)[0]  # z(raw)
    own = base * 1.5  # z(raw) + 0.5 x z(raw)
    for i in (3, 5):  # evidence after the fit: own part, no offset
        assert out[i].item() == pytest.approx(own[i].item(), abs=1e-5)
    assert out[4].item() == pytest.approx(own[4].item() + 0.7, abs=1e-5)  # text-only: offset
    # without offset_on, the offset follows new (the rule before fine-tunes added evidence)
    assert served_scores(raw, parts, w, new, 0.7)[0][3].item() == pytest.approx(
        own[3].item() + 0.7, abs=1e-5
    )
