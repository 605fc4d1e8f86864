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
from pathlib import Path
from typing import Any

import faust
from prometheus_client import generate_latest

from stream_rec import compat
from stream_rec.core.session import decode_session
from stream_rec.metrics import Metrics
from stream_rec.serving.fallback import PopularityCooccurrenceScorer
from stream_rec.serving.rerank import RerankParams
from stream_rec.serving.scorer import CatalogItem, Scorer, serving_state
from stream_rec.settings import ConfigError, Settings
from stream_rec.tables import Tables, create_tables
from stream_rec.topics import Topics
from stream_rec.web_auth import OperatorGate, operator_page

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
    serves as a cold-start bridge until the trainer bootstraps the first model and announces
    it. A model path that does not exist, or a current version that fails its checks (sha256,
    loading), is a configuration error: :class:`ConfigError` with what to fix, and the worker
    stops at start (exit 2) instead of serving the fallback in silence.
    """
    if settings.model_path is None:
        log.warning("STREAM_REC_MODEL_PATH is not set: serving the fallback scorer only")
        return PopularityCooccurrenceScorer(rerank=RerankParams.from_settings(settings))
    from stream_rec.model import registry

    root = Path(settings.model_path)
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        msg = (
            f"STREAM_REC_MODEL_PATH={root} {what}: point it at the model registry folder "
            "(an empty folder is fine: the trainer bootstraps the first model into it)"
        )
        raise ConfigError(msg)
    if registry.is_empty(root):
        log.warning(
            "model registry %s is empty: serving the fallback scorer, waiting for the first "
            "model (the trainer bootstraps it from the topics)",
            root,
        )
        # Import the model runtime now, at start: on the swap it would hold the interpreter
        # (seconds of imports) while events wait.
        from stream_rec.model.runtime import choose_providers

        choose_providers(settings.device)
        return PopularityCooccurrenceScorer(rerank=RerankParams.from_settings(settings))
    from stream_rec.model.runtime import OnnxScorer

    try:
        version_dir = registry.resolve(root)
        return OnnxScorer(version_dir, settings)
    except Exception as exc:  # noqa: BLE001 - any failure to load the current version
        msg = (
            f"model registry {root}: the current version cannot be served ({exc}); "
            "run `stream-rec model rollback` (or `model promote VERSION`) to a good version, "
            "or re-export it with `stream-rec export`"
        )
        raise ConfigError(msg) from None


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
        # Faust's /table/<table>/<key>/ pages would hand anyone a user's session and
        # recommendations; one user's data is served only through operator pages (web_auth).
        "web_tables_enabled": False,
        "autodiscover": False,
        "table_cleanup_interval": 60.0,
    }


def create_app(settings: Settings, scorer: Scorer | None = None) -> Pipeline:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    compat.apply()
    app = StreamRecApp(settings.app_id, **faust_config(settings))
    app.shutdown_timeout_s = settings.shutdown_timeout_s
    if getattr(app.conf, "web_tables_enabled", True):  # a Faust without the setting (< 0.15)
        msg = "this Faust serves table contents at /table/...: faust-streaming>=0.15 is needed"
        raise RuntimeError(msg)
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
                "serving": serving_state(holder.current.version, settings.model_path),
                "catalog_items": pipeline.catalog_size,
                "catalog_caught_up": pipeline.catalog_caught_up,
                "assignment": assignment,
                "rebalancing": bool(app.rebalancing),
                **watchdog.fetch_state(app.consumer),
            }
        )

    gate = OperatorGate(settings.admin_token, metrics.operator_auth_failures)

    @app.task
    async def announce_operator_pages() -> None:  # at start, once the worker's log is set up
        log.info("operator pages: %s", f"on (token {gate.fingerprint})" if gate.enabled else "off")

    @app.page("/stream-rec/sessions/{user_id}/")
    class SessionView(faust.web.View):
        """An operator's look at one user's session (only on the worker holding its partition);
        operators only: stream_rec.web_auth."""

        @operator_page(gate)
        async def get(self, request: Any, user_id: str) -> Any:
            raw = pipeline.tables.sessions.get(user_id.encode())
            if raw is None:
                return self.json({"user_id": user_id, "found": False}, status=404)
            session = decode_session(raw)
            return self.json({"user_id": user_id, "found": True, "session": session})

    return pipeline
