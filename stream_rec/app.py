"""The Faust application: one worker's topics, tables and agents.

``create_app(settings)`` builds the single :class:`faust.App` of a worker and registers the
agents of :mod:`stream_rec.agents`. Everything the agents share lives on one
:class:`Pipeline` object made here (no module-level state): topics, the ``sessions`` table, the
scorer holder, the thread that runs scoring off the event loop, and the metrics.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import faust
from prometheus_client import generate_latest

from stream_rec import compat
from stream_rec.core.session import decode_session
from stream_rec.metrics import Metrics
from stream_rec.serving.fallback import PopularityCooccurrenceScorer
from stream_rec.serving.scorer import CatalogItem, Scorer
from stream_rec.settings import Settings
from stream_rec.tables import Tables, create_tables
from stream_rec.topics import Topics

log = logging.getLogger(__name__)


class ScorerHolder:
    """The serving scorer; swapped as a whole between micro-batches, never during one."""

    def __init__(self, scorer: Scorer) -> None:
        self.current = scorer

    def swap(self, scorer: Scorer) -> Scorer:
        old, self.current = self.current, scorer
        return old


@dataclass
class Pipeline:
    settings: Settings
    app: faust.App
    topics: Topics
    metrics: Metrics
    scorer: ScorerHolder
    executor: ThreadPoolExecutor
    tables: Tables
    catalog: dict[str, CatalogItem] = field(default_factory=dict)
    catalog_size: int = 0
    catalog_caught_up: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _credentials(settings: Settings) -> Any:
    kw = settings.kafka_client_kwargs()
    ctx = kw.get("ssl_context")
    if settings.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=settings.sasl_username,
            password=settings.sasl_password.get_secret_value() if settings.sasl_password else None,
            mechanism=settings.sasl_mechanism,
            ssl_context=ctx,  # type: ignore[arg-type]
        )
    if ctx is not None:
        return faust.SSLCredentials(ctx)  # type: ignore[arg-type]
    return None


def load_scorer(settings: Settings) -> Scorer:
    """The current version under ``settings.model_path``, else the stream-learned fallback.

    An empty registry (no version trained yet) is normal on a first deployment: the fallback
    serves until the trainer announces a model. A version that exists but fails its checks
    stops the worker at start with the reason.
    """
    if settings.model_path is None:
        return PopularityCooccurrenceScorer()
    from stream_rec.model import registry
    from stream_rec.model.runtime import OnnxScorer

    try:
        version_dir = registry.resolve(settings.model_path)
    except registry.RegistryError as exc:
        log.warning("no model yet (%s): serving the fallback scorer", exc)
        return PopularityCooccurrenceScorer()
    return OnnxScorer(version_dir, settings)


class StreamRecApp(faust.App):
    """The worker's Faust app, whose stop has a deadline.

    With the broker unreachable, stopping can hang for ever: aiokafka's fetcher re-raises the
    cancellation of its pending fetch while closing, the consumer thread dies, and mode waits
    for it without end. SIGTERM must still end the worker, so a timer thread started when the
    stop begins exits the process after ``shutdown_timeout_s``. That is safe under
    at-least-once: offsets not yet committed are re-read by whoever owns the partition next.
    """

    shutdown_timeout_s: float = 30.0
    _stop_deadline: threading.Timer | None = None

    async def on_stop(self) -> None:
        if self._stop_deadline is None:
            self._stop_deadline = threading.Timer(self.shutdown_timeout_s, self._exit_now)
            self._stop_deadline.daemon = True
            self._stop_deadline.start()
        await super().on_stop()

    async def on_shutdown(self) -> None:  # the whole stop (children too) is done
        if self._stop_deadline is not None:
            self._stop_deadline.cancel()
        await super().on_shutdown()

    def _exit_now(self) -> None:
        log.error(
            "worker still stopping after %.0fs (broker unreachable?): exiting now; "
            "uncommitted events will be re-processed",
            self.shutdown_timeout_s,
        )
        logging.shutdown()
        os._exit(os.EX_SOFTWARE)


def faust_config(settings: Settings) -> dict[str, Any]:
    """Faust settings of every worker (and of the benchmark's bare anchor agent)."""
    return {
        "broker": [f"kafka://{s}" for s in settings.bootstrap_list],
        "broker_credentials": _credentials(settings),
        "store": settings.table_store,
        "datadir": str(settings.data_dir),
        "topic_partitions": settings.partitions,
        "topic_replication_factor": settings.replication_factor,
        "consumer_auto_offset_reset": "earliest",
        # Short group timeouts: a worker joins (and a dead one is noticed) in seconds.
        "broker_session_timeout": 10.0,
        "broker_heartbeat_interval": 1.0,
        "broker_rebalance_timeout": 20.0,
        "broker_commit_interval": 1.0,
        "stream_wait_empty": False,
        "producer_linger": 0.001,
        # aiokafka keeps one produce request in flight per broker, and a send that finds its
        # partition's batch full waits until that batch is taken, i.e. for the broker's answer
        # to the request before it. With 16 KB batches (~18 recommendations) a micro-batch
        # waited on the broker several times (measured: ~1 ms per recommendation, docs/
        # hot-path.md); 256 KB batches hold a whole micro-batch per partition.
        "producer_max_batch_size": 256 * 1024,
        "web_port": settings.web_port,
        "web_bind": settings.web_host,
        "web_enabled": True,
        "autodiscover": False,
        "table_cleanup_interval": 60.0,
    }


def create_app(settings: Settings, scorer: Scorer | None = None) -> Pipeline:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    compat.apply()
    app = StreamRecApp(settings.app_id, **faust_config(settings))
    app.shutdown_timeout_s = settings.shutdown_timeout_s
    metrics = Metrics()
    holder = ScorerHolder(scorer if scorer is not None else load_scorer(settings))
    metrics.set_model(holder.current.version)
    pipeline = Pipeline(
        settings=settings,
        app=app,
        topics=Topics(settings.topic_prefix),
        metrics=metrics,
        scorer=holder,
        executor=ThreadPoolExecutor(max_workers=1, thread_name_prefix="scorer"),
        tables=create_tables(app, settings),
    )

    from stream_rec.agents import catalog, feedback, models, score, telemetry, watchdog

    catalog.register(pipeline)
    score.register(pipeline)
    feedback.register(pipeline)
    models.register(pipeline)
    telemetry.register(pipeline)
    watchdog.register(pipeline)

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(metrics.registry), content_type="text/plain")

    @app.page("/stream-rec/status")
    async def status_page(web: Any, request: Any) -> Any:
        assignment = sorted(
            f"{tp.topic}:{tp.partition}" for tp in app.consumer.assignment()
        ) if app.consumer else []  # fmt: skip
        return web.json(
            {
                "app_id": settings.app_id,
                "model_version": holder.current.version,
                "catalog_items": pipeline.catalog_size,
                "catalog_caught_up": pipeline.catalog_caught_up,
                "assignment": assignment,
                "rebalancing": bool(app.rebalancing),
                **watchdog.fetch_state(app.consumer),
            }
        )

    @app.page("/stream-rec/sessions/{user_id}/")
    class SessionView(faust.web.View):
        """An operator's look at one user's session (only on the worker holding its partition)."""

        async def get(self, request: Any, user_id: str) -> Any:
            raw = pipeline.tables.sessions.get(user_id.encode())
            if raw is None:
                return self.json({"user_id": user_id, "found": False}, status=404)
            session = decode_session(raw)
            return self.json({"user_id": user_id, "found": True, "session": session})

    return pipeline
