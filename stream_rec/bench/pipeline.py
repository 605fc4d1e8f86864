"""``stream-rec bench pipeline``: throughput and latency through the real broker.

In one run, on the same broker and the same MovieLens events:
1. **Pipeline throughput** — N behaviour events are produced first; a ``stream-rec worker``
   then drains them. Sustained events/s = recommendations / (last − first recommendation's
   broker timestamp).
2. **Anchor throughput** — a bare Faust agent (``stream_rec.bench.bare``: only a table update
   per event) drains the same N events; events/s from its changelog records' timestamps.
3. **Latency** — the pipeline worker again, under a fixed offered load of half its measured
   throughput; event→recommendation latency = the bench consumer's receive time − the event's
   ``ts`` stamped at send.
Workers run one at a time; the bench's own producer and consumer share the machine with them.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from rich.console import Console

from stream_rec.bench.report import print_and_save
from stream_rec.data.movielens import load_movielens
from stream_rec.ops.replay import behavior_payload, item_payload, make_producer, select_events
from stream_rec.settings import Settings
from stream_rec.topics import create_topics, delete_topics_with_prefix

console = Console()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(settings: Settings, data_dir: Path, port: int) -> dict[str, str]:
    return {
        **os.environ,
        "STREAM_REC_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "STREAM_REC_TOPIC_PREFIX": settings.topic_prefix,
        "STREAM_REC_APP_ID": settings.app_id,
        "STREAM_REC_PARTITIONS": str(settings.partitions),
        "STREAM_REC_DATA_DIR": str(data_dir),
        "STREAM_REC_WEB_PORT": str(port),
        "STREAM_REC_LOG_LEVEL": "warning",
    }


def _ready(port: int) -> bool:
    for path in ("/stream-rec/status", "/"):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:  # noqa: S310
                if path == "/stream-rec/status":
                    st = json.loads(r.read())
                    return bool(st["catalog_caught_up"]) and not st["rebalancing"]
                return True
        except Exception:  # noqa: BLE001, S112 - not up yet, or no such page
            continue
    return False


class _Proc:
    def __init__(self, args: list[str], env: dict[str, str], log: Path, port: int) -> None:
        self.log = log
        self.port = port
        with open(log, "wb") as f:
            self.proc = subprocess.Popen(args, env=env, stdout=f, stderr=subprocess.STDOUT)  # noqa: S603

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                msg = f"worker exited {self.proc.returncode}; log {self.log}"
                raise RuntimeError(msg)
            if _ready(self.port):
                return
            time.sleep(0.3)
        msg = f"worker not ready in {timeout}s; log {self.log}"
        raise RuntimeError(msg)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def _produce(settings: Settings, topic: str, msgs: list[tuple[bytes, bytes]]) -> None:
    p: Any = make_producer(settings, linger_ms=20)
    await p.start()
    try:
        for k, v in msgs:
            await p.send(topic, v, key=k)
        await p.flush()
    finally:
        await p.stop()


async def _drain_timestamps(settings: Settings, topic: str, n: int, timeout: float) -> list[int]:
    """Broker timestamps (ms) of the first ``n`` records of ``topic``."""
    from aiokafka import AIOKafkaConsumer

    c = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_list, group_id=None,
        auto_offset_reset="earliest", fetch_max_bytes=16 * 1024 * 1024,
    )  # fmt: skip
    await c.start()
    ts: list[int] = []
    try:
        deadline = time.monotonic() + timeout
        while topic not in await c.topics():  # a worker creates it when it starts
            if time.monotonic() > deadline:
                return ts
            await asyncio.sleep(0.5)
        c.subscribe([topic])
        while len(ts) < n and time.monotonic() < deadline:
            for recs in (await c.getmany(timeout_ms=500, max_records=5000)).values():
                ts.extend(r.timestamp for r in recs)
    finally:
        await c.stop()
    return ts


async def _latency_run(settings: Settings, events: list[Any], rate: float) -> list[float]:
    """Offer ``rate`` events/s; return event→recommendation latencies (s) as received."""
    from aiokafka import AIOKafkaConsumer

    c = AIOKafkaConsumer(
        f"{settings.topic_prefix}recommendations", bootstrap_servers=settings.bootstrap_list,
        group_id=None, auto_offset_reset="latest",
    )  # fmt: skip
    await c.start()
    await c.getmany(timeout_ms=500)  # positions fixed at the end before we send
    lat: list[float] = []
    deadline: list[float] = []  # set once everything is sent: wait at most 30 s more

    async def consume() -> None:
        while not (deadline and (len(lat) >= len(events) or time.monotonic() > deadline[0])):
            for recs in (await c.getmany(timeout_ms=200)).values():
                now = time.time()
                lat.extend(now - json.loads(r.value)["event_ts"] for r in recs)

    p: Any = make_producer(settings, linger_ms=0)
    await p.start()
    task = asyncio.create_task(consume())
    start = time.perf_counter()
    for n, x in enumerate(events):
        delay = start + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await p.send(f"{settings.topic_prefix}behavior", behavior_payload(x, time.time()),
                     key=x.user_id.encode())  # fmt: skip
    await p.flush()
    deadline.append(time.monotonic() + 30)
    await task
    await p.stop()
    await c.stop()
    return lat


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def run(base: Settings, *, events: int, out: Path, latency_seconds: float = 20.0) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:8]
    settings = base.model_copy(
        update={"topic_prefix": f"bench-{run_id}.", "app_id": f"bench-{run_id}"}
    )
    work = base.home / "bench" / run_id
    work.mkdir(parents=True, exist_ok=True)
    ds = load_movielens("movielens-100k", base.home)
    all_events = select_events(ds, None, None)
    evs = all_events[:events]
    lat_pool = all_events[events:]
    asyncio.run(create_topics(settings))
    now = time.time()
    asyncio.run(
        _produce(
            settings, f"{settings.topic_prefix}items",
            [(i.item_id.encode(), item_payload(i, now)) for i in ds.items.values()],
        )
    )  # fmt: skip
    asyncio.run(
        _produce(
            settings, f"{settings.topic_prefix}behavior",
            [(x.user_id.encode(), behavior_payload(x, now)) for x in evs],
        )
    )  # fmt: skip
    py = sys.executable
    results: dict[str, Any] = {}

    console.print(f"[bold]pipeline[/bold]: draining {len(evs)} events…")
    port = _free_port()
    w = _Proc([py, "-m", "stream_rec", "worker"], _env(settings, work / "pipeline", port),
              work / "pipeline.log", port)  # fmt: skip
    try:
        ts = asyncio.run(
            _drain_timestamps(settings, f"{settings.topic_prefix}recommendations", len(evs), 600)
        )
    finally:
        w.stop()
    results["pipeline_events_per_s"] = _rate(ts)
    results["pipeline_recommendations"] = len(ts)

    console.print(f"[bold]bare Faust agent[/bold]: draining {len(evs)} events…")
    port = _free_port()
    b = _Proc([py, "-m", "stream_rec.bench.bare"], _env(settings, work / "bare", port),
              work / "bare.log", port)  # fmt: skip
    try:
        ts_b = asyncio.run(
            _drain_timestamps(
                settings, f"{settings.app_id}-bare-bare_counts-changelog", len(evs), 600
            )
        )
    finally:
        b.stop()
    results["bare_events_per_s"] = _rate(ts_b)
    results["throughput_ratio"] = results["pipeline_events_per_s"] / results["bare_events_per_s"]

    offered = 0.5 * results["pipeline_events_per_s"]
    n_lat = min(len(lat_pool), int(offered * latency_seconds))
    console.print(f"[bold]latency[/bold]: {n_lat} events at {offered:.0f}/s…")
    port = _free_port()
    w = _Proc([py, "-m", "stream_rec", "worker"], _env(settings, work / "pipeline", port),
              work / "pipeline-latency.log", port)  # fmt: skip
    try:
        w.wait_ready()
        lat = asyncio.run(_latency_run(settings, lat_pool[:n_lat], offered))
    finally:
        w.stop()
    results.update(
        {
            "offered_events_per_s": offered,
            "latency_events": len(lat),
            "latency_p50_ms": 1000 * _pct(lat, 0.50),
            "latency_p95_ms": 1000 * _pct(lat, 0.95),
            "latency_p99_ms": 1000 * _pct(lat, 0.99),
            "events": len(evs),
            "scorer": "model" if base.model_path else "fallback (popularity + co-occurrence)",
            "batch_size": base.batch_size,
            "batch_linger_ms": base.batch_linger_ms,
            "hardware": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "python": platform.python_version(),
        }
    )
    print_and_save(console, "stream-rec bench pipeline", results, out)
    asyncio.run(delete_topics_with_prefix(settings, f"bench-{run_id}"))
    return results


def _rate(ts: list[int]) -> float:
    if len(ts) < 2:
        return float("nan")
    span = (max(ts) - min(ts)) / 1000.0
    return len(ts) / span if span > 0 else float("nan")
