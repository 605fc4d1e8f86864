"""The learning loop on the real broker: feedback → window → fine-tune → promotion → hot swap."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import pytest

from stream_rec.ops.broker import free_port
from tests.integration.conftest import ROOT, Pipeline, WorkerProc, behavior
from tests.model_fixtures import (
    N_ITEMS,
    build_tiny_encoder,
    export_planted,
    planted_dataset,
    planted_text_vectors,
    train_planted,
)

pytestmark = pytest.mark.integration
FAVOURED = ("20", "21", "22")


@pytest.fixture(scope="module")
def registry_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    tmp = tmp_path_factory.mktemp("loop")
    enc = build_tiny_encoder(tmp / "enc")
    ds = planted_dataset()
    export_planted(train_planted(ds, planted_text_vectors(enc, ds)), enc, ds, tmp / "registry")
    return tmp / "registry", ds


def _items(ds: object) -> list[tuple[bytes | None, bytes | None]]:
    now = time.time()
    return [
        (
            it.item_id.encode(),
            json.dumps(
                {
                    "item_id": it.item_id,
                    "title": it.title,
                    "text": it.text,
                    "attributes": it.attributes,
                    "ts": now,
                }
            ).encode(),
        )  # fmt: skip
        for it in ds.items.values()  # type: ignore[attr-defined]
    ]


def _walk(start: int, n: int) -> list[str]:
    return [str((start + t) % N_ITEMS + 1) for t in range(n)]


def _serving(
    pipeline: Pipeline, registry_template: tuple[Path, object], **env: str
) -> tuple[Path, str, WorkerProc]:
    """A copy of the template registry, the catalogue, and a ready worker serving its model."""
    template, ds = registry_template
    root = pipeline.tmp / "registry"
    shutil.copytree(template, root)
    v0 = (root / "CURRENT").read_text().strip()
    pipeline.produce("items", _items(ds))
    w = pipeline.worker("w", STREAM_REC_MODEL_PATH=str(root), **env).start()
    assert w.wait_ready()["model_version"] == v0
    return root, v0, w


def _trainer(
    pipeline: Pipeline, root: Path, fault: str | None = None, **env: str
) -> subprocess.Popen[bytes]:
    e = {
        **os.environ,
        "STREAM_REC_BOOTSTRAP_SERVERS": pipeline.bootstrap,
        "STREAM_REC_TOPIC_PREFIX": pipeline.prefix,
        "STREAM_REC_APP_ID": pipeline.prefix.rstrip("."),
        "STREAM_REC_PARTITIONS": str(pipeline.partitions),
        "STREAM_REC_MODEL_PATH": str(root),
        "STREAM_REC_WEB_PORT": str(free_port()),
        **env,
    }
    log = open(pipeline.tmp / "trainer.log", "ab")  # noqa: SIM115 - owned by the child
    cmd = ["-m", "tests.integration.fault_trainer", fault] if fault else ["-m", "stream_rec",
                                                                          "trainer"]  # fmt: skip
    return subprocess.Popen([sys.executable, *cmd], env=e, cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT)  # fmt: skip


def _probe(pipeline: Pipeline, users: list[str], offset: int) -> dict[str, dict[str, object]]:
    """Walk histories for ``users``; return each user's last recommendation."""
    msgs = [(u.encode(), behavior(u, i)) for n, u in enumerate(users) for i in _walk(n * 3, 4)]
    pipeline.produce("behavior", msgs)
    recs = pipeline.consume("recommendations", offset + len(msgs), timeout=90)
    last: dict[str, dict[str, object]] = {}
    for r in recs:
        rec = json.loads(r.value)
        if rec["user_id"] in users:
            last[rec["user_id"]] = rec
    return last


def _click_favoured(pipeline: Pipeline, offset: int) -> int:
    """50 users walk 3 items each; on each recommendation they get, they click one of the
    favoured items (150 clicks). Returns the behaviour events sent."""
    rng = random.Random(3)
    users = [f"u{n}" for n in range(50)]
    msgs = [(u.encode(), behavior(u, i)) for n, u in enumerate(users) for i in _walk(n, 3)]
    pipeline.produce("behavior", msgs)
    recs = pipeline.consume("recommendations", offset + len(msgs), timeout=90)
    fb = []
    for r in recs:
        rec = json.loads(r.value)
        if rec["user_id"].startswith("u"):
            fb.append((r.key, json.dumps({
                "user_id": rec["user_id"], "rec_id": rec["rec_id"],
                "item_id": rng.choice(FAVOURED), "label": "click", "value": None,
                "ts": time.time()}).encode()))  # fmt: skip
    assert len(fb) == 150
    pipeline.produce("feedback", fb)
    return len(msgs)


def _favoured_in_top3(last: dict[str, dict[str, object]]) -> float:
    tops = [[i["item_id"] for i in rec["items"][:3]] for rec in last.values()]  # type: ignore[index]
    return sum(len(set(t) & set(FAVOURED)) for t in tops) / len(tops)


def test_feedback_window_promotes_a_model_and_workers_swap_without_restart(
    pipeline: Pipeline, registry_template: tuple[Path, object]
) -> None:
    # The windows hold this test's feedback alone (behaviour examples: test_pipeline.py). The
    # model's own ranking is what the fine-tune moves, so the re-ranker (which spreads similar
    # items and the head apart, stream_rec.serving.rerank) is off.
    root, v0, w = _serving(
        pipeline, registry_template, STREAM_REC_LEARN_FROM_BEHAVIOR="false",
        STREAM_REC_DIVERSITY="0", STREAM_REC_LONG_TAIL="0",
    )  # fmt: skip
    trainer = _trainer(
        pipeline, root, STREAM_REC_WINDOW_EXAMPLES="150", STREAM_REC_WINDOW_MIN_EXAMPLES="50",
        STREAM_REC_WINDOW_SECONDS="600", STREAM_REC_FINETUNE_EPOCHS="10",
        STREAM_REC_FINETUNE_LR="0.02", STREAM_REC_PROMOTE_TOLERANCE="0.0",
    )  # fmt: skip
    try:
        before = _probe(pipeline, [f"p{n}" for n in range(16)], 0)
        sent = 64 + _click_favoured(pipeline, 64)

        deadline = time.monotonic() + 240
        v1 = v0
        while time.monotonic() < deadline and v1 == v0:
            assert trainer.poll() is None, (pipeline.tmp / "trainer.log").read_text()[-3000:]
            st = w.status()
            v1 = st["model_version"] if st else v0
            time.sleep(1)
        assert v1 != v0, (pipeline.tmp / "trainer.log").read_text()[-3000:]
        assert w.alive()  # swapped in place: the same worker process, no restart

        after = _probe(pipeline, [f"q{n}" for n in range(16)], sent)
        sent += 64
        assert {rec["model_version"] for rec in after.values()} == {v1}
        assert {rec["model_version"] for rec in before.values()} == {v0}
        assert _favoured_in_top3(after) > _favoured_in_top3(before) + 0.5
        # Nothing lost or scored twice across the swap: one recommendation per event.
        all_recs = pipeline.consume("recommendations", sent, timeout=30, settle=2.0)
        assert len(all_recs) == sent
        assert len({json.loads(r.value)["rec_id"] for r in all_recs}) == sent
        # The trainer's outcome is published for operators.
        results = [
            json.loads(m.value) for m in pipeline.consume("metrics", 1, timeout=30)
            if m.key == b"trainer"
        ]  # fmt: skip
        assert results and results[0]["outcome"] == "promoted" and results[0]["version"] == v1
        updates = pipeline.consume("model-updates", 1, timeout=10)
        assert msgpack.unpackb(updates[-1].value)["version"] == v1
    finally:
        trainer.terminate()
        trainer.wait(30)


@pytest.mark.parametrize("fault", ["crash", "corrupt"])
def test_a_failed_training_leaves_the_serving_model_unchanged(
    pipeline: Pipeline, registry_template: tuple[Path, object], fault: str
) -> None:
    """A fine-tune that crashes, or an export damaged on disk: the outcome is published as
    failed, the registry's current version and what the worker serves stay, nothing is
    announced."""
    root, v0, w = _serving(pipeline, registry_template, STREAM_REC_LEARN_FROM_BEHAVIOR="false")
    trainer = _trainer(
        pipeline, root, fault, STREAM_REC_WINDOW_EXAMPLES="150",
        STREAM_REC_WINDOW_MIN_EXAMPLES="50", STREAM_REC_WINDOW_SECONDS="600",
        STREAM_REC_FINETUNE_EPOCHS="10", STREAM_REC_FINETUNE_LR="0.02",
        STREAM_REC_PROMOTE_TOLERANCE="0.0",
    )  # fmt: skip
    try:
        sent = _click_favoured(pipeline, 0)
        deadline = time.monotonic() + 240
        results: list[dict[str, object]] = []
        while time.monotonic() < deadline and not results:
            assert trainer.poll() is None, (pipeline.tmp / "trainer.log").read_text()[-3000:]
            results = [
                json.loads(m.value) for m in pipeline.consume("metrics", 1, timeout=5)
                if m.key == b"trainer"
            ]  # fmt: skip
        log = (pipeline.tmp / "trainer.log").read_text(errors="replace")
        assert results, log[-3000:]
        assert results[0]["outcome"] == "failed", results[0]
        if fault == "crash":
            assert "injected fault" in str(results[0]["reason"])
        else:
            assert "fails its check" in str(results[0]["reason"])
            assert "sha256 mismatch" in str(results[0]["reason"])
        assert (root / "CURRENT").read_text().strip() == v0
        assert w.status()["model_version"] == v0  # type: ignore[index]
        assert not pipeline.consume("model-updates", 1, timeout=3)
        # the worker keeps serving v0 for new events
        probe = _probe(pipeline, [f"z{n}" for n in range(4)], sent)
        assert {rec["model_version"] for rec in probe.values()} == {v0}
    finally:
        trainer.terminate()
        trainer.wait(30)
