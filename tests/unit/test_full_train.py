"""A full training run of the trainer (bootstrap, retrain and its gate) on a planted frame."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stream_rec.model import registry
from stream_rec.settings import load_settings
from stream_rec.training import full
from stream_rec.training.full import TopicSizes, full_train, read_state

pytestmark = pytest.mark.slow


def _settings(encoder: Path, root: Path, **kw: Any) -> Any:
    base = {"train_epochs": 20, "train_dim": 16, "train_layers": 1, "train_max_len": 16}
    return load_settings(model_path=root, encoder_path=encoder, home=root / "home",
                         device="cpu", **(base | kw))  # fmt: skip


def test_bootstrap_then_a_gated_retrain(
    tiny_encoder_dir: Path, planted: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "registry"
    root.mkdir()
    sizes = TopicSizes(events=480, written=480, items=24)
    out = full_train(_settings(tiny_encoder_dir, root), root, "bootstrap", sizes, lambda s: planted)
    assert out["outcome"] == "promoted" and out["kind"] == "bootstrap"
    v1 = out["version"]
    assert registry.resolve(root).name == v1
    assert out["interactions"] == len(planted.interactions) and out["items"] == len(planted.items)
    assert read_state(root) == {"ts": pytest.approx(read_state(root)["ts"]), "written": 480,
                                "version": v1, "outcome": "promoted"}  # fmt: skip

    # A serving version that ranks every held-out target first cannot be beaten: the
    # candidate is refused and the serving version stays current.
    monkeypatch.setattr(full, "serving_ndcg10", lambda *a: 1.0)
    s = _settings(tiny_encoder_dir, root, promote_tolerance=0.0)
    out = full_train(s, root, "retrain", TopicSizes(600, 600, 24), lambda s: planted)
    assert out["outcome"] == "rejected", out
    assert out["gate_new"] < out["gate_base"] == 1.0 and out["parent"] == v1
    assert registry.resolve(root).name == v1
    assert read_state(root)["written"] == 600  # the schedule moves on either way
    monkeypatch.undo()

    # The same training as the serving one, scored as served (ONNX Runtime): not worse.
    out = full_train(_settings(tiny_encoder_dir, root), root, "retrain", TopicSizes(700, 700, 24),
                     lambda s: planted)  # fmt: skip
    assert out["outcome"] == "promoted", out
    assert registry.resolve(root).name == out["version"] != v1


def test_too_little_data_waits_for_more_events(tiny_encoder_dir: Path, tmp_path: Path) -> None:
    from tests.model_fixtures import planted_dataset

    tiny = planted_dataset(n_users=1, length=1)
    root = tmp_path / "registry"
    root.mkdir()
    s = _settings(tiny_encoder_dir, root, bootstrap_min_events=50)
    with pytest.raises(Exception):  # noqa: B017, PT011 - whatever the split or training raises
        full_train(s, root, "bootstrap", TopicSizes(1, 1, 24), lambda _: tiny)
    assert registry.is_empty(root)
    assert read_state(root) == {"retry_at_written": 51}
