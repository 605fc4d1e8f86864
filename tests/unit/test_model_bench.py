"""The benchmark and the GPU check run end to end on tiny shapes (CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stream_rec.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]


def test_model_bench_reports_latency_and_throughput(exported_version: Path) -> None:
    from stream_rec.bench.model import run_model_bench

    off = load_settings(device="cpu", diversity=0.0, long_tail=0.0)
    report = run_model_bench(exported_version, off, events=30, threads=1)
    assert report["single_event"]["ort_fp32"]["p99_ms"] > 0
    assert set(report["throughput_users_per_s"]) == {"batch_1", "batch_32", "batch_256"}
    assert report["throughput_users_per_s"]["batch_32"]["ort_fp32_over_torch"] > 0
    assert report["hardware"]["logical_cpus"]
    rr = report["rerank"]
    assert rr["single_event"]["p99_ms"] > 0 and rr["pool"] == 50
    assert (rr["diversity"], rr["long_tail"]) == (0.3, 0.3)  # off in the settings: measured at 0.3
    json.dumps(report)


def test_gpu_check_runs_on_cpu_with_a_flag(tmp_path: Path) -> None:
    from stream_rec.bench.gpu import run_gpu_check

    report = run_gpu_check("cpu", n_items=40, users=12, seq_len=8, steps=1, batches=(1, 4))
    assert report["full_step_ms"] > 0 and report["lora_step_ms"] > 0
    assert set(report["scoring"]) == {"batch_1", "batch_4"}
    assert report["auto_device"] in {"cpu", "cuda"}


def test_text_encoder_check_trains_only_the_lora_adapters() -> None:
    from stream_rec.bench.gpu import run_text_encoder_check

    r = run_text_encoder_check("cpu", steps=1, batch=4, tokens=8, encode_batch=4, layers=1,
                               hidden=32)  # fmt: skip
    assert 0 < r["trainable_params"] < r["total_params"] / 10
    assert r["lora_step_ms_fp32"] > 0 and r["encode_texts_per_s_bf16"] > 0


def test_training_device_resolution() -> None:
    import torch

    from stream_rec.model.train import resolve_device

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            resolve_device("cuda")


def test_gpu_check_script_has_a_cpu_mode() -> None:
    script = (ROOT / "deploy" / "gpu_check.sh").read_text()
    assert "--cpu" in script and "$OUT" in script
    proc = subprocess.run(
        [sys.executable, "-m", "stream_rec.bench.gpu", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0 and "--device" in proc.stdout
