"""``stream-rec status``: an operator's view of a live cluster, from Kafka alone.

Nothing here talks to a worker: aiokafka's admin client and group-less consumers read the
topics of ``STREAM_REC_TOPIC_PREFIX`` (partitions, end offsets, throughput from two samples
``--interval`` seconds apart), the consumer group's (``STREAM_REC_APP_ID``) committed offsets
and lag, the dead-letter count, the newest snapshot per worker on the ``metrics`` topic (model
version, catalogue size, figures; see :mod:`stream_rec.agents.telemetry`), the trainer's newest
result on that topic, and the newest announcement on ``model-updates``. :func:`collect` does the
I/O, :func:`build_status` turns its raw inputs into the JSON document (plain Python), and
:func:`render` prints it with rich.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from stream_rec import topics as T
from stream_rec.records import CANDIDATE_KEY, SNAPSHOT_KIND, TRAINING_RESULT_KIND, decode_candidate
from stream_rec.schemas import InvalidEvent, decode_output
from stream_rec.serving.shadow import verdict
from stream_rec.settings import Settings

# How many of the newest messages of the metrics / model-updates topics are read.
METRICS_TAIL = 1000
MODEL_UPDATES_TAIL = 50
INPUT_TOPICS = (T.BEHAVIOR, T.ITEMS, T.FEEDBACK)  # what the workers' group consumes


@dataclass
class RawCluster:
    """What :func:`collect` read from Kafka, before any interpretation."""

    partitions: dict[str, list[int]]  # topic -> partition ids (topics of the prefix)
    ends_before: dict[tuple[str, int], int]  # end offsets, first sample
    ends: dict[tuple[str, int], int]  # end offsets, second sample
    starts: dict[tuple[str, int], int]  # log start offsets
    committed: dict[tuple[str, int], int]  # the group's committed offsets
    elapsed_s: float  # time between the two samples
    metrics_messages: list[tuple[bytes | None, bytes | None, int]] = field(default_factory=list)
    model_updates: list[tuple[bytes | None, bytes | None, int]] = field(default_factory=list)


def _decode(raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        return decode_output(raw)
    except InvalidEvent:
        return None


def _small(v: Any) -> bool:
    if isinstance(v, str | bytes):
        return len(v) <= 200
    if isinstance(v, list | tuple | dict):
        return len(v) <= 20
    return True


def _model_update(messages: Sequence[tuple[bytes | None, bytes | None, int]]) -> Any:
    """The newest decodable announcement: its version, metrics and other small fields."""
    for key, value, offset in reversed(messages):
        obj = _decode(value)
        if obj is None or key == CANDIDATE_KEY:
            continue
        out: dict[str, Any] = {
            "offset": offset,
            "key": key.decode("utf-8", "replace") if key else None,
        }
        out.update({k: v for k, v in obj.items() if _small(v)})
        return out
    return None


def _shadow(settings: Settings, raw: RawCluster, workers: Mapping[str, Any]) -> Any:
    """The candidate in shadow (newest ``candidate`` record) and the workers' figures for it,
    summed, with the trainer's rule applied to them so far; None without a candidate."""
    candidate = None
    for key, value, _ in raw.model_updates:  # oldest first: the newest wins
        if key == CANDIDATE_KEY:
            candidate = decode_candidate(value)[1]
    if candidate is None:
        return None
    stats = [
        w["shadow"] for w in workers.values()
        if isinstance(w.get("shadow"), dict) and w["shadow"].get("candidate") == candidate
    ]  # fmt: skip
    decision, figures = verdict(stats, settings.trainer.shadow_min_events)
    return {"candidate": candidate, "decision_so_far": decision, **figures}


def build_status(settings: Settings, raw: RawCluster, now: float) -> dict[str, Any]:
    """The status document (what ``--json`` prints) from the raw figures."""
    prefix = settings.kafka.topic_prefix
    elapsed = max(raw.elapsed_s, 1e-9)
    topics: dict[str, Any] = {}
    for topic, parts in sorted(raw.partitions.items()):
        per = {
            str(p): {
                "start_offset": raw.starts.get((topic, p), 0),
                "end_offset": raw.ends.get((topic, p), 0),
            }
            for p in sorted(parts)
        }
        total = sum(raw.ends.get((topic, p), 0) for p in parts)
        before = sum(raw.ends_before.get((topic, p), 0) for p in parts)
        topics[topic] = {
            "partitions": per,
            "messages": total,
            "msgs_per_s": round((total - before) / elapsed, 3),
        }

    lag_rows: list[dict[str, Any]] = []
    tps = set(raw.committed)
    for short in INPUT_TOPICS:
        tps |= {(prefix + short, p) for p in raw.partitions.get(prefix + short, [])}
    for topic, p in sorted(tps):
        end = raw.ends.get((topic, p))
        done = raw.committed.get((topic, p))
        # Nothing committed yet: the group starts from the earliest offset.
        base = done if done is not None and done >= 0 else raw.starts.get((topic, p), 0)
        lag_rows.append(
            {
                "topic": topic,
                "partition": p,
                "committed": done if done is not None and done >= 0 else None,
                "end_offset": end,
                "lag": max(0, end - base) if end is not None else None,
            }
        )

    workers: dict[str, Any] = {}
    training_run: dict[str, Any] | None = None
    for key, value, offset in raw.metrics_messages:  # oldest first: the newest wins
        snap = _decode(value)
        if snap is None:
            continue
        kind = snap.get("kind", SNAPSHOT_KIND)
        if kind == TRAINING_RESULT_KIND:  # the trainer's report of one run
            training_run = {k: v for k, v in snap.items() if _small(v)} | {"offset": offset}
            continue
        if kind != SNAPSHOT_KIND:
            continue
        wid = str(snap.get("worker") or (key.decode("utf-8", "replace") if key else "?"))
        snap["offset"] = offset
        ts = snap.get("ts")
        snap["age_s"] = round(now - ts, 3) if isinstance(ts, int | float) else None
        workers[wid] = snap
    newest = max(workers.values(), key=lambda s: s.get("ts") or 0, default=None)

    dl = prefix + T.DEAD_LETTERS
    return {
        "ts": now,
        "bootstrap_servers": settings.kafka.bootstrap_servers,
        "topic_prefix": prefix,
        "interval_s": raw.elapsed_s,
        "topics": topics,
        "consumer_group": {
            "id": settings.kafka.app_id,
            "partitions": lag_rows,
            "total_lag": sum(r["lag"] or 0 for r in lag_rows),
        },
        "dead_letters": sum(raw.ends.get((dl, p), 0) for p in raw.partitions.get(dl, [])),
        "model_versions": sorted({str(s.get("model_version")) for s in workers.values()}),
        "model_version": newest.get("model_version") if newest else None,
        "serving": newest.get("serving") if newest else None,
        "catalog_items": newest.get("catalog_items") if newest else None,
        "workers": workers,
        "last_training": _model_update(raw.model_updates),
        "shadow": _shadow(settings, raw, workers),
        "last_training_run": training_run,
    }


async def _tail(
    consumer: Any, tp: Any, start: int, end: int, n: int, timeout: float = 10.0
) -> list[tuple[bytes | None, bytes | None, int]]:
    """The messages of ``tp`` from ``max(start, end - n)`` up to ``end`` (exclusive)."""
    if end <= start:
        return []
    consumer.assign([tp])
    consumer.seek(tp, max(start, end - n))
    out: list[tuple[bytes | None, bytes | None, int]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = await consumer.getmany(tp, timeout_ms=500)
        for rec in batch.get(tp, []):
            if rec.offset < end:
                out.append((rec.key, rec.value, rec.offset))
        if await consumer.position(tp) >= end:
            break
    return out


async def collect(settings: Settings, interval: float = 2.0) -> RawCluster:
    """Read everything :func:`build_status` needs from the cluster."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    kw = settings.kafka.kafka_client_kwargs()
    prefix = settings.kafka.topic_prefix
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_list, **kw)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap_list,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **kw,
    )
    await admin.start()
    await consumer.start()
    try:
        names = sorted(t for t in await admin.list_topics() if t.startswith(prefix))
        described = await admin.describe_topics(names) if names else []
        partitions = {
            d["topic"]: sorted(p["partition"] for p in d["partitions"])
            for d in described
            if not d["error_code"]
        }
        offsets = await admin.list_consumer_group_offsets(settings.kafka.app_id)
        committed = {(tp.topic, tp.partition): int(om.offset) for tp, om in offsets.items()}
        tps = [TopicPartition(t, p) for t, ps in partitions.items() for p in ps]
        tps += [TopicPartition(t, p) for t, p in committed if t not in partitions]
        ends_before = await consumer.end_offsets(tps) if tps else {}
        t0 = time.monotonic()
        await asyncio.sleep(interval)
        ends = await consumer.end_offsets(tps) if tps else {}
        elapsed = time.monotonic() - t0
        starts = await consumer.beginning_offsets(tps) if tps else {}

        def key(m: Mapping[Any, int]) -> dict[tuple[str, int], int]:
            return {(tp.topic, tp.partition): int(o) for tp, o in m.items()}

        raw = RawCluster(
            partitions=partitions,
            ends_before=key(ends_before),
            ends=key(ends),
            starts=key(starts),
            committed=committed,
            elapsed_s=round(elapsed, 3),
        )
        for short, n, attr in (
            (T.METRICS, METRICS_TAIL, "metrics_messages"),
            (T.MODEL_UPDATES, MODEL_UPDATES_TAIL, "model_updates"),
        ):
            name = prefix + short
            for p in partitions.get(name, []):
                tp = TopicPartition(name, p)
                got = await _tail(consumer, tp, raw.starts[(name, p)], raw.ends[(name, p)], n)
                getattr(raw, attr).extend(got)
        return raw
    finally:
        await consumer.stop()
        await admin.close()


def status(settings: Settings, interval: float = 2.0) -> dict[str, Any]:
    raw = asyncio.run(collect(settings, interval))
    return build_status(settings, raw, time.time())


def _fmt(v: Any, spec: str = "") -> str:
    if v is None:
        return "–"
    return format(v, spec) if spec else str(v)


def _serving_note(serving: object) -> str:
    """Loud when the fallback serves: the model is what users should get."""
    if not serving or serving == "model":
        return ""
    return f" [bold yellow](serving {serving})[/bold yellow]"


def render(doc: dict[str, Any], console: Console) -> None:
    """The terminal view of a status document."""
    console.print(
        f"[bold]stream-rec[/bold] {doc['bootstrap_servers']}  prefix [cyan]{doc['topic_prefix']}"
        f"[/cyan]  group [cyan]{doc['consumer_group']['id']}[/cyan]  "
        f"model [green]{_fmt(doc['model_version'])}[/green]"
        f"{_serving_note(doc.get('serving'))}  "
        f"catalogue {_fmt(doc['catalog_items'])}  dead letters [red]{doc['dead_letters']}[/red]"
    )
    t = Table(title=f"topics (throughput over {doc['interval_s']:.1f}s)")
    for col in ("topic", "partitions", "end offsets", "messages", "msgs/s"):
        t.add_column(col, justify="left" if col == "topic" else "right")
    for name, info in doc["topics"].items():
        ends = " ".join(str(p["end_offset"]) for p in info["partitions"].values())
        t.add_row(
            name,
            str(len(info["partitions"])),
            ends,
            str(info["messages"]),
            f"{info['msgs_per_s']:.1f}",
        )
    console.print(t)

    g = doc["consumer_group"]
    t = Table(title=f"consumer group {g['id']}: total lag {g['total_lag']}")
    for col in ("topic", "partition", "committed", "end offset", "lag"):
        t.add_column(col, justify="left" if col == "topic" else "right")
    for r in g["partitions"]:
        t.add_row(
            r["topic"], str(r["partition"]), _fmt(r["committed"]), _fmt(r["end_offset"]),
            _fmt(r["lag"]),
        )  # fmt: skip
    console.print(t)

    t = Table(title="workers (newest snapshot on the metrics topic)")
    cols = ("worker", "age s", "model", "items", "events in", "recs", "dead", "lag", "p99 e2e s")
    for col in cols:
        t.add_column(col, justify="left" if col in ("worker", "model") else "right")
    for wid, s in sorted(doc["workers"].items()):
        e2e = (s.get("e2e_seconds") or {}).get("p99")
        t.add_row(
            wid,
            _fmt(s.get("age_s"), ".1f"),
            _fmt(s.get("model_version")),
            _fmt(s.get("catalog_items")),
            _fmt(s.get("events_in_total")),
            _fmt(s.get("recommendations")),
            _fmt((s.get("dead_letters") or {}).get("total")),
            _fmt(s.get("consumer_lag_total")),
            _fmt(e2e, ".4f"),
        )
    console.print(t if doc["workers"] else "workers: no snapshot on the metrics topic yet")
    tr = doc["last_training"]
    if tr is None:
        console.print("last model announced: none on model-updates")
    else:
        console.print(f"last model announced: {tr}")
    sh = doc.get("shadow")
    if sh is not None:
        console.print(
            f"shadow check of [cyan]{sh['candidate']}[/cyan] on {sh['workers']} worker(s): "
            f"{sh['judged']}/{sh['min_events']} events judged, online HR@10 serving "
            f"{_fmt(sh['hr10_serving'], '.4f')} vs candidate {_fmt(sh['hr10_candidate'], '.4f')}"
            f" (z {sh['z']:.2f}): {sh['decision_so_far']}"
        )
    if doc["last_training_run"] is not None:
        console.print(f"last training run: {doc['last_training_run']}")
