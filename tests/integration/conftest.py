"""Integration fixtures: the real local Kafka broker and real ``stream-rec worker`` processes.

The broker at ``STREAM_REC_BOOTSTRAP_SERVERS`` (default 127.0.0.1:19092) is used when it
answers; otherwise the fixture starts the project's local broker and stops it at the end. With
``CI=true`` a broker that cannot be reached or started fails the run; it never skips.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from stream_rec.ops.broker import BrokerError, LocalBroker, free_port, metadata_ready
from stream_rec.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
# Workers started by Pipeline.worker have this operator token unless a test passes its own
# STREAM_REC_ADMIN_TOKEN ("" = none: the operator pages are off).
ADMIN_TOKEN = f"it-operator-{uuid.uuid4().hex}"


@pytest.fixture(scope="session")
def bootstrap() -> Iterator[str]:
    base = load_settings()
    servers = base.kafka.bootstrap_servers
    try:
        if metadata_ready(servers, timeout=3):
            yield servers
            return
    except Exception:  # noqa: BLE001, S110 - not running yet: start it below
        pass
    host, _, port = base.kafka.bootstrap_list[0].rpartition(":")
    broker = LocalBroker(
        home=base.observability.home, version=base.observability.kafka_version, port=int(port)
    )
    try:
        broker.start()
    except BrokerError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and no Kafka broker: {exc}")
        pytest.skip(f"no Kafka broker: {exc}")
    yield broker.bootstrap
    broker.stop()


@dataclass
class WorkerProc:
    env: dict[str, str]
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProc:
        out = open(self.log, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stream_rec", "worker"],
            env=self.env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.close()
        return self

    def status(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.port}/stream-rec/status", timeout=2
            ) as r:
                return json.loads(r.read())
        except Exception:  # noqa: BLE001 - not up yet
            return None

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        import urllib.error

        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:  # noqa: S310 - http://127.0.0.1
                body = r.read()
                ctype = r.headers.get("content-type", "")
                return r.status, json.loads(body) if "json" in ctype else body.decode()
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def session(self, user: str) -> tuple[int, Any]:
        """The operator's session page of ``user``, with the worker's own operator token."""
        from urllib.parse import quote

        token = self.env.get("STREAM_REC_ADMIN_TOKEN", "")
        return self.get(
            f"/stream-rec/sessions/{quote(user, safe='')}/",
            headers={"Authorization": f"Bearer {token}"},
        )

    def wait_ready(self, timeout: float = 90.0, partitions: bool = True) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited {self.proc.returncode}:\n{self.tail()}")
            st = self.status()
            behavior = f"{self.env['STREAM_REC_TOPIC_PREFIX']}behavior"
            if (
                st
                and st["catalog_caught_up"]
                and not st["rebalancing"]
                and (not partitions or any(a.startswith(behavior) for a in st["assignment"]))
            ):
                return st
            time.sleep(0.5)
        raise AssertionError(f"worker not ready in {timeout}s:\n{self.tail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""


@dataclass
class Pipeline:
    """One isolated pipeline namespace (topic prefix + consumer group) on the shared broker."""

    bootstrap: str
    tmp: Path
    partitions: int = 4
    prefix: str = field(default_factory=lambda: f"it-{uuid.uuid4().hex[:8]}.")
    workers: list[WorkerProc] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        return load_settings(
            bootstrap_servers=self.bootstrap,
            topic_prefix=self.prefix,
            partitions=self.partitions,
            app_id=self.prefix.rstrip("."),
        )

    def topic(self, short: str) -> str:
        return f"{self.prefix}{short}"

    def worker(self, name: str = "w", fresh_state: bool = False, **env: str) -> WorkerProc:
        port = free_port()
        data = self.tmp / (f"{name}-{uuid.uuid4().hex[:6]}" if fresh_state else name)
        e = {
            **os.environ,
            "STREAM_REC_BOOTSTRAP_SERVERS": self.bootstrap,
            "STREAM_REC_TOPIC_PREFIX": self.prefix,
            "STREAM_REC_APP_ID": self.prefix.rstrip("."),
            "STREAM_REC_PARTITIONS": str(self.partitions),
            "STREAM_REC_DATA_DIR": str(data),
            "STREAM_REC_WEB_PORT": str(port),
            "STREAM_REC_LOG_LEVEL": "info",
            "STREAM_REC_ADMIN_TOKEN": ADMIN_TOKEN,
            **env,
        }
        w = WorkerProc(e, port, self.tmp / f"{name}.log")
        self.workers.append(w)
        return w

    def produce(self, topic: str, messages: list[tuple[bytes | None, bytes | None]]) -> None:
        asyncio.run(produce(self.settings, self.topic(topic), messages))

    def consume(self, topic: str, n: int, timeout: float = 60.0, settle: float = 0.0) -> list[Any]:
        return asyncio.run(consume(self.settings, self.topic(topic), n, timeout, settle))


async def produce(
    settings: Settings, topic: str, messages: list[tuple[bytes | None, bytes | None]]
) -> None:
    from aiokafka import AIOKafkaProducer

    p = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_list, linger_ms=5)
    await p.start()
    try:
        for key, value in messages:
            await p.send(topic, value, key=key)
        await p.flush()
    finally:
        await p.stop()


async def read_topic(
    settings: Settings,
    topic: str,
    done: Callable[[list[Any]], bool],
    timeout: float,
    settle: float = 0.0,
) -> list[Any]:
    """Every record of ``topic`` from the beginning, until ``done(records)`` holds (then
    ``settle`` s more, to catch duplicates) or ``timeout``; returns what was read."""
    from aiokafka import AIOKafkaConsumer

    c = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka.bootstrap_list,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await c.start()
    out: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        settle_until: float | None = None
        while time.monotonic() < deadline:
            for recs in (await c.getmany(timeout_ms=300)).values():
                out.extend(recs)
            if settle_until is None and out and done(out):
                settle_until = time.monotonic() + settle
            if settle_until is not None and time.monotonic() >= settle_until:
                break
    finally:
        await c.stop()
    return out


async def consume(
    settings: Settings, topic: str, n: int, timeout: float, settle: float
) -> list[Any]:
    """Read a topic from the beginning until ``n`` records (then ``settle`` s more) or timeout."""
    return await read_topic(settings, topic, lambda out: len(out) >= n, timeout, settle)


@pytest.fixture
def pipeline(bootstrap: str, tmp_path: Path) -> Iterator[Pipeline]:
    p = Pipeline(bootstrap, tmp_path)
    from stream_rec.topics import create_topics_sync, delete_topics_with_prefix

    create_topics_sync(p.settings)
    yield p
    for w in p.workers:
        w.stop()
    # The shared broker keeps only what a test is looking at: thousands of partitions left
    # behind slow every later test's metadata requests and fill the disk.
    asyncio.run(delete_topics_with_prefix(p.settings, p.prefix.rstrip(".")))


def items_messages(n: int) -> list[tuple[bytes | None, bytes | None]]:
    now = time.time()
    return [
        (
            f"i{i}".encode(),
            json.dumps(
                {
                    "item_id": f"i{i}",
                    "title": f"Item {i}",
                    "text": None,
                    "attributes": {"genres": "Drama" if i % 2 else "Comedy"},
                    "ts": now,
                }
            ).encode(),
        )
        for i in range(n)
    ]


def behavior(user: str, item: str, ts: float | None = None, event: str = "view") -> bytes:
    return json.dumps(
        {"user_id": user, "item_id": item, "event": event, "value": None, "ts": ts or time.time()}
    ).encode()


def metric(w: WorkerProc, name: str, **labels: str) -> float:
    """One sample of the worker's /metrics (0 when absent or the worker does not answer)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        code, body = w.get("/metrics")
    except Exception:  # noqa: BLE001 - not up, or gone
        return 0.0
    if code != 200:
        return 0.0
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


Factory = Callable[..., WorkerProc]
T = TypeVar("T")


def wait_for(what: str, fn: Callable[[], T | None], timeout: float, poll: float = 0.5) -> T:
    """Poll ``fn`` until it returns something other than None (or fail with ``what``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = fn()
        if got is not None:
            return got
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
