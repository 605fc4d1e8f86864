"""A worker's model path: what is a configuration error (exit 2 at start) and what is not.

A missing folder or a current version that fails its sha256 check stops the worker with one
line saying what to fix; an empty registry is the normal first deployment (the fallback serves,
and says it waits for the first model).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stream_rec.app import load_scorer
from stream_rec.metrics import Metrics
from stream_rec.model import registry
from stream_rec.serving.fallback import PopularityCooccurrenceScorer
from stream_rec.serving.scorer import FALLBACK_NO_REGISTRY, FALLBACK_WAITING, serving_state
from stream_rec.settings import ConfigError, load_settings

ROOT = Path(__file__).resolve().parents[2]


def _worker(model_path: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "STREAM_REC_MODEL_PATH": str(model_path),
        "STREAM_REC_DATA_DIR": str(tmp_path / "data"),
        # Nothing may reach a broker: the check happens before any connection.
        "STREAM_REC_BOOTSTRAP_SERVERS": "127.0.0.1:1",
    }
    return subprocess.run(  # noqa: S603
        [sys.executable, "-m", "stream_rec", "worker"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_missing_model_path_stops_the_worker_with_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "modles"  # a typo of the real folder
    out = _worker(missing, tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    text = " ".join((out.stdout + out.stderr).split())
    assert f"STREAM_REC_MODEL_PATH={missing} does not exist" in text
    assert "Traceback" not in out.stdout + out.stderr


def test_tampered_current_version_stops_the_worker_with_exit_2(
    exported_version: Path, tmp_path: Path
) -> None:
    root = tmp_path / "registry"
    shutil.copytree(exported_version.parent.parent, root)
    current = registry.resolve(root)
    victim = next(p for p in sorted(current.iterdir()) if p.suffix == ".onnx")
    victim.write_bytes(victim.read_bytes() + b"\0")
    with pytest.raises(ConfigError, match="sha256 mismatch"):
        load_scorer(load_settings(model_path=root))
    out = _worker(root, tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    text = " ".join((out.stdout + out.stderr).split())
    assert "sha256 mismatch" in text and "model rollback" in text
    assert "Traceback" not in out.stdout + out.stderr


def test_empty_registry_serves_the_fallback_and_says_it_waits(tmp_path: Path) -> None:
    scorer = load_scorer(load_settings(model_path=tmp_path))
    assert isinstance(scorer, PopularityCooccurrenceScorer)
    assert serving_state(scorer.version, tmp_path) == FALLBACK_WAITING
    assert serving_state(scorer.version, None) == FALLBACK_NO_REGISTRY
    m = Metrics()
    m.set_model(scorer.version)
    assert m.serving_fallback._value.get() == 1.0
    m.set_model("20261204T000000Z-abc")
    assert m.serving_fallback._value.get() == 0.0


def test_a_good_registry_serves_the_model(exported_version: Path) -> None:
    scorer = load_scorer(load_settings(model_path=exported_version.parent.parent))
    assert serving_state(scorer.version, exported_version) == "model"
    assert scorer.version == exported_version.name
