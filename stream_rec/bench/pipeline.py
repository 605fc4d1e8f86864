"""``stream-rec bench pipeline``: throughput and latency through the real broker.

In one run, on the same broker and the same MovieLens events, side by side:

1. **Throughput** of each subject — the pipeline worker with the fallback scorer, the same
   worker serving the ONNX model (``--model PATH``), and a bare Faust agent
   (``stream_rec.bench.bare``: only a table update per event). Each subject gets its own topics
   holding the same N behaviour events (and the same items), produced before it starts; it then
   drains them. Sustained events/s = records after the first 10 % / the broker-time span from
   the 10 % record to the last (the first 10 % hold the start: group join, catalogue load).
   The pipeline's records are its recommendations, the bare agent's its changelog records.
2. **Latency** of each pipeline subject under a fixed offered load of half its own measured
   throughput (or ``--latency-rate R`` for every subject), on the same events:
   event→recommendation = the bench consumer's receive time − the event's ``ts`` stamped at
   send. The bench's producer sends each event on its own (no linger), as independent
   producers would: unlike the drain, this load also costs the broker and the bench CPU.
   With it, the worker's own CPU time per event over the run (``/proc``): on a shared machine
   a steadier figure than wall-clock ones; and the cores the worker, the bench process and the
   local broker each used meanwhile (CPU seconds per second), which say whether the machine
   itself was the limit. The latency floor beside them: the bare agent with ``--echo`` (each
   event sent on, unchanged, one send per event) at each scorer's offered load
   (``bare-echo-at-<subject>``; ``bare-echo`` with ``--latency-rate``), on fresh topics.
3. ``--variant NAME:KEY=VALUE,...``: each pipeline subject again as ``<subject>-NAME`` with
   those ``STREAM_REC_*`` settings in its environment (say ``SCORE_INLINE_MS=0``), so settings
   are compared within one run, on the same events.
4. ``--workers N`` (N > 1): the fallback pipeline again with N workers sharing the same
   partitions: their combined throughput, and the latency at the one-worker run's offered load.
5. ``--rounds N``: the drains again, N rounds in all, the subjects taking turns in each, every
   round on fresh topics and groups. A subject's events/s and its ratio to the bare agent are
   the medians over the rounds (each round's figure is kept): on a shared machine one drain's
   rate moves between runs by more than the differences being measured.
6. Per-stage cost of one event in each one-worker pipeline drain (the first round's), from the
   worker's own timers (``stream_rec_stage_seconds_total``, read from its ``/metrics`` at the
   end of the drain). ``--profile`` adds a py-spy flame graph of each pipeline drain (the first
   round's) and latency run, saved beside the JSON (py-spy samples the worker from outside,
   at 25 Hz, but shares the cores: the figures of a profiled run are marked ``profiled`` and
   run lower).

Subjects run one at a time; the bench's own producer and consumer share the machine with them.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from stream_rec.bench.bare import ECHO_TOPIC
from stream_rec.bench.report import print_and_save
from stream_rec.client import kafka_producer
from stream_rec.data.movielens import load_movielens
from stream_rec.metrics import STAGES as STAGE_NAMES
from stream_rec.metrics import gc_pauses, scrape_metrics
from stream_rec.ops.broker import LocalBroker, free_port
from stream_rec.ops.replay import behavior_payload, item_payload, select_events
from stream_rec.schemas import decode_output
from stream_rec.settings import FIELD_GROUP, Settings
from stream_rec.topics import create_sized_topics, create_topics, delete_topics_with_prefix

console = Console()
WARM_UP_SHARE = 0.1  # records left out of the throughput window (start of the drain)

# Per-stage timers of ``score_behavior`` (``stream_rec_stage_seconds_total{stage}``), in the
# order one event meets them, with what each one covers.
STAGES: dict[str, str] = {
    "wait": "between two batches: acks of the last batch, Faust's per-event stream work, "
    "consumer fetch, other tasks (changelog and producer buffers, commit), idle",
    "decode": "decode + validate (JSON/msgpack, schema, limits, key check)",
    "session": "session read, update and write (sessions table: RocksDB + changelog enqueue)",
    "score": "scoring: hand-off to the scoring thread, observe + score, back on the loop",
    "encode": "recommendation records built and encoded",
    "produce": "recommendations handed to the producer",
    "rec_context": "rec_context read, update and write (RocksDB + changelog enqueue)",
    "metrics": "Prometheus counters and histograms",
    "shadow": "a candidate version scoring a share of events in shadow (only while the "
    "trainer checks one)",
    "score: of which in the scorer": "the scorer's own time in the scoring thread (score(), "
    "not observe()); the rest of 'score' is the loop's other tasks meanwhile and the hand-off",
}


@dataclass(frozen=True)
class Subject:
    """One thing measured: its own topics and group, its command, its scorer."""

    name: str
    settings: Settings
    command: list[str]
    model: Path | None = None
    workers: int = 1
    env: tuple[tuple[str, str], ...] = ()  # a variant's own settings (STREAM_REC_* = value)
    tag: str = ""  # the drain round's ("r2-", …): its own data folders and logs

    @property
    def is_bare(self) -> bool:
        return "stream_rec.bench.bare" in self.command

    @property
    def is_echo(self) -> bool:
        return self.is_bare and "--echo" in self.command

    @property
    def changelog(self) -> str:
        """The bare agent's table changelog (created before it starts)."""
        return f"{self.settings.kafka.app_id}-bare-bare_counts-changelog"

    @property
    def output_topic(self) -> str:
        if self.is_echo:
            return f"{self.settings.kafka.topic_prefix}{ECHO_TOPIC}"
        if self.is_bare:
            return self.changelog
        return f"{self.settings.kafka.topic_prefix}recommendations"

    @property
    def ts_field(self) -> str:
        """The field of an output record that holds its event's send time."""
        return "ts" if self.is_echo else "event_ts"  # the echo is the event itself


def worker_env(
    s: Settings, data_dir: Path, port: int, *, model: Path | None = None, set_model: bool = False
) -> dict[str, str]:
    """A worker's environment; with ``set_model`` its scorer is ``model`` (None: the fallback)
    whatever ``STREAM_REC_MODEL_PATH`` the bench itself was started with."""
    env = {
        **os.environ,
        "STREAM_REC_BOOTSTRAP_SERVERS": s.kafka.bootstrap_servers,
        "STREAM_REC_TOPIC_PREFIX": s.kafka.topic_prefix,
        "STREAM_REC_APP_ID": s.kafka.app_id,
        "STREAM_REC_PARTITIONS": str(s.kafka.partitions),
        "STREAM_REC_DATA_DIR": str(data_dir),
        "STREAM_REC_WEB_PORT": str(port),
        "STREAM_REC_LOG_LEVEL": "warning",
    }
    if set_model:
        env.pop("STREAM_REC_MODEL_PATH", None)
        if model is not None:
            env["STREAM_REC_MODEL_PATH"] = str(model)
    return env


def worker_status(port: int) -> dict[str, Any] | None:
    try:
        url = f"http://127.0.0.1:{port}/stream-rec/status"
        with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - our own worker
            return dict(json.loads(r.read()))
    except Exception:  # noqa: BLE001 - not up yet
        return None


def _ready(port: int) -> bool:
    st = worker_status(port)
    return st is not None and bool(st["catalog_caught_up"]) and not st["rebalancing"]


class WorkerProc:
    def __init__(self, args: list[str], env: dict[str, str], log: Path, port: int) -> None:
        self.log = log
        self.port = port
        with open(log, "wb") as f:
            self.proc = subprocess.Popen(args, env=env, stdout=f, stderr=subprocess.STDOUT)  # noqa: S603

    def check(self) -> None:
        if self.proc.poll() is not None:
            msg = f"worker exited {self.proc.returncode}; log {self.log}"
            raise RuntimeError(msg)

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check()
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
            self.proc.wait()


class _Workers:
    """``n`` worker processes of one subject (one group, separate data dirs and ports)."""

    def __init__(self, subject: Subject, work: Path, tag: str) -> None:
        self.procs: list[WorkerProc] = []
        for i in range(subject.workers):
            port = free_port()
            name = f"{subject.tag}{subject.name}-{tag}-{i}"
            self.procs.append(
                WorkerProc(
                    subject.command,
                    worker_env(
                        subject.settings,
                        work / f"{subject.tag}{subject.name}-{i}",
                        port,
                        model=subject.model,
                        set_model=True,
                    )
                    | dict(subject.env),
                    work / f"{name}.log",
                    port,
                )  # fmt: skip
            )

    def check(self) -> None:
        for p in self.procs:
            p.check()

    def wait_ready(self, timeout: float = 180) -> None:
        """Every worker has the catalogue and the group is settled (all at the same time)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check()
            sts = [worker_status(p.port) for p in self.procs]
            if all(
                st and st["catalog_caught_up"] and not st["rebalancing"] and st["assignment"]
                for st in sts
            ):
                return
            time.sleep(0.3)
        msg = f"workers not ready in {timeout}s; logs {[str(p.log) for p in self.procs]}"
        raise RuntimeError(msg)

    def stop(self) -> None:
        for p in self.procs:
            p.proc.send_signal(signal.SIGTERM)
        for p in self.procs:
            p.stop()


class _PySpy:
    """``py-spy record`` attached to a running worker; the SVG is written when it stops."""

    def __init__(self, pid: int, svg: Path, log: Path) -> None:
        exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        self.svg = svg
        with open(log, "wb") as f:
            self.proc = subprocess.Popen(  # noqa: S603
                [exe, "record", "--pid", str(pid), "--rate", "25", "--nonblocking",
                 "--format", "flamegraph", "-o", str(svg)],
                stdout=f, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def stop(self) -> bool:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        return self.svg.exists()


async def _produce(settings: Settings, topic: str, msgs: list[tuple[bytes, bytes]]) -> None:
    p: Any = kafka_producer(settings, linger_ms=20)
    await p.start()
    try:
        for k, v in msgs:
            await p.send(topic, v, key=k)
        await p.flush()
    finally:
        await p.stop()


async def _drain_timestamps(
    settings: Settings,
    topic: str,
    n: int,
    timeout: float,
    check: Callable[[], None] = lambda: None,
) -> list[int]:
    """Broker timestamps (ms) of the first ``n`` records of ``topic``; ``check`` raises when the
    subject can no longer deliver them (a worker exited), instead of waiting out ``timeout``."""
    from aiokafka import AIOKafkaConsumer

    c = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap_list, group_id=None,
        auto_offset_reset="earliest", fetch_max_bytes=16 * 1024 * 1024,
    )  # fmt: skip
    await c.start()
    ts: list[int] = []
    try:
        deadline = time.monotonic() + timeout
        while topic not in await c.topics():  # a worker creates it when it starts
            check()
            if time.monotonic() > deadline:
                return ts
            await asyncio.sleep(0.5)
        c.subscribe([topic])
        while len(ts) < n and time.monotonic() < deadline:
            check()
            for recs in (await c.getmany(timeout_ms=500, max_records=5000)).values():
                ts.extend(r.timestamp for r in recs)
    finally:
        await c.stop()
    return ts


async def _latency_run(
    settings: Settings, events: list[Any], rate: float, output: str, ts_field: str = "event_ts"
) -> tuple[list[float], int]:
    """Offer ``rate`` events/s; return event→output latencies (s) as received (``output``: the
    subject's output topic, its records' ``ts_field`` the event's send time), and how many
    outputs of earlier events came meanwhile (events of the drain that a restarted group
    processed again: at-least-once), which are left out of the latencies."""
    from aiokafka import AIOKafkaConsumer

    c = AIOKafkaConsumer(
        output,
        bootstrap_servers=settings.kafka.bootstrap_list,
        group_id=None, auto_offset_reset="latest",
    )  # fmt: skip
    await c.start()
    await c.getmany(timeout_ms=500)  # positions fixed at the end before we send
    lat: list[float] = []
    earlier = [0]
    deadline: list[float] = []  # set once everything is sent: wait at most 30 s more
    t_start = time.time()

    async def consume() -> None:
        while not (deadline and (len(lat) >= len(events) or time.monotonic() > deadline[0])):
            for recs in (await c.getmany(timeout_ms=200)).values():
                now = time.time()
                for r in recs:
                    ts = decode_output(r.value)[ts_field]
                    if ts < t_start:
                        earlier[0] += 1
                    else:
                        lat.append(now - ts)

    p: Any = kafka_producer(settings, linger_ms=0)
    await p.start()
    task = asyncio.create_task(consume())
    start = time.perf_counter()
    for n, x in enumerate(events):
        delay = start + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await p.send(f"{settings.kafka.topic_prefix}behavior", behavior_payload(x, time.time()),
                     key=x.user_id.encode())  # fmt: skip
    await p.flush()
    deadline.append(time.monotonic() + 30)
    await task
    await p.stop()
    await c.stop()
    return lat, earlier[0]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux ``/proc``). Unlike wall-clock
    figures, a process's CPU time barely grows when other work shares the cores, so it
    compares subjects on a busy machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_or_nan(pid: int | None) -> float:
    try:
        return cpu_seconds(pid) if pid is not None else float("nan")
    except OSError:  # it exited meanwhile
        return float("nan")


def local_broker_pid(settings: Settings) -> int | None:
    """The pid of the local broker (``stream-rec broker up``) the settings point at, if any."""
    host, _, port = settings.kafka.bootstrap_list[0].rpartition(":")
    if host not in ("127.0.0.1", "localhost") or not port.isdigit():
        return None
    return LocalBroker(home=settings.observability.home, port=int(port)).pid()


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def steady_rate(ts: list[int], warm_up: float = WARM_UP_SHARE) -> float:
    """Records/s after the first ``warm_up`` share of records (broker timestamps in ms)."""
    s = sorted(ts)
    rest = s[int(warm_up * len(s)) :]
    if len(rest) < 2:
        return float("nan")
    span = (rest[-1] - rest[0]) / 1000.0
    return (len(rest) - 1) / span if span > 0 else float("nan")


def stage_breakdown(metrics_text: str) -> dict[str, float]:
    """µs per recommendation of each ``score_behavior`` stage, from a worker's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    seconds: dict[str, float] = {}
    recs = 0.0
    for fam in text_string_to_metric_families(metrics_text):
        for smp in fam.samples:
            if smp.name == "stream_rec_stage_seconds_total":
                seconds[smp.labels["stage"]] = smp.value
            elif smp.name == "stream_rec_recommendations_total":
                recs = smp.value
            elif smp.name == "stream_rec_scoring_seconds_sum":
                seconds["score: of which in the scorer"] = smp.value
    if recs <= 0:
        return {}
    out = {s: 1e6 * seconds[s] / recs for s in STAGES if s in seconds}
    out.update({s: 1e6 * v / recs for s, v in seconds.items() if s not in out})
    return out


def _drain(subject: Subject, n: int, work: Path, profile_svg: Path | None) -> dict[str, Any]:
    w = _Workers(subject, work, "drain")
    spy = _PySpy(w.procs[0].proc.pid, profile_svg, work / f"{subject.name}-pyspy.log") \
        if profile_svg else None  # fmt: skip
    out: dict[str, Any] = {}
    try:
        ts = asyncio.run(
            _drain_timestamps(subject.settings, subject.output_topic, n, 900, check=w.check)
        )
        if subject.workers == 1 and subject.output_topic.endswith(".recommendations"):
            try:
                out["stages_us"] = stage_breakdown(scrape_metrics(w.procs[0].port))
            except OSError as exc:
                console.print(f"[yellow]no /metrics from {subject.name}: {exc}[/yellow]")
    finally:
        if spy is not None:
            ok = spy.stop()
            out["flamegraph"] = str(spy.svg) if ok else f"py-spy failed: see {work}"
        w.stop()
    out["events_per_s"] = steady_rate(ts)
    out["records"] = len(ts)
    return out


def _latency(
    subject: Subject, events: list[Any], rate: float, work: Path, profile_svg: Path | None = None
) -> dict[str, Any]:
    w = _Workers(subject, work, "latency")
    stages: dict[str, float] = {}
    pauses: dict[str, dict[str, Any]] = {}
    spy = None
    try:
        w.wait_ready()
        if profile_svg is not None:
            log = work / f"{subject.name}-latency-pyspy.log"
            spy = _PySpy(w.procs[0].proc.pid, profile_svg, log)
        broker = local_broker_pid(subject.settings)
        cpu0 = sum(cpu_seconds(p.proc.pid) for p in w.procs)
        own0, broker0, t0 = cpu_seconds(os.getpid()), _cpu_or_nan(broker), time.monotonic()
        lat, earlier = asyncio.run(
            _latency_run(subject.settings, events, rate, subject.output_topic, subject.ts_field)
        )
        cpu_s = sum(cpu_seconds(p.proc.pid) for p in w.procs) - cpu0
        wall = time.monotonic() - t0
        # what else shared the cores meanwhile: the bench's own producer and consumer, and the
        # broker when it is the local one (NaN otherwise), in cores (CPU seconds per second)
        cores = {
            "latency_worker_cpu_cores": cpu_s / wall,
            "latency_bench_cpu_cores": (cpu_seconds(os.getpid()) - own0) / wall,
            "latency_broker_cpu_cores": (_cpu_or_nan(broker) - broker0) / wall,
        }
        if subject.workers == 1 and not subject.is_bare:  # the bare agent keeps no metrics
            try:
                text = scrape_metrics(w.procs[0].port)
                stages, pauses = stage_breakdown(text), gc_pauses(text)
            except OSError as exc:
                console.print(f"[yellow]no /metrics from {subject.name}: {exc}[/yellow]")
    finally:
        profiled = spy.stop() if spy is not None else False
        w.stop()
    return {
        **({"latency_flamegraph": str(profile_svg)} if profiled else {}),
        "latency_stages_us": stages,
        "gc_pauses": pauses,  # over the worker's life: its start, the latency run
        "latency_cpu_us_per_event": 1e6 * cpu_s / max(1, len(lat)),
        **cores,
        "offered_events_per_s": rate,
        "latency_events": len(lat),
        "latency_redelivered_earlier_events": earlier,
        "latency_p50_ms": 1000 * _pct(lat, 0.50),
        "latency_p95_ms": 1000 * _pct(lat, 0.95),
        "latency_p99_ms": 1000 * _pct(lat, 0.99),
    }


def run(
    base: Settings,
    *,
    events: int,
    out: Path,
    model: Path | None = None,
    workers: int = 1,
    profile: bool = False,
    latency_rate: float | None = None,
    latency_seconds: float = 20.0,
    variants: dict[str, dict[str, str]] | None = None,
    rounds: int = 1,
) -> dict[str, Any]:
    if rounds < 1:
        msg = f"rounds must be at least 1, not {rounds}"
        raise ValueError(msg)
    run_id = uuid.uuid4().hex[:8]
    work = base.observability.home / "bench" / run_id
    work.mkdir(parents=True, exist_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)  # flame graphs are written beside the JSON
    py = sys.executable
    worker_cmd = [py, "-m", "stream_rec", "worker"]
    bare_cmd = [py, "-m", "stream_rec.bench.bare"]

    def own_settings(name: str) -> Settings:
        """A subject's own topics and group (``name`` with its round's tag)."""
        return base.replace(topic_prefix=f"bench-{run_id}-{name}.", app_id=f"bench-{run_id}-{name}")

    def lineup(tag: str) -> list[Subject]:
        """Every subject of one drain round; round ``tag`` has its own topics and groups."""

        def subject(name: str, cmd: list[str], **kw: Any) -> Subject:
            return Subject(name, own_settings(f"{tag}{name}"), cmd, tag=tag, **kw)

        pipes = [subject("fallback", worker_cmd)]
        if model is not None:
            pipes.append(subject("model", worker_cmd, model=model))
        for vname, venv in (variants or {}).items():  # each scorer again with other settings
            pipes += [
                subject(f"{p.name}-{vname}", worker_cmd, model=p.model, env=tuple(venv.items()))
                for p in pipes[: 2 if model is not None else 1]
            ]
        more = [subject(f"fallback-x{workers}", worker_cmd, workers=workers)] if workers > 1 else []
        return [*pipes, subject("bare", bare_cmd), *more]

    lineups = [lineup("" if r == 0 else f"r{r + 1}-") for r in range(rounds)]
    subjects = lineups[0]  # the latency runs use the first round's subjects
    bare = next(s for s in subjects if s.is_bare)
    scaled = subjects[-1] if workers > 1 else None
    pipelines = [s for s in subjects if s is not bare and s is not scaled]

    ds = load_movielens("movielens-100k", base.observability.home)
    all_events = select_events(ds, None, None)
    evs = all_events[:events]
    lat_pool = all_events[events:]
    now = time.time()
    items = [(i.item_id.encode(), item_payload(i, now)) for i in ds.items.values()]
    behaviour = [(x.user_id.encode(), behavior_payload(x, now)) for x in evs]

    def prepare_topics(sub: Subject) -> None:
        asyncio.run(create_topics(sub.settings))
        if sub.is_bare:  # its table's changelog, before the app looks for it
            asyncio.run(create_sized_topics(sub.settings, [sub.changelog]))
        if sub.is_echo:
            asyncio.run(create_sized_topics(sub.settings, [sub.output_topic], cleanup="delete"))

    def prepare(subs: list[Subject]) -> None:
        for sub in subs:
            prepare_topics(sub)
            asyncio.run(_produce(sub.settings, f"{sub.settings.kafka.topic_prefix}items", items))
            asyncio.run(
                _produce(sub.settings, f"{sub.settings.kafka.topic_prefix}behavior", behaviour)
            )

    results: dict[str, Any] = {"events": len(evs), "profiled": profile, "rounds": rounds}
    drains: dict[str, list[dict[str, Any]]] = {s.name: [] for s in subjects}
    per: dict[str, dict[str, Any]] = {}
    try:
        for r, subs in enumerate(lineups):  # the subjects take turns, round after round
            prepare(subs)
            for sub in subs:
                console.print(
                    f"[bold]{sub.name}[/bold]: draining {len(evs)} events (round {r + 1}/{rounds})…"
                )
                profiled = profile and r == 0 and not sub.is_bare and sub is not scaled
                svg = out.with_name(f"{out.stem}-{sub.name}.svg") if profiled else None
                drains[sub.name].append(_drain(sub, len(evs), work, svg))
        per = {name: combine_rounds(ds) for name, ds in drains.items()}
        for sub in pipelines:
            ratios = [
                d["events_per_s"] / b["events_per_s"]
                for d, b in zip(drains[sub.name], drains[bare.name], strict=True)
            ]
            per[sub.name]["throughput_ratio_to_bare_rounds"] = ratios
            per[sub.name]["throughput_ratio_to_bare"] = statistics.median(ratios)
        pool_n = len(lat_pool)
        for sub in [*pipelines, *([scaled] if scaled else [])]:
            one = per["fallback" if sub is scaled else sub.name]
            offered = latency_rate or 0.5 * one["events_per_s"]
            n_lat = min(pool_n, int(offered * latency_seconds))
            console.print(f"[bold]{sub.name}[/bold] latency: {n_lat} events at {offered:.0f}/s…")
            svg = out.with_name(f"{out.stem}-{sub.name}-latency.svg") if profile \
                and sub in pipelines else None  # fmt: skip
            per[sub.name].update(_latency(sub, lat_pool[:n_lat], offered, work, svg))
        # Faust alone at the same offered load: the bare agent sending each event on (one
        # send per event), on fresh topics, so the pipeline's p99 has a floor to stand beside
        echo_rates = {"bare-echo": latency_rate} if latency_rate else {
            f"bare-echo-at-{p.name}": 0.5 * per[p.name]["events_per_s"]
            for p in pipelines if not p.env
        }  # fmt: skip
        for name, rate in echo_rates.items():
            echo = Subject(name, own_settings(name), [*bare_cmd, "--echo"])
            prepare_topics(echo)
            n_lat = min(pool_n, int(rate * latency_seconds))
            console.print(f"[bold]{name}[/bold] latency: {n_lat} events at {rate:.0f}/s…")
            per[name] = _latency(echo, lat_pool[:n_lat], rate, work)
        if scaled is not None:
            per[scaled.name]["throughput_ratio_to_one_worker"] = statistics.median(
                d["events_per_s"] / f["events_per_s"]
                for d, f in zip(drains[scaled.name], drains["fallback"], strict=True)
            )
    finally:
        # the subjects' topics and their groups' changelog/assignor topics (named by app id)
        asyncio.run(delete_topics_with_prefix(base, f"bench-{run_id}-"))
        shutil.rmtree(work, ignore_errors=True)

    results["subjects"] = per
    results.update(
        {
            "model": str(model) if model else None,
            "workers": workers,
            "latency_rate": latency_rate or "half of each subject's own (one worker's) max",
            "batch_size": base.serving.batch_size,
            "batch_linger_ms": base.serving.batch_linger_ms,
            "batch_linger_mode": base.serving.batch_linger_mode,
            "score_inline_ms": base.serving.score_inline_ms,
            "ort_threads": base.model.ort_threads,
            "variants": variants or {},
            "hardware": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "python": platform.python_version(),
        }
    )
    _print(results, per)
    print_and_save(console, "stream-rec bench pipeline (settings)", results, out,
                   skip=("subjects",))  # fmt: skip
    return results


def combine_rounds(drains: list[dict[str, Any]]) -> dict[str, Any]:
    """One subject's drains, round after round: its events/s is the median of the rounds' (each
    round's figure is kept); the stage costs and flame graph are the first round's."""
    out = dict(drains[0])
    rates = [d["events_per_s"] for d in drains]
    out["events_per_s"] = statistics.median(rates)
    out["events_per_s_rounds"] = rates
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.2f}"
    if isinstance(v, list):
        return " ".join(_fmt(x) for x in v)
    return "" if v is None else str(v)


def _print(results: dict[str, Any], per: dict[str, dict[str, Any]]) -> None:
    names = list(per)
    t = Table(title=f"stream-rec bench pipeline: {results['events']} events, side by side")
    t.add_column("figure")
    for n in names:
        t.add_column(n, justify="right")
    rows = [
        "events_per_s", "events_per_s_rounds", "throughput_ratio_to_bare",
        "throughput_ratio_to_bare_rounds", "throughput_ratio_to_one_worker",
        "offered_events_per_s", "latency_events", "latency_redelivered_earlier_events",
        "latency_p50_ms", "latency_p95_ms",
        "latency_p99_ms", "latency_cpu_us_per_event", "latency_worker_cpu_cores",
        "latency_bench_cpu_cores", "latency_broker_cpu_cores",
    ]  # fmt: skip
    for r in rows:
        if any(r in per[n] for n in names):
            t.add_row(r, *(_fmt(per[n].get(r)) for n in names))
    console.print(t)
    cols = [
        (f"{n} {run}", per[n][field])
        for n in names
        for run, field in (("drain", "stages_us"), ("half load", "latency_stages_us"))
        if per[n].get(field)
    ]
    if not cols:
        return
    s = Table(title="µs per event by stage (score_behavior timers)")
    s.add_column("stage")
    for name, _ in cols:
        s.add_column(name, justify="right")
    s.add_column("covers")
    stages = list(dict.fromkeys(k for _, st in cols for k in st))
    for stage in stages:
        s.add_row(stage, *(_fmt(st.get(stage)) for _, st in cols), STAGES.get(stage, ""))
    total = [sum(v for k, v in st.items() if k in STAGE_NAMES) for _, st in cols]
    s.add_row("sum of the stages", *(_fmt(t) for t in total), "")
    console.print(s)


def parse_variants(specs: list[str]) -> dict[str, dict[str, str]]:
    """``NAME:KEY=VALUE[,KEY=VALUE]`` → ``{NAME: {"STREAM_REC_KEY": VALUE}}``; each key must be
    a setting (checked here, so a misspelt one fails before anything runs)."""
    fields = {f.upper() for f in FIELD_GROUP}
    out: dict[str, dict[str, str]] = {}
    for spec in specs:
        name, sep, body = spec.partition(":")
        pairs = [kv.partition("=") for kv in body.split(",") if kv]
        bad_name = not re.fullmatch(r"[A-Za-z0-9_-]+", name)
        if not sep or bad_name or not pairs or any(not e for _, e, _ in pairs):
            msg = f"--variant {spec!r}: expected NAME:KEY=VALUE[,KEY=VALUE]"
            raise ValueError(msg)
        env: dict[str, str] = {}
        for key, _, value in pairs:
            k = key.strip().upper().removeprefix("STREAM_REC_")
            if k not in fields:
                msg = f"--variant {spec!r}: {key!r} is not a setting"
                raise ValueError(msg)
            env[f"STREAM_REC_{k}"] = value.strip()
        out[name] = env
    return out
