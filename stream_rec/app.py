"""The Faust application: one worker's topics, tables and agents.

``create_app(settings)`` builds the single :class:`faust.App` of a worker and registers the
agents of :mod:`stream_rec.agents`. Everything the agents share lives on one
:class:`Pipeline` object made here (no module-level state): topics, the ``sessions`` table, the
scorer holder, the thread that runs scoring off the event loop, and the metrics.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import faust
from prometheus_client import generate_latest

from stream_rec import compat
from stream_rec.core.session import decode_session
from stream_rec.metrics import Metrics
from stream_rec.serving.fallback import PopularityCooccurrenceScorer
from stream_rec.serving.rerank import RerankParams
from stream_rec.serving.scorer import CatalogItem, Scorer, serving_state
from stream_rec.serving.shadow import ShadowBook
from stream_rec.settings import ConfigError, Settings
from stream_rec.tables import Tables, create_tables
from stream_rec.topics import Topics
from stream_rec.web_auth import OperatorGate, operator_page

if TYPE_CHECKING:
    from faust.worker import Worker

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
    app: StreamRecApp
    topics: Topics
    metrics: Metrics
    scorer: ScorerHolder
    executor: ThreadPoolExecutor
    tables: Tables
    catalog: dict[str, CatalogItem] = field(default_factory=dict)
    catalog_size: int = 0
    catalog_caught_up: bool = False
    shadow: ShadowBook = field(default_factory=lambda: ShadowBook(0.0))  # the candidate, if any
    data_lock: Any = None  # held for the worker's life: one worker per data folder
    started_at: float = 0.0  # when the process had imported its code (the status page)


def _credentials(settings: Settings) -> Any:
    kw = settings.kafka.kafka_client_kwargs()
    ctx = kw.get("ssl_context")
    if settings.kafka.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=settings.kafka.sasl_username,
            password=settings.kafka.sasl_password.get_secret_value()
            if settings.kafka.sasl_password
            else None,
            mechanism=settings.kafka.sasl_mechanism,
            ssl_context=ctx,  # type: ignore[arg-type]
        )
    if ctx is not None:
        return faust.SSLCredentials(ctx)  # type: ignore[arg-type]
    return None


def load_scorer(settings: Settings) -> Scorer:
    """The current version under ``settings.model.model_path``, else the stream-learned fallback.

    An empty registry (no version trained yet) is normal on a first deployment: the fallback
    serves as a cold-start bridge until the trainer bootstraps the first model and announces
    it. A model path that does not exist, or a current version that fails its checks (sha256,
    loading), is a configuration error: :class:`ConfigError` with what to fix, and the worker
    stops at start (exit 2) instead of serving the fallback in silence.
    """
    if settings.model.model_path is None:
        log.warning("STREAM_REC_MODEL_PATH is not set: serving the fallback scorer only")
        return PopularityCooccurrenceScorer(rerank=RerankParams.from_settings(settings))
    from stream_rec.model import registry

    root = Path(settings.model.model_path)
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
        from stream_rec.model.ort_graph import prewarm

        prewarm(settings.model.device)
        return PopularityCooccurrenceScorer(rerank=RerankParams.from_settings(settings))
    from stream_rec.model.runtime import OnnxScorer

    try:
        version_dir = registry.resolve(root)
        scorer = OnnxScorer(version_dir, settings, threads=settings.model.ort_threads)
        scorer.warm_up()
    except Exception as exc:  # noqa: BLE001 - any failure to load the current version
        msg = (
            f"model registry {root}: the current version cannot be served ({exc}); "
            "run `stream-rec model rollback` (or `model promote VERSION`) to a good version, "
            "or re-export it with `stream-rec export`"
        )
        raise ConfigError(msg) from None
    return scorer


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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._before_join: list[Callable[[], Awaitable[None]]] = []
        self._join_gates: dict[str, asyncio.Event] = {}

    # --- joining the consumer group only once scoring has what it needs ------------------------
    # A worker that owned behaviour partitions before its catalogue replica was loaded scored
    # against an empty catalogue and sent empty recommendations (seen right after a restart).
    # So the replicas start with the app, and the consumer subscribes (joins the group, takes
    # partitions) only once every gate is open. Faust's own ``app.task``s start only after table
    # recovery, i.e. after an assignment, so they cannot be what the join waits for.

    def before_join(self, fn: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        """Decorator: run ``fn`` from the app's start, before the consumer joins its group."""
        self._before_join.append(fn)
        return fn

    def join_gate(self, name: str) -> asyncio.Event:
        """An event the consumer waits for before it joins the group; set it when ``name`` is
        ready (e.g. the catalogue replica has caught up)."""
        return self._join_gates.setdefault(name, asyncio.Event())

    @property
    def join_gates_open(self) -> dict[str, bool]:
        return {name: ev.is_set() for name, ev in self._join_gates.items()}

    async def on_start(self) -> None:
        await super().on_start()
        for fn in self._before_join:
            self.add_future(self._keep_running(fn))

    async def _keep_running(self, fn: Callable[[], Awaitable[None]]) -> None:
        """Run ``fn`` again (after a pause) if it fails: the join waits for what it feeds."""
        while not self.should_stop:
            try:
                await fn()
                return
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - e.g. the broker unreachable at start
                log.exception("%s failed; starting it again in 2 s", fn.__name__)
                await asyncio.sleep(2.0)

    def _new_consumer(self) -> Any:
        consumer = super()._new_consumer()
        subscribe = consumer.subscribe

        async def subscribe_when_ready(topics: Any) -> None:
            waiting = [name for name, ev in self._join_gates.items() if not ev.is_set()]
            if waiting:
                t0 = time.monotonic()
                log.info("waiting for %s before joining the consumer group", ", ".join(waiting))
                for ev in self._join_gates.values():
                    await ev.wait()
                log.info("ready to serve after %.2fs: joining the consumer group",
                         time.monotonic() - t0)  # fmt: skip
            await subscribe(topics)

        consumer.subscribe = subscribe_when_ready  # type: ignore[method-assign]
        return consumer

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


def group_instance_id(settings: Settings) -> str | None:
    """This worker's static group membership id (Kafka ``group.instance.id``), or None.

    ``STREAM_REC_WORKER_ID`` when set; else the host name and a digest of the data folder,
    which is the same across restarts of one worker and differs between the workers of one
    host (each has its own data folder, and :func:`lock_data_dir` keeps two live workers out of
    one folder).
    """
    if not settings.kafka.static_membership:
        return None
    if settings.kafka.worker_id:
        return settings.kafka.worker_id
    import hashlib
    import re
    import socket

    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:120] or "host"
    digest = hashlib.sha256(str(settings.serving.data_dir.resolve()).encode()).hexdigest()[:12]
    return f"{host}-{digest}"


def lock_data_dir(settings: Settings) -> Any:
    """Hold an exclusive lock on the worker's data folder for the life of the process.

    Two live workers on one folder would share RocksDB files and, with static membership, one
    group member id (one would fence the other). A second worker fails at start instead.
    """
    import fcntl

    path = settings.serving.data_dir / "worker.lock"
    fh = open(path, "a+")  # noqa: SIM115 - held open (locked) until the process exits
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        msg = (
            f"STREAM_REC_DATA_DIR={settings.serving.data_dir} is in use by another running worker: "
            "give every worker its own data folder"
        )
        raise ConfigError(msg) from None
    return fh


_App = TypeVar("_App", bound=faust.App)


def faust_config(settings: Settings) -> dict[str, Any]:
    """Faust settings of every worker (and of the benchmark's bare anchor agent)."""
    return {
        # Static membership (KIP-345): a restarted worker takes its partitions back at once.
        "consumer_group_instance_id": group_instance_id(settings),
        "broker": [f"kafka://{s}" for s in settings.kafka.bootstrap_list],
        "broker_credentials": _credentials(settings),
        "store": settings.serving.table_store,
        "datadir": str(settings.serving.data_dir),
        "topic_partitions": settings.kafka.partitions,
        "topic_replication_factor": settings.kafka.replication_factor,
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
        "web_port": settings.observability.web_port,
        "web_bind": settings.observability.web_host,
        "web_enabled": True,
        # Faust's /table/<table>/<key>/ pages would hand anyone a user's session and
        # recommendations; one user's data is served only through operator pages (web_auth).
        "web_tables_enabled": False,
        "autodiscover": False,
        "table_cleanup_interval": 60.0,
        "TableManager": compat.table_manager(),  # every table is declared before the start
    }


def new_faust_app(cls: type[_App], app_id: str, settings: Settings) -> _App:
    """A Faust app configured as every worker (and the benchmark's bare anchor agent): the
    corrections of :mod:`stream_rec.compat`, :func:`faust_config`, and the consumer's fetch wait
    and least fetch size (``compat._consumer_fetch_settings`` reads them from the app)."""
    compat.apply()
    app = cls(app_id, **faust_config(settings))
    app.fetch_max_wait_ms = settings.kafka.fetch_max_wait_ms  # type: ignore[attr-defined]
    app.fetch_min_bytes = settings.kafka.fetch_min_bytes  # type: ignore[attr-defined]
    return app


def assigned_partitions(app: faust.App) -> list[str]:
    """The app consumer's assigned partitions as ``topic:partition`` (its status pages)."""
    if not app.consumer:
        return []
    return sorted(f"{tp.topic}:{tp.partition}" for tp in app.consumer.assignment())


def faust_worker(app: faust.App, loglevel: str) -> Worker:
    """The Faust ``Worker`` that runs ``app`` (the pipeline's, the bench's bare agent's), with
    no terminal spinner.

    Faust's worker keeps its start-up spinner at the WARNING level and above, and for it sets
    the *root logger* to DEBUG with a handler that turns every record into a spinner step;
    the root stays at DEBUG after the start. Every ``log.debug`` of aiokafka, Faust and mode
    then built a record (caller lookup included) for handlers that dropped it: aiokafka logs
    per partition per fetch round. Profiled (docs/hot-path.md, round seven): with
    ``STREAM_REC_LOG_LEVEL=warning`` a worker at 300 events/s had 7 % of its samples in
    those debug calls (6 % building records). Without the spinner the root logger keeps the
    configured level.
    """
    from faust.worker import Worker  # the worker's command only

    worker = Worker(app, loglevel=loglevel, console_port=0)
    worker.spinner = None  # its handler would put the root logger at DEBUG for good
    return worker


def create_app(settings: Settings, scorer: Scorer | None = None) -> Pipeline:
    started_at = time.time()  # the process has imported its code: the worker is "up"
    settings.serving.data_dir.mkdir(parents=True, exist_ok=True)
    data_lock = lock_data_dir(settings)
    app = new_faust_app(StreamRecApp, settings.kafka.app_id, settings)
    app.shutdown_timeout_s = settings.serving.shutdown_timeout_s
    if getattr(app.conf, "web_tables_enabled", True):  # a Faust without the setting (< 0.15)
        msg = "this Faust serves table contents at /table/...: faust-streaming>=0.15 is needed"
        raise RuntimeError(msg)
    metrics = Metrics()
    holder = ScorerHolder(scorer if scorer is not None else load_scorer(settings))
    metrics.set_model(holder.current.version)
    pipeline = Pipeline(
        settings=settings,
        app=app,
        topics=Topics(settings.kafka.topic_prefix),
        metrics=metrics,
        scorer=holder,
        executor=ThreadPoolExecutor(max_workers=1, thread_name_prefix="scorer"),
        tables=create_tables(app, settings),
        shadow=ShadowBook(settings.trainer.shadow_share),
        data_lock=data_lock,
        started_at=started_at,
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
        assignment = assigned_partitions(app)
        return web.json(
            {
                "app_id": settings.kafka.app_id,
                "model_version": holder.current.version,
                "serving": serving_state(holder.current.version, settings.model.model_path),
                "catalog_items": pipeline.catalog_size,
                "catalog_caught_up": pipeline.catalog_caught_up,
                "assignment": assignment,
                "rebalancing": bool(app.rebalancing),
                "group_instance_id": app.conf.consumer_group_instance_id,
                "ready_to_join": app.join_gates_open,
                "started_at": started_at,
                **watchdog.fetch_state(app.consumer),
            }
        )

    gate = OperatorGate(settings.observability.admin_token, metrics.operator_auth_failures)

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
