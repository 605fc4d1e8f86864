"""The first model, with no manual step: an empty registry, a worker on the fallback, a trainer
that bootstraps a model from the topics once enough behaviour arrived, and the worker swapping to
it between two micro-batches (no event lost or scored twice). Real broker, real processes, the
bundled sentence encoder."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from stream_rec.records import decode_announcement
from tests.integration.conftest import ROOT, Pipeline, behavior, items_messages, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_ITEMS = 40


def _walks(users: range, length: int, rng: random.Random) -> list[tuple[bytes, bytes]]:
    """Users walk the catalogue in steps of +1 (i3, i4, i5, ...), interleaved in time."""
    seqs = {}
    for u in users:
        start = rng.randrange(N_ITEMS - length)
        seqs[f"u{u}"] = [f"i{start + k}" for k in range(length)]
    out = []
    for k in range(length):
        for user, items in seqs.items():
            out.append((user.encode(), behavior(user, items[k])))
    return out


def _trainer(p: Pipeline, registry: Path, min_events: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "STREAM_REC_BOOTSTRAP_SERVERS": p.bootstrap,
        "STREAM_REC_TOPIC_PREFIX": p.prefix,
        "STREAM_REC_APP_ID": p.prefix.rstrip("."),
        "STREAM_REC_MODEL_PATH": str(registry),
        "STREAM_REC_DATA_DIR": str(p.tmp / "trainer"),
        "STREAM_REC_WEB_PORT": "0",
        "STREAM_REC_LOG_LEVEL": "info",
        "STREAM_REC_BOOTSTRAP_MIN_EVENTS": str(min_events),
        "STREAM_REC_RETRAIN_EVERY_HOURS": "0",
        "STREAM_REC_TRAIN_EPOCHS": "10",
        "STREAM_REC_TRAIN_DIM": "16",
        "STREAM_REC_TRAIN_LAYERS": "1",
        "STREAM_REC_TRAIN_MAX_LEN": "20",
        "STREAM_REC_TRAINER_NICE": "0",
    }
    log = open(p.tmp / "trainer.log", "wb")  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "stream_rec", "trainer"],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    return proc


def test_trainer_bootstraps_the_first_model_and_workers_swap_to_it(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    registry = tmp_path / "registry"
    registry.mkdir()
    w = pipeline.worker(STREAM_REC_MODEL_PATH=str(registry)).start()
    pipeline.produce("items", items_messages(N_ITEMS))
    st = w.wait_ready()
    assert st["model_version"].startswith("fallback")
    assert st["serving"] == "fallback, waiting for first model"
    code, text = w.get("/metrics")
    assert code == 200 and "stream_rec_serving_fallback 1.0" in text

    rng = random.Random(7)
    history = _walks(range(60), 8, rng)  # 480 events
    pipeline.produce("behavior", history)
    trainer = _trainer(pipeline, registry, min_events=len(history))
    sent = len(history)
    stop = threading.Event()

    def trickle() -> None:  # events keep coming while the model trains, loads and swaps
        nonlocal sent
        users = iter(range(1000, 10_000))
        while not stop.is_set():
            batch = _walks(range(next(users), next(users) + 1), 3, rng)
            pipeline.produce("behavior", batch)
            sent += len(batch)
            time.sleep(0.3)

    feeder = threading.Thread(target=trickle, daemon=True)
    feeder.start()
    try:

        def served() -> dict[str, Any] | None:
            log = (pipeline.tmp / "trainer.log").read_text(errors="replace")[-4000:]
            assert trainer.poll() is None, f"trainer exited:\n{log}"
            s = w.status()
            return s if s and s["serving"] == "model" else None

        st = wait_for("the worker to serve the bootstrapped model", served, timeout=420)
        time.sleep(3)  # a few more events answered by the model
    finally:
        stop.set()
        feeder.join(10)
        trainer.terminate()
        trainer.wait(60)
    version = st["model_version"]
    assert (registry / "versions" / version / "manifest.json").is_file()
    assert (registry / "CURRENT").read_text().strip() == version

    anns = [decode_announcement(r.value) for r in pipeline.consume("model-updates", 1)]
    assert any(a and a["version"] == version and a.get("by") == "bootstrap" for a in anns)
    results = [json.loads(r.value) for r in pipeline.consume("metrics", 1, timeout=30)]
    boot = [r for r in results if r.get("kind") == "bootstrap"]
    assert boot and boot[-1]["outcome"] == "promoted" and boot[-1]["version"] == version
    assert boot[-1]["interactions"] >= len(history)

    recs = [json.loads(r.value) for r in pipeline.consume("recommendations", sent, timeout=120)]
    rec_ids = [r["rec_id"] for r in recs]
    assert len(recs) == sent, f"{sent} events, {len(recs)} recommendations"
    assert len(set(rec_ids)) == sent, "an event was scored twice"
    versions = [r["model_version"] for r in recs]
    assert versions[0].startswith("fallback") and version in versions
    assert all(r["items"] for r in recs)
    # per user, once the model answered, the fallback never answers again
    seen_model: set[str] = set()
    for r in recs:
        if r["model_version"] == version:
            seen_model.add(r["user_id"])
        else:
            assert r["user_id"] not in seen_model, "fallback after the swap"
    model_recs = [r for r in recs if r["model_version"] == version]
    assert any(
        (i.get("reason") or "").startswith("because you watched") for r in model_recs
        for i in r["items"]
    )  # fmt: skip
