"""One settings object for the whole pipeline; the only place that reads the environment.

Every worker, the trainer, the CLI and the benchmarks take a :class:`Settings`. It holds six
groups, each its own frozen pydantic model: ``settings.kafka`` (:class:`KafkaSettings`),
``settings.limits``, ``settings.serving``, ``settings.model``, ``settings.trainer`` and
``settings.observability``; code reads ``settings.serving.batch_size``. The variables stay flat:
``STREAM_REC_<NAME>`` in the environment (or a ``.env`` file) sets the field ``<name>`` of
whichever group holds it, so ``deploy/`` and ``docker-compose.yml`` configure the system through
those variables alone. Keyword overrides are flat too: ``load_settings(batch_size=8)``,
``settings.replace(topic_prefix="x.")``.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

Codec = Literal["json", "msgpack"]

LOCAL_BROKER_JAVA_OPTIONS = "-XX:TieredStopAtLevel=1"
"""The local broker's extra JVM options by default: C1-only (``broker_java_options``)."""


def _default_home() -> Path:
    return Path.home() / ".cache" / "stream-rec"


class ConfigError(RuntimeError):
    """Raised at start-up when the configuration is invalid; the message says what to fix."""


class _Group(BaseModel, frozen=True):
    """One group of settings. Frozen like :class:`Settings` (``frozen=True`` is a class keyword
    of every group, so that type checkers flag a write too); defaults are validated as
    pydantic-settings does; a name that is not a field of the group is an error."""

    model_config = ConfigDict(extra="forbid", validate_default=True, protected_namespaces=())


class KafkaSettings(_Group, frozen=True):
    """The brokers, the topics and the consumer group, and how every Kafka client connects
    (``settings.kafka``)."""

    bootstrap_servers: str = Field(
        default="127.0.0.1:19092",
        description="Comma-separated Kafka bootstrap servers (host:port).",
    )
    topic_prefix: str = Field(
        default="stream-rec.", description="Prefix of every topic this system uses."
    )
    partitions: int = Field(
        default=4, ge=1, le=1024, description="Partitions of the public topics."
    )
    replication_factor: int = Field(
        default=1, ge=1, description="Replication factor of created topics."
    )
    app_id: str = Field(
        default="stream-rec",
        description="Faust application id = Kafka consumer group of the workers.",
    )
    fetch_max_wait_ms: int = Field(
        default=100,
        ge=1,
        le=60_000,
        description="Longest a worker's fetch waits at the broker for records (Faust fixes "
        "1500). Its consumer has one fetch in flight per broker, and a fetch sent while other "
        "partitions' records were still being processed leaves those partitions out: their new "
        "records wait until it returns (docs/hot-path.md, round six).",
    )
    fetch_min_bytes: int = Field(
        default=1,
        ge=1,
        le=64 * 1024 * 1024,
        description="Least data a worker's fetch asks the broker to gather before it answers "
        "(Kafka fetch.min.bytes), waiting at most STREAM_REC_FETCH_MAX_WAIT_MS for it. 1 = "
        "answer with the first record. Larger values answer with fewer, fuller fetches at a "
        "steady stream (each fetch costs the worker a hand-off from its consumer thread) at "
        "the cost of up to FETCH_MAX_WAIT_MS more latency at low rates.",
    )
    static_membership: bool = Field(
        default=True,
        description="Join the consumer group as a static member (Kafka group.instance.id, "
        "KIP-345) named by STREAM_REC_WORKER_ID: a worker restarted within the session timeout "
        "gets its partitions back at once, without a rebalance or waiting for its old "
        "membership to expire. A stopped worker's partitions move to the others only after the "
        "session timeout (10 s). Off = dynamic membership.",
    )
    worker_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="This worker's stable name in the consumer group (its group.instance.id): "
        "the same across restarts of one worker, different for every worker that runs at the "
        "same time (a live worker that another one with its name joins after is fenced and "
        "stops). Unset = the host name and a digest of STREAM_REC_DATA_DIR.",
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="Kafka security protocol for every client."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        default=None, description="SASL mechanism when the protocol is SASL_*."
    )
    sasl_username: str | None = Field(default=None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(
        default=None, description="SASL password (never logged)."
    )
    ssl_cafile: Path | None = Field(
        default=None, description="CA bundle to verify the brokers (TLS)."
    )
    ssl_certfile: Path | None = Field(
        default=None, description="Client certificate for mutual TLS."
    )
    ssl_keyfile: Path | None = Field(default=None, description="Client private key for mutual TLS.")

    @field_validator("bootstrap_servers")
    @classmethod
    def _check_servers(cls, v: str) -> str:
        for part in v.split(","):
            host, sep, port = part.strip().rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                msg = f"bootstrap server {part!r} is not host:port"
                raise ValueError(msg)
        return v

    @field_validator("topic_prefix")
    @classmethod
    def _check_prefix(cls, v: str) -> str:
        allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
        if not set(v) <= allowed:
            msg = f"topic prefix {v!r} may only hold letters, digits, '.', '_' and '-'"
            raise ValueError(msg)
        return v

    @model_validator(mode="after")
    def _check_security(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL"):
            missing = [
                f"STREAM_REC_{name.upper()}"
                for name in ("sasl_mechanism", "sasl_username", "sasl_password")
                if not getattr(self, name)
            ]
            if missing:
                msg = f"security_protocol {self.security_protocol} needs {', '.join(missing)}"
                raise ValueError(msg)
        return self

    @property
    def bootstrap_list(self) -> list[str]:
        return [s.strip() for s in self.bootstrap_servers.split(",")]

    def kafka_client_kwargs(self) -> dict[str, object]:
        """Security keyword arguments shared by every aiokafka client we create."""
        kwargs: dict[str, object] = {"security_protocol": self.security_protocol}
        if self.security_protocol in ("SSL", "SASL_SSL"):
            from aiokafka.helpers import create_ssl_context

            kwargs["ssl_context"] = create_ssl_context(
                cafile=self.ssl_cafile, certfile=self.ssl_certfile, keyfile=self.ssl_keyfile
            )
        if self.security_protocol.startswith("SASL"):
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else None
            )
        return kwargs


class LimitsSettings(_Group, frozen=True):
    """Codecs and the limits input events are checked against (``settings.limits``)."""

    output_codec: Codec = Field(
        default="json", description="Codec of recommendations, dead letters and metrics."
    )
    max_payload_bytes: int = Field(
        default=64 * 1024, ge=256, description="Input messages larger than this go to dead letters."
    )
    max_text_chars: int = Field(
        default=4096, ge=16, description="Longest accepted string field of an input event."
    )
    max_future_skew_s: float = Field(
        default=86400.0,
        ge=0,
        description="Events with ts further than this in the future are invalid.",
    )


class ServingSettings(_Group, frozen=True):
    """A worker's scoring, tables, re-ranking and feedback signals (``settings.serving``)."""

    batch_size: int = Field(default=64, ge=1, le=8192, description="Largest scoring micro-batch.")
    batch_linger_ms: float = Field(
        default=5.0,
        ge=0,
        description="Longest wait of a micro-batch for more events, from its first one (see "
        "BATCH_LINGER_MODE).",
    )
    batch_linger_mode: Literal["adaptive", "periodic"] = Field(
        default="adaptive",
        description="adaptive: a micro-batch waits for more events only when the arrival rate "
        "predicts another within BATCH_LINGER_MS, so a lone event is scored as soon as it is "
        "fetched and an idle worker does not wake up; periodic: Faust's take_events, which "
        "flushes every BATCH_LINGER_MS (kept to compare in `stream-rec bench pipeline "
        "--variant`; docs/hot-path.md).",
    )
    score_inline_ms: float = Field(
        default=2.0,
        ge=0,
        le=1000,
        description="Micro-batches predicted to score within this many ms score on the event "
        "loop; larger ones in the scoring thread (0 = always the thread).",
    )
    gc_freeze: bool = Field(
        default=True,
        description="Once a worker's catalogue is loaded (before it takes partitions), move "
        "every object it holds then (code, scorer, catalogue) out of the cyclic garbage "
        "collector's reach (gc.freeze()): later full collections, which stop the event loop, "
        "scan only what came after (stream_rec_gc_pause_seconds; docs/hot-path.md).",
    )
    top_k: int = Field(default=10, ge=1, le=1000, description="Items per recommendation.")
    session_length: int = Field(
        default=50, ge=1, le=10000, description="Recent items kept per user."
    )
    table_store: str = Field(
        default="rocksdb://",
        description="Faust table store URL: rocksdb:// (durable) or memory://.",
    )
    rocksdb_memory_mb: int = Field(
        default=32,
        ge=4,
        le=65536,
        description="Memory of all RocksDB tables of a worker together (block cache, "
        "index/filter blocks and memtables share it).",
    )
    data_dir: Path = Field(
        default=Path("var/stream-rec"),
        description="A worker's tables (RocksDB): one folder per worker, locked while it runs "
        "(a second worker on it fails at start).",
    )
    stall_timeout_s: float = Field(
        default=30.0,
        ge=0,
        description="An assigned input partition with messages waiting whose committed offset "
        "has not moved for this long is logged, counted and read again from that offset "
        "(stream_rec.agents.watchdog); 0 = off.",
    )
    shutdown_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="A stopping worker that has not exited after this long (e.g. the broker is "
        "unreachable) exits at once; uncommitted events are re-processed by the next owner.",
    )
    diversity: float = Field(
        default=0.4,
        ge=0,
        le=1,
        description="Maximal marginal relevance over the scorer's item vectors: each slot "
        "takes the candidate maximising (1 - d) x relevance - d x its largest cosine to the "
        "items already listed; 0 = off.",
    )
    long_tail: float = Field(
        default=0.2,
        ge=0,
        le=10,
        description="Long-tail exposure: a candidate's relevance (scaled to [0, 1] in its pool) "
        "loses this when the item is in the head (the 20 % most popular items of the "
        "catalogue); 0 = off.",
    )
    rerank_pool: int = Field(
        default=50,
        ge=1,
        le=1000,
        description="Candidates (best by score) the re-ranker chooses the top-k from.",
    )
    feedback_signals: bool = Field(
        default=True,
        description="Adjust a user's next recommendations from that user's feedback the moment "
        "it arrives (stream_rec.core.signals): liked items up, ignored items down, dismissed "
        "items out. Off = recommendations depend on behaviour and the model alone.",
    )
    feedback_boost: float = Field(
        default=2.0,
        ge=0,
        le=100,
        description="Liked, not yet consumed items: + this x score spread.",
    )
    impression_discount: float = Field(
        default=0.25,
        ge=0,
        le=100,
        description="Per time an item was shown without a click: - this x score spread.",
    )
    feedback_signal_ttl_s: float = Field(
        default=3600.0,
        gt=0,
        description="How long one feedback signal lasts after its newest event.",
    )
    feedback_signal_items: int = Field(
        default=50,
        ge=1,
        le=10000,
        description="Items kept per user and signal kind (the newest; they are part of the "
        "session, rewritten on every behaviour event).",
    )

    @field_validator("table_store")
    @classmethod
    def _check_store(cls, v: str) -> str:
        if not v.startswith(("rocksdb://", "memory://")):
            msg = f"{v!r} must start with rocksdb:// or memory://"
            raise ValueError(msg)
        return v


class ModelSettings(_Group, frozen=True):
    """Which model serves and trains, on which device and precision (``settings.model``)."""

    model_path: Path | None = Field(
        default=None,
        description="Model registry folder or one exported model folder. An empty folder is "
        "fine (the fallback serves until the trainer's first model); a folder that does not "
        "exist or a current version that fails its sha256 check stops the worker at start "
        "(exit 2). Unset = the fallback scorer only.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="Inference/training device; auto = CUDA when present."
    )
    precision: Literal["fp32", "int8", "fp16", "auto"] = Field(
        default="fp32",
        description="Precision of the served ONNX model: int8 = the version's quantised files "
        "(CPU only), fp16 = CUDA only, auto = fp16 on CUDA else fp32; a choice the device "
        "cannot run serves fp32.",
    )
    ort_threads: int = Field(
        default=1,
        ge=0,
        le=256,
        description="ONNX Runtime intra-op threads per serving session (0 = one per core).",
    )
    new_item_offset: float | None = Field(
        default=None,
        ge=-100.0,
        le=100.0,
        description="Score offset for items without interactions; unset = the version's own "
        "(fitted on validation at training time).",
    )
    encoder_path: Path | None = Field(
        default=None,
        description="Hugging Face encoder folder the trainer's full trainings read item text "
        "with (loaded offline); unset = the bundled all-MiniLM-L6-v2.",
    )


class TrainerSettings(_Group, frozen=True):
    """The learning loop: feedback joins, windows, fine-tunes, shadow checks and full
    trainings (``settings.trainer``)."""

    rec_context_ttl_s: float = Field(
        default=3600.0, gt=0, description="How long a recommendation can be joined to its feedback."
    )
    rec_context_per_user: int = Field(
        default=5, ge=1, le=1000, description="Recommendations kept per user for feedback joins."
    )
    positive_rating: float = Field(
        default=4.0, description="Ratings at or above this are positives."
    )
    learn_from_behavior: bool = Field(
        default=False,
        description="Every behaviour event is also a positive training example (history -> "
        "item). In `stream-rec simulate` with the click model, fine-tunes from feedback alone "
        "lost to the feedback signals alone (HR@10 -0.011 +- 0.003) and with this on they were "
        "level (docs/model-report.md). Off by default: it costs the worker about a tenth of its "
        "throughput (docs/hot-path.md) and the trainer a fine-tune per window of behaviour.",
    )
    window_seconds: float = Field(
        default=300.0, gt=0, description="Tumbling training window length (event time of arrival)."
    )
    window_examples: int = Field(
        default=2000, ge=1, description="A window also closes once it holds this many examples."
    )
    window_min_examples: int = Field(
        default=200, ge=1, description="Closed windows smaller than this merge into the next one."
    )
    promote_tolerance: float = Field(
        default=0.0,
        ge=0,
        description="A candidate may be this much worse (NDCG@10) and still promoted.",
    )
    shadow_share: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description="Share of behaviour events a fine-tuned candidate also scores in shadow on "
        "the workers before promotion (stream_rec.serving.shadow); 0 = off: the offline gate "
        "alone promotes.",
    )
    shadow_min_events: int = Field(
        default=200,
        ge=1,
        description="Shadow events (judged by the user's next event) before the trainer decides: "
        "promote, or refuse a candidate whose online HR@10 is worse beyond noise.",
    )
    shadow_timeout_s: float = Field(
        default=600.0,
        gt=0,
        description="A candidate without enough shadow events after this long is refused (never "
        "promoted without online evidence while the shadow check is on).",
    )
    replay_examples: int = Field(
        default=5000,
        ge=0,
        description="Older examples kept and mixed into each incremental fine-tune.",
    )
    finetune_epochs: int = Field(
        default=3, ge=1, le=100, description="Epochs per incremental fine-tune."
    )
    finetune_lr: float = Field(
        default=1e-3, gt=0, le=1.0, description="Learning rate of the LoRA adapters in a fine-tune."
    )
    finetune_rank: int = Field(
        default=8,
        ge=1,
        le=256,
        description="Rank of the LoRA adapters of a fine-tune (alpha = 2 x rank).",
    )
    finetune_threads: int = Field(
        default=2,
        ge=1,
        le=256,
        description="torch CPU threads of a fine-tune (on a GPU the device does the work).",
    )
    trainer_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="Niceness the trainer process adds to itself: on cores shared with workers, "
        "serving gets the CPU first and fine-tunes take what is left (0 = same priority).",
    )
    registry_keep: int = Field(
        default=10,
        ge=0,
        description="Model versions the trainer keeps in the registry (the newest, plus the "
        "current one and its parent); older ones are deleted after each promotion. 0 = keep all.",
    )
    bootstrap_min_events: int = Field(
        default=5000,
        ge=1,
        description="With an empty registry, the trainer trains the first model from the topics "
        "once the behavior topic holds at least this many events (and the items topic at least "
        "2 items); until then the workers serve the fallback, waiting for the first model.",
    )
    retrain_every_events: int = Field(
        default=0,
        ge=0,
        description="A full retrain from the topics after this many new behaviour events since "
        "the last full training (0 = off); promoted through the fine-tunes' gate.",
    )
    retrain_every_hours: float = Field(
        default=24.0,
        ge=0,
        description="A full retrain from the topics this many hours after the last full training "
        "(0 = off); promoted through the fine-tunes' gate.",
    )
    train_epochs: int = Field(
        default=60, ge=1, le=1000, description="Most epochs of a full training (early stopping)."
    )
    train_dim: int = Field(
        default=64, ge=8, le=1024, description="Embedding size of a full training."
    )
    train_layers: int = Field(
        default=2,
        ge=1,
        le=12,
        description="Transformer blocks of the user tower in a full training.",
    )
    train_max_len: int = Field(
        default=200,
        ge=2,
        le=4096,
        description="Longest history the user tower reads (full training).",
    )
    train_threads: int = Field(
        default=0,
        ge=0,
        le=256,
        description="torch CPU threads of a full training, text encoding included (0 = one per "
        "core). Below the core count, a trainer sharing its machine with workers leaves them "
        "whole cores (the demo runs it with 1 of 2).",
    )


class ObservabilitySettings(_Group, frozen=True):
    """A worker's web/metrics server and operator pages, logging and local tooling
    (``settings.observability``)."""

    web_host: str = Field(
        default="127.0.0.1",
        description="Address the worker's web/metrics server binds (0.0.0.0 in a container).",
    )
    web_port: int = Field(
        default=6066, ge=0, le=65535, description="Faust web/metrics port of a worker."
    )
    # Read like the SASL secrets: the environment or .env here, an env file in docker compose.
    admin_token: SecretStr | None = Field(
        default=None,
        description="Operator token of the pages that show one user's data "
        "(/stream-rec/sessions/<user_id>/): they answer only requests with 'Authorization: "
        "Bearer <token>'; unset or empty = those pages are off (404). At least 16 characters "
        "of A-Z a-z 0-9 - . _ ~ + / = (e.g. `openssl rand -hex 32`). Never logged.",
    )
    metrics_interval_s: float = Field(
        default=10.0,
        gt=0,
        description="Seconds between a worker's consumer-lag updates and metrics-topic snapshots.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Log level of workers and tools."
    )
    home: Path = Field(
        default_factory=_default_home,
        description="Cache folder for Kafka jars, datasets and the local broker's data.",
    )
    kafka_version: str = Field(
        default="4.1.1", description="Apache Kafka version of the local broker."
    )
    broker_java_options: str = Field(
        default=LOCAL_BROKER_JAVA_OPTIONS,
        description="Extra JVM options of the local broker (`stream-rec broker up`, the demo, "
        "CI), split on spaces. The default compiles with C1 only: on a 2-core machine the C2 "
        "compiler's first minutes took the cores from the worker, and all ten `make demo` runs "
        "in fresh clones (which start the broker) had a p99 above 50 ms (docs/hot-path.md). "
        "Empty = the JVM's own.",
    )

    @field_validator("admin_token", mode="before")
    @classmethod
    def _check_admin_token(cls, v: object) -> object:
        raw = v.get_secret_value() if isinstance(v, SecretStr) else v
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            return None  # an empty variable leaves the pages off; it never means "no token"
        # RFC 6750's token characters: what a client can send in the header unchanged.
        allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~+/=")
        if not isinstance(raw, str) or len(raw) < 16 or not set(raw) <= allowed:
            msg = (
                "must be at least 16 characters of A-Z a-z 0-9 - . _ ~ + / = "
                "(no spaces; e.g. `openssl rand -hex 32`)"
            )
            raise ValueError(msg)
        return v


GROUP_MODELS: dict[str, type[_Group]] = {
    "kafka": KafkaSettings,
    "limits": LimitsSettings,
    "serving": ServingSettings,
    "model": ModelSettings,
    "trainer": TrainerSettings,
    "observability": ObservabilitySettings,
}
"""The groups, in the order of the reference (``docs/settings.md``): ``Settings.<group>``."""

GROUPS: dict[str, tuple[str, ...]] = {
    group: tuple(model.model_fields) for group, model in GROUP_MODELS.items()
}
"""Every setting's (flat) name, by group; the variable of ``name`` is ``STREAM_REC_<NAME>``."""

FIELD_GROUP: dict[str, str] = {name: group for group, names in GROUPS.items() for name in names}
"""The group of every setting, by its flat name: ``FIELD_GROUP["batch_size"] == "serving"``."""

if len(FIELD_GROUP) != sum(len(names) for names in GROUPS.values()):  # pragma: no cover
    msg = "a setting name is in two groups: their flat variables would collide"
    raise RuntimeError(msg)


class _FlatVariables(PydanticBaseSettingsSource):
    """The ``STREAM_REC_<NAME>`` variables of one of pydantic-settings' own sources (the
    environment, or ``.env``), each put into the group that holds the field ``<name>``:
    ``{"serving": {"batch_size": "8"}}``. The wrapped source finds and prepares each value as it
    would for a field of a flat settings class (prefix, case-insensitivity, ``_env_file``)."""

    def __init__(self, settings_cls: type[BaseSettings], source: PydanticBaseSettingsSource):
        super().__init__(settings_cls)
        self._source = source

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._source.get_field_value(field, field_name)

    def __call__(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for group, model in GROUP_MODELS.items():
            values = {}
            for name, field in model.model_fields.items():
                value, key, is_complex = self._source.get_field_value(field, name)
                value = self._source.prepare_field_value(name, field, value, is_complex)
                if value is not None:
                    values[key] = value
            if values:
                out[group] = values
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._source!r})"


class Settings(BaseSettings):
    """Every setting, in six groups (``settings.kafka.bootstrap_servers``); read from flat
    ``STREAM_REC_<NAME>`` variables. Build it with :func:`load_settings`; derive a changed copy
    with :meth:`replace`."""

    model_config = SettingsConfigDict(
        env_prefix="STREAM_REC_", env_file=".env", extra="forbid", frozen=True
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    trainer: TrainerSettings = Field(default_factory=TrainerSettings)
    observability: ObservabilitySettings = Field(default_factory=ObservabilitySettings)

    if TYPE_CHECKING:
        # Keywords are flat setting names (routed into their group by _route_flat_names),
        # whole groups, or pydantic-settings' own (_env_file=None).
        def __init__(self, **values: Any) -> None: ...

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Keywords over the environment over .env, as pydantic-settings merges them: group by
        # group and field by field (a keyword for one field keeps the variables of the others).
        # The flat sources are the only readers of variables: no STREAM_REC_KAFKA (JSON) or
        # STREAM_REC_KAFKA__* names; no secrets directory is configured.
        return (
            init_settings,
            _FlatVariables(settings_cls, env_settings),
            _FlatVariables(settings_cls, dotenv_settings),
        )

    @model_validator(mode="before")
    @classmethod
    def _route_flat_names(cls, data: Any) -> Any:
        """Flat keywords into their group: ``batch_size=8`` sets ``serving.batch_size`` over
        what the environment gave ``serving``. A name that is neither a group nor a setting
        stays and fails as an extra input."""
        if not isinstance(data, Mapping):
            return data
        out = {key: value for key, value in data.items() if key not in FIELD_GROUP}
        for name, value in data.items():
            group = FIELD_GROUP.get(name)
            if group is None:
                continue
            current = out.get(group, {})
            if isinstance(current, BaseModel):
                current = {n: getattr(current, n) for n in type(current).model_fields}
            if not isinstance(current, Mapping):
                continue  # the group itself is invalid; pydantic reports it
            out[group] = {**current, name: value}
        return out

    def replace(self, **changes: Any) -> Self:
        """A copy with some settings changed, by their flat names (``replace(top_k=5)``) or
        whole groups; validated like the original (:class:`ConfigError` as
        :func:`load_settings`), without reading the environment again."""
        current: dict[str, Any] = {group: getattr(self, group) for group in GROUP_MODELS}
        try:
            return self.model_validate({**current, **changes})
        except ValidationError as exc:
            raise ConfigError(_invalid(exc)) from None

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """As pydantic's, but ``update`` may only name groups (a flat name there would be set
        unvalidated beside the groups and never read): :meth:`replace` takes flat names."""
        flat = sorted(set(update or ()) - set(GROUP_MODELS))
        if flat:
            msg = f"Settings.model_copy(update=...) names no group: {flat}; use .replace(...)"
            raise TypeError(msg)
        return super().model_copy(update=update, deep=deep)


def _default(field: Any) -> str:
    value = field.get_default(call_default_factory=True)
    if value is None or (isinstance(value, str) and not value):
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str | Path):
        return f"`{value}`"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def settings_markdown() -> str:
    """The settings reference (``docs/settings.md``), generated from the group models: each
    group's variables with their default and description. ``python -m stream_rec.settings``
    prints it; a test keeps the file equal to it."""
    out = [
        "# Settings",
        "",
        "Generated from `stream_rec/settings.py` by `python -m stream_rec.settings > "
        "docs/settings.md` (a test fails when this file and the code differ). Every setting "
        "is read from the environment variable `STREAM_REC_<NAME>` or `.env`; an invalid value, "
        "or a `STREAM_REC_*` variable that names no setting, stops the program at start with the "
        "reason. Secrets (`SASL_PASSWORD`, `ADMIN_TOKEN`) are never logged.",
    ]
    for group, model in GROUP_MODELS.items():
        out += ["", f"## {group}", "", "| variable | default | meaning |", "|---|---|---|"]
        for name, field in model.model_fields.items():
            desc = " ".join(str(field.description).split()).replace("|", "\\|")
            out.append(f"| `STREAM_REC_{name.upper()}` | {_default(field)} | {desc} |")
    return "\n".join(out) + "\n"


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """One line per ``STREAM_REC_*`` variable of ``environ`` that names no setting of any group,
    with the closest setting's name (a misspelt variable would otherwise be ignored in
    silence)."""
    names = [f"STREAM_REC_{name.upper()}" for name in FIELD_GROUP]
    lines = []
    for key in sorted(environ):
        upper = key.upper()  # pydantic-settings reads the names case-insensitively
        if upper.startswith("STREAM_REC_") and upper not in names:
            close = difflib.get_close_matches(upper, names, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else ""
            lines.append(f"  {key}: not a setting{hint}")
    return lines


def _error_line(err: Any) -> str:
    """One validation error as the line :func:`load_settings` reports: a field's error under its
    flat variable (``STREAM_REC_BATCH_SIZE``, not ``serving.batch_size``), a check across the
    fields of a group under ``settings``, an unknown keyword under its own name."""
    loc = tuple(str(p) for p in err["loc"])
    field_loc = loc[1:] if loc and loc[0] in GROUP_MODELS else loc
    if err["type"] == "extra_forbidden":
        close = difflib.get_close_matches(loc[-1], list(FIELD_GROUP), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close and close[0] != loc[-1] else ""
        return f"  {'.'.join(loc)}: not a setting{hint}"
    env = f"STREAM_REC_{'.'.join(field_loc).upper()}" if field_loc else "settings"
    return f"  {env}: {err['msg']}"


def load_settings(**overrides: object) -> Settings:
    """Build the settings from the environment and ``.env``, with keyword overrides by flat
    name (``load_settings(batch_size=8)``), turning validation errors into one readable
    :class:`ConfigError`; a ``STREAM_REC_*`` environment variable or a keyword that names no
    setting is one too."""
    unknown = unknown_variables(os.environ)
    if unknown:
        msg = "unknown configuration variables (every setting: docs/settings.md):\n" + "\n".join(
            unknown
        )
        raise ConfigError(msg)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_invalid(exc)) from None


def _invalid(exc: ValidationError) -> str:
    return "invalid configuration:\n" + "\n".join(_error_line(err) for err in exc.errors())


if __name__ == "__main__":
    print(settings_markdown(), end="")
