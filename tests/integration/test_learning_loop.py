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
# The trainer of these tests: one window of this test's feedback (150 examples; the 150 clicks
# of _click_favoured close it), fine-tuned hard enough to move the ranking, gated strictly.
ONE_WINDOW = {
    "STREAM_REC_WINDOW_EXAMPLES": "150", "STREAM_REC_WINDOW_MIN_EXAMPLES": "50",
    "STREAM_REC_WINDOW_SECONDS": "600", "STREAM_REC_FINETUNE_EPOCHS": "10",
    "STREAM_REC_FINETUNE_LR": "0.02", "STREAM_REC_PROMOTE_TOLERANCE": "0.0",
}  # fmt: skip


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
    trainer = _trainer(pipeline, root, **ONE_WINDOW, STREAM_REC_SHADOW_SHARE="0")
    # an item that reaches the catalogue after v0: the fine-tune gives it a row (growth)
    late = {"item_id": "late-1", "title": "Late arrival", "text": "a film added after training",
            "attributes": {}, "ts": time.time()}  # fmt: skip
    pipeline.produce("items", [(b"late-1", json.dumps(late).encode())])
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
        assert results[0]["items_added"] == 1
        from stream_rec.model import registry

        v1_dir = registry.resolve(root, str(v1))
        items = json.loads((v1_dir / "items.json").read_text())["item_ids"]
        assert items[-1] == "late-1"
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
    trainer = _trainer(pipeline, root, fault, **ONE_WINDOW, STREAM_REC_SHADOW_SHARE="0")
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


def _candidates(pipeline: Pipeline) -> list[str | None]:
    """The candidate records on model-updates, oldest first."""
    from stream_rec.records import CANDIDATE_KEY, decode_candidate

    recs = pipeline.consume("model-updates", 10**6, timeout=3)
    return [decode_candidate(r.value)[1] for r in recs if r.key == CANDIDATE_KEY]


def test_a_candidate_is_checked_in_shadow_on_live_events_before_promotion(
    pipeline: Pipeline, registry_template: tuple[Path, object]
) -> None:
    """The fine-tune that passed the offline gate is announced as the candidate; the worker
    scores live events with it in shadow and publishes the judged figures in its snapshots;
    the trainer decides once enough events are judged, and the worker swaps in the candidate
    it already holds (or drops it), with no candidate left afterwards."""
    root, v0, w = _serving(
        pipeline, registry_template, STREAM_REC_LEARN_FROM_BEHAVIOR="false",
        STREAM_REC_SHADOW_SHARE="1", STREAM_REC_METRICS_INTERVAL_S="1",
    )  # fmt: skip
    trainer = _trainer(
        pipeline, root, **ONE_WINDOW, STREAM_REC_SHADOW_SHARE="1",
        STREAM_REC_SHADOW_MIN_EVENTS="40", STREAM_REC_SHADOW_TIMEOUT_S="180",
    )  # fmt: skip
    try:
        sent = _click_favoured(pipeline, 0)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not any(_candidates(pipeline)):
            assert trainer.poll() is None, (pipeline.tmp / "trainer.log").read_text()[-3000:]
        candidate = next((c for c in _candidates(pipeline) if c), None)
        assert candidate is not None, (pipeline.tmp / "trainer.log").read_text()[-3000:]
        assert (root / "CURRENT").read_text().strip() == v0  # not promoted yet
        # live traffic: users walking the catalogue, each event judged by the user's next one
        results: list[dict[str, object]] = []
        rounds = 0
        while time.monotonic() < deadline and not results:
            rounds += 1
            users = [f"s{rounds}-{n}" for n in range(20)]
            msgs = [(u.encode(), behavior(u, i)) for n, u in enumerate(users)
                    for i in _walk(n * 2, 4)]  # fmt: skip
            pipeline.produce("behavior", msgs)
            sent += len(msgs)
            time.sleep(2)
            results = [
                json.loads(m.value) for m in pipeline.consume("metrics", 10**6, timeout=3)
                if m.key == b"trainer"
            ]  # fmt: skip
        log = (pipeline.tmp / "trainer.log").read_text(errors="replace")
        assert results, log[-3000:]
        result = results[-1]
        shadow = result["shadow"]
        assert isinstance(shadow, dict), result
        assert shadow["judged"] >= 40 and shadow["workers"] == 1, shadow
        assert shadow["hr10_serving"] is not None and shadow["hr10_candidate"] is not None
        # the worker's own snapshots carried the figures the trainer summed
        snaps = [json.loads(m.value) for m in pipeline.consume("metrics", 10**6, timeout=3)
                 if m.key != b"trainer"]  # fmt: skip
        judged = [s["shadow"]["judged"] for s in snaps if (s.get("shadow") or {}).get(
            "candidate") == candidate]  # fmt: skip
        assert judged and max(judged) >= shadow["judged"]
        if result["outcome"] == "promoted":
            assert result["version"] == candidate
            assert (root / "CURRENT").read_text().strip() == candidate
            wait_until = time.monotonic() + 60
            while time.monotonic() < wait_until and w.status()["model_version"] != candidate:  # type: ignore[index]
                time.sleep(0.5)
            assert w.status()["model_version"] == candidate  # type: ignore[index]
        else:  # refused: worse beyond noise on these events
            assert result["outcome"] == "rejected" and shadow["z"] < -1.96, result
            assert (root / "CURRENT").read_text().strip() == v0
            assert not (root / "versions" / candidate).exists()
        assert _candidates(pipeline)[-1] is None  # nothing left in shadow
        assert w.alive()
        # every event answered once, shadow or not
        recs = pipeline.consume("recommendations", sent, timeout=60, settle=2.0)
        assert len({json.loads(r.value)["rec_id"] for r in recs}) == sent == len(recs)
    finally:
        trainer.terminate()
        trainer.wait(30)


def test_shadow_check_refuses_a_worse_candidate_and_one_without_evidence(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    """The trainer's decision on the real broker, fed worker snapshots on the metrics topic:
    a candidate worse beyond noise is refused and deleted, so is one whose shadow events do
    not come in time; snapshots of another candidate or garbled records are not counted."""
    import asyncio

    from aiokafka import AIOKafkaProducer

    from stream_rec.records import SNAPSHOT_KIND
    from stream_rec.settings import load_settings
    from stream_rec.training.service import Outcome, Trainer, shadow_check

    def snapshot(worker: str, candidate: str, judged: int, only_c: int, only_s: int) -> bytes:
        figures = {"candidate": candidate, "scored": judged, "judged": judged,
                   "hits_serving": only_s, "hits_candidate": only_c,
                   "only_candidate": only_c, "only_serving": only_s}  # fmt: skip
        return json.dumps({"kind": SNAPSHOT_KIND, "worker": worker, "shadow": figures}).encode()

    async def check(version: str, snaps: list[tuple[bytes, bytes]], **kw: object) -> Outcome:
        settings = load_settings(
            bootstrap_servers=pipeline.bootstrap, topic_prefix=pipeline.prefix,
            model_path=tmp_path, shadow_min_events=100, **kw,
        )  # fmt: skip
        folder = tmp_path / "versions" / version
        folder.mkdir(parents=True)
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_list)
        await producer.start()
        try:

            async def feed() -> None:
                await asyncio.sleep(2)  # after the check has positioned itself at the end
                for key, value in snaps:
                    await producer.send_and_wait(pipeline.topic("metrics"), value, key=key)

            task = asyncio.create_task(feed())
            out = await shadow_check(
                settings, producer, Trainer(settings, tmp_path),
                Outcome("candidate", version, {}, folder), poll_s=0.2,
            )  # fmt: skip
            await task
        finally:
            await producer.stop()
        assert not folder.exists()  # refused: deleted
        return out

    worse = asyncio.run(check("v-worse", [
        (b"w1", snapshot("w1", "v-worse", 10, 1, 3)),  # 80 judged with w2's: not yet 100
        (b"w2", b"not json"),
        (b"w2", snapshot("w2", "v-other", 500, 0, 90)),  # another candidate's: ignored
        (b"w2", snapshot("w2", "v-worse", 70, 4, 14)),
        (b"w1", snapshot("w1", "v-worse", 80, 2, 16)),  # w1's newest replaces its first
    ]))  # fmt: skip
    assert worse.outcome == "rejected" and worse.version is None
    sh = worse.detail["shadow"]
    assert (sh["judged"], sh["only_candidate"], sh["only_serving"]) == (150, 6, 30)
    assert sh["workers"] == 2 and sh["z"] == -4.0
    assert "HR@10" in worse.detail["reason"]
    late = asyncio.run(check("v-late", [(b"w1", snapshot("w1", "v-late", 30, 5, 0))],
                             shadow_timeout_s=4.0))  # fmt: skip
    assert late.outcome == "rejected" and "30 of 100 events judged" in late.detail["reason"]
    # each check named its candidate, then cleared it
    assert _candidates(pipeline) == ["v-worse", None, "v-late", None]
