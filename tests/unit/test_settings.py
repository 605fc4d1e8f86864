"""The one settings object (stream_rec.settings): environment, validation, secrets."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream_rec.settings import ConfigError, Settings, load_settings

PASSWORD = "s3cr3t-Pa55w0rd-xyz"  # noqa: S105 - a test value, checked never to leak


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No STREAM_REC_* from the outer environment and no stray .env file."""
    for name in list(os.environ):
        if name.startswith("STREAM_REC_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    yield


def _sasl_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_REC_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("STREAM_REC_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("STREAM_REC_SASL_USERNAME", "alice")
    monkeypatch.setenv("STREAM_REC_SASL_PASSWORD", PASSWORD)


def test_defaults() -> None:
    s = load_settings()
    assert isinstance(s, Settings)
    assert s.bootstrap_servers == "127.0.0.1:19092"
    assert s.bootstrap_list == ["127.0.0.1:19092"]
    assert s.topic_prefix == "stream-rec."
    assert s.partitions == 4
    assert s.security_protocol == "PLAINTEXT"
    assert s.sasl_password is None
    assert s.output_codec == "json"
    assert s.table_store == "rocksdb://"
    assert s.kafka_client_kwargs() == {"security_protocol": "PLAINTEXT"}


def test_environment_with_prefix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STREAM_REC_BOOTSTRAP_SERVERS", "kafka-1:9092, kafka-2:9093")
    monkeypatch.setenv("STREAM_REC_TOPIC_PREFIX", "prod_recs-")
    monkeypatch.setenv("STREAM_REC_PARTITIONS", "12")
    monkeypatch.setenv("STREAM_REC_OUTPUT_CODEC", "msgpack")
    monkeypatch.setenv("STREAM_REC_TABLE_STORE", "memory://")
    monkeypatch.setenv("STREAM_REC_TOP_K", "25")
    monkeypatch.setenv("STREAM_REC_BATCH_LINGER_MS", "2.5")
    monkeypatch.setenv("STREAM_REC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("STREAM_REC_MODEL_PATH", str(tmp_path / "models"))
    s = load_settings()
    assert s.bootstrap_list == ["kafka-1:9092", "kafka-2:9093"]
    assert s.topic_prefix == "prod_recs-"
    assert s.partitions == 12
    assert s.output_codec == "msgpack"
    assert s.table_store == "memory://"
    assert s.top_k == 25
    assert s.batch_linger_ms == 2.5
    assert s.home == tmp_path / "home"
    assert s.model_path == tmp_path / "models"


def test_unprefixed_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARTITIONS", "99")
    monkeypatch.setenv("BOOTSTRAP_SERVERS", "elsewhere:1")
    s = load_settings()
    assert s.partitions == 4
    assert s.bootstrap_servers == "127.0.0.1:19092"


def test_overrides_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_REC_PARTITIONS", "8")
    assert load_settings(partitions=3).partitions == 3


def test_settings_are_frozen() -> None:
    s = load_settings()
    with pytest.raises(ValueError, match="frozen"):
        s.partitions = 7  # type: ignore[misc]


@pytest.mark.parametrize(
    "value",
    ["localhost", "host:", ":9092", "host:port", "host:0", "host:65536", "a:1,b", "a:1,,b:2"],
)
def test_invalid_bootstrap(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("STREAM_REC_BOOTSTRAP_SERVERS", value)
    with pytest.raises(ConfigError, match="STREAM_REC_BOOTSTRAP_SERVERS"):
        load_settings()


@pytest.mark.parametrize("value", ["127.0.0.1:1", "h:65535", "[::1]:9092", "a:1,b:2,c:3"])
def test_valid_bootstrap_edge_cases(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("STREAM_REC_BOOTSTRAP_SERVERS", value)
    assert load_settings().bootstrap_servers == value


@pytest.mark.parametrize("value", ["bad prefix", "a/b", "emoji-\u2603", "x*", "topic:"])
def test_invalid_topic_prefix(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("STREAM_REC_TOPIC_PREFIX", value)
    with pytest.raises(ConfigError, match="STREAM_REC_TOPIC_PREFIX"):
        load_settings()


@pytest.mark.parametrize("value", ["0", "-1", "1025", "four", "1.5"])
def test_invalid_partitions(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("STREAM_REC_PARTITIONS", value)
    with pytest.raises(ConfigError, match="STREAM_REC_PARTITIONS"):
        load_settings()


def test_invalid_enum_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_REC_OUTPUT_CODEC", "avro")
    with pytest.raises(ConfigError, match="STREAM_REC_OUTPUT_CODEC"):
        load_settings()


def test_every_invalid_variable_is_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_REC_PARTITIONS", "0")
    monkeypatch.setenv("STREAM_REC_TOPIC_PREFIX", "a b")
    with pytest.raises(ConfigError) as ei:
        load_settings()
    msg = str(ei.value)
    assert msg.startswith("invalid configuration:")
    assert "STREAM_REC_PARTITIONS" in msg and "STREAM_REC_TOPIC_PREFIX" in msg


def test_config_error_is_not_a_validation_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_REC_PARTITIONS", "0")
    with pytest.raises(ConfigError) as ei:
        load_settings()
    assert ei.value.__cause__ is None  # raised "from None": one readable message


@pytest.mark.parametrize("value", ["redis://localhost", "rocksdb:", "", "memory:/"])
def test_invalid_table_store(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("STREAM_REC_TABLE_STORE", value)
    with pytest.raises(ConfigError, match="(?i)table_store") as ei:
        load_settings()
    assert "rocksdb:// or memory://" in str(ei.value)


def test_invalid_table_store_names_the_environment_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Field errors say STREAM_REC_<FIELD>; this cross-field check reports under "settings".
    monkeypatch.setenv("STREAM_REC_TABLE_STORE", "redis://localhost")
    with pytest.raises(ConfigError, match="STREAM_REC_TABLE_STORE"):
        load_settings()


@pytest.mark.parametrize("missing", ["SASL_MECHANISM", "SASL_USERNAME", "SASL_PASSWORD"])
@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_sasl_without_credentials(
    monkeypatch: pytest.MonkeyPatch, protocol: str, missing: str
) -> None:
    _sasl_env(monkeypatch)
    monkeypatch.setenv("STREAM_REC_SECURITY_PROTOCOL", protocol)
    monkeypatch.delenv(f"STREAM_REC_{missing}")
    with pytest.raises(ConfigError) as ei:
        load_settings()
    msg = str(ei.value)
    assert missing.lower() in msg.lower()
    assert PASSWORD not in msg


def test_sasl_without_password_names_the_environment_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _sasl_env(monkeypatch)
    monkeypatch.delenv("STREAM_REC_SASL_PASSWORD")
    with pytest.raises(ConfigError, match="STREAM_REC_SASL_PASSWORD"):
        load_settings()


def test_plaintext_does_not_need_sasl_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_REC_SASL_USERNAME", "alice")
    s = load_settings()
    assert s.kafka_client_kwargs() == {"security_protocol": "PLAINTEXT"}


def test_sasl_plaintext_client_kwargs_include_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    _sasl_env(monkeypatch)
    s = load_settings()
    assert s.kafka_client_kwargs() == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "alice",
        "sasl_plain_password": PASSWORD,
    }


def test_ssl_client_kwargs_have_a_context(monkeypatch: pytest.MonkeyPatch) -> None:
    import ssl

    monkeypatch.setenv("STREAM_REC_SECURITY_PROTOCOL", "SSL")
    kw = load_settings().kafka_client_kwargs()
    assert kw["security_protocol"] == "SSL"
    assert isinstance(kw["ssl_context"], ssl.SSLContext)
    assert "sasl_plain_password" not in kw


def test_password_never_in_plain_text(monkeypatch: pytest.MonkeyPatch) -> None:
    _sasl_env(monkeypatch)
    s = load_settings()
    assert s.sasl_password is not None
    assert s.sasl_password.get_secret_value() == PASSWORD
    for text in (repr(s), str(s), s.model_dump_json(), repr(s.model_dump()), f"{s}"):
        assert PASSWORD not in text
    dumped = json.loads(s.model_dump_json())
    assert dumped["sasl_password"] == "*" * 10  # SecretStr mask
    assert dumped["sasl_username"] == "alice"


def test_env_file_is_read_from_the_working_directory(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("STREAM_REC_PARTITIONS=6\nSTREAM_REC_TOP_K=7\n")
    s = load_settings()
    assert (s.partitions, s.top_k) == (6, 7)


def test_a_misspelt_variable_fails_at_start_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from stream_rec.settings import ConfigError, load_settings

    monkeypatch.setenv("STREAM_REC_BATCH_SIZ", "8")
    monkeypatch.setenv("stream_rec_top_kk", "5")
    with pytest.raises(ConfigError) as err:
        load_settings()
    text = str(err.value)
    assert "STREAM_REC_BATCH_SIZ: not a setting; did you mean STREAM_REC_BATCH_SIZE?" in text
    assert "stream_rec_top_kk: not a setting; did you mean STREAM_REC_TOP_K?" in text
    monkeypatch.delenv("STREAM_REC_BATCH_SIZ")
    monkeypatch.delenv("stream_rec_top_kk")
    monkeypatch.setenv("STREAM_REC_BATCH_SIZE", "8")  # the real name is read, not refused
    assert load_settings().batch_size == 8
