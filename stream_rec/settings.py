"""One settings object for the whole pipeline; the only place that reads the environment.

Every worker, the trainer, the CLI and the benchmarks take a :class:`Settings`. Values come from
``STREAM_REC_*`` environment variables (or a ``.env`` file), so ``deploy/`` and
``docker-compose.yml`` configure the system through those variables alone.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Codec = Literal["json", "msgpack"]


def _default_home() -> Path:
    return Path.home() / ".cache" / "stream-rec"


class ConfigError(RuntimeError):
    """Raised at start-up when the configuration is invalid; the message says what to fix."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="STREAM_REC_", env_file=".env", extra="ignore", frozen=True
    )

    # --- Kafka -----------------------------------------------------------------------------
    bootstrap_servers: str = Field(
        "127.0.0.1:19092", description="Comma-separated Kafka bootstrap servers (host:port)."
    )
    topic_prefix: str = Field("stream-rec.", description="Prefix of every topic this system uses.")
    partitions: int = Field(4, ge=1, le=1024, description="Partitions of the public topics.")
    replication_factor: int = Field(1, ge=1, description="Replication factor of created topics.")
    app_id: str = Field(
        "stream-rec", description="Faust application id = Kafka consumer group of the workers."
    )
    static_membership: bool = Field(
        True,
        description="Join the consumer group as a static member (Kafka group.instance.id, "
        "KIP-345) named by STREAM_REC_WORKER_ID: a worker restarted within the session timeout "
        "gets its partitions back at once, without a rebalance or waiting for its old "
        "membership to expire. A stopped worker's partitions move to the others only after the "
        "session timeout (10 s). Off = dynamic membership.",
    )
    worker_id: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="This worker's stable name in the consumer group (its group.instance.id): "
        "the same across restarts of one worker, different for every worker that runs at the "
        "same time (a live worker that another one with its name joins after is fenced and "
        "stops). Unset = the host name and a digest of STREAM_REC_DATA_DIR.",
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol for every client."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism when the protocol is SASL_*."
    )
    sasl_username: str | None = Field(None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(None, description="SASL password (never logged).")
    # Read like the SASL secrets: the environment or .env here, an env file in docker compose.
    admin_token: SecretStr | None = Field(
        None,
        description="Operator token of the pages that show one user's data "
        "(/stream-rec/sessions/<user_id>/): they answer only requests with 'Authorization: "
        "Bearer <token>'; unset or empty = those pages are off (404). At least 16 characters "
        "of A-Z a-z 0-9 - . _ ~ + / = (e.g. `openssl rand -hex 32`). Never logged.",
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

    ssl_cafile: Path | None = Field(None, description="CA bundle to verify the brokers (TLS).")
    ssl_certfile: Path | None = Field(None, description="Client certificate for mutual TLS.")
    ssl_keyfile: Path | None = Field(None, description="Client private key for mutual TLS.")

    # --- codecs and limits -------------------------------------------------------------------
    output_codec: Codec = Field(
        "json", description="Codec of recommendations, dead letters and metrics."
    )
    max_payload_bytes: int = Field(
        64 * 1024, ge=256, description="Input messages larger than this go to dead letters."
    )
    max_text_chars: int = Field(
        4096, ge=16, description="Longest accepted string field of an input event."
    )
    max_future_skew_s: float = Field(
        86400.0, ge=0, description="Events with ts further than this in the future are invalid."
    )

    # --- serving -------------------------------------------------------------------------------
    batch_size: int = Field(64, ge=1, le=8192, description="Largest scoring micro-batch.")
    batch_linger_ms: float = Field(
        5.0,
        ge=0,
        description="Longest wait of a micro-batch for more events, from its first one (see "
        "BATCH_LINGER_MODE).",
    )
    batch_linger_mode: Literal["adaptive", "periodic"] = Field(
        "adaptive",
        description="adaptive: a micro-batch waits for more events only when the arrival rate "
        "predicts another within BATCH_LINGER_MS, so a lone event is scored as soon as it is "
        "fetched and an idle worker does not wake up; periodic: Faust's take_events, which "
        "flushes every BATCH_LINGER_MS (kept to compare in `stream-rec bench pipeline "
        "--variant`; docs/hot-path.md).",
    )
    score_inline_ms: float = Field(
        2.0,
        ge=0,
        le=1000,
        description="Micro-batches predicted to score within this many ms score on the event "
        "loop; larger ones in the scoring thread (0 = always the thread).",
    )
    ort_threads: int = Field(
        1,
        ge=0,
        le=256,
        description="ONNX Runtime intra-op threads per serving session (0 = one per core).",
    )
    top_k: int = Field(10, ge=1, le=1000, description="Items per recommendation.")
    session_length: int = Field(50, ge=1, le=10000, description="Recent items kept per user.")
    new_item_offset: float | None = Field(
        None,
        ge=-100.0,
        le=100.0,
        description="Score offset for items without interactions; unset = the version's own "
        "(fitted on validation at training time).",
    )
    table_store: str = Field(
        "rocksdb://", description="Faust table store URL: rocksdb:// (durable) or memory://."
    )
    rocksdb_memory_mb: int = Field(
        32,
        ge=4,
        le=65536,
        description="Memory of all RocksDB tables of a worker together (block cache, "
        "index/filter blocks and memtables share it).",
    )
    data_dir: Path = Field(
        Path("var/stream-rec"),
        description="A worker's tables (RocksDB): one folder per worker, locked while it runs "
        "(a second worker on it fails at start).",
    )
    web_port: int = Field(6066, ge=0, le=65535, description="Faust web/metrics port of a worker.")
    web_host: str = Field(
        "127.0.0.1",
        description="Address the worker's web/metrics server binds (0.0.0.0 in a container).",
    )
    model_path: Path | None = Field(
        None,
        description="Model registry folder or one exported model folder. An empty folder is "
        "fine (the fallback serves until the trainer's first model); a folder that does not "
        "exist or a current version that fails its sha256 check stops the worker at start "
        "(exit 2). Unset = the fallback scorer only.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Inference/training device; auto = CUDA when present."
    )
    precision: Literal["fp32", "int8", "fp16", "auto"] = Field(
        "fp32",
        description="Precision of the served ONNX model: int8 = the version's quantised files "
        "(CPU only), fp16 = CUDA only, auto = fp16 on CUDA else fp32; a choice the device "
        "cannot run serves fp32.",
    )
    metrics_interval_s: float = Field(
        10.0,
        gt=0,
        description="Seconds between a worker's consumer-lag updates and metrics-topic snapshots.",
    )
    stall_timeout_s: float = Field(
        30.0,
        ge=0,
        description="An assigned input partition with messages waiting whose committed offset "
        "has not moved for this long is logged, counted and read again from that offset "
        "(stream_rec.agents.watchdog); 0 = off.",
    )
    shutdown_timeout_s: float = Field(
        30.0,
        gt=0,
        description="A stopping worker that has not exited after this long (e.g. the broker is "
        "unreachable) exits at once; uncommitted events are re-processed by the next owner.",
    )

    # --- re-ranking (stream_rec.serving.rerank) ----------------------------------------------
    diversity: float = Field(
        0.4,
        ge=0,
        le=1,
        description="Maximal marginal relevance over the scorer's item vectors: each slot "
        "takes the candidate maximising (1 - d) x relevance - d x its largest cosine to the "
        "items already listed; 0 = off.",
    )
    long_tail: float = Field(
        0.2,
        ge=0,
        le=10,
        description="Long-tail exposure: a candidate's relevance (scaled to [0, 1] in its pool) "
        "loses this when the item is in the head (the 20 % most popular items of the "
        "catalogue); 0 = off.",
    )
    rerank_pool: int = Field(
        50,
        ge=1,
        le=1000,
        description="Candidates (best by score) the re-ranker chooses the top-k from.",
    )

    # --- feedback signals (per user, applied at once) ------------------------------------------
    feedback_signals: bool = Field(
        True,
        description="Adjust a user's next recommendations from that user's feedback the moment "
        "it arrives (stream_rec.core.signals): liked items up, ignored items down, dismissed "
        "items out. Off = recommendations depend on behaviour and the model alone.",
    )
    feedback_boost: float = Field(
        2.0, ge=0, le=100, description="Liked, not yet consumed items: + this x score spread."
    )
    impression_discount: float = Field(
        0.25,
        ge=0,
        le=100,
        description="Per time an item was shown without a click: - this x score spread.",
    )
    feedback_signal_ttl_s: float = Field(
        3600.0, gt=0, description="How long one feedback signal lasts after its newest event."
    )
    feedback_signal_items: int = Field(
        50,
        ge=1,
        le=10000,
        description="Items kept per user and signal kind (the newest; they are part of the "
        "session, rewritten on every behaviour event).",
    )

    # --- learning loop -----------------------------------------------------------------------
    rec_context_ttl_s: float = Field(
        3600.0, gt=0, description="How long a recommendation can be joined to its feedback."
    )
    rec_context_per_user: int = Field(
        5, ge=1, le=1000, description="Recommendations kept per user for feedback joins."
    )
    positive_rating: float = Field(4.0, description="Ratings at or above this are positives.")
    window_seconds: float = Field(
        300.0, gt=0, description="Tumbling training window length (event time of arrival)."
    )
    window_examples: int = Field(
        2000, ge=1, description="A window also closes once it holds this many examples."
    )
    window_min_examples: int = Field(
        200, ge=1, description="Closed windows smaller than this merge into the next one."
    )
    promote_tolerance: float = Field(
        0.0, ge=0, description="A candidate may be this much worse (NDCG@10) and still promoted."
    )
    shadow_share: float = Field(
        0.2,
        ge=0,
        le=1,
        description="Share of behaviour events a fine-tuned candidate also scores in shadow on "
        "the workers before promotion (stream_rec.serving.shadow); 0 = off: the offline gate "
        "alone promotes.",
    )
    shadow_min_events: int = Field(
        200,
        ge=1,
        description="Shadow events (judged by the user's next event) before the trainer decides: "
        "promote, or refuse a candidate whose online HR@10 is worse beyond noise.",
    )
    shadow_timeout_s: float = Field(
        600.0,
        gt=0,
        description="A candidate without enough shadow events after this long is refused (never "
        "promoted without online evidence while the shadow check is on).",
    )
    replay_examples: int = Field(
        5000, ge=0, description="Older examples kept and mixed into each incremental fine-tune."
    )
    learn_from_behavior: bool = Field(
        False,
        description="Every behaviour event is also a positive training example (history -> "
        "item). In `stream-rec simulate` with the click model, fine-tunes from feedback alone "
        "lost to the feedback signals alone (HR@10 -0.011 +- 0.003) and with this on they were "
        "level (docs/model-report.md). Off by default: it costs the worker about a tenth of its "
        "throughput (docs/hot-path.md) and the trainer a fine-tune per window of behaviour.",
    )
    finetune_epochs: int = Field(3, ge=1, le=100, description="Epochs per incremental fine-tune.")
    trainer_nice: int = Field(
        10,
        ge=0,
        le=19,
        description="Niceness the trainer process adds to itself: on cores shared with workers, "
        "serving gets the CPU first and fine-tunes take what is left (0 = same priority).",
    )
    registry_keep: int = Field(
        10,
        ge=0,
        description="Model versions the trainer keeps in the registry (the newest, plus the "
        "current one and its parent); older ones are deleted after each promotion. 0 = keep all.",
    )
    finetune_lr: float = Field(
        1e-3, gt=0, le=1.0, description="Learning rate of the LoRA adapters in a fine-tune."
    )
    finetune_rank: int = Field(
        8, ge=1, le=256, description="Rank of the LoRA adapters of a fine-tune (alpha = 2 x rank)."
    )
    finetune_threads: int = Field(
        2,
        ge=1,
        le=256,
        description="torch CPU threads of a fine-tune (on a GPU the device does the work).",
    )

    # --- full training from the topics (bootstrap, periodic retrain) ---------------------------
    bootstrap_min_events: int = Field(
        5000,
        ge=1,
        description="With an empty registry, the trainer trains the first model from the topics "
        "once the behavior topic holds at least this many events (and the items topic at least "
        "2 items); until then the workers serve the fallback, waiting for the first model.",
    )
    retrain_every_events: int = Field(
        0,
        ge=0,
        description="A full retrain from the topics after this many new behaviour events since "
        "the last full training (0 = off); promoted through the fine-tunes' gate.",
    )
    retrain_every_hours: float = Field(
        24.0,
        ge=0,
        description="A full retrain from the topics this many hours after the last full training "
        "(0 = off); promoted through the fine-tunes' gate.",
    )
    encoder_path: Path | None = Field(
        None,
        description="Hugging Face encoder folder the trainer's full trainings read item text "
        "with (loaded offline); unset = the bundled all-MiniLM-L6-v2.",
    )
    train_epochs: int = Field(
        60, ge=1, le=1000, description="Most epochs of a full training (early stopping)."
    )
    train_dim: int = Field(64, ge=8, le=1024, description="Embedding size of a full training.")
    train_layers: int = Field(
        2, ge=1, le=12, description="Transformer blocks of the user tower in a full training."
    )
    train_max_len: int = Field(
        200, ge=2, le=4096, description="Longest history the user tower reads (full training)."
    )
    train_threads: int = Field(
        0,
        ge=0,
        le=256,
        description="torch CPU threads of a full training, text encoding included (0 = one per "
        "core). Below the core count, a trainer sharing its machine with workers leaves them "
        "whole cores (the demo runs it with 1 of 2).",
    )

    # --- local tooling -------------------------------------------------------------------------
    home: Path = Field(
        default_factory=_default_home,
        description="Cache folder for Kafka jars, datasets and the local broker's data.",
    )
    kafka_version: str = Field("4.1.1", description="Apache Kafka version of the local broker.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log level of workers and tools."
    )

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

    @field_validator("table_store")
    @classmethod
    def _check_store(cls, v: str) -> str:
        if not v.startswith(("rocksdb://", "memory://")):
            msg = f"{v!r} must start with rocksdb:// or memory://"
            raise ValueError(msg)
        return v

    @model_validator(mode="after")
    def _check_security(self) -> Settings:
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


GROUPS: dict[str, tuple[str, ...]] = {
    "kafka": (
        "bootstrap_servers", "topic_prefix", "partitions", "replication_factor", "app_id",
        "static_membership", "worker_id", "security_protocol", "sasl_mechanism",
        "sasl_username", "sasl_password", "ssl_cafile", "ssl_certfile", "ssl_keyfile",
    ),
    "limits": ("output_codec", "max_payload_bytes", "max_text_chars", "max_future_skew_s"),
    "serving": (
        "batch_size", "batch_linger_ms", "batch_linger_mode", "score_inline_ms", "top_k",
        "session_length",
        "table_store", "rocksdb_memory_mb", "data_dir", "stall_timeout_s", "shutdown_timeout_s",
        "diversity", "long_tail", "rerank_pool", "feedback_signals", "feedback_boost",
        "impression_discount", "feedback_signal_ttl_s", "feedback_signal_items",
    ),
    "model": (
        "model_path", "device", "precision", "ort_threads", "new_item_offset", "encoder_path",
    ),
    "trainer": (
        "rec_context_ttl_s", "rec_context_per_user", "positive_rating", "learn_from_behavior",
        "window_seconds", "window_examples", "window_min_examples", "promote_tolerance",
        "shadow_share", "shadow_min_events", "shadow_timeout_s", "replay_examples",
        "finetune_epochs", "finetune_lr", "finetune_rank", "finetune_threads", "trainer_nice",
        "registry_keep", "bootstrap_min_events", "retrain_every_events", "retrain_every_hours",
        "train_epochs", "train_dim", "train_layers", "train_max_len", "train_threads",
    ),
    "observability": (
        "web_host", "web_port", "admin_token", "metrics_interval_s", "log_level", "home",
        "kafka_version",
    ),
}  # fmt: skip
"""Every setting in one group, for the reference (``docs/settings.md``); the variables stay
flat (``STREAM_REC_<NAME>``) and so does the object (``settings.<name>``)."""


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
    """The settings reference (``docs/settings.md``), generated from the fields: each group's
    variables with their default and description. ``python -m stream_rec.settings`` prints it;
    a test keeps the file equal to it."""
    fields = Settings.model_fields
    out = [
        "# Settings",
        "",
        "Generated from `stream_rec/settings.py` by `python -m stream_rec.settings > "
        "docs/settings.md` (a test fails when this file and the code differ). Every setting "
        "is read from the environment variable `STREAM_REC_<NAME>` or `.env`; an invalid value, "
        "or a `STREAM_REC_*` variable that names no setting, stops the program at start with the "
        "reason. Secrets (`SASL_PASSWORD`, `ADMIN_TOKEN`) are never logged.",
    ]
    for group, names in GROUPS.items():
        out += ["", f"## {group}", "", "| variable | default | meaning |", "|---|---|---|"]
        for name in names:
            desc = " ".join(str(fields[name].description).split()).replace("|", "\\|")
            out.append(f"| `STREAM_REC_{name.upper()}` | {_default(fields[name])} | {desc} |")
    return "\n".join(out) + "\n"


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """One line per ``STREAM_REC_*`` variable of ``environ`` that names no setting, with the
    closest setting's name (a misspelt variable would otherwise be ignored in silence)."""
    names = [f"STREAM_REC_{name.upper()}" for name in Settings.model_fields]
    lines = []
    for key in sorted(environ):
        upper = key.upper()  # pydantic-settings reads the names case-insensitively
        if upper.startswith("STREAM_REC_") and upper not in names:
            close = difflib.get_close_matches(upper, names, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else ""
            lines.append(f"  {key}: not a setting{hint}")
    return lines


def load_settings(**overrides: object) -> Settings:
    """Build the settings, turning validation errors into one readable :class:`ConfigError`;
    a ``STREAM_REC_*`` environment variable that names no setting is one too."""
    unknown = unknown_variables(os.environ)
    if unknown:
        msg = "unknown configuration variables (every setting: docs/settings.md):\n" + "\n".join(
            unknown
        )
        raise ConfigError(msg)
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "settings"
            env = f"STREAM_REC_{loc.upper()}" if err["loc"] else "settings"
            lines.append(f"  {env}: {err['msg']}")
        msg = "invalid configuration:\n" + "\n".join(lines)
        raise ConfigError(msg) from None


if __name__ == "__main__":
    print(settings_markdown(), end="")
