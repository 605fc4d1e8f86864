"""``stream-rec simulate``: the learning loop on real behaviour, with feedback from the future.

MovieLens is replayed in time order into ``behavior``. For every recommendation the pipeline
publishes, the simulator answers with feedback from that user's real future: a recommended item
is *relevant* when it is among the user's next ``horizon`` true interactions, and a click model
(:mod:`stream_rec.ops.clicks`: position bias, clicks on relevant items with probability < 1,
some on irrelevant ones; or the exact oracle) turns the list into clicks and impressions — so
the trainer learns from what users really did next, as noisily as real users report it. Online
HR@10 = the share of recommendations whose top 10 holds the user's very next interaction,
reported per block of events.

With ``new_items`` (the items the registry's model was trained without: ``stream-rec train
--cold-items``), those items are left out of the catalogue at the start and published to the
``items`` topic when they first appear in the replay, as new items reach a live service; HR@10
is also reported over the recommendations whose target is a new item, and over the rest.

``run_simulation`` drives one namespace (worker + optional trainer are started by the caller,
see :func:`simulate`). :func:`simulate` replays the same events three times, one after the
other, and reports all three:

* **frozen**: the initial model, and nothing learnt from feedback (no trainer, feedback signals
  off);
* **signals**: the same model, with the per-user feedback signals
  (:mod:`stream_rec.core.signals`) applied to each user's next recommendations;
* **learning**: the whole learning pipeline: feedback signals and the trainer's fine-tunes.

``learning / frozen`` is the learning pipeline's gain; ``learning / signals`` is what the
fine-tunes add on top of the signals.
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
import uuid
from collections import defaultdict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from stream_rec.client import decode_recommendation, feedback_message, kafka_producer
from stream_rec.data.frame import Dataset, Interaction, Item
from stream_rec.model import registry as model_registry
from stream_rec.ops.broker import free_port
from stream_rec.ops.clicks import ClickModel
from stream_rec.ops.replay import behavior_payload, item_payload, select_events
from stream_rec.progress import bar
from stream_rec.settings import Settings
from stream_rec.topics import Topics, create_topics, delete_topics_with_prefix
from stream_rec.training.replay import replay_path

console = Console()


@dataclass
class SimResult:
    label: str
    events: int = 0
    recommendations: int = 0
    hits: int = 0
    blocks: list[tuple[int, float]] = field(default_factory=list)  # (events so far, HR@10)
    versions: dict[str, float] = field(default_factory=dict)  # version → first emitted_ts
    announcements: dict[str, float] = field(default_factory=dict)  # version → window closed_at
    trainings: list[dict[str, Any]] = field(default_factory=list)  # the trainer's fine-tune results
    new_recs: int = 0  # recommendations whose target (the user's next item) is a new item
    new_hits: int = 0
    version_at: dict[str, int] = field(default_factory=dict)  # version → recommendations before
    outcomes: dict[tuple[str, int], bool] = field(default_factory=dict)  # (user, place) → hit
    new_events: set[tuple[str, int]] = field(default_factory=set)  # those with a new-item target

    @property
    def hr10_new(self) -> float:
        return self.new_hits / self.new_recs if self.new_recs else float("nan")

    @property
    def hr10_rest(self) -> float:
        n = self.recommendations - self.new_recs
        return (self.hits - self.new_hits) / n if n else float("nan")

    def shadow_decisions(self) -> list[dict[str, Any]]:
        """Each fine-tune decided by a shadow check: its outcome and online figures."""
        keep = ("judged", "hr10_serving", "hr10_candidate", "z", "seconds")
        return [
            {"window": t.get("window"), "outcome": t.get("outcome"),
             **{k: t["shadow"].get(k) for k in keep}}
            for t in self.trainings
            if isinstance(t.get("shadow"), dict)
        ]  # fmt: skip

    @property
    def hr10(self) -> float:
        return self.hits / self.recommendations if self.recommendations else float("nan")

    def freshness(self) -> dict[str, float]:
        return {
            v: self.versions[v] - closed
            for v, closed in self.announcements.items()
            if v in self.versions and closed
        }


async def run_simulation(
    settings: Settings,
    ds: Dataset,
    events: list[Interaction],
    label: str,
    *,
    rate: float,
    horizon: int = 10,
    block: int = 1000,
    counted: list[bool] | None = None,
    advance: Callable[[], None] | None = None,
    clicks: ClickModel | None = None,
    new_items: Mapping[str, Item] | None = None,
) -> SimResult:
    """``counted[n]`` False = a warm-up event: replayed (it builds the session) but neither
    scored into HR@10 nor answered with feedback. ``new_items``: items not in the catalogue
    yet, each published just before its first event."""
    from aiokafka import AIOKafkaConsumer

    from stream_rec.records import decode_announcement
    from stream_rec.schemas import decode_output

    topics = Topics(settings.kafka.topic_prefix)
    # Each event's place in its user's sequence, and that user's full sequence.
    seqs: dict[str, list[str]] = defaultdict(list)
    pos: dict[tuple[str, float], int] = {}
    stamps: list[float] = []
    t0 = time.time()
    warm_up: set[tuple[str, float]] = set()
    for n, x in enumerate(events):
        ts = t0 + n * 1e-6  # unique event ts per event; the real order is kept
        stamps.append(ts)
        pos[(x.user_id, ts)] = len(seqs[x.user_id])
        seqs[x.user_id].append(x.item_id)
        if counted is not None and not counted[n]:
            warm_up.add((x.user_id, ts))
    n_counted = len(events) - len(warm_up)
    res = SimResult(label)
    consumer = AIOKafkaConsumer(
        topics.recommendations, topics.model_updates, topics.metrics,
        bootstrap_servers=settings.kafka.bootstrap_list,
        group_id=None, auto_offset_reset="earliest", **settings.kafka.kafka_client_kwargs(),
    )  # fmt: skip
    producer: Any = kafka_producer(settings, linger_ms=5)
    await consumer.start()
    await producer.start()
    sent = 0
    clicks = clicks or ClickModel()
    unpublished = dict(new_items or {})

    async def send_events() -> None:
        nonlocal sent
        start = time.perf_counter()
        for n, (x, ts) in enumerate(zip(events, stamps, strict=True)):
            delay = start + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if (item := unpublished.pop(x.item_id, None)) is not None:  # new: first seen now
                await producer.send(topics.items, item_payload(item, time.time()),
                                    key=item.item_id.encode())  # fmt: skip
            await producer.send(topics.behavior, behavior_payload(x, ts), key=x.user_id.encode())
            sent += 1
        await producer.flush()

    sender = asyncio.create_task(send_events())
    idle = time.monotonic()
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=300)
            feedback = []
            for tp, recs in batch.items():
                for r in recs:
                    if tp.topic == topics.model_updates:
                        ann = decode_announcement(r.value)
                        if ann and ann.get("closed_at"):
                            res.announcements[ann["version"]] = float(ann["closed_at"])
                        continue
                    if tp.topic == topics.metrics:
                        if r.key == b"trainer":  # the trainer's result of one run
                            res.trainings.append(decode_output(r.value))
                        continue
                    rec = decode_recommendation(r.value)
                    key = (rec.user_id, rec.event_ts)
                    if key not in pos or key in warm_up:
                        continue
                    res.version_at.setdefault(rec.model_version, res.recommendations)
                    res.recommendations += 1
                    if advance is not None:
                        advance()
                    res.versions.setdefault(rec.model_version, rec.emitted_ts)
                    seq, p = seqs[rec.user_id], pos[key]
                    future = seq[p + 1 : p + 1 + horizon]
                    items = [i.item_id for i in rec.items][:10]
                    hit = bool(future) and future[0] in items
                    res.hits += hit
                    res.outcomes[(rec.user_id, p)] = hit
                    if future and new_items and future[0] in new_items:
                        res.new_recs += 1
                        res.new_hits += hit
                        res.new_events.add((rec.user_id, p))
                    rng = clicks.rng_for(rec.user_id, p)  # the same draws in every mode
                    for item, label_ in zip(items, clicks.labels(items, future, rng), strict=True):
                        value = feedback_message(rec.user_id, item, label_, rec_id=rec.rec_id)
                        feedback.append((rec.user_id.encode(), value))
                    if res.recommendations % block == 0:
                        res.blocks.append((res.recommendations, res.hits / res.recommendations))
            for k, v in feedback:
                await producer.send(topics.feedback, v, key=k)
            if batch:
                idle = time.monotonic()
            if sender.done() and (res.recommendations >= n_counted or time.monotonic() - idle > 30):
                break
    finally:
        sender.cancel()
        await producer.stop()
        await consumer.stop()
    res.events = sent
    return res


def _wait_ready(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            msg = f"worker exited ({proc.returncode}); see {log}"
            raise RuntimeError(msg)
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{port}/stream-rec/status", timeout=2
            ) as r:  # noqa: S310
                st = json.loads(r.read())
                if st["catalog_caught_up"] and st["assignment"] and not st["rebalancing"]:
                    return
        except Exception:  # noqa: BLE001, S110 - not up yet
            pass
        time.sleep(0.5)
    msg = f"worker not ready; see {log}"
    raise RuntimeError(msg)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()


MODES = ("frozen", "signals", "learning")


def _one_run(base: Settings, ds: Dataset, events: list[Interaction], registry: Path,
             label: str, rate: float, work: Path, counted: list[bool] | None = None,
             clicks: ClickModel | None = None,
             new_items: frozenset[str] = frozenset()) -> SimResult:  # fmt: skip
    """One replay through a fresh namespace; ``label`` is one of :data:`MODES`."""
    run_id = uuid.uuid4().hex[:8]
    learning = label == "learning"
    s = base.replace(topic_prefix=f"sim-{run_id}.", app_id=f"sim-{run_id}")
    reg = work / f"registry-{label}"
    # Only the version to start from: a registry can hold many (each ~100 MB with the encoder).
    start = model_registry.resolve(registry)
    shutil.copytree(start, reg / "versions" / start.name)
    model_registry.set_current(reg, start.name)
    if replay_path(registry).is_file():  # the trainer's replay buffer, seeded at training
        replay_path(reg).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(replay_path(registry), replay_path(reg))
    asyncio.run(create_topics(s))

    async def items() -> None:
        p: Any = kafka_producer(s)
        await p.start()
        now = time.time()
        for it in ds.items.values():
            if it.item_id in new_items:  # published at its first event (run_simulation)
                continue
            await p.send(
                f"{s.kafka.topic_prefix}items", item_payload(it, now), key=it.item_id.encode()
            )
        await p.flush()
        await p.stop()

    asyncio.run(items())
    env = {
        **os.environ,
        "STREAM_REC_BOOTSTRAP_SERVERS": s.kafka.bootstrap_servers,
        "STREAM_REC_TOPIC_PREFIX": s.kafka.topic_prefix,
        "STREAM_REC_APP_ID": s.kafka.app_id,
        "STREAM_REC_MODEL_PATH": str(reg),
        "STREAM_REC_LOG_LEVEL": "warning",
        "STREAM_REC_FEEDBACK_SIGNALS": "false" if label == "frozen" else "true",
    }
    port = free_port()
    wlog = work / f"worker-{label}.log"
    with open(wlog, "wb") as f:
        worker = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "stream_rec", "worker"],
            env={**env, "STREAM_REC_WEB_PORT": str(port),
                 "STREAM_REC_DATA_DIR": str(work / f"data-{label}")},  # fmt: skip
            stdout=f, stderr=subprocess.STDOUT,
        )  # fmt: skip
    trainer = None
    try:
        _wait_ready(worker, port, wlog)
        if learning:
            with open(work / "trainer.log", "wb") as f:
                trainer = subprocess.Popen(  # noqa: S603
                    [sys.executable, "-m", "stream_rec", "trainer"],
                    env={**env, "STREAM_REC_WEB_PORT": str(free_port()),
                         "STREAM_REC_LOG_LEVEL": "info"},  # fmt: skip
                    stdout=f, stderr=subprocess.STDOUT,
                )  # fmt: skip
        console.print(f"[bold]{label}[/bold]: replaying {len(events)} events at {rate:.0f}/s…")
        scored = len(events) if counted is None else sum(counted)
        with bar(f"{label}: recommendations scored", scored, console) as advance:
            return asyncio.run(
                run_simulation(
                    s,
                    ds,
                    events,
                    label,
                    rate=rate,
                    counted=counted,
                    advance=advance,
                    clicks=clicks,
                    new_items={i: ds.items[i] for i in new_items},
                )  # fmt: skip
            )
    finally:
        if trainer is not None:
            _stop(trainer)
        _stop(worker)
        try:
            asyncio.run(delete_topics_with_prefix(s, f"sim-{run_id}"))
        except Exception as exc:  # noqa: BLE001 - clean-up only; the result stands
            console.print(f"[yellow]could not delete this run's topics: {exc}[/yellow]")


def train_until(registry: Path) -> float | None:
    """The time cutoff the registry's current version was trained before (None: all data)."""
    value = model_registry.read_manifest(model_registry.resolve(registry)).get("train_until_ts")
    return float(value) if value is not None else None


def out_of_sample_events(
    ds: Dataset, cutoff: float, users: int | None, limit: int | None, warm: int = 20
) -> tuple[list[Interaction], list[bool]]:
    """Events at or after ``cutoff`` (the model never trained on them), for the first ``users``
    users active then, up to ``limit``; each user's last ``warm`` earlier interactions go first
    as warm-up (they rebuild the session; not counted)."""
    ordered = ds.chronological()
    later = [x for x in ordered if x.ts >= cutoff]
    chosen = list(dict.fromkeys(x.user_id for x in later))  # users in order of appearance
    keep = set(chosen[:users] if users else chosen)
    post = [x for x in later if x.user_id in keep][: limit or None]
    active = {x.user_id for x in post}
    earlier: dict[str, list[Interaction]] = {}
    for x in ordered:
        if x.ts < cutoff and x.user_id in active:
            earlier.setdefault(x.user_id, []).append(x)
    pre = sorted((x for xs in earlier.values() for x in xs[-warm:]), key=lambda x: x.ts)
    return pre + post, [False] * len(pre) + [True] * len(post)


def new_item_ids(registry: Path, ds: Dataset) -> frozenset[str]:
    """The items the registry's current version was trained without (``stream-rec train
    --cold-items``), as :class:`DatasetError` if there are none."""
    from stream_rec.data.frame import DatasetError

    held = model_registry.read_manifest(model_registry.resolve(registry)).get("cold_items") or []
    ids = frozenset(str(i) for i in held) & ds.items.keys()
    if not ids:
        msg = (
            f"--new-items: the model in {registry} was trained on every item; train it with "
            "`stream-rec train --cold-items FRACTION --cold-seed S --until-quantile 0.8` so that "
            "a share of the catalogue is new to it"
        )
        raise DatasetError(msg)
    return ids


def simulate(base: Settings, ds: Dataset, *, registry: Path, users: int | None,
             limit: int | None, rate: float, out: Path, keep_work: bool = False,
             clicks: ClickModel | None = None,
             new_items: bool = False) -> dict[str, Any]:  # fmt: skip
    clicks = clicks or ClickModel()
    new = new_item_ids(registry, ds) if new_items else frozenset()
    cutoff = train_until(registry)
    if cutoff is None:
        events, counted = select_events(ds, users, limit), None
        console.print(
            "[yellow]the registry's model was not trained with --until-quantile: it has seen "
            "the replayed events (in-sample); the comparison favours the frozen model[/yellow]"
        )
    else:
        events, counted = out_of_sample_events(ds, cutoff, users, limit)
    work = base.observability.home / "simulate" / time.strftime("%Y%m%d-%H%M%S")
    work.mkdir(parents=True, exist_ok=True)
    runs = {
        m: _one_run(base, ds, events, registry, m, rate, work, counted, clicks, new) for m in MODES
    }
    frozen, signals, learning = (runs[m] for m in MODES)
    fresh = learning.freshness()

    def ratio(a: SimResult, b: SimResult) -> float:
        return _ratio(a.hr10, b.hr10)

    pairs: dict[str, dict[str, float]] = {
        "learning_vs_signals": paired(learning, signals),
        "learning_vs_frozen": paired(learning, frozen),
        "signals_vs_frozen": paired(signals, frozen),
        **(
            {
                "learning_vs_frozen_new_items": paired(learning, frozen, learning.new_events),
                "learning_vs_signals_new_items": paired(learning, signals, learning.new_events),
            }
            if new
            else {}
        ),
        **split_at_first_promotion(learning, signals),
    }
    result = {
        "train_until_ts": cutoff,
        "warm_up_events": 0 if counted is None else counted.count(False),
        "events": len(events),
        "rate": rate,
        **{f"{m}_hr10": r.hr10 for m, r in runs.items()},
        "ratio": ratio(learning, frozen),
        "ratio_signals": ratio(signals, frozen),
        "ratio_finetunes": ratio(learning, signals),
        "feedback": clicks.describe(),
        "click_model": {
            "kind": clicks.kind,
            "relevant": clicks.relevant,
            "noise": clicks.noise,
            "eta": clicks.eta,
            "seed": clicks.seed,
        },  # fmt: skip
        **(
            {
                "new_items": len(new),
                **{f"{m}_hr10_new_items": r.hr10_new for m, r in runs.items()},
                **{f"{m}_recommendations_new_items": r.new_recs for m, r in runs.items()},
                **{f"{m}_hr10_other": r.hr10_rest for m, r in runs.items()},
                "ratio_new_items": r_new,
            }
            if new and (r_new := _ratio(learning.hr10_new, frozen.hr10_new)) is not None
            else {}
        ),
        "paired": pairs,
        "promotions_at": {v: n for v, n in learning.version_at.items() if n},
        **{f"{m}_blocks": r.blocks for m, r in runs.items()},
        "promoted_versions": sorted(learning.announcements),
        "shadow_decisions": learning.shadow_decisions(),
        "freshness_s": fresh,
        "window_examples": base.trainer.window_examples,
        "feedback_boost": base.serving.feedback_boost,
        "impression_discount": base.serving.impression_discount,
        "hardware": f"{os.cpu_count()} cores",
    }
    t = Table(title="stream-rec simulate (online HR@10 over time)")
    t.add_column("recommendations")
    for m in MODES:
        t.add_column(f"{m} HR@10", justify="right")
    by_mode = {m: dict(r.blocks) for m, r in runs.items()}
    for n, _ in frozen.blocks:
        t.add_row(str(n), *(f"{by_mode[m][n]:.4f}" if n in by_mode[m] else "" for m in MODES))
    console.print(t)
    if shadow := learning.shadow_decisions():
        t = Table(title="shadow checks of the fine-tunes (learning run)")
        for col in ("window", "outcome", "events judged", "HR@10 serving", "HR@10 candidate",
                    "z", "s"):  # fmt: skip
            t.add_column(col, justify="right")
        for d in shadow:
            t.add_row(*(str(d[k]) if not isinstance(d[k], float) else f"{d[k]:.3f}"
                        for k in ("window", "outcome", "judged", "hr10_serving",
                                  "hr10_candidate", "z", "seconds")))  # fmt: skip
        console.print(t)
    console.print(
        f"overall HR@10 frozen {frozen.hr10:.4f}, signals {signals.hr10:.4f}, learning "
        f"{learning.hr10:.4f}: learning/frozen {result['ratio']:.3f} (signals/frozen "
        f"{result['ratio_signals']:.3f}, learning/signals {result['ratio_finetunes']:.3f}); "
        f"promotions {len(learning.announcements)}; "
        f"freshness {', '.join(f'{v:.1f}s' for v in fresh.values()) or 'n/a'}"
    )
    if new:
        console.print(
            f"{len(new)} new items; HR@10 on the {learning.new_recs} recommendations whose target "
            f"is a new item: frozen {frozen.hr10_new:.4f}, signals {signals.hr10_new:.4f}, "
            f"learning {learning.hr10_new:.4f} (learning/frozen {result['ratio_new_items']:.3f});"
            f" on the rest: frozen {frozen.hr10_rest:.4f}, signals {signals.hr10_rest:.4f}, "
            f"learning {learning.hr10_rest:.4f}"
        )
    console.print(
        "paired over the same events (difference in HR@10 ± its standard error): "
        + "; ".join(
            f"{name.replace('_vs_', ' − ').replace('_', ' ')} {d['difference']:+.4f} ± "
            f"{d['se']:.4f} ({d['events']} events)"
            for name, d in pairs.items()
        )
    )
    console.print(f"feedback: {result['feedback']}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    png = out.with_suffix(".png")
    plot(runs, result, png)
    console.print(f"wrote {out} and {png}")
    if not keep_work:
        # Keep the logs; the registries (one ~100 MB version per promotion) and tables go.
        for p in work.iterdir():
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
    console.print(f"logs in {work}")
    return result


def paired(
    a: SimResult, b: SimResult, events: Collection[tuple[str, int]] | None = None
) -> dict[str, float]:
    """HR@10 of ``a`` minus ``b`` over the events both answered (of ``events``, default all):
    the same events, and the same click draws wherever they showed the same list
    (:meth:`ClickModel.rng_for`), so the standard error of the mean paired difference is the
    noise to read a difference against. ``only_a``/``only_b``: events one of them hit and the
    other missed."""
    keys = [k for k in (a.outcomes if events is None else events) if k in a.outcomes]
    d = np.array([int(a.outcomes[k]) - int(b.outcomes[k]) for k in keys if k in b.outcomes])
    n = len(d)
    return {
        "events": n,
        "difference": float(d.mean()) if n else float("nan"),
        "se": float(d.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan"),
        "only_a": int((d > 0).sum()),
        "only_b": int((d < 0).sum()),
    }


def split_at_first_promotion(learning: SimResult, signals: SimResult) -> dict[str, Any]:
    """Learning minus signals before the first promoted version served and after it. Before
    it both serve the same model, so that difference is the setup's own noise (when feedback
    arrives relative to the user's next event): a check on the difference after it."""
    first = min((n for n in learning.version_at.values() if n), default=None)
    if first is None:
        return {}
    order = list(learning.outcomes)  # in the learning run's order of answers
    return {
        "learning_vs_signals_before_first_promotion": paired(learning, signals, order[:first]),
        "learning_vs_signals_after_first_promotion": paired(learning, signals, order[first:]),
    }


def _ratio(a: float, b: float) -> float:
    return a / b if b and b == b else float("nan")  # b == b: not NaN


def block_rates(blocks: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """HR@10 of each block alone, from the cumulative (recommendations, HR@10) points."""
    out, prev_n, prev_hits = [], 0, 0.0
    for n, hr in blocks:
        hits = hr * n
        if n > prev_n:
            out.append((n, (hits - prev_hits) / (n - prev_n)))
        prev_n, prev_hits = n, hits
    return out


def plot(runs: Mapping[str, SimResult], result: Mapping[str, Any], path: Path) -> None:
    """HR@10 per block over the replay for each mode, the learning run's promotions marked."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=110)
    for mode, res in runs.items():
        pts = block_rates(res.blocks)
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, marker="o", markersize=3, label=f"{mode} (overall {res.hr10:.3f})")
    for n, at in enumerate(sorted(result.get("promotions_at", {}).values())):
        ax.axvline(at, color="grey", linestyle="--", linewidth=0.8,
                   label="learning: a promoted version serves" if n == 0 else None)  # fmt: skip
    ax.set_xlabel("recommendations")
    ax.set_ylabel("HR@10 of the block")
    title = f"stream-rec simulate: {result['events']} events at {result['rate']:g}/s"
    ax.set_title(f"{title}; feedback: {result['click_model']['kind']}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
