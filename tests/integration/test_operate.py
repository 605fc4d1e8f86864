"""Operating the pipeline on the real broker: /metrics, the metrics topic, ``stream-rec status``."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from stream_rec.topics import PUBLIC
from tests.integration.conftest import (
    ROOT,
    Pipeline,
    WorkerProc,
    behavior,
    items_messages,
    read_topic,
    wait_for,
)

pytestmark = pytest.mark.integration

Scrape = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(w: WorkerProc) -> Scrape:
    code, body = w.get("/metrics")
    assert code == 200
    out: Scrape = {}
    for fam in text_string_to_metric_families(body):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def lag_of(m: Scrape, topic: str) -> dict[str, float]:
    return {
        dict(labels)["partition"]: v
        for (name, labels), v in m.items()
        if name == "stream_rec_consumer_lag" and dict(labels)["topic"] == topic
    }


def views(m: Scrape) -> float:
    return m.get(("stream_rec_events_in_total", (("event", "view"), ("topic", "behavior"))), 0.0)


def recs(m: Scrape) -> float:
    return m.get(("stream_rec_recommendations_total", ()), 0.0)


async def _read_until(
    p: Pipeline, topic: str, done: Callable[[list[Any]], bool], timeout: float
) -> list[Any]:
    """Every record of ``topic`` from the beginning, read until ``done(records)`` holds."""
    out = await read_topic(p.settings, p.topic(topic), done, timeout)
    if out and done(out):
        return out
    raise AssertionError(f"{topic}: condition not met in {timeout}s ({len(out)} records)")


def events(n: int, users: int = 20, items: int = 20) -> list[tuple[bytes | None, bytes | None]]:
    return [
        (f"u{i % users}".encode(), behavior(f"u{i % users}", f"i{i % items}")) for i in range(n)
    ]


@pytest.mark.timeout(150)
def test_metrics_and_snapshots_follow_events(pipeline: Pipeline) -> None:
    pipeline.produce("items", items_messages(20))
    w = pipeline.worker(STREAM_REC_METRICS_INTERVAL_S="1").start()
    w.wait_ready()

    def lag_everywhere() -> Scrape | None:
        m = scrape(w)
        return m if set(lag_of(m, "behavior")) == {"0", "1", "2", "3"} else None

    before = wait_for("a lag gauge per behavior partition", lag_everywhere, 30)
    assert set(lag_of(before, "items")) == {"0", "1", "2", "3"}
    assert not any(k[0] == "stream_rec_consumer_lag" and "changelog" in str(k) for k in before)

    n = 200
    pipeline.produce("behavior", events(n))

    def drained() -> Scrape | None:
        m = scrape(w)
        ok = (
            views(m) >= views(before) + n
            and recs(m) >= recs(before) + n
            and lag_of(m, "behavior")
            and all(v == 0 for v in lag_of(m, "behavior").values())
        )
        return m if ok else None

    after = wait_for("counters to grow and the lag to drain to 0", drained, 45)
    assert views(after) - views(before) == n
    assert recs(after) - recs(before) == n
    assert after[("stream_rec_batch_size_count", ())] > before.get(
        ("stream_rec_batch_size_count", ()), 0
    )

    # The metrics topic: JSON snapshots keyed by worker id, whose counts grow to the totals.
    me = f"{socket.gethostname()}:{w.port}"

    def caught_up(records: list[Any]) -> bool:
        last = json.loads(records[-1].value)
        return bool(last["recommendations"] >= n)

    records = asyncio.run(_read_until(pipeline, "metrics", caught_up, 30))
    snaps = [json.loads(r.value) for r in records]
    assert {r.key for r in records} == {me.encode()}
    assert all(s["worker"] == me and s["kind"] == "worker_snapshot" for s in snaps)
    counts = [s["recommendations"] for s in snaps]
    assert counts == sorted(counts) and counts[0] < counts[-1] == n
    ts = [s["ts"] for s in snaps]
    assert ts == sorted(ts)
    last = snaps[-1]
    assert last["events_in"]["behavior"]["view"] == n
    assert last["catalog_items"] == 20
    assert last["model_version"] == w.status()["model_version"]  # type: ignore[index]
    assert set(last["consumer_lag"]["behavior"]) == {"0", "1", "2", "3"}
    assert last["batch_size"]["count"] >= 1 and last["batch_size"]["p50"] is not None
    assert last["e2e_seconds"]["count"] == n and last["e2e_seconds"]["p99"] > 0
    # A healthy worker fetches every input partition it holds and never needed the watchdog.
    st = w.status()
    assert st is not None
    beh = {f"{pipeline.topic('behavior')}:{i}" for i in range(4)}
    assert beh <= set(st["fetching"]) and not beh & set(st["paused"] + st["held"])
    assert not any(k[0] == "stream_rec_partition_stalls_total" and v for k, v in after.items())
    assert w.alive()


def run_status(w: WorkerProc, interval: float = 2.0) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "stream_rec", "status", "--json", "--interval", str(interval)],
        env=w.env,  # the pipeline's STREAM_REC_* settings
        cwd=ROOT,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr.decode()[-3000:]
    doc: dict[str, Any] = json.loads(out.stdout)
    return doc


@pytest.mark.timeout(150)
def test_status_json_on_a_live_cluster(pipeline: Pipeline) -> None:
    pipeline.produce("items", items_messages(20))
    w = pipeline.worker(STREAM_REC_METRICS_INTERVAL_S="1").start()
    served = w.wait_ready()
    good = events(60)
    bad: list[tuple[bytes | None, bytes | None]] = [
        (b"u1", b"\xff\xfe garbage"),
        (b"u1", b"[1, 2, 3]"),
        (b"u1", b'{"user_id": "u1"}'),
        (b"u1", json.dumps({"user_id": "u1", "item_id": "i1", "event": "fly", "ts": 1.0}).encode()),
        (b"u2", behavior("u1", "i1")),  # key is not the user
    ]
    pipeline.produce("behavior", good + bad)
    p = pipeline.prefix

    def settled() -> dict[str, Any] | None:
        doc = run_status(w)
        rows = [r for r in doc["consumer_group"]["partitions"] if r["topic"] == f"{p}behavior"]
        snap = next(iter(doc["workers"].values()), {})
        ok = (
            doc["dead_letters"] == len(bad)
            and sum(r["committed"] or 0 for r in rows) == len(good) + len(bad)
            and doc["consumer_group"]["total_lag"] == 0
            and snap.get("recommendations") == len(good)
            and doc["topics"][f"{p}metrics"]["msgs_per_s"] > 0
        )
        return doc if ok else None

    doc = wait_for("status to show the drained pipeline", settled, 50, poll=0.2)

    assert doc["topic_prefix"] == p and doc["consumer_group"]["id"] == p.rstrip(".")
    assert {p + t for t in PUBLIC} <= set(doc["topics"])
    assert len(doc["topics"][f"{p}behavior"]["partitions"]) == 4
    assert len(doc["topics"][f"{p}metrics"]["partitions"]) == 1
    assert doc["topics"][f"{p}behavior"]["messages"] == len(good) + len(bad)
    assert doc["topics"][f"{p}recommendations"]["messages"] == len(good)
    rows = {
        (r["topic"], r["partition"]): r
        for r in doc["consumer_group"]["partitions"]
        if r["topic"] == f"{p}behavior"
    }
    assert set(rows) == {(f"{p}behavior", n) for n in range(4)}
    for r in rows.values():
        assert r["lag"] == 0
        assert r["end_offset"] == (r["committed"] or 0)
    assert doc["model_version"] == served["model_version"]
    assert doc["catalog_items"] == 20
    (snap,) = doc["workers"].values()
    assert snap["worker"] == f"{socket.gethostname()}:{w.port}"
    assert snap["dead_letters"]["total"] == len(bad)
    assert snap["dead_letters"]["by_reason"]["key_mismatch"] == 1
    assert doc["last_training"] is None  # nothing announced on model-updates

    # A training result on model-updates shows up (JSON here; msgpack decodes the same way).
    update = {"version": "v-test-1", "metrics": {"ndcg@10": 0.31}, "ts": time.time()}
    pipeline.produce("model-updates", [(b"current", json.dumps(update).encode())])
    doc = run_status(w, interval=0.2)
    assert doc["last_training"]["version"] == "v-test-1"
    assert doc["last_training"]["metrics"] == {"ndcg@10": 0.31}
