"""``stream-rec demo``: the whole pipeline on one machine, end to end.

Starts the local broker (if not running), creates the topics, starts one ``stream-rec worker``
process, replays MovieLens-100K (items, then a few hundred users' ratings in time order, stamped
with the send time), and shows the recommendations as they arrive: user, the movie just rated,
the top recommendations with titles, and event→recommendation latency. Then stops what it started.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import deque
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from stream_rec.data.movielens import load_movielens
from stream_rec.ops.broker import BrokerError, broker_from_settings
from stream_rec.ops.replay import replay
from stream_rec.settings import Settings
from stream_rec.topics import Topics, create_topics_sync

console = Console()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _status(port: int) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/stream-rec/status", timeout=2) as r:  # noqa: S310
            return dict(json.loads(r.read()))
    except Exception:  # noqa: BLE001 - not up yet
        return None


def _percentile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def run_demo(
    settings: Settings, *, users: int, rate: float, limit: int | None, keep_broker: bool
) -> int:
    broker = broker_from_settings(settings)
    started_broker = False
    if not broker.is_running():
        with console.status(f"starting Apache Kafka {broker.version} on {broker.bootstrap}…"):
            try:
                broker.start()
            except BrokerError as exc:
                console.print(f"[red]broker: {exc}[/red]")
                return 1
        started_broker = True
    # A fresh namespace per run, so the demo never mixes with earlier runs' topics or state.
    run_id = time.strftime("%Y%m%d-%H%M%S")
    prefix = f"{settings.topic_prefix}demo-{run_id}."
    demo_settings = settings.model_copy(
        update={
            "topic_prefix": prefix,
            "app_id": f"{settings.app_id}-demo-{run_id}",
            "data_dir": settings.home / "demo" / run_id,
            "web_port": _free_port(),
        }
    )
    with console.status("loading MovieLens-100K…"):
        ds = load_movielens("movielens-100k", settings.home)
    create_topics_sync(demo_settings)
    env = {
        **os.environ,
        "STREAM_REC_TOPIC_PREFIX": prefix,
        "STREAM_REC_APP_ID": demo_settings.app_id,
        "STREAM_REC_DATA_DIR": str(demo_settings.data_dir),
        "STREAM_REC_WEB_PORT": str(demo_settings.web_port),
        "STREAM_REC_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "STREAM_REC_LOG_LEVEL": "warning",
    }
    log_path = settings.home / "demo" / f"worker-{run_id}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "stream_rec", "worker"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        if not _wait_worker(worker, demo_settings.web_port, prefix, log_path):
            return 1
        return asyncio.run(_replay_and_show(demo_settings, ds, users, rate, limit))
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(60)
        except subprocess.TimeoutExpired:
            worker.kill()
        if started_broker and not keep_broker:
            with console.status("stopping the broker…"):
                broker.stop()


def _wait_worker(worker: subprocess.Popen[bytes], port: int, prefix: str, log: Path) -> bool:
    with console.status("starting a stream-rec worker (catalogue, partitions)…"):
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if worker.poll() is not None:
                console.print(f"[red]worker exited ({worker.returncode}); see {log}[/red]")
                return False
            st = _status(port)
            assigned = st and any(str(a).startswith(f"{prefix}behavior") for a in st["assignment"])  # type: ignore[attr-defined]
            if st and assigned and not st["rebalancing"]:
                return True
            time.sleep(0.5)
    console.print(f"[red]worker not ready after 120 s; see {log}[/red]")
    return False


async def _replay_and_show(
    settings: Settings, ds: object, users: int, rate: float, limit: int | None
) -> int:
    from aiokafka import AIOKafkaConsumer

    from stream_rec.data.frame import Dataset

    assert isinstance(ds, Dataset)  # noqa: S101 - narrowing for the type checker
    titles = {
        iid: f"{it.title} ({y})" if (y := it.attributes.get("year")) else it.title
        for iid, it in ds.items.items()
    }
    topics = Topics(settings.topic_prefix)
    consumer = AIOKafkaConsumer(
        topics.recommendations,
        bootstrap_servers=settings.bootstrap_list,
        group_id=None,
        auto_offset_reset="earliest",
        **settings.kafka_client_kwargs(),
    )
    await consumer.start()
    rated: dict[tuple[str, float], str] = {}  # (user, event ts) → the item of that event
    latencies: list[float] = []
    rows: deque[tuple[str, str, str, str, str]] = deque(maxlen=12)
    sent = 0

    def on_send(x: object, ts: float) -> None:
        nonlocal sent
        sent += 1
        rated[(x.user_id, ts)] = x.item_id  # type: ignore[attr-defined]

    def render() -> Table:
        t = Table(
            title=f"live recommendations — {len(latencies)} received / {sent} events sent",
            caption=(
                f"event→recommendation latency p50 {1000 * _percentile(latencies, 0.5):.1f} ms, "
                f"p95 {1000 * _percentile(latencies, 0.95):.1f} ms, "
                f"p99 {1000 * _percentile(latencies, 0.99):.1f} ms"
            ),
        )
        for col in ("user", "just rated", "top 3 recommendations", "model", "latency"):
            t.add_column(col)
        for r in rows:
            t.add_row(*r)
        return t

    replay_task = asyncio.create_task(
        replay(settings, ds, users=users, limit=limit, rate=rate, on_send=on_send)
    )
    received = 0
    idle_since = time.monotonic()
    with Live(render(), console=console, refresh_per_second=4) as live:
        while True:
            batch = await consumer.getmany(timeout_ms=250)
            now = time.time()
            for recs in batch.values():
                for r in recs:
                    rec = json.loads(r.value)
                    received += 1
                    latencies.append(max(0.0, now - rec["event_ts"]))
                    top = "; ".join(
                        titles.get(i["item_id"], i["item_id"]) for i in rec["items"][:3]
                    )
                    rows.append(
                        (
                            rec["user_id"],
                            titles.get(rated.get((rec["user_id"], rec["event_ts"]), ""), "?"),
                            top,
                            rec["model_version"],
                            f"{1000 * (now - rec['event_ts']):.1f} ms",
                        )
                    )
            if batch:
                idle_since = time.monotonic()
            live.update(render())
            if replay_task.done() and (received >= sent or time.monotonic() - idle_since > 15):
                break
    await consumer.stop()
    stats = replay_task.result()
    console.print(
        f"replayed {stats.items} items and {stats.events} events at {rate:.0f}/s; "
        f"{received} recommendations; latency p50 {1000 * _percentile(latencies, 0.5):.1f} ms, "
        f"p99 {1000 * _percentile(latencies, 0.99):.1f} ms"
    )
    return 0 if received >= stats.events else 1
