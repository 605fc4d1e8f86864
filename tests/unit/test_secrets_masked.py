"""The SASL password never leaves the settings object: not in its repr, not in metrics, not in
a metrics snapshot, not in the status document, not in the logs of building the Faust app."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from stream_rec.agents.telemetry import build_snapshot, worker_id
from stream_rec.metrics import Metrics
from stream_rec.ops.status import RawCluster, build_status
from stream_rec.schemas import encode
from stream_rec.settings import Settings, load_settings

SECRET = "s3cr3t-Pa55word-do-not-leak"  # noqa: S105 - the value the test hunts for


@pytest.fixture
def sasl_settings(tmp_path: Path) -> Settings:
    return load_settings(
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="stream-rec-svc",
        sasl_password=SECRET,
        table_store="memory://",
        data_dir=tmp_path / "data",
        topic_prefix="sec.",
        app_id="sec",
    )


def test_settings_mask_the_password(sasl_settings: Settings) -> None:
    assert sasl_settings.kafka.sasl_password is not None
    assert sasl_settings.kafka.sasl_password.get_secret_value() == SECRET  # it is really there
    for text in (
        repr(sasl_settings),
        str(sasl_settings),
        sasl_settings.model_dump_json(),
        str(sasl_settings.model_dump()),
    ):
        assert SECRET not in text


def test_snapshot_has_no_secret(sasl_settings: Settings) -> None:
    m = Metrics()
    m.events_in.labels(topic="behavior", event="view").inc(3)
    m.dead_letters.labels(topic="behavior", reason="undecodable").inc()
    m.recommendations.inc(3)
    m.batch_size.observe(3)
    m.consumer_lag.labels(topic="behavior", partition="0").set(7)
    snap = build_snapshot(
        m.registry,
        worker=worker_id(sasl_settings),
        ts=1.0,
        model_version="v1",
        catalog_size=5,
        lag={("behavior", 0): 7},
    )
    assert snap["events_in"] == {"behavior": {"view": 3}}
    assert snap["consumer_lag"] == {"behavior": {"0": 7}}
    for codec in ("json", "msgpack"):
        assert SECRET.encode() not in encode(snap, codec)
    assert SECRET not in json.dumps(snap)
    assert SECRET.encode() not in generate_latest(m.registry)


def test_status_document_has_no_secret(sasl_settings: Settings) -> None:
    m = Metrics()
    m.recommendations.inc()
    update = json.dumps({"version": "v2", "metrics": {"ndcg": 1}}).encode()
    snap = build_snapshot(
        m.registry, worker="h:1", ts=99.0, model_version="v2", catalog_size=4, lag={}
    )
    p = sasl_settings.kafka.topic_prefix
    raw = RawCluster(
        partitions={f"{p}behavior": [0, 1], f"{p}dead-letters": [0], f"{p}metrics": [0]},
        ends_before={(f"{p}behavior", 0): 5, (f"{p}behavior", 1): 0},
        ends={
            (f"{p}behavior", 0): 10,
            (f"{p}behavior", 1): 2,
            (f"{p}dead-letters", 0): 3,
            (f"{p}metrics", 0): 1,
        },
        starts={},
        committed={(f"{p}behavior", 0): 8},
        elapsed_s=1.0,
        metrics_messages=[
            (b"h:1", encode(snap), 0),
            (b"trainer", encode({"kind": "training_result", "outcome": "promoted"}), 1),
        ],
        model_updates=[(b"current", update, 4)],
    )
    doc = build_status(sasl_settings, raw, now=100.0)
    assert doc["topics"][f"{p}behavior"]["msgs_per_s"] == 7.0
    assert doc["dead_letters"] == 3
    lag = {(r["topic"], r["partition"]): r["lag"] for r in doc["consumer_group"]["partitions"]}
    assert lag == {(f"{p}behavior", 0): 2, (f"{p}behavior", 1): 2}
    assert doc["model_version"] == "v2"
    assert doc["workers"]["h:1"]["age_s"] == 1.0
    assert doc["last_training"]["version"] == "v2"
    assert set(doc["workers"]) == {"h:1"}  # the trainer's result is not a worker
    assert doc["last_training_run"]["outcome"] == "promoted"
    assert SECRET not in json.dumps(doc, default=str)


def test_creating_the_app_logs_no_secret(
    sasl_settings: Settings, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    from stream_rec.app import create_app

    caplog.set_level(logging.DEBUG)
    pipeline = create_app(sasl_settings)
    try:
        creds = pipeline.app.conf.broker_credentials
        assert creds is not None  # the password did reach the Kafka client configuration
        assert SECRET not in repr(creds)
        logging.getLogger("stream_rec.test").info("settings: %s / %r", sasl_settings, sasl_settings)
        assert SECRET not in caplog.text
        assert all(SECRET not in r.getMessage() for r in caplog.records)
        out, err = capfd.readouterr()
        assert SECRET not in out + err
        assert SECRET.encode() not in generate_latest(pipeline.metrics.registry)
    finally:
        pipeline.executor.shutdown(wait=False)
