"""``stream-rec demo``: the whole pipeline on one machine, end to end, model included.

Starts the local broker (if not running), creates a fresh set of topics, an empty model registry,
one ``stream-rec worker`` and one ``stream-rec trainer`` process, and replays MovieLens-100K in
time order (items first, then ratings as ``rate`` events stamped with the send time):

1. **history** — the first ``history`` events as fast as the worker takes them. The worker
   serves the fallback scorer (the cold-start bridge: "waiting for first model") and the trainer
   sees the behaviour topic fill up;
2. **live** — the following events at ``rate`` events/s, shown in a live table. Once the topic
   held ``history`` events the trainer bootstrapped the first model from the topics (a
   demo-sized configuration), exported and announced it; the worker swaps to it between two
   micro-batches and the table shows the new version with its "because you watched …" reasons.
   The live phase ends once the model has answered ``model_events`` events (or after ``limit``
   live events).

At the end it prints the event→recommendation latency of the live phase and the online hit rate
(the user's next interaction among the 10 recommended items) of the live events answered by the
fallback and of those answered by the model, on the same replay. Then stops what it started.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from stream_rec.client import Recommendation, decode_recommendation
from stream_rec.data.movielens import load_movielens
from stream_rec.metrics import GcWatch, gc_pauses, scrape_metrics
from stream_rec.ops.broker import BrokerError, broker_from_settings, free_port
from stream_rec.ops.replay import replay, select_events
from stream_rec.settings import Settings
from stream_rec.topics import Topics, create_topics_sync

console = Console()


# The demo-sized model: trains in well under a minute on 2 cores (STREAM_REC_TRAIN_*), on
# one torch thread, so the worker serving the fallback meanwhile keeps a core.
DEMO_TRAIN_ENV = {
    "STREAM_REC_TRAIN_EPOCHS": "10",
    "STREAM_REC_TRAIN_DIM": "32",
    "STREAM_REC_TRAIN_LAYERS": "1",
    "STREAM_REC_TRAIN_MAX_LEN": "50",
    "STREAM_REC_TRAIN_THREADS": "1",
}


def _status(port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/stream-rec/status", timeout=2) as r:  # noqa: S310
            return dict(json.loads(r.read()))
    except Exception:  # noqa: BLE001 - not up yet
        return None


def percentile(xs: Sequence[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def is_fallback(version: str) -> bool:
    return version.startswith("fallback")


@dataclass
class HitRates:
    """Online hit rate: was the user's next interaction among the recommended items?"""

    k: int = 10
    n: Counter[str] = field(default_factory=Counter)
    hits: Counter[str] = field(default_factory=Counter)

    def add(self, period: str, next_item: str | None, items: Sequence[str]) -> None:
        if next_item is None:  # the user's last interaction: nothing to hit
            return
        self.n[period] += 1
        self.hits[period] += int(next_item in items[: self.k])

    def rate(self, period: str) -> float:
        return self.hits[period] / self.n[period] if self.n[period] else float("nan")


class ShadowFallback:
    """The fallback scorer run in the demo process on the same events, in the same order, so
    the events the model answers can also be scored by the fallback: the two hit rates then
    come from the very same events, not from two periods of the replay."""

    def __init__(self, items: Sequence[Any], session_length: int) -> None:
        from stream_rec.serving.fallback import PopularityCooccurrenceScorer
        from stream_rec.serving.scorer import CatalogItem

        self.scorer = PopularityCooccurrenceScorer()
        self.scorer.upsert_items(
            [CatalogItem(it.item_id, it.title, it.text, dict(it.attributes)) for it in items]
        )
        self.length = session_length
        self.recent: dict[str, list[str]] = {}
        self.seen: dict[str, set[str]] = {}

    def observe(self, user: str, item: str, event: str) -> None:
        before = self.recent.setdefault(user, [])
        self.scorer.observe(user, list(before), item, event)
        before.append(item)
        del before[: -self.length]
        self.seen.setdefault(user, set()).add(item)

    def top(self, user: str, k: int) -> list[str]:
        from stream_rec.serving.scorer import ScoreRequest

        req = ScoreRequest(
            user, list(self.recent.get(user, [])), frozenset(self.seen.get(user, ()))
        )
        return [i.item_id for i in self.scorer.score([req], k)[0]]


def shadow_hits(
    shadow: ShadowFallback,
    sent: Sequence[tuple[str, str, str, float]],
    answered: dict[tuple[str, float], str | None],
    hit: HitRates,
) -> None:
    """Score with the fallback every event the model answered, as the fallback would have
    then (its state holds every event sent up to and with that one), into ``hit``'s
    "fallback, same events". ``sent``: (user, item, event type, ts) in sending order;
    ``answered``: (user, ts) → the user's next item."""
    for user, item, kind, ts in sent:
        shadow.observe(user, item, kind)
        if (user, ts) in answered:
            hit.add("fallback, same events", answered[(user, ts)], shadow.top(user, hit.k))


def next_items(events: Sequence[Any]) -> dict[tuple[str, int], str | None]:
    """(user, n-th event of that user) → the item of the user's following event, if any."""
    by_user: dict[str, list[str]] = {}
    for x in events:
        by_user.setdefault(x.user_id, []).append(x.item_id)
    out: dict[tuple[str, int], str | None] = {}
    for user, items in by_user.items():
        for n in range(len(items)):
            out[(user, n)] = items[n + 1] if n + 1 < len(items) else None
    return out


def run_demo(
    settings: Settings,
    *,
    users: int | None,
    rate: float,
    history: int,
    model_events: int,
    limit: int | None,
    keep_broker: bool,
    keep: bool = False,
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
    prefix = f"{settings.kafka.topic_prefix}demo-{run_id}."
    run_dir = settings.observability.home / "demo" / run_id
    registry = run_dir / "registry"
    registry.mkdir(parents=True, exist_ok=True)  # empty: the trainer bootstraps the first model
    demo_settings = settings.replace(
        topic_prefix=prefix,
        app_id=f"{settings.kafka.app_id}-demo-{run_id}",
        data_dir=run_dir / "worker",
        web_port=free_port(),
        model_path=registry,
    )
    with console.status("loading MovieLens-100K…"):
        ds = load_movielens("movielens-100k", settings.observability.home)
    events = select_events(ds, users, None)
    if len(events) <= history:
        console.print(f"[red]demo: only {len(events)} events; --history must be smaller[/red]")
        return 2
    live_events = events[history : history + limit] if limit else events[history:]
    create_topics_sync(demo_settings)
    env = {
        **os.environ,
        "STREAM_REC_TOPIC_PREFIX": prefix,
        "STREAM_REC_APP_ID": demo_settings.kafka.app_id,
        "STREAM_REC_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "STREAM_REC_MODEL_PATH": str(registry),
        "STREAM_REC_LOG_LEVEL": "info",
    }
    worker_env = {
        **env,
        "STREAM_REC_DATA_DIR": str(demo_settings.serving.data_dir),
        "STREAM_REC_WEB_PORT": str(demo_settings.observability.web_port),
    }
    trainer_env = {
        **env,
        **DEMO_TRAIN_ENV,
        "STREAM_REC_DATA_DIR": str(run_dir / "trainer"),
        "STREAM_REC_WEB_PORT": "0",
        "STREAM_REC_BOOTSTRAP_MIN_EVENTS": str(history),
        "STREAM_REC_RETRAIN_EVERY_HOURS": "0",
    }
    procs: list[subprocess.Popen[bytes]] = []
    logs = {name: run_dir / f"{name}.log" for name in ("worker", "trainer")}
    for name, penv in (("worker", worker_env), ("trainer", trainer_env)):
        with open(logs[name], "wb") as log:
            procs.append(
                subprocess.Popen(  # noqa: S603
                    [sys.executable, "-m", "stream_rec", name],
                    env=penv,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    try:
        if not _wait_worker(procs[0], demo_settings.observability.web_port, prefix, logs["worker"]):
            return 1
        show = Show(demo_settings, ds, events, history, live_events, rate, model_events, logs)
        return asyncio.run(show.run(procs[1]))
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
        if keep:
            console.print(f"kept: topics {prefix}*, logs and registry in {run_dir}")
        else:
            _clean_up(demo_settings, prefix, run_dir, logs)
        if started_broker and not keep_broker:
            with console.status("stopping the broker…"):
                broker.stop()


def _clean_up(settings: Settings, prefix: str, run_dir: Path, logs: dict[str, Path]) -> None:
    """Delete the run's topics (its own and the Faust changelogs), tables and registry; keep
    the two logs and the run's figures (report.json)."""
    from stream_rec.topics import delete_topics_with_prefix

    async def delete() -> None:
        await delete_topics_with_prefix(settings, prefix)
        await delete_topics_with_prefix(settings, f"{settings.kafka.app_id}-")

    try:
        asyncio.run(delete())
    except Exception as exc:  # noqa: BLE001 - cleaning up must not hide the demo's result
        console.print(f"[yellow]could not delete the demo topics {prefix}*: {exc}[/yellow]")
    for child in run_dir.iterdir():
        if child not in logs.values() and child.name != "report.json":
            shutil.rmtree(child, ignore_errors=True)
    console.print(f"logs of this run: {run_dir} (--keep keeps its topics and registry)")


def _wait_worker(worker: subprocess.Popen[bytes], port: int, prefix: str, log: Path) -> bool:
    with console.status("starting a stream-rec worker (catalogue, partitions)…"):
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if worker.poll() is not None:
                console.print(f"[red]worker exited ({worker.returncode}); see {log}[/red]")
                return False
            st = _status(port)
            assigned = st and any(str(a).startswith(f"{prefix}behavior") for a in st["assignment"])
            if st and assigned and not st["rebalancing"]:
                return True
            time.sleep(0.5)
    console.print(f"[red]worker not ready after 120 s; see {log}[/red]")
    return False


class Show:
    """Replays the two phases, follows the recommendations, renders the live table."""

    def __init__(
        self,
        settings: Settings,
        ds: Any,
        events: Sequence[Any],
        history: int,
        live_events: Sequence[Any],
        rate: float,
        model_events: int,
        logs: dict[str, Path],
    ) -> None:
        self.settings, self.ds, self.rate = settings, ds, rate
        self.history, self.live_events, self.model_events = history, live_events, model_events
        self.logs = logs
        self.report_path = logs["worker"].parent / "report.json"
        self.titles = {iid: _title(it) for iid, it in ds.items.items()}
        self.next = next_items(events)
        self.history_events = events[:history]
        self.hit = HitRates(k=10)
        # The fallback's lists for the events the model answers are computed after the live
        # phase, from the sent events in their order: the same lists, without the demo
        # process taking CPU from the worker while latencies are measured.
        self.shadow = ShadowFallback(list(ds.items.values()), settings.serving.session_length)
        self.sent_log: list[tuple[str, str, str, float]] = []  # user, item, event type, ts
        self.model_answered: dict[tuple[str, float], str | None] = {}  # → the next item
        # (user, event ts) → (n-th event of that user, item, live?) for each event sent
        self.sent: dict[tuple[str, float], tuple[int, str, bool]] = {}
        self.count: dict[str, int] = {}
        self.n_sent = self.received = self.live_received = self.model_answers = 0
        self.latencies: list[float] = []
        # (seconds into the live phase the answer arrived, latency s, fallback or model,
        # seconds from the event's send to the worker's recommendation)
        self.timeline: list[tuple[float, float, str, float]] = []
        self.period_latencies: dict[str, list[float]] = {"fallback": [], "model": []}
        self.rows: deque[tuple[str, ...]] = deque(maxlen=10)
        self.phase = "history"
        self.swap: tuple[str, float] | None = None  # (version, seconds after the history)
        self.history_done_at: float | None = None
        self.live_started_unix: float | None = None  # to line the timeline up with the logs
        self.t0 = time.monotonic()
        # this process's own full collections (generation 2): (s into the live phase, s long)
        self.own_gc: list[tuple[float, float]] = []
        # this process's own stalls over 20 ms, live phase: its event loop late by so much
        # (s into the live phase, s late), and sends that took so long (s into it, s)
        self.loop_late: list[tuple[float, float]] = []
        self.slow_sends: list[tuple[float, float]] = []
        # live events the broker acknowledged 20 ms or more after they were sent (s into the
        # live phase, s from the send to the acknowledgement)
        self.slow_acks: list[tuple[float, float]] = []

    def _on_gc(self, generation: int, took: float) -> None:
        if generation == 2:
            at = time.monotonic() - took - (self.history_done_at or self.t0)
            self.own_gc.append((round(at, 3), round(took, 4)))

    async def _watch_loop(self) -> None:
        """Record when this process's event loop wakes up over 20 ms late (the events it
        stamps wait meanwhile, and the answers it times look slower)."""
        while True:
            t = time.monotonic()
            await asyncio.sleep(0.05)  # 20 wake-ups a second: next to nothing beside the worker
            late = time.monotonic() - t - 0.05
            if late > 0.02 and self.history_done_at is not None:
                self.loop_late.append((round(t - self.history_done_at, 3), round(late, 4)))

    def _late(self, rows: list[tuple[float, float]], ts: float) -> None:
        """Into ``rows``, in the live phase: (s into it, s since ``ts``) if over 20 ms."""
        took = time.time() - ts
        if took > 0.02 and self.history_done_at is not None:
            rows.append((round(time.monotonic() - self.history_done_at, 3), took))

    def on_send(self, x: Any, ts: float, delivery: Any = None) -> None:
        self._late(self.slow_sends, ts)
        if delivery is not None and self.history_done_at is not None:
            delivery.add_done_callback(lambda _: self._late(self.slow_acks, ts))
        self.sent_log.append((x.user_id, x.item_id, x.event, ts))
        n = self.count.get(x.user_id, 0)
        self.count[x.user_id] = n + 1
        self.sent[(x.user_id, ts)] = (n, x.item_id, self.phase == "live")
        self.n_sent += 1

    def on_rec(self, rec: Recommendation, now: float) -> None:
        self.received += 1
        version = rec.model_version
        n, item, live = self.sent.get((rec.user_id, rec.event_ts), (-1, "", False))
        if not live:
            return
        self.live_received += 1
        self.latencies.append(max(0.0, now - rec.event_ts))
        items = [i.item_id for i in rec.items]
        period = "fallback" if is_fallback(version) else "model"
        self.period_latencies[period].append(self.latencies[-1])
        since = time.monotonic() - (self.history_done_at or self.t0)
        in_worker = rec.emitted_ts - rec.event_ts  # up to the worker's send: the rest is the
        self.timeline.append(  # broker's way out and this process's consumer
            (round(since, 3), round(self.latencies[-1], 5), period, round(in_worker, 5))
        )
        nxt = self.next.get((rec.user_id, n))
        self.hit.add(period, nxt, items)
        if period == "model":
            self.model_answered[(rec.user_id, rec.event_ts)] = nxt
            self.model_answers += 1
            if self.swap is None:
                self.swap = (version, time.monotonic() - (self.history_done_at or self.t0))
        reason = rec.items[0].reason if rec.items else None
        self.rows.append(
            (
                rec.user_id,
                self.titles.get(item, item),
                "; ".join(self.titles.get(i, i) for i in items[:3]),
                reason or "–",
                version,
                f"{1000 * (now - rec.event_ts):.1f} ms",
            )
        )

    def render(self) -> Group:
        t = Table(
            title=f"live recommendations — {self.live_received} received / "
            f"{max(0, self.n_sent - self.history)} live events sent",
            caption=f"event→recommendation latency (live) p50 "
            f"{1000 * percentile(self.latencies, 0.5):.1f} ms, p95 "
            f"{1000 * percentile(self.latencies, 0.95):.1f} ms, p99 "
            f"{1000 * percentile(self.latencies, 0.99):.1f} ms",
        )
        for col in ("user", "just rated", "top 3 recommendations", "why (top 1)", "model",
                    "latency"):  # fmt: skip
            t.add_column(col, overflow="fold")
        for r in self.rows:
            t.add_row(*r)
        return Group(Text(self.stage(), style="bold"), t)

    def stage(self) -> str:
        elapsed = time.monotonic() - self.t0
        if self.phase == "history":
            return (
                f"[{elapsed:5.0f} s] history: {self.n_sent}/{self.history} events replayed, "
                f"{self.received} answered by the fallback (waiting for first model)"
            )
        if self.swap is None:
            since = time.monotonic() - (self.history_done_at or self.t0)
            return (
                f"[{elapsed:5.0f} s] live at {self.rate:.0f}/s, served by the fallback; the "
                f"trainer is training the first model from the topics ({since:.0f} s; "
                f"{self.logs['trainer']})"
            )
        return (
            f"[{elapsed:5.0f} s] model {self.swap[0]} serving since {self.swap[1]:.0f} s into "
            f"the live phase: {self.model_answers}/{self.model_events} events answered by it"
        )

    async def run(self, trainer: subprocess.Popen[bytes]) -> int:
        from aiokafka import AIOKafkaConsumer

        topics = Topics(self.settings.kafka.topic_prefix)
        consumer = AIOKafkaConsumer(
            topics.recommendations,
            bootstrap_servers=self.settings.kafka.bootstrap_list,
            group_id=None,
            auto_offset_reset="earliest",
            **self.settings.kafka.kafka_client_kwargs(),
        )
        await consumer.start()
        task = asyncio.create_task(
            replay(self.settings, self.ds, events=self.history_events, on_send=self.on_send)
        )
        own_gc = GcWatch(self._on_gc)
        watch = asyncio.create_task(self._watch_loop())
        try:
            with Live(self.render(), console=console, refresh_per_second=4) as live:
                await self._follow(
                    consumer, live, lambda: task.done() and self.received >= self.history
                )
                self.phase, self.history_done_at = "live", time.monotonic()
                self.live_started_unix = time.time()
                task = asyncio.create_task(
                    replay(
                        self.settings,
                        self.ds,
                        events=self.live_events,
                        rate=self.rate,
                        send_items=False,
                        on_send=self.on_send,
                    )  # fmt: skip
                )
                await self._follow(consumer, live, lambda: self._live_done(task, trainer))
                if not task.done():
                    task.cancel()
                # what is already sent gets its answer
                deadline = time.monotonic() + 30
                while self.received < self.n_sent and time.monotonic() < deadline:
                    await self._poll(consumer, live)
        finally:
            watch.cancel()
            own_gc.close()
            await consumer.stop()
            if not task.done():
                task.cancel()
        ok = self.report(trainer)
        return 0 if ok else 1

    def _live_done(self, task: asyncio.Task[Any], trainer: subprocess.Popen[bytes]) -> bool:
        if self.model_answers >= self.model_events:
            return True
        if trainer.poll() is not None and self.swap is None:
            return True  # the trainer died: no model will come
        return task.done() and self.received >= self.n_sent

    async def _follow(self, consumer: Any, live: Live, done: Any) -> None:
        while not done():
            await self._poll(consumer, live)

    async def _poll(self, consumer: Any, live: Live) -> None:
        batch = await consumer.getmany(timeout_ms=250)
        now = time.time()
        for recs in batch.values():
            for r in recs:
                self.on_rec(decode_recommendation(r.value), now)
        live.update(self.render())

    def report(self, trainer: subprocess.Popen[bytes]) -> bool:
        shadow_hits(self.shadow, self.sent_log, self.model_answered, self.hit)
        wall = time.monotonic() - self.t0
        console.print(
            f"replayed {self.n_sent} events ({self.history} history, "
            f"{self.n_sent - self.history} live at {self.rate:.0f}/s) in {wall:.0f} s; "
            f"{self.received} recommendations"
        )
        figures: dict[str, Any] = {"events": self.n_sent, "history": self.history,
                                   "rate": self.rate, "latency_ms": {}}  # fmt: skip
        for key, label, xs in (("all", "all live events", self.latencies),
                               ("fallback", "answered by the fallback (the trainer bootstrapping "
                                "beside it)", self.period_latencies["fallback"]),
                               ("model", "answered by the model",
                                self.period_latencies["model"])):  # fmt: skip
            console.print(
                f"latency, {label}: p50 {1000 * percentile(xs, 0.5):.1f} ms, "
                f"p95 {1000 * percentile(xs, 0.95):.1f} ms, "
                f"p99 {1000 * percentile(xs, 0.99):.1f} ms"
            )
            figures["latency_ms"][key] = {
                "n": len(xs),
                **{
                    f"p{q}": round(1000 * percentile(xs, q / 100), 2) if xs else None
                    for q in (50, 95, 99)
                },
            }
        t = Table(title="online hit rate: the user's next interaction in the top 10")
        for col in ("live events answered by", "scored by", "events", "HR@10"):
            t.add_column(col)
        rows = (
            ("the fallback", "fallback", "fallback"),
            ("the model", "model", "model"),
            ("the model", "fallback (in the demo, same events)", "fallback, same events"),
        )
        for period, scorer, key in rows:  # fmt: skip
            t.add_row(period, scorer, str(self.hit.n[key]), f"{self.hit.rate(key):.4f}")
        console.print(t)
        figures["hit_rate_at_10"] = {k: {"events": self.hit.n[k],
                                         "hr": self.hit.rate(k) if self.hit.n[k] else None}
                                     for _, _, k in rows}  # fmt: skip
        figures["model"] = None if self.swap is None else {
            "version": self.swap[0], "serving_from_s": round(self.swap[1], 2)}  # fmt: skip
        figures["unanswered"] = self.n_sent - self.received
        figures["live_started_unix"] = self.live_started_unix
        figures["worker_gc_pauses"] = self.worker_gc_pauses()
        figures["demo_gc_pauses"] = {"columns": ["s_into_live_phase", "seconds"],
                                     "rows": self.own_gc}  # fmt: skip
        figures["demo_loop_late"] = {"columns": ["s_into_live_phase", "seconds_late"],
                                     "rows": self.loop_late}  # fmt: skip
        figures["demo_slow_sends"] = {"columns": ["s_into_live_phase", "seconds"],
                                      "rows": self.slow_sends}  # fmt: skip
        figures["demo_slow_acks"] = {"columns": ["s_into_live_phase", "seconds"],
                                     "rows": self.slow_acks}  # fmt: skip
        figures["timeline"] = {"columns": ["s_into_live_phase", "latency_s", "scorer",
                                           "to_emitted_s"],
                               "rows": self.timeline}  # fmt: skip
        self.report_path.write_text(json.dumps(figures) + "\n")
        console.print(f"figures of this run: {self.report_path}")
        if self.swap is None:
            state = "exited" if trainer.poll() is not None else "still training"
            console.print(f"[red]the model never served (trainer {state}); see "
                          f"{self.logs['trainer']}[/red]")  # fmt: skip
            return False
        console.print(
            f"model {self.swap[0]} took over {self.swap[1]:.0f} s into the live phase "
            "(bootstrap from the topics, export, announcement, swap)"
        )
        if self.received < self.n_sent:
            console.print(f"[red]{self.n_sent - self.received} events got no answer[/red]")
            return False
        return True

    def worker_gc_pauses(self) -> dict[str, dict[str, Any]] | None:
        """The worker's garbage-collector pauses over its life (None if it does not answer)."""
        try:
            pauses = gc_pauses(scrape_metrics(self.settings.observability.web_port))
        except OSError as exc:
            console.print(f"[yellow]no /metrics from the worker: {exc}[/yellow]")
            return None
        if pauses:
            console.print(
                "worker GC pauses: "
                + ", ".join(
                    f"generation {g} {p['count']:.0f} ({p['seconds'] * 1000:.0f} ms in all, "
                    f"{p['over_50ms']:.0f} over 50 ms)"
                    for g, p in sorted(pauses.items())
                )
            )
        return pauses


def _title(item: Any) -> str:
    year = item.attributes.get("year")
    return f"{item.title} ({year})" if year else str(item.title)
