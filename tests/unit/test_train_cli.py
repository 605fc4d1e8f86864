"""``stream-rec train --source FILE --items FILE`` end to end through the real command line: a
small JSON-lines export → frame → split → training (tiny config) → ONNX export → a registry
version; and the one-line exit 2 of a source with nothing to train on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stream_rec.model import registry
from stream_rec.ops.replay import behavior_payload, item_payload
from tests.model_fixtures import planted_dataset

ROOT = Path(__file__).resolve().parents[2]


def _run(args: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "STREAM_REC_HOME": str(home),
        "STREAM_REC_DATA_DIR": str(home / "data"),
        "STREAM_REC_DEVICE": "cpu",
        "PYTHONPATH": str(ROOT),
        "COLUMNS": "200",
    }
    env.pop("STREAM_REC_MODEL_PATH", None)
    return subprocess.run(  # noqa: S603 - our own command line
        [sys.executable, "-m", "stream_rec", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=home,
        timeout=600,
    )


def test_train_from_a_jsonl_file(tmp_path: Path, tiny_encoder_dir: Path) -> None:
    ds = planted_dataset(n_users=40, length=8)
    items = tmp_path / "items.jsonl"
    items.write_text("".join(item_payload(i, 1.0).decode() + "\n" for i in ds.items.values()))
    events = tmp_path / "events.jsonl"
    rows = [behavior_payload(x, x.ts).decode() for x in ds.chronological()]
    rows += ['{"user_id": "u", "event": "view", "ts": 1}', "not json"]  # two bad rows
    events.write_text("\n".join(rows) + "\n")
    reg, out = tmp_path / "registry", tmp_path / "metrics.json"
    proc = _run(
        [
            "train", "--source", str(events), "--items", str(items),
            "--encoder", str(tiny_encoder_dir), "--registry", str(reg),
            "--epochs", "10", "--patience", "1", "--dim", "16", "--layers", "1",
            "--max-len", "16", "--no-final-fit", "--out-json", str(out),
        ],
        tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "bad rows left out: 2 (behavior:missing_field 1, behavior:undecodable 1)" in proc.stdout
    assert "MostPopular (train)" in proc.stdout and "ItemKNN-last5 (train)" in proc.stdout
    version = registry.resolve(reg)
    manifest = registry.read_manifest(version)
    assert manifest["dataset"] == "events.jsonl"
    assert manifest["bad_rows"] == {"behavior:missing_field": 1, "behavior:undecodable": 1}
    report = json.loads(out.read_text())
    assert report["version_dir"] == str(version)
    assert report["interactions"] == 40 * 8 and report["items"] == len(ds.items)
    assert report["test"]["users"] == 40
    assert set(report["baselines"]) == {
        "MostPopular (train)", "ItemKNN-last5 (train)",
        "MostPopular (train+valid)", "ItemKNN-last5 (train+valid)",
    }  # fmt: skip
    assert all(0.0 <= m["hr10"] <= 1.0 for m in report["baselines"].values())
    # the served model through `stream-rec eval` (not re-ranked), with its progress bar
    ev_out = tmp_path / "eval.json"
    proc = _run(
        ["eval", "--model", str(reg), "--source", str(events), "--items", str(items),
         "--diversity", "0", "--long-tail", "0", "--out-json", str(ev_out)],
        tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ranking the catalogue for 40 users" in proc.stderr and "40/40" in proc.stderr
    rows = json.loads(ev_out.read_text())
    served = rows[f"two-tower {manifest['version']}"]
    assert served["users"] == 40
    assert abs(served["ndcg10"] - report["test"]["ndcg10"]) <= 1e-3  # the ONNX path, same split
    # the served model through eval, re-ranked, with the figures beyond accuracy and the sweep
    ev = tmp_path / "eval.json"
    proc = _run(
        [
            "eval", "--model", str(reg), "--source", str(events), "--items", str(items),
            "--no-baselines", "--diversity", "0.3", "--long-tail", "0.5", "--sweep",
            "--out-json", str(ev),
        ],
        tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Re-ranking sweep" in proc.stdout and "P@10 chrono" in proc.stdout
    exposure = json.loads(ev.read_text())["exposure"]
    assert (exposure["diversity"], exposure["long_tail"]) == (0.3, 0.5)
    assert exposure["chrono_in_sample"] and exposure["chrono_users"] > 0
    assert len(exposure["sweep"]) == 36
    plain = next(r for r in exposure["sweep"] if r["diversity"] == r["long_tail"] == 0.0)
    assert exposure["not_reranked"] == {k: v for k, v in plain.items() if k in exposure["served"]}
    reranked = next(r for r in exposure["sweep"] if (r["diversity"], r["long_tail"]) == (0.3, 0.5))
    assert exposure["served"] == {k: v for k, v in reranked.items() if k in exposure["served"]}
    row = json.loads(ev.read_text())[f"two-tower {version.name}"]
    assert row["ndcg10"] == pytest.approx(exposure["served"]["ndcg10"])


def test_train_from_nothing_exits_2_with_one_line(tmp_path: Path) -> None:
    items = tmp_path / "items.jsonl"
    items.write_text('{"item_id": "1", "title": "A", "ts": 1}\n')
    events = tmp_path / "events.jsonl"
    events.write_text('{"user_id": "u", "item_id": "7", "event": "view", "ts": 1}\n')
    cases = {
        str(events): "has no valid behaviour events (bad rows: behavior:unknown_item 1)",
        str(tmp_path / "nope.parquet"): "nope.parquet: no such file",
        str(items.with_suffix(".xml")): "no such file",
    }
    (tmp_path / "cat.xml").write_text("<x/>")
    cases[str(tmp_path / "cat.xml")] = "unknown format '.xml'"
    for source, expected in cases.items():
        proc = _run(["train", "--source", source, "--items", str(items)], tmp_path)
        assert proc.returncode == 2, (source, proc.stdout, proc.stderr)
        lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
        assert len(lines) == 1 and expected in lines[0], lines


def test_train_tune_text_exports_the_tuned_encoder(tmp_path: Path, tiny_encoder_dir: Path) -> None:
    ds = planted_dataset(n_users=40, length=8)
    items = tmp_path / "items.jsonl"
    items.write_text("".join(item_payload(i, 1.0).decode() + "\n" for i in ds.items.values()))
    events = tmp_path / "events.jsonl"
    events.write_text(
        "".join(behavior_payload(x, x.ts).decode() + "\n" for x in ds.chronological())
    )
    reg = tmp_path / "registry"
    args = [
        "train", "--source", str(events), "--items", str(items),
        "--encoder", str(tiny_encoder_dir), "--registry", str(reg),
        "--epochs", "2", "--dim", "16", "--layers", "1", "--max-len", "16", "--tune-text",
    ]  # fmt: skip
    bad = _run([*args, "--new-item-offset-rule", "best"], tmp_path)
    assert bad.returncode != 0 and "one_se, balanced, balanced_best" in bad.stdout + bad.stderr
    proc = _run(args, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "±" in proc.stdout  # every metric with its standard error over users
    manifest = registry.read_manifest(registry.resolve(reg))
    assert "LoRA-tuned text encoder" in manifest["base_model"]
    assert manifest["train_config"]["tune_text"] is True
    assert manifest["metrics"]["parity_max_abs_diff"]["text_encoder"] <= 1e-4
