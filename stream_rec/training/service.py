"""``stream-rec trainer``: the learning loop's own process (never inside a scoring worker).

Two loops over Kafka, each committing only what it has finished with (at-least-once):

* **windowing** — consumes ``training-examples`` (labelled by the workers' ``record_feedback``),
  keeps tumbling windows (:class:`~stream_rec.training.windows.Windower`), and publishes each
  closed window as a training request (msgpack, examples inline) on ``training-requests``.
  Offsets are committed only up to the last example of a published window, so a crash
  re-reads the open window instead of losing it. A ``forget`` marker drops a user's pending
  examples.
* **training** — consumes ``training-requests``; for each: positives become next-item
  sequences, the newest 20 % are held out; :func:`stream_rec.model.lora.finetune_incremental`
  fine-tunes LoRA adapters on the rest plus a replay sample of older windows, and the
  candidate passes the offline gate only if its held-out NDCG@10 is not worse than the serving
  model's by more than ``promote_tolerance``. It is then written to the registry (ONNX export
  with the parity check) but not made current: with ``STREAM_REC_SHADOW_SHARE`` > 0 it is first
  announced as the *candidate*, every worker scores a share of live events with it in shadow
  (:mod:`stream_rec.serving.shadow`), and :func:`shadow_check` promotes it once enough events
  are judged, or refuses it when its online HR@10 is worse beyond noise (or the evidence does
  not come in time). Promotion = the registry's current version + an announcement on
  ``model-updates`` that every worker follows. A failed, crashed or refused run changes
  nothing that is served.
* **full training** — with an empty registry, the first model is trained from the ``items`` and
  ``behavior`` topics once enough behaviour arrived (bootstrap), and later the model is retrained
  in full on schedule, through the same gate (:mod:`stream_rec.training.full`). One training run
  at a time, fine-tune or full.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from stream_rec.data.frame import Item
from stream_rec.records import TRAINING_RESULT_KIND
from stream_rec.settings import ConfigError, Settings
from stream_rec.topics import Topics
from stream_rec.training.replay import load_replay, save_replay
from stream_rec.training.windows import Window, Windower

log = logging.getLogger(__name__)
HOLDOUT_FRACTION = 0.2


class TrainerMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.examples = Counter(
            "stream_rec_trainer_examples", "Examples consumed", ["label"], registry=r
        )
        self.windows = Counter(
            "stream_rec_trainer_windows", "Windows closed and published", registry=r
        )
        self.runs = Counter(
            "stream_rec_training_runs", "Training runs by outcome", ["outcome"], registry=r
        )
        self.seconds = Histogram(
            "stream_rec_training_seconds", "Wall time of one training run",
            buckets=(5, 10, 20, 30, 60, 90, 120, 180, 300, 600), registry=r,
        )  # fmt: skip
        self.pending = Gauge(
            "stream_rec_trainer_pending_examples", "Examples in the open window", registry=r
        )
        self.serving = Gauge(
            "stream_rec_trainer_serving_info", "Version last promoted (value 1)", ["version"],
            registry=r,
        )  # fmt: skip


@dataclass
class Outcome:
    outcome: str  # promoted | rejected | failed | skipped | candidate (passed the offline gate)
    version: str | None
    detail: dict[str, Any]
    folder: Path | None = None  # a candidate's registry folder (not current yet)


def ndcg_at_k(scores: np.ndarray, histories: Sequence[Sequence[int]], targets: Sequence[int],
              k: int = 10) -> float:  # fmt: skip
    """Mean NDCG@k with each user's history items (but the target) excluded, ranked by the
    offline protocol's own rule (:func:`stream_rec.eval.protocol.target_ranks`: ties by item
    index) and gain (:func:`~stream_rec.eval.protocol.ndcg_gains`).

    One relevant item per row, so NDCG = 1/log2(rank + 1) inside the top k, else 0. It moves
    with the target's rank inside the top k, where HR@k saturates on small catalogues.
    """
    from stream_rec.eval.protocol import ndcg_gains, target_ranks

    if not len(targets):
        return 0.0
    s = np.array(scores, dtype=np.float64, copy=True)
    for row, (hist, target) in enumerate(zip(histories, targets, strict=True)):
        s[row, [i for i in hist if i != target]] = -np.inf
    ranks = target_ranks(s, np.asarray(targets, dtype=np.int64))
    return float(ndcg_gains(ranks, k).mean())


class Trainer:
    """Runs one training request to an outcome (plain Python; the service calls it)."""

    def __init__(self, settings: Settings, registry_root: Path) -> None:
        self.settings = settings
        self.root = registry_root
        self.replay: list[list[str]] = load_replay(registry_root)
        self.rng = random.Random(0)  # noqa: S311 - sampling, not security

    def run(self, request: dict[str, Any], catalog: Mapping[str, Item] | None = None) -> Outcome:
        """One fine-tune on ``request``'s examples. ``catalog``: the items topic's catalogue;
        its items the serving version lacks get rows in the candidate (catalogue growth)."""
        from stream_rec.model import registry
        from stream_rec.model.lora import finetune_incremental

        examples = [e for e in request.get("examples", []) if isinstance(e, dict)]
        positives = sorted(
            (e for e in examples if e.get("label") == 1 and e.get("item_id")),
            key=lambda e: float(e.get("ts", 0.0)),
        )
        if len(positives) < 5:
            return Outcome("skipped", None, {"reason": "fewer than 5 positive examples"})
        try:
            base_dir = registry.resolve(self.root)
        except registry.RegistryError as exc:
            return Outcome("skipped", None, {"reason": f"no base model: {exc}"})
        # Hold out the newest interactions users really made (behaviour examples) when there
        # are some: a click on a recommended item was in the serving model's top 10 by
        # construction, so a gate on clicks favours whatever learned to repeat them (seen in
        # `stream-rec simulate`: the gate rose while online HR@10 fell).
        behaviour = [e for e in positives if e.get("source") == "behavior"]
        pool = behaviour if len(behaviour) >= 5 else positives
        n_hold = max(1, int(len(pool) * HOLDOUT_FRACTION))
        held = pool[-n_hold:]
        # No (user, item) pair is both trained on and held out: this leaves out the held-out
        # examples themselves and any click naming the same item (a click is labelled from
        # the user's future, so it may name the very item a held-out example has as target).
        held_pairs = {(e.get("user_id"), str(e["item_id"])) for e in held}
        train = [e for e in positives if (e.get("user_id"), str(e["item_id"])) not in held_pairs]
        seqs = [[*map(str, e.get("history", [])), str(e["item_id"])] for e in train]
        replay = self.rng.sample(self.replay, min(len(self.replay), max(len(seqs), 1) * 2))
        gate = self._gate(base_dir, held)
        if not gate.n_targets:
            return Outcome("skipped", None, {"reason": "no held-out example the model can rank"})
        known = set(json.loads((base_dir / "items.json").read_text("utf-8"))["item_ids"])
        new_items = [it for iid, it in (catalog or {}).items() if iid not in known]
        trainable = known | {it.item_id for it in new_items}
        if sum(1 for s in seqs if len([i for i in s if i in trainable]) >= 2) == 0:
            return Outcome("skipped", None, {"reason": "no trainable sequence of known items"})
        t0 = time.perf_counter()
        new_dir = finetune_incremental(
            base_dir, seqs, replay, self.root, self.settings,
            epochs=self.settings.trainer.finetune_epochs, lr=self.settings.trainer.finetune_lr,
            gate=gate, min_gain=-self.settings.trainer.promote_tolerance, make_current=False,
            new_items=new_items, rank=self.settings.trainer.finetune_rank,
            threads=self.settings.trainer.finetune_threads,
        )  # fmt: skip
        wall = time.perf_counter() - t0
        self._remember(seqs)
        detail = {
            "examples": len(examples),
            "positives": len(positives),
            "held_out": len(held),
            "trained": len(train),
            "replay": len(replay),
            "items_added": len(new_items),
            "wall_s": wall,
            "gate_base": getattr(gate, "last_scores", {}).get("base"),
            "gate_new": getattr(gate, "last_scores", {}).get("new"),
            "parent": registry.read_manifest(base_dir)["version"],
        }
        if new_dir is None:
            return Outcome("rejected", None, detail)
        try:  # what workers will load: never announce a version that fails its own check
            registry.verify(new_dir)
        except registry.RegistryError as exc:
            detail["reason"] = f"the exported version fails its check: {exc}"
            shutil.rmtree(new_dir, ignore_errors=True)  # nothing may resolve to it
            return Outcome("failed", None, detail)
        version = registry.read_manifest(new_dir)["version"]
        if self.settings.trainer.shadow_share > 0:  # online evidence first (shadow_check)
            return Outcome("candidate", version, detail, new_dir)
        self.make_current(new_dir, detail)
        return Outcome("promoted", version, detail)

    def make_current(self, folder: Path, detail: dict[str, Any]) -> None:
        """``folder`` becomes the registry's current version; old versions are pruned."""
        from stream_rec.model import registry

        registry.set_current(self.root, folder.name)
        pruned = registry.prune(self.root, self.settings.trainer.registry_keep)
        if pruned:
            detail["pruned"] = len(pruned)

    def _remember(self, seqs: list[list[str]]) -> None:
        self.replay.extend(seqs)
        cap = self.settings.trainer.replay_examples
        if len(self.replay) > cap:
            self.replay = self.rng.sample(self.replay, cap)
        save_replay(self.root, self.replay)

    def _gate(self, base_dir: Path, held: list[dict[str, Any]]) -> Any:
        """NDCG@10 on the held-out feedback."""
        from stream_rec.model.ranking import TorchRanker

        items = json.loads((base_dir / "items.json").read_text(encoding="utf-8"))["item_ids"]
        index = {iid: i for i, iid in enumerate(items)}
        hist = [[index[i] for i in map(str, e.get("history", [])) if i in index] for e in held]
        tgt = [index.get(str(e["item_id"]), -1) for e in held]
        keep = [n for n, t in enumerate(tgt) if t >= 0]
        histories, targets = [hist[n] for n in keep], [tgt[n] for n in keep]

        def gate(model: Any) -> float:
            score = ndcg_at_k(TorchRanker(model).score(histories), histories, targets)
            gate.last_scores["base" if "base" not in gate.last_scores else "new"] = score  # type: ignore[attr-defined]
            return score

        gate.last_scores = {}  # type: ignore[attr-defined]
        gate.n_targets = len(targets)  # type: ignore[attr-defined]
        return gate


async def shadow_check(
    settings: Settings, producer: Any, trainer: Trainer, out: Outcome, poll_s: float = 1.0
) -> Outcome:
    """Promote or refuse a candidate (``out.outcome == "candidate"``) on online evidence.

    Announces it as the candidate, then sums the workers' newest shadow figures for it from
    their snapshots on the metrics topic until :func:`~stream_rec.serving.shadow.verdict`
    decides, or ``shadow_timeout_s`` passes (refused: never promoted without evidence). A
    promoted candidate becomes the registry's current version (the caller announces it); a
    refused one is deleted. Either way the candidate record is cleared afterwards (after the
    caller's announcement for a promotion, so workers swap in the scorer they already hold).
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from stream_rec.records import announce_candidate
    from stream_rec.serving.shadow import verdict

    assert out.version is not None and out.folder is not None  # noqa: S101 - a candidate
    topics = Topics(settings.kafka.topic_prefix)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap_list, group_id=None, enable_auto_commit=False,
        **settings.kafka.kafka_client_kwargs(),
    )  # fmt: skip
    await consumer.start()
    latest: dict[str, dict[str, Any]] = {}
    t0 = time.monotonic()
    try:
        tp = TopicPartition(topics.metrics, 0)
        consumer.assign([tp])
        await consumer.seek_to_end(tp)  # older snapshots cannot name this new candidate
        await announce_candidate(producer, topics.model_updates, out.version)
        log.info("candidate %s: shadow check on the workers", out.version)
        decision, figures = verdict([], settings.trainer.shadow_min_events)
        while decision == "wait" and time.monotonic() - t0 < settings.trainer.shadow_timeout_s:
            batches = await consumer.getmany(timeout_ms=int(poll_s * 1000))
            for rec in (r for recs in batches.values() for r in recs):
                if (found := _shadow_figures(rec.value, out.version)) is not None:
                    latest[found[0]] = found[1]
            decision, figures = verdict(latest.values(), settings.trainer.shadow_min_events)
    finally:
        await consumer.stop()
    figures["seconds"] = round(time.monotonic() - t0, 1)
    detail = out.detail | {"shadow": figures}
    if decision == "promote":
        trainer.make_current(out.folder, detail)
        return Outcome("promoted", out.version, detail, out.folder)
    if decision == "wait":
        detail["reason"] = (
            f"shadow check: {figures['judged']} of {settings.trainer.shadow_min_events} events "
            f"judged in {settings.trainer.shadow_timeout_s:g} s"
        )
    else:
        detail["reason"] = (
            f"shadow check: online HR@10 {figures['hr10_candidate']:.4f} vs serving "
            f"{figures['hr10_serving']:.4f} over {figures['judged']} events (z {figures['z']:.2f})"
        )
    await announce_candidate(producer, topics.model_updates, None)
    shutil.rmtree(out.folder, ignore_errors=True)  # nothing may resolve to it
    return Outcome("rejected", None, detail)


async def read_catalog(settings: Settings) -> dict[str, Item]:
    """The catalogue in the items topic now (what the workers hold), for catalogue growth; an
    unreadable topic gives none (the fine-tune then keeps the serving version's items)."""
    from stream_rec.data.sources import read_kafka

    try:
        return (await read_kafka(settings, items_only=True)).items
    except Exception:  # noqa: BLE001 - growth is optional, the fine-tune is not
        log.exception("could not read the items topic: no catalogue growth in this fine-tune")
        return {}


def _shadow_figures(raw: bytes | None, candidate: str) -> tuple[str, dict[str, Any]] | None:
    """(worker, shadow figures) of a worker snapshot that holds ``candidate``'s, else None."""
    from stream_rec.records import SNAPSHOT_KIND
    from stream_rec.schemas import decode_output

    try:
        snap = decode_output(raw or b"")
    except Exception:  # noqa: BLE001 - a garbled record is no snapshot
        return None
    if not isinstance(snap, dict) or snap.get("kind") != SNAPSHOT_KIND:
        return None
    shadow = snap.get("shadow")
    if isinstance(shadow, dict) and shadow.get("candidate") == candidate:
        return str(snap.get("worker")), shadow
    return None


def decode_request(raw: bytes | None) -> dict[str, Any]:
    """A training request; a garbled one becomes an empty request (skipped, not fatal)."""
    try:
        value = msgpack.unpackb(raw or b"", raw=False)
    except Exception:  # noqa: BLE001
        return {}
    return value if isinstance(value, dict) else {}


def decode_example(raw: bytes | None) -> dict[str, Any] | None:
    if not raw:
        return None
    try:
        value = msgpack.unpackb(raw, raw=False)
    except Exception:  # noqa: BLE001 - a garbled example is skipped and counted
        return None
    return value if isinstance(value, dict) else None


async def run_trainer(settings: Settings, *, once: bool = False, full_poll_s: float = 5.0) -> None:
    """The service: windowing and training loops until cancelled (or one run with ``once``)."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from stream_rec.records import announce as send_announcement
    from stream_rec.records import announce_candidate
    from stream_rec.schemas import encode

    if settings.model.model_path is None:
        msg = "the trainer needs STREAM_REC_MODEL_PATH (the model registry folder)"
        raise ConfigError(msg)
    root = Path(settings.model.model_path)
    root.mkdir(parents=True, exist_ok=True)
    from stream_rec.training.full import prewarm

    prewarm()  # seconds of imports now, not when the first bootstrap starts beside serving
    topics = Topics(settings.kafka.topic_prefix)
    metrics = TrainerMetrics()
    if settings.observability.web_port:
        start_http_server(
            settings.observability.web_port,
            addr=settings.observability.web_host,
            registry=metrics.registry,
        )
    kw = settings.kafka.kafka_client_kwargs()
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_list, acks="all", **kw)
    ex_consumer = AIOKafkaConsumer(
        topics.training_examples, bootstrap_servers=settings.kafka.bootstrap_list,
        group_id=f"{settings.kafka.app_id}-trainer", enable_auto_commit=False,
        auto_offset_reset="earliest", **kw,
    )  # fmt: skip
    req_consumer = AIOKafkaConsumer(
        topics.training_requests, bootstrap_servers=settings.kafka.bootstrap_list,
        group_id=f"{settings.kafka.app_id}-trainer-requests", enable_auto_commit=False,
        auto_offset_reset="earliest", max_poll_interval_ms=3_600_000, **kw,
    )  # fmt: skip
    offsets_consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap_list,
        group_id=None,
        enable_auto_commit=False,
        **kw,
    )
    await producer.start()
    await ex_consumer.start()
    await req_consumer.start()
    await offsets_consumer.start()
    train_lock = asyncio.Lock()  # one training run at a time: fine-tune or full
    windower = Windower(
        settings.trainer.window_seconds,
        settings.trainer.window_examples,
        settings.trainer.window_min_examples,
    )
    trainer = Trainer(settings, root)
    loop = asyncio.get_running_loop()
    window_no = 0

    async def publish(w: Window, offsets: dict[Any, int]) -> None:
        nonlocal window_no
        window_no += 1
        req = {
            "window": window_no,
            "opened_at": w.opened_at,
            "closed_at": time.time(),
            "merged": w.merged,
            "examples": w.examples,
        }
        await producer.send_and_wait(
            topics.training_requests, msgpack.packb(req, use_bin_type=True), key=b"window"
        )
        await ex_consumer.commit({tp: o + 1 for tp, o in offsets.items()})
        metrics.windows.inc()
        log.info("window %d closed: %d examples", window_no, len(w.examples))

    async def windowing() -> None:
        offsets: dict[Any, int] = {}
        while True:
            batches = await ex_consumer.getmany(timeout_ms=500, max_records=2000)
            for tp, recs in batches.items():
                for rec in recs:
                    offsets[tp] = rec.offset
                    ex = decode_example(rec.value)
                    if ex is None:
                        metrics.examples.labels(label="garbled").inc()
                        continue
                    if "forget" in ex:
                        windower.forget(str(ex["forget"]))
                        continue
                    metrics.examples.labels(label=str(ex.get("label"))).inc()
                    closed = windower.add(ex, time.time())
                    if closed is not None:
                        await publish(closed, offsets)
            closed = windower.tick(time.time())
            if closed is not None:
                await publish(closed, offsets)
            metrics.pending.set(windower.pending())

    async def training() -> None:
        while True:
            batches = await req_consumer.getmany(timeout_ms=1000, max_records=100)
            records = [r for recs in batches.values() for r in recs]
            if not records:
                continue
            # Take every request already queued, not only the first fetch (a request carries
            # its window's examples, so one fetch holds a few): the model catches up at once.
            last = {tp: recs[-1].offset for tp, recs in batches.items()}
            while more := await req_consumer.getmany(timeout_ms=0, max_records=100):
                for tp, recs in more.items():
                    records += recs
                    last[tp] = recs[-1].offset
            # Requests that queued up while the last run trained are coalesced into one run
            # on all their examples: the model catches up in one step instead of lagging.
            reqs = [decode_request(r.value) for r in records]
            req = {
                "window": max((q.get("window") or 0) for q in reqs),
                "windows": [q.get("window") for q in reqs],
                "closed_at": max((q.get("closed_at") or 0.0) for q in reqs),
                "examples": [e for q in reqs for e in q.get("examples", [])],
            }
            t0 = time.perf_counter()
            try:
                async with train_lock:
                    catalog = await read_catalog(settings)
                    out = await loop.run_in_executor(None, trainer.run, req, catalog)
                    if out.outcome == "candidate":
                        out = await shadow_check(settings, producer, trainer, out)
            except Exception as exc:  # noqa: BLE001 - a crash changes nothing served
                log.exception("training run failed")
                out = Outcome("failed", None, {"reason": f"{type(exc).__name__}: {exc}"[:500]})
            metrics.seconds.observe(time.perf_counter() - t0)
            metrics.runs.labels(outcome=out.outcome).inc()
            result = {
                "kind": TRAINING_RESULT_KIND,
                "window": req["window"],
                "windows": req["windows"],
                "closed_at": req["closed_at"],
                "outcome": out.outcome,
                "version": out.version,
                "ts": time.time(),
                **{k: v for k, v in out.detail.items() if k != "error"},
            }
            if out.outcome == "promoted" and out.version:
                await announce(out.version, window=req["window"], closed_at=req["closed_at"],
                               gate_new=result.get("gate_new"))  # fmt: skip
                if "shadow" in out.detail:  # workers swap in the candidate they hold
                    await announce_candidate(producer, topics.model_updates, None)
            await producer.send_and_wait(
                topics.metrics, encode(result, settings.limits.output_codec), key=b"trainer"
            )
            log.info(
                "training windows %s: %s (gate NDCG@10 serving %s, candidate %s)",
                req["windows"], out.outcome, result.get("gate_base"), result.get("gate_new"),
            )  # fmt: skip
            await req_consumer.commit({tp: o + 1 for tp, o in last.items()})
            if once:
                return

    async def announce(version: str, **fields: Any) -> None:
        await send_announcement(producer, topics.model_updates, version, **fields)
        metrics.serving.clear()
        metrics.serving.labels(version=version).set(1)

    async def full_training() -> None:
        """Bootstrap the first model from the topics, then retrain on schedule."""
        from stream_rec.model import registry
        from stream_rec.training import full

        if not registry.is_empty(root) and full.read_state(root) is None:
            # A registry trained elsewhere (stream-rec train): the schedule starts now.
            sizes = await full.topic_sizes(settings, offsets_consumer)
            full.write_state(root, {"ts": time.time(), "written": sizes.written})
        waiting_logged = False
        while True:
            sizes = await full.topic_sizes(settings, offsets_consumer)
            empty = registry.is_empty(root)
            kind = full.due(settings, sizes, full.read_state(root), empty, time.time())
            if kind is None:
                if empty and not waiting_logged:
                    log.info(
                        "empty registry: the first model trains once %s holds %d behaviour "
                        "events (now %d) and the items topic some items (now %d)",
                        topics.behavior, settings.trainer.bootstrap_min_events, sizes.events,
                        sizes.items,
                    )  # fmt: skip
                    waiting_logged = True
                await asyncio.sleep(full_poll_s)
                continue
            log.info("%s: full training from the topics (%d behaviour events)", kind, sizes.events)
            t0 = time.perf_counter()
            try:
                async with train_lock:
                    out = await loop.run_in_executor(
                        None, full.full_train, settings, root, kind, sizes
                    )
            except Exception as exc:  # noqa: BLE001 - a crash changes nothing served
                log.exception("%s failed", kind)
                reason = f"{type(exc).__name__}: {exc}"[:500]
                out = {"kind": kind, "outcome": "failed", "version": None, "reason": reason}
            metrics.seconds.observe(time.perf_counter() - t0)
            metrics.runs.labels(outcome=out["outcome"]).inc()
            if out["outcome"] == "promoted" and out.get("version"):
                trainer.replay = load_replay(root)  # the bootstrap seeds the replay buffer
                await announce(str(out["version"]), by=kind, gate_new=out.get("gate_new"))
            result = {"kind": TRAINING_RESULT_KIND, "ts": time.time(), "window": None, **out}
            await producer.send_and_wait(
                topics.metrics, encode(result, settings.limits.output_codec), key=b"trainer"
            )
            log.info(
                "%s: %s %s (test NDCG@10 %s, serving %s)", kind, out["outcome"],
                out.get("version"), out.get("gate_new", out.get("test_ndcg10")),
                out.get("gate_base"),
            )  # fmt: skip

    try:
        if once:
            wtask = asyncio.create_task(windowing())
            try:
                await training()
            finally:
                wtask.cancel()
        else:
            await asyncio.gather(windowing(), training(), full_training())
    finally:
        await offsets_consumer.stop()
        await ex_consumer.stop()
        await req_consumer.stop()
        await producer.stop()
