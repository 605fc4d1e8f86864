"""A local single-node Apache Kafka (KRaft) broker for development, the demo and the tests.

The jars come from Maven Central through Maven (``mvn dependency:copy-dependencies`` over a
generated POM) into ``<home>/kafka/<version>/libs`` once; later starts reuse them. The broker
runs the real ``kafka.Kafka`` main class as combined broker+controller bound to 127.0.0.1, with
settings that make consumer groups start fast (no initial rebalance delay).
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from stream_rec.settings import LOCAL_BROKER_JAVA_OPTIONS

_POM = """<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>stream-rec</groupId>
  <artifactId>local-kafka</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{version}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>2.24.3</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId>
      <version>2.24.3</version>
    </dependency>
  </dependencies>
</project>
"""

_LOG4J2 = """Configuration:
  status: warn
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka.server.KafkaRaftServer
        level: INFO
      - name: kafka.server.BrokerServer
        level: INFO
"""


class BrokerError(RuntimeError):
    """The local broker could not be installed, started or stopped; the message says why."""


@dataclass(frozen=True)
class LocalBroker:
    home: Path
    version: str = "4.1.1"
    port: int = 19092
    heap: str = "768m"
    java_options: tuple[str, ...] = tuple(LOCAL_BROKER_JAVA_OPTIONS.split())

    @property
    def kafka_dir(self) -> Path:
        return self.home / "kafka" / self.version

    @property
    def libs(self) -> Path:
        return self.kafka_dir / "libs"

    @property
    def run_dir(self) -> Path:
        return self.home / "broker" / str(self.port)

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.run_dir / "broker.log"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    # ---- install ----------------------------------------------------------------------------
    def install(self) -> Path:
        """Resolve the Kafka jars with Maven once; return the libs folder."""
        marker = self.libs / ".complete"
        if marker.exists():
            return self.libs
        if not shutil.which("java"):
            msg = "Java is not installed: the local Kafka broker needs a Java 17+ runtime (java)"
            raise BrokerError(msg)
        mvn = shutil.which("mvn")
        if not mvn:
            msg = "Maven (mvn) is not installed: it fetches the Kafka jars from Maven Central"
            raise BrokerError(msg)
        self.kafka_dir.mkdir(parents=True, exist_ok=True)
        pom = self.kafka_dir / "pom.xml"
        pom.write_text(_POM.format(version=self.version))
        tmp = self.kafka_dir / "libs.part"
        shutil.rmtree(tmp, ignore_errors=True)
        cmd = [
            mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
            f"-DoutputDirectory={tmp}", "-DincludeScope=runtime",
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True)  # noqa: S603
        if proc.returncode != 0:
            msg = f"mvn could not fetch Kafka {self.version}: {(proc.stdout + proc.stderr)[-2000:]}"
            raise BrokerError(msg)
        shutil.rmtree(self.libs, ignore_errors=True)
        tmp.rename(self.libs)
        (self.kafka_dir / "log4j2.yaml").write_text(_LOG4J2)
        marker.touch()
        return self.libs

    # ---- lifecycle --------------------------------------------------------------------------
    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        return pid

    def is_running(self) -> bool:
        return self.pid() is not None

    def _java(self, main: str, *args: str) -> list[str]:
        java = shutil.which("java") or "java"
        return [
            java, f"-Xmx{self.heap}", f"-Xms{self.heap}", "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true", *self.java_options,
            f"-Dlog4j2.configurationFile={self.kafka_dir / 'log4j2.yaml'}",
            "-cp", str(self.libs / "*"), main, *args,
        ]  # fmt: skip

    def _write_config(self) -> Path:
        data = self.run_dir / "data"
        cport = self.port + 1
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{cport}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{cport}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(data),
            "num.partitions": "1",
            "default.replication.factor": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "8",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # Consumer groups join at once instead of waiting 3 s for more members.
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",
            "log.retention.hours": "168",
            "log.segment.bytes": str(64 * 1024 * 1024),
            "message.max.bytes": str(4 * 1024 * 1024),
        }
        cfg = self.run_dir / "server.properties"
        cfg.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        return cfg

    def start(self, timeout: float = 90.0) -> None:
        """Install if needed, format KRaft storage on first start, start and wait until ready."""
        if self.is_running():
            self.wait_ready(timeout)
            return
        if _port_open(self.port):
            msg = f"port {self.port} is already in use by another process (not this broker)"
            raise BrokerError(msg)
        self.install()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        cfg = self._write_config()
        if not (self.run_dir / "data" / "meta.properties").exists():
            cluster_id = new_cluster_id()
            fmt = self._java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(cfg))
            proc = subprocess.run(fmt, capture_output=True, text=True)  # noqa: S603
            if proc.returncode != 0:
                msg = f"formatting KRaft storage failed: {(proc.stdout + proc.stderr)[-2000:]}"
                raise BrokerError(msg)
        log = open(self.log_file, "ab")  # noqa: SIM115 - handed to the child process
        proc_b = subprocess.Popen(  # noqa: S603
            self._java("kafka.Kafka", str(cfg)),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        self.pid_file.write_text(str(proc_b.pid))
        try:
            self.wait_ready(timeout)
        except BrokerError:
            if proc_b.poll() is not None:
                tail = self.log_file.read_text(errors="replace")[-3000:]
                msg = f"the broker exited with code {proc_b.returncode}:\n{tail}"
                raise BrokerError(msg) from None
            raise

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Wait until the broker answers a metadata request."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if not self.is_running():
                msg = f"the broker process is not running (log: {self.log_file})"
                raise BrokerError(msg)
            try:
                if metadata_ready(self.bootstrap):
                    return
            except Exception as exc:  # noqa: BLE001 - keep polling until the deadline
                last = exc
            time.sleep(0.5)
        msg = f"the broker did not answer on {self.bootstrap} within {timeout:.0f}s ({last})"
        raise BrokerError(msg)

    def stop(self, timeout: float = 60.0) -> bool:
        """SIGTERM the broker (clean shutdown), SIGKILL after ``timeout``. False if not running."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _alive(pid):
                break
            time.sleep(0.2)
        else:
            os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True

    def wipe(self) -> None:
        """Delete the broker's data (it must be stopped)."""
        if self.is_running():
            msg = "stop the broker before wiping its data"
            raise BrokerError(msg)
        shutil.rmtree(self.run_dir, ignore_errors=True)


def new_cluster_id() -> str:
    """A KRaft cluster id: a random UUID in URL-safe base64, as Kafka's ``Uuid`` prints it.

    Like Kafka's own ``Uuid.randomUuid()``, ids starting with '-' are drawn again: the storage
    tool's argument parser would read one as an option (1 in 64 ids; seen failing in a test).
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie that is not our child still answers kill(0); check its state.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a worker's web server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def metadata_ready(bootstrap: str, timeout: float = 5.0, **client_kwargs: object) -> bool:
    """True when the cluster answers a metadata request with at least one broker."""
    import asyncio

    from aiokafka.admin import AIOKafkaAdminClient

    # While polling a starting broker, refused connections are expected, not errors.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

    async def probe() -> bool:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000), **client_kwargs
        )
        try:
            await asyncio.wait_for(admin.start(), timeout)
            cluster = await asyncio.wait_for(admin.describe_cluster(), timeout)
            return bool(cluster.get("brokers"))
        finally:
            await admin.close()

    try:
        return asyncio.run(probe())
    finally:
        logging.getLogger("aiokafka").setLevel(logging.NOTSET)


def broker_from_settings(settings: object | None = None) -> LocalBroker:
    from stream_rec.settings import Settings, load_settings

    s = settings if isinstance(settings, Settings) else load_settings()
    first = s.kafka.bootstrap_list[0]
    host, _, port = first.rpartition(":")
    if host not in ("127.0.0.1", "localhost"):
        print(  # noqa: T201
            f"note: bootstrap {first} is not local; the local broker binds 127.0.0.1:{port}",
            file=sys.stderr,
        )
    return LocalBroker(
        home=s.observability.home,
        version=s.observability.kafka_version,
        port=int(port),
        java_options=tuple(s.observability.broker_java_options.split()),
    )
