"""The one settings object (stream_rec.settings): environment, validation, secrets, and its
groups read from flat variables and flat keywords."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream_rec.settings import (
    FIELD_GROUP,
    GROUP_MODELS,
    ConfigError,
    KafkaSettings,
    ServingSettings,
    Settings,
    load_settings,
)

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
    assert s.kafka.bootstrap_servers == "127.0.0.1:19092"
    assert s.kafka.bootstrap_list == ["127.0.0.1:19092"]
    assert s.kafka.topic_prefix == "stream-rec."
    assert s.kafka.partitions == 4
    assert s.kafka.security_protocol == "PLAINTEXT"
    assert s.kafka.sasl_password is None
    assert s.limits.output_codec == "json"
    assert s.serving.table_store == "rocksdb://"
    assert s.kafka.kafka_client_kwargs() == {"security_protocol": "PLAINTEXT"}


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
    assert s.kafka.bootstrap_list == ["kafka-1:9092", "kafka-2:9093"]
    assert s.kafka.topic_prefix == "prod_recs-"
    assert s.kafka.partitions == 12
    assert s.limits.output_codec == "msgpack"
    assert s.serving.table_store == "memory://"
    assert s.serving.top_k == 25
    assert s.serving.batch_linger_ms == 2.5
    assert s.observability.home == tmp_path / "home"
    assert s.model.model_path == tmp_path / "models"


def test_unprefixed_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARTITIONS", "99")
    monkeypatch.setenv("BOOTSTRAP_SERVERS", "elsewhere:1")
    s = load_settings()
    assert s.kafka.partitions == 4
    assert s.kafka.bootstrap_servers == "127.0.0.1:19092"


def test_overrides_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_REC_PARTITIONS", "8")
    assert load_settings(partitions=3).kafka.partitions == 3


def test_settings_are_frozen() -> None:
    s = load_settings()
    with pytest.raises(ValueError, match="frozen"):
        s.kafka.partitions = 7  # type: ignore[misc]
    with pytest.raises(ValueError, match="frozen"):
        s.kafka = s.kafka


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
    assert load_settings().kafka.bootstrap_servers == value


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
    assert s.kafka.kafka_client_kwargs() == {"security_protocol": "PLAINTEXT"}


def test_sasl_plaintext_client_kwargs_include_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    _sasl_env(monkeypatch)
    s = load_settings()
    assert s.kafka.kafka_client_kwargs() == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "alice",
        "sasl_plain_password": PASSWORD,
    }


def test_ssl_client_kwargs_have_a_context(monkeypatch: pytest.MonkeyPatch) -> None:
    import ssl

    monkeypatch.setenv("STREAM_REC_SECURITY_PROTOCOL", "SSL")
    kw = load_settings().kafka.kafka_client_kwargs()
    assert kw["security_protocol"] == "SSL"
    assert isinstance(kw["ssl_context"], ssl.SSLContext)
    assert "sasl_plain_password" not in kw


def test_password_never_in_plain_text(monkeypatch: pytest.MonkeyPatch) -> None:
    _sasl_env(monkeypatch)
    s = load_settings()
    assert s.kafka.sasl_password is not None
    assert s.kafka.sasl_password.get_secret_value() == PASSWORD
    for text in (repr(s), str(s), s.model_dump_json(), repr(s.model_dump()), f"{s}"):
        assert PASSWORD not in text
    dumped = json.loads(s.model_dump_json())
    assert dumped["kafka"]["sasl_password"] == "*" * 10  # SecretStr mask
    assert dumped["kafka"]["sasl_username"] == "alice"


def test_env_file_is_read_from_the_working_directory(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("STREAM_REC_PARTITIONS=6\nSTREAM_REC_TOP_K=7\n")
    s = load_settings()
    assert (s.kafka.partitions, s.serving.top_k) == (6, 7)


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
    assert load_settings().serving.batch_size == 8


# --- groups: flat variables, flat keywords ----------------------------------------------------


def test_every_group_is_its_own_frozen_model() -> None:
    s = load_settings()
    assert list(GROUP_MODELS) == ["kafka", "limits", "serving", "model", "trainer", "observability"]
    for group, model in GROUP_MODELS.items():
        assert type(getattr(s, group)) is model
        assert model.model_config.get("frozen") is True
    assert FIELD_GROUP["bootstrap_servers"] == "kafka" and FIELD_GROUP["batch_size"] == "serving"
    assert not hasattr(s, "batch_size")  # no flat read path beside the groups
    assert not hasattr(s, "bootstrap_list")


def test_flat_variables_fill_every_group(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STREAM_REC_BOOTSTRAP_SERVERS", "kafka-1:9092")
    monkeypatch.setenv("STREAM_REC_MAX_TEXT_CHARS", "100")
    monkeypatch.setenv("stream_rec_batch_size", "8")  # case-insensitive, as before
    monkeypatch.setenv("STREAM_REC_DEVICE", "cpu")
    monkeypatch.setenv("STREAM_REC_FINETUNE_RANK", "4")
    monkeypatch.setenv("STREAM_REC_LOG_LEVEL", "debug")
    s = load_settings()
    assert s.kafka.bootstrap_servers == "kafka-1:9092"
    assert s.limits.max_text_chars == 100
    assert s.serving.batch_size == 8
    assert s.model.device == "cpu"
    assert s.trainer.finetune_rank == 4
    assert s.observability.log_level == "debug"


def test_a_keyword_for_one_field_keeps_the_environment_of_the_others(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """pydantic-settings merges its sources field by field inside each group: overriding
    STREAM_REC_PARTITIONS by keyword must not reset the group's other variables to defaults."""
    monkeypatch.setenv("STREAM_REC_BOOTSTRAP_SERVERS", "kafka-1:9092")
    monkeypatch.setenv("STREAM_REC_TOPIC_PREFIX", "prod.")
    monkeypatch.setenv("STREAM_REC_PARTITIONS", "12")
    (tmp_path / ".env").write_text("STREAM_REC_APP_ID=from-dotenv\nSTREAM_REC_BATCH_SIZE=16\n")
    for s in (
        load_settings(partitions=3, top_k=5),
        Settings(partitions=3, top_k=5),
        Settings(kafka={"partitions": 3}, serving={"top_k": 5}),  # a group's dict merges too
    ):
        assert s.kafka.partitions == 3
        assert s.kafka.bootstrap_servers == "kafka-1:9092"
        assert s.kafka.topic_prefix == "prod."
        assert s.kafka.app_id == "from-dotenv"
        assert (s.serving.top_k, s.serving.batch_size) == (5, 16)


def test_the_environment_wins_over_dotenv_field_by_field(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("STREAM_REC_PARTITIONS=6\nSTREAM_REC_APP_ID=dotenv\n")
    monkeypatch.setenv("STREAM_REC_PARTITIONS", "9")
    s = load_settings()
    assert (s.kafka.partitions, s.kafka.app_id) == (9, "dotenv")
    assert Settings(_env_file=None).kafka.app_id == "stream-rec"


def test_no_second_naming_scheme_for_the_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_REC_KAFKA", '{"partitions": 9}')
    monkeypatch.setenv("STREAM_REC_KAFKA__PARTITIONS", "9")
    monkeypatch.setenv("STREAM_REC_SERVING__BATCH_SIZE", "9")
    s = Settings()
    assert (s.kafka.partitions, s.serving.batch_size) == (4, 64)
    with pytest.raises(ConfigError) as err:
        load_settings()
    text = str(err.value)
    for name in (
        "STREAM_REC_KAFKA",
        "STREAM_REC_KAFKA__PARTITIONS",
        "STREAM_REC_SERVING__BATCH_SIZE",
    ):
        assert f"  {name}: not a setting" in text


def test_an_unknown_keyword_is_an_error() -> None:
    with pytest.raises(ConfigError, match="batch_sise: not a setting; did you mean batch_size"):
        load_settings(batch_sise=8)
    with pytest.raises(ValueError, match="batch_sise"):
        Settings(batch_sise=8)
    with pytest.raises(ConfigError, match=r"kafka\.batch_size: not a setting"):
        load_settings(kafka={"batch_size": 8})  # a group takes only its own fields


def test_errors_name_the_flat_variable_not_the_group_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_REC_BATCH_SIZE", "0")
    monkeypatch.setenv("STREAM_REC_DEVICE", "tpu")
    with pytest.raises(ConfigError) as err:
        load_settings()
    lines = str(err.value).splitlines()
    assert lines[0] == "invalid configuration:"
    assert any(line.startswith("  STREAM_REC_BATCH_SIZE: Input should be") for line in lines[1:])
    assert any(line.startswith("  STREAM_REC_DEVICE: Input should be") for line in lines[1:])
    assert "serving" not in str(err.value) and "model.device" not in str(err.value)
    monkeypatch.delenv("STREAM_REC_BATCH_SIZE")
    monkeypatch.delenv("STREAM_REC_DEVICE")
    with pytest.raises(ConfigError, match=r"(?m)^  STREAM_REC_BATCH_SIZE: Input should be"):
        load_settings(batch_size=0)  # a keyword's error names the variable too


def test_a_check_across_fields_of_a_group_reports_under_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STREAM_REC_SECURITY_PROTOCOL", "SASL_SSL")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert (
        str(err.value)
        .splitlines()[1]
        .startswith(
            "  settings: Value error, security_protocol SASL_SSL needs STREAM_REC_SASL_MECHANISM"
        )
    )


def test_replace_derives_a_validated_copy_by_flat_names(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("STREAM_REC_BOOTSTRAP_SERVERS", "kafka-1:9092")
    s = load_settings(partitions=6)
    monkeypatch.setenv("STREAM_REC_BOOTSTRAP_SERVERS", "elsewhere:1")  # not read again
    t = s.replace(topic_prefix="run-1.", data_dir=tmp_path, top_k=3)
    assert (t.kafka.topic_prefix, t.serving.data_dir, t.serving.top_k) == ("run-1.", tmp_path, 3)
    assert (t.kafka.bootstrap_servers, t.kafka.partitions) == ("kafka-1:9092", 6)
    assert t.model is s.model and t.trainer is s.trainer  # untouched groups are shared
    assert (s.kafka.topic_prefix, s.serving.top_k) == ("stream-rec.", 10)  # s is unchanged
    assert type(t.kafka) is KafkaSettings and type(t.serving) is ServingSettings
    assert s.replace(serving=ServingSettings(top_k=2)).serving.top_k == 2
    with pytest.raises(ConfigError, match="STREAM_REC_TOP_K: .*greater than or equal to 1"):
        s.replace(top_k=0)  # validated, unlike model_copy, and reported as load_settings does
    with pytest.raises(ConfigError, match="not_a_setting: not a setting"):
        s.replace(not_a_setting=1)


def test_a_command_with_an_invalid_setting_exits_with_the_message() -> None:
    """``stream-rec eval --diversity 2``: the CLI's option becomes a setting out of range; the
    command stops with the configuration message (exit 2), not a traceback."""
    import subprocess
    import sys

    out = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "stream_rec", "eval", "--diversity", "2"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr[-2000:]
    assert "STREAM_REC_DIVERSITY" in out.stdout and "Traceback" not in out.stderr


def test_model_copy_refuses_flat_names() -> None:
    s = load_settings()
    with pytest.raises(TypeError, match=r"replace"):
        Settings.model_copy(s, update={"topic_prefix": "x."})
    assert s.model_copy(update={"kafka": s.kafka}).kafka is s.kafka
