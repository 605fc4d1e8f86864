"""Pure parts of the local broker helper (stream_rec.ops.broker); Java is never started."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from stream_rec.ops import broker as broker_mod
from stream_rec.ops.broker import BrokerError, LocalBroker


def _props(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line!r}"
        assert key not in out, f"duplicate key {key}"
        out[key] = value
    return out


@pytest.mark.parametrize("port", [19092, 29500])
def test_write_config_for_a_port(tmp_path: Path, port: int) -> None:
    b = LocalBroker(home=tmp_path, port=port)
    b.run_dir.mkdir(parents=True)
    cfg = b._write_config()
    assert cfg == tmp_path / "broker" / str(port) / "server.properties"
    props = _props(cfg)
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == f"1@127.0.0.1:{port + 1}"
    assert props["listeners"] == (f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{port + 1}")
    assert props["advertised.listeners"] == f"PLAINTEXT://127.0.0.1:{port}"
    assert props["controller.listener.names"] == "CONTROLLER"
    assert props["log.dirs"] == str(tmp_path / "broker" / str(port) / "data")
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["auto.create.topics.enable"] == "true"
    assert int(props["message.max.bytes"]) >= 1024 * 1024


def test_brokers_on_different_ports_do_not_share_state(tmp_path: Path) -> None:
    a, b = LocalBroker(home=tmp_path, port=19092), LocalBroker(home=tmp_path, port=19192)
    assert a.run_dir != b.run_dir
    assert a.pid_file != b.pid_file
    assert a.bootstrap == "127.0.0.1:19092"
    assert b.libs == a.libs  # the jars are shared per version
    assert LocalBroker(home=tmp_path, version="4.0.0").libs != a.libs


def test_install_without_java(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(BrokerError, match="Java"):
        LocalBroker(home=tmp_path).install()
    assert not (tmp_path / "kafka").exists()  # nothing half-installed


def test_install_without_maven(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/java" if name == "java" else None)
    with pytest.raises(BrokerError, match="mvn"):
        LocalBroker(home=tmp_path).install()
    assert not (tmp_path / "kafka").exists()


def test_install_is_skipped_once_complete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    b = LocalBroker(home=tmp_path)
    b.libs.mkdir(parents=True)
    (b.libs / ".complete").touch()

    def no_tools(name: str) -> None:
        raise AssertionError(f"looked up {name} although the jars are installed")

    monkeypatch.setattr(shutil, "which", no_tools)
    assert b.install() == b.libs


def test_java_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: "/opt/jdk/bin/java")
    b = LocalBroker(home=tmp_path, heap="256m")
    cmd = b._java("kafka.Kafka", "server.properties")
    assert cmd[0] == "/opt/jdk/bin/java"
    assert "-Xmx256m" in cmd and "-Xms256m" in cmd
    assert cmd[cmd.index("-cp") + 1] == str(b.libs / "*")
    assert cmd[-2:] == ["kafka.Kafka", "server.properties"]


def test_java_options_come_from_the_settings_before_the_main_class(tmp_path: Path) -> None:
    from stream_rec.settings import load_settings

    default = broker_mod.broker_from_settings(load_settings(home=tmp_path))
    cmd = default._java("kafka.Kafka", "server.properties")
    assert "-XX:TieredStopAtLevel=1" in cmd  # C1 only, by default
    assert cmd.index("-XX:TieredStopAtLevel=1") < cmd.index("kafka.Kafka")
    own = load_settings(home=tmp_path, broker_java_options="-XX:+UseSerialGC  -Xss2m")
    cmd = broker_mod.broker_from_settings(own)._java("kafka.Kafka", "server.properties")
    assert "-XX:TieredStopAtLevel=1" not in cmd and {"-XX:+UseSerialGC", "-Xss2m"} <= set(cmd)
    none = load_settings(home=tmp_path, broker_java_options="")
    assert not any("Tiered" in a for a in broker_mod.broker_from_settings(none)._java("x"))


def test_pid_without_pid_file_or_with_garbage(tmp_path: Path) -> None:
    b = LocalBroker(home=tmp_path)
    assert b.pid() is None and not b.is_running()
    b.run_dir.mkdir(parents=True)
    b.pid_file.write_text("not a pid")
    assert b.pid() is None


def test_stop_when_not_running_cleans_the_pid_file(tmp_path: Path) -> None:
    b = LocalBroker(home=tmp_path)
    b.run_dir.mkdir(parents=True)
    b.pid_file.write_text("garbage")
    assert b.stop() is False
    assert not b.pid_file.exists()


def test_broker_from_settings_uses_the_first_bootstrap_port(tmp_path: Path) -> None:
    from stream_rec.settings import load_settings

    s = load_settings(bootstrap_servers="127.0.0.1:29092,127.0.0.1:39092", home=tmp_path)
    b = broker_mod.broker_from_settings(s)
    assert (b.port, b.home, b.version) == (29092, tmp_path, s.observability.kafka_version)


def test_cluster_ids_never_start_with_a_dash_and_decode_to_16_bytes() -> None:
    import base64

    from stream_rec.ops.broker import new_cluster_id

    ids = [new_cluster_id() for _ in range(5000)]  # ~78 would start with '-' if unchecked
    assert not [i for i in ids if i.startswith("-")]
    assert all(len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids)
