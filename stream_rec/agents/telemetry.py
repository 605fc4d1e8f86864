"""``publish_metrics``: a worker's consumer lag and a periodic snapshot on the ``metrics`` topic.

Beside the agents, a timer runs every ``STREAM_REC_METRICS_INTERVAL_S`` seconds on every
worker. It reads the end offsets of the input partitions this worker is assigned (Faust's
consumer, ``highwaters``) and the offsets the group has committed for them (Faust's own record,
the next offset to read), sets ``stream_rec_consumer_lag{topic,partition}``, then publishes a
snapshot of the worker's key figures to the single-partition ``metrics`` topic, keyed by the
worker id. ``stream-rec status`` reads the newest snapshot per worker from there.

The snapshot is built from the Prometheus registry and a few named figures only (never from the
settings object), so no secret can reach the topic. :func:`build_snapshot` is plain Python.
"""

from __future__ import annotations

import logging
import math
import socket
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from stream_rec.agents.watchdog import input_offsets
from stream_rec.records import SNAPSHOT_KIND
from stream_rec.schemas import encode
from stream_rec.serving.scorer import serving_state

if TYPE_CHECKING:
    from stream_rec.app import Pipeline
    from stream_rec.settings import Settings

log = logging.getLogger(__name__)

# Histograms summarised in a snapshot: snapshot field -> Prometheus family name.
HISTOGRAMS = {
    "batch_size": "stream_rec_batch_size",
    "scoring_seconds": "stream_rec_scoring_seconds",
    "e2e_seconds": "stream_rec_event_to_recommendation_seconds",
}
# Families of the learning loop, copied into a snapshot's ``training`` when registered: the
# trainer's own, and a worker's model swaps, refused models and labelled feedback examples.
TRAINING_PREFIXES = (
    "stream_rec_training",
    "stream_rec_trainer",
    "stream_rec_model_swaps",
    "stream_rec_model_load_failures",
    "stream_rec_feedback_examples",
)

Lag = Mapping[tuple[str, int], int]  # (short topic, partition) -> messages behind


def worker_id(settings: Settings) -> str:
    """The key of a worker's snapshots: ``host:web_port`` (unique per running worker)."""
    return f"{socket.gethostname()}:{settings.observability.web_port}"


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Estimate the ``q`` quantile from cumulative ``(upper_bound, count)`` buckets.

    The same linear interpolation inside a bucket as PromQL's ``histogram_quantile``; a rank in
    the ``+Inf`` bucket answers the largest finite bound. Only for the snapshot on the metrics
    topic, which ``stream-rec status`` reads where no Prometheus runs (a local broker, CI);
    with Prometheus, ``histogram_quantile`` over each worker's ``/metrics`` is the source, and
    nothing else here computes quantiles from buckets.
    """
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return prev_bound
            if count == prev_count:
                return bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = bound, count
    return prev_bound


def _summary(samples: Iterable[Any]) -> dict[str, float | int | None]:
    buckets: list[tuple[float, float]] = []
    count, total = 0.0, 0.0
    for s in samples:
        if s.name.endswith("_bucket"):
            buckets.append((float(s.labels["le"]), float(s.value)))
        elif s.name.endswith("_count"):
            count = float(s.value)
        elif s.name.endswith("_sum"):
            total = float(s.value)
    return {
        "count": int(count),
        "mean": total / count if count else None,
        "p50": histogram_quantile(0.5, buckets),
        "p99": histogram_quantile(0.99, buckets),
    }


def _value(samples: Iterable[Any], suffix: str = "") -> float:
    return float(sum(s.value for s in samples if s.name.endswith(suffix)))


def build_snapshot(
    registry: CollectorRegistry,
    *,
    worker: str,
    ts: float,
    model_version: str,
    catalog_size: int,
    lag: Lag,
    serving: str = "model",
) -> dict[str, Any]:
    """The snapshot published on the metrics topic (plain, JSON-safe values only)."""
    families = {f.name: f for f in registry.collect()}

    def samples(name: str, suffix: str) -> list[Any]:
        fam = families.get(name)
        return [s for s in fam.samples if s.name.endswith(suffix)] if fam else []

    events_in: dict[str, dict[str, int]] = {}
    for s in samples("stream_rec_events_in", "_total"):
        events_in.setdefault(s.labels["topic"], {})[s.labels["event"]] = int(s.value)
    dl_by_reason: dict[str, int] = {}
    dl_by_topic: dict[str, int] = {}
    for s in samples("stream_rec_dead_letters", "_total"):
        reason, topic = s.labels["reason"], s.labels["topic"]
        dl_by_reason[reason] = dl_by_reason.get(reason, 0) + int(s.value)
        dl_by_topic[topic] = dl_by_topic.get(topic, 0) + int(s.value)
    lag_out: dict[str, dict[str, int]] = {}
    for (topic, partition), n in sorted(lag.items()):
        lag_out.setdefault(topic, {})[str(partition)] = int(n)

    snap: dict[str, Any] = {
        "kind": SNAPSHOT_KIND,
        "worker": worker,
        "ts": ts,
        "model_version": model_version,
        "serving": serving,
        "catalog_items": int(catalog_size),
        "events_in": events_in,
        "events_in_total": sum(sum(v.values()) for v in events_in.values()),
        "recommendations": int(_value(samples("stream_rec_recommendations", "_total"))),
        "user_deletions": int(_value(samples("stream_rec_user_deletions", "_total"))),
        "dead_letters": {
            "total": sum(dl_by_reason.values()),
            "by_reason": dl_by_reason,
            "by_topic": dl_by_topic,
        },
        "consumer_lag": lag_out,
        "consumer_lag_total": int(sum(lag.values())),
    }
    for field, name in HISTOGRAMS.items():
        fam = families.get(name)
        snap[field] = _summary(fam.samples if fam else [])
    training = _training(families.values())
    if training:
        snap["training"] = training
    return snap


def _training(families: Iterable[Any]) -> dict[str, Any]:
    """Every sample of the training loop's families, if any are registered (else empty)."""
    out: dict[str, Any] = {}
    for fam in families:
        if not fam.name.startswith(TRAINING_PREFIXES) or fam.type == "histogram":
            continue
        for s in fam.samples:
            if s.name.endswith("_created"):
                continue
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


async def partition_lag(
    pipeline: Pipeline, log_starts: dict[Any, int] | None = None
) -> dict[tuple[str, int], int]:
    """Lag per assigned input partition: end offset minus the group's committed offset.

    Offsets as :func:`stream_rec.agents.watchdog.input_offsets` reads them, with the end offset
    of the consumer's latest fetch response (no request; Faust fetches every assigned partition
    continuously): only partitions not fetched yet cost an offsets request.
    """
    prefix = pipeline.settings.kafka.topic_prefix
    offsets = await input_offsets(pipeline, fresh_ends=False, log_starts=log_starts)
    return {
        (tp.topic.removeprefix(prefix), tp.partition): max(0, end - begin)
        for tp, (begin, end) in offsets.items()
    }


def set_lag_gauge(pipeline: Pipeline, lag: Lag, previous: set[tuple[str, str]]) -> None:
    """Set the gauge for ``lag`` and drop the partitions this worker no longer holds."""
    gauge = pipeline.metrics.consumer_lag
    current = {(topic, str(p)) for topic, p in lag}
    for labels in previous - current:
        try:
            gauge.remove(*labels)
        except KeyError:
            pass
    for (topic, p), n in lag.items():
        gauge.labels(topic=topic, partition=str(p)).set(n)
    previous.clear()
    previous.update(current)


def register(pipeline: Pipeline) -> None:
    app, settings = pipeline.app, pipeline.settings
    topic = app.topic(
        pipeline.topics.metrics, key_serializer="raw", value_serializer="raw", partitions=1
    )
    me = worker_id(settings)
    labelled: set[tuple[str, str]] = set()  # gauge labels set by the last tick
    last_lag: dict[tuple[str, int], int] = {}
    log_starts: dict[Any, int] = {}  # log start offsets of partitions without a commit

    @app.timer(interval=settings.observability.metrics_interval_s, name="publish_metrics")
    async def publish_metrics() -> None:
        if not app.rebalancing:
            try:
                lag = await partition_lag(pipeline, log_starts)
            except Exception as exc:  # noqa: BLE001 - consumer (re)starting: keep the last figures
                log.debug("publish_metrics: no consumer lag this tick: %r", exc)
            else:
                set_lag_gauge(pipeline, lag, labelled)
                last_lag.clear()
                last_lag.update(lag)
        snap = build_snapshot(
            pipeline.metrics.registry,
            worker=me,
            ts=time.time(),
            model_version=pipeline.scorer.current.version,
            catalog_size=pipeline.catalog_size,
            lag=last_lag,
            serving=serving_state(pipeline.scorer.current.version, settings.model.model_path),
        )
        if (shadow := pipeline.shadow.snapshot()) is not None:
            snap["shadow"] = shadow  # the candidate's figures so far (the trainer decides)
        try:
            await topic.send(key=me.encode(), value=encode(snap, settings.limits.output_codec))
        except Exception as exc:  # noqa: BLE001 - telemetry must never stop a worker
            log.warning("publish_metrics: snapshot not sent: %r", exc)
            return
        pipeline.metrics.snapshots.inc()
