"""Item neighbours: the similarity fit, the per-user scores, the blend, and its serving form."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from stream_rec.model.export import load_torch_model
from stream_rec.model.neighbours import WEIGHTS, Neighbours, blend, standardise
from stream_rec.model.runtime import OnnxScorer
from stream_rec.model.train import TorchRanker
from stream_rec.settings import load_settings

SEQS = [[0, 1], [0, 1, 2], [2, 3]]


def test_fit_is_cosine_of_user_cooccurrence() -> None:
    nb = Neighbours.fit(SEQS, 4)
    h = 1 / np.sqrt(2)
    want = np.array(
        [[0, 1, 0.5, 0], [1, 0, 0.5, 0], [0.5, 0.5, 0, h], [0, 0, h, 0]], dtype=np.float32
    )
    assert np.allclose(nb.sim, want)


def test_scores_sum_the_rows_of_the_last_items() -> None:
    nb = Neighbours.fit(SEQS, 4)
    got = nb.scores([[3, 0, 1], [3], [], [5, 4]], last=2, n_items=6)
    assert got.shape == (4, 6)
    assert np.allclose(got[0], [1, 1, 1, 0, 0, 0])  # rows of 0 and 1; item 3 is older
    assert np.allclose(got[1], [0, 0, 1 / np.sqrt(2), 0, 0, 0])
    assert not got[2].any() and not got[3].any()  # no history; items added after the fit


def test_blend_standardises_both_parts() -> None:
    tower = np.array([[10.0, 20.0, 30.0, 40.0]], dtype=np.float32)
    near = np.array([[3.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    z = standardise(tower)
    assert np.array_equal(blend(tower, near, 0.0), z) and np.array_equal(blend(tower, None, 1), z)
    assert np.allclose(z.mean(), 0.0, atol=1e-6) and np.allclose(z.std(), 1.0, atol=1e-5)
    assert int(np.argmax(blend(tower, near, 0.25))) == 3  # a small weight keeps the order
    assert int(np.argmax(blend(tower, near, 2.0))) == 0  # a large one lets neighbours win
    # a new item has no co-occurrence evidence: its neighbour part is its two-tower part
    new = np.array([False, False, False, True])
    got = blend(tower, near, 1.0, new)
    assert np.isclose(got[0, 3], 2 * z[0, 3])
    assert np.isclose(got[0, 0], blend(tower, near, 1.0)[0, 0])


def test_save_and_load(tmp_path: Path) -> None:
    nb = Neighbours.fit(SEQS, 4)
    nb.save(tmp_path)
    back = Neighbours.load(tmp_path)
    assert back is not None and np.array_equal(back.sim, nb.sim)
    assert Neighbours.load(tmp_path / "missing") is None


def test_training_picks_the_blend_on_validation(trained_planted) -> None:  # type: ignore[no-untyped-def]
    _, result = trained_planted
    fit = result.neighbour_blend
    assert fit["weight"] in WEIGHTS and len(fit["table"]) == 1 + 3 * (len(WEIGHTS) - 1)
    best = max(r["valid_ndcg10"] for r in fit["table"])
    chosen = [r for r in fit["table"] if r["weight"] == fit["weight"]]
    assert max(r["valid_ndcg10"] for r in chosen) == best
    assert result.model.neighbours is not None
    assert result.model.cfg.knn_weight == fit["weight"]


def test_runtime_blend_matches_torch(exported_version: Path, trained_planted, tmp_path) -> None:  # type: ignore[no-untyped-def]
    split, _ = trained_planted
    version = tmp_path / "v"
    shutil.copytree(exported_version, version)
    Neighbours.fit(split.training_sequences(True), len(split.item_ids)).save(version)
    cfg_file = version / "config.json"
    cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    cfg["model"].update(knn_last=3, knn_weight=0.5)
    cfg_file.write_text(json.dumps(cfg), encoding="utf-8")
    blended = OnnxScorer(version, load_settings(device="cpu"), verify=False)
    plain = OnnxScorer(exported_version, load_settings(device="cpu"))
    model = load_torch_model(version)
    assert model.neighbours is not None
    model.cfg.knn_last, model.cfg.knn_weight = 3, 0.5
    for n in (5, 20):  # both catalogue-product paths
        hists = [split.history(u, "test") for u in range(n)]
        raw = [[split.item_ids[i] for i in h] for h in hists]
        got = blended.score_matrix(raw)
        assert np.abs(got - TorchRanker(model).score(hists)).max() <= 1e-4
        assert not np.allclose(got, plain.score_matrix(raw), atol=1e-3)
