"""``stream-rec bench recovery``: a worker SIGKILLed mid-stream and restarted at once.

A fresh namespace (topic prefix + consumer group) on the configured broker, ``--items`` items,
and ``--users`` × ``--events-per-user`` behaviour events in a seeded random order, offered at
``--rate`` events/s by the bench's producer (``ts`` stamped at send, keyed by user). One
``stream-rec worker`` serves them; once it has published ``--kill-after`` of the
recommendations, the bench kills it (SIGKILL) and at once starts a new worker process with the
same data folder and so the same static membership id (``STREAM_REC_WORKER_ID`` unset: host
name + data folder), or, with ``--dynamic``, with ``STREAM_REC_STATIC_MEMBERSHIP=false`` (the
group waits for the dead member's session to expire). The bench reads every recommendation and
dead letter from the beginning until each event is answered (or ``--timeout``).

Figures (one line of the table each, also in the JSON):

* ``recovery_s``: from the restarted worker's process start to the first recommendation it
  emitted (its ``emitted_ts``); with one worker every partition is its partition. Split into
  ``start_up_s`` (process start to the worker's code being up: interpreter and imports, the
  ``started_at`` of its status page) and ``serving_after_up_s`` (from there to that first
  recommendation: Faust's start, catalogue, group join, table recovery, seek).
* ``outage_p99_s`` / ``outage_max_s``: event→recommendation latency (``emitted_ts − ts``, first
  recommendation of each event) of the events sent between the kill and that first
  recommendation; ``run_p50_s`` / ``run_p99_s`` over every event of the run.
* ``empty_recommendations`` (must be 0), ``events_without_recommendation`` (lost; must be 0),
  ``duplicate_recommendations`` (at-least-once re-processing after the kill, allowed) and the
  dead letters by reason.

A bench, not a test (``tests/integration/test_recovery.py`` asserts on the same run): it
prints and writes JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import random
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from stream_rec.agents.score import rec_id_for
from stream_rec.bench.pipeline import WorkerProc, worker_env, worker_status
from stream_rec.bench.report import print_and_save, scratch_run
from stream_rec.client import kafka_producer
from stream_rec.ops.broker import free_port
from stream_rec.settings import Settings
from stream_rec.topics import Topics, create_topics, delete_topics_with_prefix

console = Console()


@dataclass
class CrashRun:
    """What one crash run saw, before the figures are drawn from it."""

    sent: dict[str, float] = field(default_factory=dict)  # rec_id → event ts (send time)
    recs: list[dict[str, Any]] = field(default_factory=list)  # every recommendation read
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    killed_at: float = 0.0  # wall clock
    restarted_at: float = 0.0  # wall clock, just before the new process was spawned
    ready_s: float | None = None  # restart → the status page shows behaviour partitions
    up_at: float | None = None  # wall clock: the restarted worker had imported its code


def _quantile(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def figures(run: CrashRun) -> dict[str, Any]:
    """The run's figures (see the module docstring)."""
    first: dict[str, float] = {}
    dups = 0
    empty = 0
    for r in run.recs:
        if not r["items"]:
            empty += 1
        rid = r["rec_id"]
        if rid in first:
            dups += 1
            first[rid] = min(first[rid], r["emitted_ts"])
        else:
            first[rid] = r["emitted_ts"]
    after = [r["emitted_ts"] for r in run.recs if r["emitted_ts"] >= run.restarted_at]
    back = min(after) if after else None
    lat = {rid: first[rid] - ts for rid, ts in run.sent.items() if rid in first}
    outage = [
        lat[rid]
        for rid, ts in run.sent.items()
        if rid in lat and back is not None and run.killed_at <= ts <= back
    ]
    reasons: dict[str, int] = {}
    for d in run.dead_letters:
        code = str(d.get("error", "")).split(":", 1)[0]
        reasons[code] = reasons.get(code, 0) + 1
    return {
        "events": len(run.sent),
        "recommendations": len(run.recs),
        "empty_recommendations": empty,
        "events_without_recommendation": sum(1 for rid in run.sent if rid not in first),
        "duplicate_recommendations": dups,
        "dead_letters": reasons,
        "recovery_s": None if back is None else back - run.restarted_at,
        "start_up_s": None if run.up_at is None else run.up_at - run.restarted_at,
        "serving_after_up_s": None if back is None or run.up_at is None else back - run.up_at,
        "ready_s": run.ready_s,
        "outage_events": len(outage),
        "outage_p99_s": _quantile(outage, 0.99),
        "outage_max_s": max(outage) if outage else None,
        "run_p50_s": _quantile(list(lat.values()), 0.5),
        "run_p99_s": _quantile(list(lat.values()), 0.99),
    }


def _events(users: int, per_user: int, items: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    out = [(f"u{u}", f"i{rng.randrange(items)}") for u in range(users) for _ in range(per_user)]
    rng.shuffle(out)
    return out


async def _produce_items(settings: Settings, n: int) -> None:
    prod: Any = kafka_producer(settings)
    await prod.start()
    try:
        now = time.time()
        topic = Topics(settings.kafka.topic_prefix).items
        for i in range(n):
            genres = "Drama" if i % 2 else "Comedy"
            item = {"item_id": f"i{i}", "title": f"Item {i}", "text": None,
                    "attributes": {"genres": genres}, "ts": now}  # fmt: skip
            await prod.send(topic, json.dumps(item).encode(), key=f"i{i}".encode())
        await prod.flush()
    finally:
        await prod.stop()


class _Reader:
    """Reads ``recommendations`` and ``dead-letters`` from the beginning, in the background."""

    def __init__(self, settings: Settings, run: CrashRun) -> None:
        self.settings, self.run = settings, run
        self.task: asyncio.Task[None] | None = None
        self.ids: set[str] = set()

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer

        t = Topics(self.settings.kafka.topic_prefix)
        self.recs_topic, self.dl_topic = t.recommendations, t.dead_letters
        self.consumer = AIOKafkaConsumer(
            t.recommendations, t.dead_letters, bootstrap_servers=self.settings.kafka.bootstrap_list,
            group_id=None, auto_offset_reset="earliest", enable_auto_commit=False,
            **self.settings.kafka.kafka_client_kwargs(),
        )  # fmt: skip
        await self.consumer.start()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            for tp, batch in (await self.consumer.getmany(timeout_ms=200)).items():
                for rec in batch:
                    doc = json.loads(rec.value)
                    if tp.topic == self.recs_topic:
                        self.run.recs.append(doc)
                        self.ids.add(doc["rec_id"])
                    else:
                        self.run.dead_letters.append(doc)

    def answered(self) -> int:
        return len(self.ids)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        await self.consumer.stop()


def _has_partitions(port: int, behavior: str, run: CrashRun | None = None) -> bool:
    st = worker_status(port)
    if st and run is not None and run.killed_at and run.up_at is None:
        run.up_at = st.get("started_at")
    return bool(
        st and st["catalog_caught_up"] and not st["rebalancing"]
        and any(a.startswith(behavior + ":") for a in st["assignment"])
    )  # fmt: skip


async def crash_run(
    settings: Settings,
    work: Path,
    *,
    users: int = 200,
    events_per_user: int = 30,
    items: int = 200,
    rate: float = 100.0,
    kill_after: float = 0.3,
    static: bool = True,
    timeout: float = 180.0,
    seed: int = 7,
    extra_env: dict[str, str] | None = None,
) -> CrashRun:
    """Serve the events with one worker, SIGKILL it after ``kill_after`` of them were answered,
    restart it at once on the same data folder, and read every answer (topics must exist)."""
    run = CrashRun()
    await _produce_items(settings, items)
    port = free_port()
    env = worker_env(settings, work / "worker", port)
    env["STREAM_REC_STATIC_MEMBERSHIP"] = "true" if static else "false"
    env.update(extra_env or {})
    args = [sys.executable, "-m", "stream_rec", "worker"]
    behavior = Topics(settings.kafka.topic_prefix).behavior
    first = WorkerProc(args, env, work / "worker-1.log", port)
    procs = [first]
    reader = _Reader(settings, run)
    restarted = 0.0
    try:
        deadline = time.monotonic() + 180
        while not _has_partitions(port, behavior):
            first.check()
            if time.monotonic() > deadline:
                msg = f"worker not ready in 180s; log {first.log}"
                raise RuntimeError(msg)
            await asyncio.sleep(0.3)
        await reader.start()
        events = _events(users, events_per_user, items, seed)
        prod: Any = kafka_producer(settings, linger_ms=0)
        await prod.start()
        pending: list[tuple[asyncio.Future[Any], float]] = []
        t0 = time.monotonic()
        try:
            for n, (user, item) in enumerate(events):
                delay = t0 + n / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                ts = time.time()
                value = {"user_id": user, "item_id": item, "event": "view", "value": None,
                         "ts": ts}  # fmt: skip
                fut = await prod.send(behavior, json.dumps(value).encode(), key=user.encode())
                pending.append((fut, ts))
                if not run.killed_at and reader.answered() >= kill_after * len(events):
                    first.proc.send_signal(signal.SIGKILL)
                    run.killed_at = time.time()
                    first.proc.wait()
                    run.restarted_at = time.time()
                    procs.append(WorkerProc(args, env, work / "worker-2.log", port))
                    restarted = time.monotonic()
                if run.killed_at and run.ready_s is None and n % 10 == 0:
                    ready = await asyncio.to_thread(_has_partitions, port, behavior, run)
                    if ready:
                        run.ready_s = time.monotonic() - restarted
            await prod.flush()
            for fut, ts in pending:
                md = await fut
                run.sent[rec_id_for(behavior, md.partition, md.offset)] = ts
        finally:
            await prod.stop()
        if not run.killed_at:
            msg = "the worker was never killed: too few recommendations before the end"
            raise RuntimeError(msg)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            procs[-1].check()
            answered = {r["rec_id"] for r in run.recs}
            if all(rid in answered for rid in run.sent):
                break
            ready = await asyncio.to_thread(_has_partitions, port, behavior, run)
            if run.ready_s is None and ready:
                run.ready_s = time.monotonic() - restarted
            await asyncio.sleep(1.0)
        await asyncio.sleep(2.0)  # late duplicates and dead letters
        await asyncio.to_thread(_has_partitions, port, behavior, run)  # up_at, if not yet read
    finally:
        if reader.task is not None:
            await reader.stop()
        for p in procs:
            if p.proc.poll() is None:
                p.stop()
    return run


def run(
    settings: Settings,
    out: Path,
    *,
    users: int,
    events_per_user: int,
    items: int,
    rate: float,
    kill_after: float,
    static: bool,
) -> dict[str, Any]:
    run_id, ns, work = scratch_run(settings, "recovery")
    asyncio.run(create_topics(ns))
    how = "static membership" if static else "dynamic membership"
    console.print(
        f"[bold]recovery[/bold] {run_id}: {users} users x {events_per_user} events at "
        f"{rate:.0f}/s, SIGKILL after {kill_after:.0%} answered, restart at once ({how}); "
        f"logs in {work}"
    )
    try:
        crash = asyncio.run(
            crash_run(
                ns,
                work,
                users=users,
                events_per_user=events_per_user,
                items=items,
                rate=rate,
                kill_after=kill_after,
                static=static,
            )  # fmt: skip
        )
        results: dict[str, Any] = {
            "membership": "static" if static else "dynamic",
            "users": users,
            "events_per_user": events_per_user,
            "rate": rate,
            **figures(crash),
            "hardware": f"{os.cpu_count()} vCPUs, {platform.machine()}, {platform.system()}",
        }
    finally:
        asyncio.run(delete_topics_with_prefix(ns, f"recovery-{run_id}"))
    print_and_save(console, "stream-rec bench recovery", results, out)
    shutil.rmtree(work, ignore_errors=True)
    return results
