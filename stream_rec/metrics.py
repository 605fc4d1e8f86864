"""Prometheus metrics of a worker, on a registry per process (served at ``/metrics``).

Names are ``stream_rec_*``; labels use the agent names of the code (``score_behavior`` …) so a
figure on a dashboard leads straight to the code that produced it.
"""

from __future__ import annotations

import gc
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

log = logging.getLogger(__name__)

# Stages of one event in ``score_behavior`` (``stream_rec_stage_seconds_total{stage}``); what
# each covers is listed in :mod:`stream_rec.bench.pipeline`, which reads them under ``--profile``.
STAGES = (
    "wait",
    "decode",
    "session",
    "score",
    "encode",
    "produce",
    "rec_context",
    "metrics",
    "shadow",
)
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_GC_LOG_S = 0.05  # a collection at least this long is logged too
_GC_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events_in = Counter(
            "stream_rec_events_in", "Input messages by topic and event type", ["topic", "event"],
            registry=r,
        )  # fmt: skip
        self.dead_letters = Counter(
            "stream_rec_dead_letters", "Messages sent to dead letters", ["topic", "reason"],
            registry=r,
        )  # fmt: skip
        self.events_forwarded = Counter(
            "stream_rec_events_forwarded",
            "Input events re-published on their key's partition (reason: partition = another "
            "producer's partitioner put them elsewhere, unkeyed = re-keyed by user_id)",
            ["topic", "reason"], registry=r,
        )  # fmt: skip
        self.recommendations = Counter(
            "stream_rec_recommendations", "Recommendations published", registry=r
        )
        self.forgets = Counter("stream_rec_user_deletions", "Users forgotten", registry=r)
        self.batch_size = Histogram(
            "stream_rec_batch_size", "Events per scoring micro-batch",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024), registry=r,
        )  # fmt: skip
        self.scoring_seconds = Histogram(
            "stream_rec_scoring_seconds", "Time to score one micro-batch",
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.scored_inline = Counter(
            "stream_rec_batches_scored_inline",
            "Micro-batches cheap enough to score on the event loop (the rest: scoring thread)",
            registry=r,
        )
        self.stage_seconds = Counter(
            "stream_rec_stage_seconds",
            "Event-loop seconds score_behavior spent per stage (wait = between two batches)",
            ["stage"], registry=r,
        )  # fmt: skip
        for stage in STAGES:
            self.stage_seconds.labels(stage=stage)
        self.e2e_seconds = Histogram(
            "stream_rec_event_to_recommendation_seconds",
            "Event ts to recommendation emitted (meaningful when producers stamp ts at send)",
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.feedback_examples = Counter(
            "stream_rec_feedback_examples",
            "Labelled examples from feedback (matched = joined to its recommendation)",
            ["label", "matched"], registry=r,
        )  # fmt: skip
        self.model_swaps = Counter(
            "stream_rec_model_swaps", "Serving model swaps on this worker", registry=r
        )
        self.model_load_failures = Counter(
            "stream_rec_model_load_failures", "Announced models this worker refused to serve",
            ["reason"], registry=r,
        )  # fmt: skip
        self.catalog_items = Gauge("stream_rec_catalog_items", "Items the scorer knows", registry=r)
        self.model_info = Gauge(
            "stream_rec_model_info", "Serving model version (value 1)", ["version"], registry=r
        )
        self.serving_fallback = Gauge(
            "stream_rec_serving_fallback",
            "1 while the fallback scorer serves (no model yet: serving fallback, waiting for "
            "first model), 0 once a trained model serves", registry=r,
        )  # fmt: skip
        self.consumer_lag = Gauge(
            "stream_rec_consumer_lag",
            "Messages not yet committed by this worker's consumer group, per assigned input "
            "partition (end offset minus committed offset); updated every metrics interval",
            ["topic", "partition"], registry=r,
        )  # fmt: skip
        self.partition_stalls = Counter(
            "stream_rec_partition_stalls",
            "Assigned input partitions found stalled (messages waiting, committed offset "
            "unchanged for STREAM_REC_STALL_TIMEOUT_S) and read again from their committed offset",
            ["topic"], registry=r,
        )  # fmt: skip
        self.operator_auth_failures = Counter(
            "stream_rec_operator_auth_failures",
            "Requests for a page with one user's data refused with 401: no bearer token "
            "(missing) or another one (wrong); never labelled by user",
            ["reason"], registry=r,
        )  # fmt: skip
        self.snapshots = Counter(
            "stream_rec_metrics_snapshots",
            "Metrics snapshots published to the metrics topic by this worker", registry=r,
        )  # fmt: skip

        self.gc_pause_seconds = Histogram(
            "stream_rec_gc_pause_seconds",
            "Pauses of Python's cyclic garbage collector in this worker, by generation: every "
            "thread stops meanwhile (the event loop too)",
            ["generation"], buckets=_GC_BUCKETS, registry=r,
        )  # fmt: skip

    def watch_gc(self) -> GcWatch:
        """Time every collection of the cyclic garbage collector into ``gc_pause_seconds``,
        logging those of ``_GC_LOG_S`` or more (until :meth:`GcWatch.close`)."""
        children = [self.gc_pause_seconds.labels(generation=str(g)) for g in range(3)]

        def on_pause(generation: int, took: float) -> None:
            children[min(generation, 2)].observe(took)
            if took >= _GC_LOG_S:
                log.info("garbage collection (generation %d) took %.0f ms: every thread "
                         "waited", generation, 1000 * took)  # fmt: skip

        return GcWatch(on_pause)

    def set_model(self, version: str) -> None:
        self.model_info.clear()
        self.model_info.labels(version=version).set(1)
        self.serving_fallback.set(1 if version.startswith("fallback") else 0)


class GcWatch:
    """A ``gc.callbacks`` hook timing each collection (two ``perf_counter`` calls per one):
    ``on_pause(generation, seconds)`` once each has ended."""

    def __init__(self, on_pause: Callable[[int, float], None]) -> None:
        self._on_pause = on_pause
        self._t = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t = time.perf_counter()
        elif self._t:
            took = time.perf_counter() - self._t
            self._t = 0.0
            self._on_pause(info["generation"], took)

    def close(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)


class StageClock:
    """Laps of one agent's time: each :meth:`lap` charges the time since the previous lap to
    a stage. Kept per batch and added to ``stream_rec_stage_seconds_total`` once per batch, so
    the clock costs two ``perf_counter`` calls per lap and no Prometheus work per event."""

    def __init__(self, counter: Counter) -> None:
        self._children = {s: counter.labels(stage=s) for s in STAGES}
        self._acc = dict.fromkeys(STAGES, 0.0)
        self._t = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self._acc[stage] += now - self._t
        self._t = now

    def flush(self) -> None:
        for stage, seconds in self._acc.items():
            if seconds:
                self._children[stage].inc(seconds)
                self._acc[stage] = 0.0


def scrape_metrics(port: int) -> str:
    """The ``/metrics`` text of the worker serving on this machine's ``port``."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:  # noqa: S310
        return str(r.read().decode())


def gc_pauses(metrics_text: str, over_s: float = 0.05) -> dict[str, dict[str, Any]]:
    """A worker's garbage-collector pauses from its ``/metrics`` text: per generation the
    number of collections, their seconds in all, and how many took longer than ``over_s`` (a
    histogram bucket bound), and the cumulative bucket counts (``up_to_s``: bound → count)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, dict[str, Any]] = {}
    for fam in text_string_to_metric_families(metrics_text):
        if fam.name != "stream_rec_gc_pause_seconds":
            continue
        for smp in fam.samples:
            g = out.setdefault(smp.labels["generation"], {})
            if smp.name.endswith("_count"):
                g["count"] = smp.value
            elif smp.name.endswith("_sum"):
                g["seconds"] = smp.value
            elif smp.name.endswith("_bucket") and math.isfinite(le := float(smp.labels["le"])):
                g.setdefault("up_to_s", {})[f"{le:g}"] = smp.value
    for g in out.values():
        within = g.get("up_to_s", {}).get(f"{over_s:g}", 0.0)
        g[f"over_{over_s * 1000:g}ms"] = g.get("count", 0.0) - within
    return out
