"""``stream-rec bench soak``: one worker under a fixed load for minutes; does anything creep?

A fresh namespace (topic prefix + consumer group) on the configured broker; one
``stream-rec worker``; MovieLens behaviour events offered at a fixed rate (the dataset is looped
when the run needs more events than it has; ``ts`` is stamped at send). Every ``sample_s``
seconds the bench records the worker's RSS (psutil), the group's consumer lag on ``behavior``
(end offsets minus committed offsets, summed over partitions) and recommendations/s (growth of
the ``recommendations`` end offsets). After the load it keeps sampling for up to ``drain_s``
seconds, until the lag is 0.

Warm-up is the first pass over the data set at the same rate (phase ``warm``): until every
user's session and every item's co-occurrence list has been filled once, state grows by design
(measured: +35 MB over the first 100k MovieLens events with in-memory tables, then flat). The
``minutes`` of load are measured after it (phase ``load``).

Figures: RSS growth over the measured load (the mean of its first three samples against the
mean of its last three), the growth during warm-up for reference, the largest lag, and whether
the lag returned to 0 once the load stopped. A bench, not a test: it prints and writes
JSON; thresholds are the reader's.
"""

from __future__ import annotations

import asyncio
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.table import Table

from stream_rec.bench.pipeline import WorkerProc, worker_env
from stream_rec.bench.report import print_and_save, scratch_run
from stream_rec.client import kafka_producer
from stream_rec.data.movielens import load_movielens
from stream_rec.ops.broker import free_port
from stream_rec.ops.replay import behavior_payload, item_payload, select_events
from stream_rec.settings import Settings
from stream_rec.topics import Topics, create_topics, delete_topics_with_prefix

console = Console()


@dataclass
class Sample:
    t_s: float  # seconds since the load started
    phase: str  # "load" or "drain"
    rss_mb: float
    lag: int
    recs_per_s: float
    sent: int


class _Offsets:
    """Group lag on ``behavior`` and the ``recommendations`` end offsets, from the broker."""

    def __init__(self, settings: Settings) -> None:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.admin import AIOKafkaAdminClient

        kw = settings.kafka.kafka_client_kwargs()
        self.settings = settings
        self.topics = Topics(settings.kafka.topic_prefix)
        self.admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_list, **kw)
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka.bootstrap_list, group_id=None,
            enable_auto_commit=False, **kw,
        )  # fmt: skip
        self.behavior: list[Any] = []
        self.recs: list[Any] = []

    async def start(self) -> None:
        from aiokafka import TopicPartition

        await self.admin.start()
        await self.consumer.start()
        described = await self.admin.describe_topics(
            [self.topics.behavior, self.topics.recommendations]
        )
        parts = {d["topic"]: [p["partition"] for p in d["partitions"]] for d in described}
        self.behavior = [
            TopicPartition(self.topics.behavior, p) for p in parts[self.topics.behavior]
        ]
        self.recs = [
            TopicPartition(self.topics.recommendations, p)
            for p in parts[self.topics.recommendations]
        ]

    async def lag(self) -> int:
        committed = await self.admin.list_consumer_group_offsets(self.settings.kafka.app_id)
        ends = await self.consumer.end_offsets(self.behavior)
        total = 0
        for tp, end in ends.items():
            om = committed.get(tp)
            done = int(om.offset) if om is not None and om.offset >= 0 else 0
            total += max(0, int(end) - done)
        return total

    async def recommendations(self) -> int:
        return sum(int(o) for o in (await self.consumer.end_offsets(self.recs)).values())

    async def stop(self) -> None:
        await self.consumer.stop()
        await self.admin.close()


async def _soak(
    settings: Settings, events: list[Any], pid: int, minutes: float, rate: float,
    sample_s: float, drain_s: float, warm_up_events: int = 0,
) -> tuple[list[Sample], int, float | None]:  # fmt: skip
    """Offer ``warm_up_events`` and then ``minutes`` of load, sample throughout; return
    samples, events sent, drain time (or None)."""
    proc = psutil.Process(pid)
    offsets = _Offsets(settings)
    await offsets.start()
    producer: Any = kafka_producer(settings, linger_ms=5)
    await producer.start()
    samples: list[Sample] = []
    sent = 0
    load_s = warm_up_events / rate + minutes * 60.0
    start = time.monotonic()

    async def offer() -> None:
        nonlocal sent
        topic = Topics(settings.kafka.topic_prefix).behavior
        while (now := time.monotonic() - start) < load_s:
            delay = sent / rate - now
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            x = events[sent % len(events)]
            await producer.send(topic, behavior_payload(x, time.time()), key=x.user_id.encode())
            sent += 1
        await producer.flush()

    def rss_mb() -> float:
        return float(proc.memory_info().rss) / 2**20

    table = Table(title=f"stream-rec bench soak: {rate:.0f} events/s for {minutes:g} min")
    for col in ("time s", "phase", "RSS MB", "lag", "recs/s", "sent"):
        table.add_column(col, justify="right")

    async def sample(phase: str, last: tuple[float, int]) -> tuple[float, int]:
        t, recs = time.monotonic(), await offsets.recommendations()
        s = Sample(
            t_s=round(t - start, 1), phase=phase, rss_mb=round(rss_mb(), 1),
            lag=await offsets.lag(), recs_per_s=round((recs - last[1]) / (t - last[0]), 1),
            sent=sent,
        )  # fmt: skip
        samples.append(s)
        console.print(
            f"{s.t_s:7.1f}s {phase:5} RSS {s.rss_mb:7.1f} MB  lag {s.lag:6d}  "
            f"{s.recs_per_s:7.1f} recs/s  sent {s.sent}"
        )
        table.add_row(f"{s.t_s:.0f}", phase, f"{s.rss_mb:.1f}", str(s.lag), f"{s.recs_per_s:.1f}",
                      str(s.sent))  # fmt: skip
        return t, recs

    drained_after: float | None = None
    try:
        task = asyncio.create_task(offer())
        last = (time.monotonic(), await offsets.recommendations())
        while not task.done():
            await asyncio.wait({task}, timeout=max(0.0, sample_s - (time.monotonic() - last[0])))
            if not task.done():
                last = await sample("warm" if sent < warm_up_events else "load", last)
        await task
        load_end = time.monotonic()
        while time.monotonic() - load_end < drain_s:
            await asyncio.sleep(min(sample_s, max(0.5, drain_s / 12)))
            last = await sample("drain", last)
            if samples[-1].lag == 0:
                drained_after = round(time.monotonic() - load_end, 1)
                break
    finally:
        await producer.stop()
        await offsets.stop()
    console.print(table)
    return samples, sent, drained_after


def _growth_pct(samples: list[Sample]) -> float:
    """Mean RSS of the last three samples against the first three, in percent."""
    if len(samples) < 2:
        return float("nan")
    k = min(3, len(samples) // 2)
    first = sum(s.rss_mb for s in samples[:k]) / k
    last = sum(s.rss_mb for s in samples[-k:]) / k
    return 100.0 * (last - first) / first


def summarize(samples: list[Sample]) -> dict[str, Any]:
    """RSS growth over the measured load (%), during warm-up, the largest lag, recs/s."""
    warm = [s for s in samples if s.phase == "warm"]
    steady = [s for s in samples if s.phase == "load"]
    rates = [s.recs_per_s for s in steady]
    offered = warm + steady
    return {
        "rss_mb_start": offered[0].rss_mb if offered else float("nan"),
        "rss_mb_after_warmup": steady[0].rss_mb if steady else float("nan"),
        "rss_mb_end": steady[-1].rss_mb if steady else float("nan"),
        "rss_growth_during_warmup_pct": round(_growth_pct(warm + steady[:1]), 2),
        "rss_growth_after_warmup_pct": round(_growth_pct(steady), 2),
        "max_lag": max((s.lag for s in samples), default=0),
        "mean_recs_per_s_after_warmup": round(sum(rates) / len(rates), 1) if rates else 0.0,
    }


def run(
    settings: Settings, minutes: float, rate: float, out: Path, warm_up: bool = True
) -> dict[str, Any]:
    run_id, soak, work = scratch_run(settings, "soak")
    ds = load_movielens("movielens-100k", settings.observability.home)
    events = select_events(ds, None, None)
    asyncio.run(create_topics(soak))
    asyncio.run(_produce_items(soak, ds))
    port = free_port()
    console.print(f"[bold]soak[/bold] {run_id}: starting a worker (log {work / 'worker.log'})…")
    env = worker_env(soak, work / "worker", port)
    w = WorkerProc([sys.executable, "-m", "stream_rec", "worker"], env, work / "worker.log", port)
    try:
        w.wait_ready()
        warm_up_events = len(events) if warm_up else 0
        samples, sent, drained = asyncio.run(
            _soak(soak, events, w.proc.pid, minutes, rate, 5.0, 60.0, warm_up_events)
        )
        alive = w.proc.poll() is None
    finally:
        w.stop()
    results: dict[str, Any] = {
        "minutes": minutes,
        "offered_events_per_s": rate,
        "events_sent": sent,
        **summarize(samples),
        "lag_returned_to_zero": drained is not None,
        "drain_seconds": drained,
        "worker_alive_at_end": alive,
        "warm_up": f"one pass over the data set ({len(events)} events)" if warm_up else "none",
        "scorer": "model" if settings.model.model_path else "fallback (popularity + co-occurrence)",
        "hardware": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "samples": [asdict(s) for s in samples],
    }
    print_and_save(console, "stream-rec bench soak: summary", results, out, skip=("samples",))
    asyncio.run(delete_topics_with_prefix(soak, f"soak-{run_id}"))
    return results


async def _produce_items(settings: Settings, ds: Any) -> None:
    p: Any = kafka_producer(settings, linger_ms=20)
    await p.start()
    try:
        now = time.time()
        topic = Topics(settings.kafka.topic_prefix).items
        for i in ds.items.values():
            await p.send(topic, item_payload(i, now), key=i.item_id.encode())
        await p.flush()
    finally:
        await p.stop()
