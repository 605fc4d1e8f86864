"""CLI commands of the model side: ``stream-rec train | export | eval | bench model``.

Plain functions with typer-annotated parameters; ``stream_rec.cli`` registers them. Settings
come from :func:`stream_rec.settings.load_settings` (paths, device).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from stream_rec.data.frame import Dataset

console = Console()


def _offline() -> None:
    # weights come from local folders only; never reach the Hub at run time
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _metrics_table(title: str, rows: dict[str, dict[str, float]]) -> Table:
    """Means over users, each with its standard error over users (``± se``) when known."""
    table = Table(title=title, caption="mean ± standard error over users")
    table.add_column("model", no_wrap=True)
    for col in ("users", "HR@10", "NDCG@10", "HR@20", "NDCG@20", "MRR@10"):
        table.add_column(col)

    def cell(m: dict[str, float], k: str) -> str:
        se = m.get(f"{k}_se")
        return f"{m[k]:.4f}" + (f" ± {se:.4f}" if se is not None else "")

    for name, m in rows.items():
        table.add_row(
            name,
            str(int(m["users"])),
            *(cell(m, k) for k in ("hr10", "ndcg10", "hr20", "ndcg20", "mrr10")),
        )
    return table


SOURCE_HELP = (
    "kafka (the items and behavior topics), a behaviour file (.parquet, .jsonl/.json, .csv; "
    "with --items), movielens-100k or a GroupLens folder."
)


def parse_since(value: str | None) -> float | None:
    """``--since``: epoch seconds or an ISO 8601 time (UTC unless it names a zone)."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        t = dt.datetime.fromisoformat(value)
    except ValueError:
        msg = f"--since {value!r}: not epoch seconds nor an ISO 8601 time"
        raise typer.BadParameter(msg) from None
    return (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).timestamp()


def load_frame(
    source: str, items: Path | None, since: str | None, *, progress: bool = True
) -> Dataset:
    """The source as a frame, its bad rows printed; a source with nothing to train on exits
    with code 2 and one line saying why."""
    from stream_rec.data.frame import DatasetError
    from stream_rec.data.sources import load_source
    from stream_rec.settings import load_settings

    try:
        ds = load_source(
            source, load_settings(), items=items, since=parse_since(since), progress=progress
        )
    except DatasetError as exc:
        console.print(f"[red]{exc}[/red]", soft_wrap=True)
        raise typer.Exit(2) from None
    console.print(ds.summary(), soft_wrap=True)
    if ds.bad_rows:
        total = sum(ds.bad_rows.values())
        detail = ", ".join(f"{k} {v}" for k, v in sorted(ds.bad_rows.items()))
        console.print(f"bad rows left out: {total} ({detail})", soft_wrap=True)
    return ds


def _print_table(table: Table) -> None:
    # Piped into a log, rich assumes 80 columns and would cut the figures short.
    console.print(table, width=None if console.is_terminal else 160)


def train_command(
    source: Annotated[
        str, typer.Option("--source", "--dataset", help=SOURCE_HELP)
    ] = "movielens-100k",
    items: Annotated[
        Path | None,
        typer.Option(help="Catalogue for a file source: item_id, title, text, attributes rows."),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Only behaviour events with ts >= this (epoch seconds or ISO 8601)."),
    ] = None,
    registry: Annotated[
        Path | None, typer.Option(help="Registry root (default: model_path or data_dir/registry).")
    ] = None,
    encoder: Annotated[
        Path | None, typer.Option(help="HF encoder folder (default: bundled all-MiniLM-L6-v2).")
    ] = None,
    epochs: Annotated[int, typer.Option(help="Most epochs (early stopping on validation).")] = 60,
    patience: Annotated[int, typer.Option(help="Evaluations (every 10 epochs) without gain.")] = 3,
    seed: Annotated[int, typer.Option(help="Seed of weights and batch order.")] = 0,
    dim: Annotated[int, typer.Option(help="Embedding size of both towers.")] = 64,
    layers: Annotated[int, typer.Option(help="Transformer blocks of the user tower.")] = 2,
    max_len: Annotated[int, typer.Option(help="Longest history the user tower reads.")] = 200,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 2e-3,
    dropout: Annotated[float, typer.Option(help="Dropout of both towers.")] = 0.2,
    cold_drop: Annotated[float, typer.Option(help="Share of items trained as cold.")] = 0.5,
    gate_c: Annotated[float, typer.Option(help="ID gate n/(n+c): evidence constant c.")] = 5.0,
    final_fit: Annotated[bool, typer.Option(help="Refit on train+validation.")] = True,
    tune_text: Annotated[
        bool,
        typer.Option(
            help="Fine-tune the text encoder (LoRA, merged before export) with the towers; "
            "the tuned encoder embeds items added from the stream."
        ),
    ] = False,
    new_item_offset_rule: Annotated[
        str,
        typer.Option(
            help="How the new-item offset is picked on validation: one_se (all users alike), "
            "balanced (users with a new-item target weigh as much as the others; the largest "
            "offset within one standard error of that objective's best) or balanced_best (at "
            "its best)."
        ),
    ] = "one_se",
    cold_items: Annotated[
        str | None, typer.Option(help="Hold out items: a fraction (0.1) or a file of ids.")
    ] = None,
    cold_seed: Annotated[int, typer.Option(help="Seed of the held-out item draw.")] = 0,
    until_quantile: Annotated[
        float | None,
        typer.Option(
            help="Train on the interactions before this quantile of time only "
            "(0.8: the first 80%), so `simulate` can replay the rest out of sample."
        ),
    ] = None,
    export: Annotated[bool, typer.Option(help="Export the model into the registry.")] = True,
    out_json: Annotated[Path | None, typer.Option(help="Write the metrics here.")] = None,
) -> None:
    """Train the two-tower model (seeded, reproducible) on any source, evaluate it and the
    baselines by the same protocol, export a registry version."""
    from stream_rec.model.calibrate import RULES

    if new_item_offset_rule not in RULES:
        msg = f"--new-item-offset-rule {new_item_offset_rule!r}: one of {', '.join(RULES)}"
        raise typer.BadParameter(msg)
    _offline()
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from stream_rec.data.frame import DatasetError
    from stream_rec.model.net import ModelConfig
    from stream_rec.model.pipeline import baseline_metrics, prepare, train_and_export
    from stream_rec.model.train import TrainConfig
    from stream_rec.settings import load_settings

    settings = load_settings()
    ds = load_frame(source, items, since)
    try:
        prepared = prepare(settings, ds, cold_items, cold_seed, encoder, until_quantile)
    except DatasetError as exc:
        console.print(f"[red]{exc}[/red]", soft_wrap=True)
        raise typer.Exit(2) from None
    mcfg = ModelConfig(
        text_dim=int(prepared.text_vectors.shape[1]),
        dim=dim,
        layers=layers,
        max_len=max_len,
        dropout=dropout,
        gate_c=gate_c,
    )
    tcfg = TrainConfig(
        epochs=epochs,
        lr=lr,
        seed=seed,
        cold_drop=cold_drop,
        final_fit=final_fit,
        tune_text=tune_text,
        offset_rule=new_item_offset_rule,
        eval_every=10,
        patience=patience,
        device=settings.model.device,
    )
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} {task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        tasks: dict[str, Any] = {}

        def on_epoch(phase: str, epoch: int, total: int, row: dict[str, float]) -> None:
            if phase not in tasks:
                tasks[phase] = progress.add_task(phase, total=total, info="")
            info = f"loss {row['loss']:.4f}"
            if "valid_ndcg10" in row:
                info += f" valid NDCG@10 {row['valid_ndcg10']:.4f}"
            progress.update(tasks[phase], completed=epoch, info=info)

        _, metrics, path = train_and_export(
            settings, prepared, mcfg, tcfg, registry, encoder, on_epoch, export
        )
    split = prepared.split
    rows = {"two-tower (test)": metrics["test"]}
    if "test_cold_target" in metrics:
        rows["two-tower (cold targets)"] = metrics["test_cold_target"]
    baselines = {n: m.as_dict() for n, m in baseline_metrics(split).items()}
    rows.update(baselines)
    _print_table(_metrics_table(f"Test, leave-one-out protocol — {ds.name}", rows))
    fitted = metrics["new_item_offset"]
    console.print(f"new-item score offset {fitted['offset']:.2f}: {fitted['reason']}")
    console.print(f"training wall time {metrics['train_wall_s']:.1f} s; version: {path}")
    if out_json:
        report = {
            **metrics,
            "baselines": baselines,
            "source": ds.name,
            "interactions": len(ds.interactions),
            "items": len(ds.items),
            "bad_rows": ds.bad_rows,
            "version_dir": str(path),
        }
        out_json.write_text(json.dumps(report, indent=2))


def export_command(
    source: Annotated[Path, typer.Argument(help="Version folder (or registry) to re-export.")],
    registry: Annotated[Path | None, typer.Option(help="Registry root of the new version.")] = None,
    encoder: Annotated[Path | None, typer.Option(help="HF encoder folder to export.")] = None,
    int8: Annotated[bool, typer.Option(help="Also write int8 CPU variants.")] = True,
) -> None:
    """Re-export a version's torch weights to ONNX (parity-checked) as a new version."""
    _offline()
    from stream_rec.model import registry as reg
    from stream_rec.model.export import export_version, load_torch_model
    from stream_rec.model.pipeline import default_registry
    from stream_rec.model.text import load_encoder
    from stream_rec.settings import load_settings

    settings = load_settings()
    src = reg.resolve(source)
    manifest = reg.read_manifest(src)
    model = load_torch_model(src)
    meta = json.loads((src / "items.json").read_text(encoding="utf-8"))
    enc, tok = load_encoder(encoder)
    path = export_version(
        model,
        item_ids=meta["item_ids"],
        titles=meta["titles"],
        texts=meta["titles"],
        registry_dir=registry or default_registry(settings),
        encoder=enc,
        tokenizer=tok,
        base_model=str(encoder) if encoder else str(manifest["base_model"]),
        metrics={k: v for k, v in manifest["metrics"].items() if k != "parity_max_abs_diff"},
        extra={"parent": manifest["version"]},
        int8=int8,
    )
    parity = reg.read_manifest(path)["metrics"]["parity_max_abs_diff"]
    console.print(f"exported {path}\nparity max abs diff: {parity}")


class _Counted:
    """A ranker that advances a progress bar by the users of each batch it scores."""

    def __init__(self, ranker: Any, advance: Callable[[int], None]) -> None:
        self.ranker, self.advance = ranker, advance

    def score(self, histories: Sequence[Sequence[int]]) -> Any:
        out = self.ranker.score(histories)
        self.advance(len(histories))
        return out


def eval_command(
    model: Annotated[
        Path | None, typer.Option(help="Version folder or registry root; unset = baselines only.")
    ] = None,
    source: Annotated[
        str, typer.Option("--source", "--dataset", help=SOURCE_HELP)
    ] = "movielens-100k",
    items: Annotated[
        Path | None, typer.Option(help="Catalogue for a file source (items-contract rows).")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Only behaviour events with ts >= this (epoch seconds or ISO 8601)."),
    ] = None,
    baselines: Annotated[bool, typer.Option(help="Also rank MostPopular and ItemKNN.")] = True,
    dump_topk: Annotated[
        Path | None, typer.Option(help="Write JSON lines of each user's top-k raw item ids.")
    ] = None,
    k: Annotated[int, typer.Option(help="Items per user in the dump.")] = 20,
    cold_items: Annotated[
        str | None, typer.Option(help="Held-out items: a fraction (0.1) or a file of ids.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the held-out item draw.")] = 0,
    precision: Annotated[str, typer.Option(help="fp32 | int8 | fp16 | auto.")] = "fp32",
    max_history: Annotated[
        int | None, typer.Option(help="Items of history read (default: the model's max_len).")
    ] = None,
    diversity: Annotated[
        float | None,
        typer.Option(help="Re-ranker's diversity (MMR), 0-1; unset = STREAM_REC_DIVERSITY."),
    ] = None,
    long_tail: Annotated[
        float | None,
        typer.Option(help="Re-ranker's long-tail penalty; unset = STREAM_REC_LONG_TAIL."),
    ] = None,
    sweep: Annotated[
        bool,
        typer.Option(help="Also print the trade-off of a grid of both re-ranking knobs."),
    ] = False,
    out_json: Annotated[Path | None, typer.Option(help="Write the metrics here.")] = None,
) -> None:
    """Offline evaluation (leave-one-out, full ranking) of the served ONNX model (re-ranked as
    served) and baselines, and what the served lists expose: coverage, long tail, diversity,
    precision@10 on a chronological split (stream_rec.eval.beyond)."""
    _offline()
    from stream_rec.data.frame import DatasetError
    from stream_rec.eval.protocol import evaluate, write_topk
    from stream_rec.model import registry as reg
    from stream_rec.model.pipeline import OnnxRanker, baseline_metrics, prepare
    from stream_rec.model.runtime import OnnxScorer
    from stream_rec.progress import bar
    from stream_rec.settings import load_settings

    settings = load_settings()
    overrides = {"diversity": diversity, "long_tail": long_tail}
    settings = settings.replace(**{k: v for k, v in overrides.items() if v is not None})
    ds = load_frame(source, items, since)
    try:
        prepared = prepare(settings, ds, cold_items, seed)
    except DatasetError as exc:
        console.print(f"[red]{exc}[/red]", soft_wrap=True)
        raise typer.Exit(2) from None
    split = prepared.split
    cold_users = split.cold_users() if split.cold else None
    rows: dict[str, dict[str, float]] = {}
    if model is not None:
        version_dir = reg.resolve(model)
        trained_cold = set(reg.read_manifest(version_dir).get("cold_items", []))
        wanted_cold = {split.item_ids[i] for i in split.cold}
        if not wanted_cold <= trained_cold:
            msg = (
                f"{version_dir.name} was trained on {len(wanted_cold - trained_cold)} of the "
                "held-out items; train it with the same --cold-items/--cold-seed"
            )
            raise typer.BadParameter(msg)
        scorer = OnnxScorer.load(
            version_dir, settings, precision=precision, max_history=max_history or 10**9
        )
        ranker = OnnxRanker(scorer, split)
        served = _served_lists(scorer, ranker)
        params = scorer.rerank_params
        rerank = None
        if params.on:
            depth = max(20, k if dump_topk else 0)
            rerank = lambda s: served(params.diversity, params.long_tail)(s, depth)  # noqa: E731
        users = cold_users if cold_users is not None and not dump_topk else None
        n = (
            len(users)
            if users is not None
            else sum(split.target(u, "test") >= 0 for u in range(len(split.user_ids)))
        )
        with bar(f"ranking the catalogue for {n} users", n) as advance:
            metrics, top = evaluate(
                _Counted(ranker, advance), split, "test", cold_users,
                dump_k=k if dump_topk else 0, rerank=rerank,
            )  # fmt: skip
        name = f"two-tower {scorer.version}"
        rows[name] = metrics.as_dict()
        if dump_topk:
            write_topk(dump_topk, split, top, "test")
            console.print(f"top-{k} of every user written to {dump_topk}")
        exposure = _exposure(
            ranker, prepared, reg.read_manifest(version_dir), served, params, sweep
        )
    if baselines:
        rows.update({n: m.as_dict() for n, m in baseline_metrics(split, cold_users).items()})
    title = "Test, leave-one-out protocol" + (
        f" — users whose target is held out ({len(cold_users or [])})" if split.cold else ""
    )
    _print_table(_metrics_table(title, rows))
    if model is not None:
        _print_exposure(exposure)
    if out_json:
        report: dict[str, Any] = dict(rows)
        if model is not None:
            report["exposure"] = exposure
        out_json.write_text(json.dumps(report, indent=2))


def _served_lists(scorer: Any, ranker: Any) -> Any:
    """(diversity, long tail) → masked split-order scores, k → the served lists: the
    serving re-ranker over the scorer's item vectors and popularity, in split order."""
    from dataclasses import replace

    from stream_rec.serving.rerank import top_reranked

    unit, head = scorer.rerank_inputs()
    unit, head = unit[ranker.cols], head[ranker.cols]

    def served(d: float, t: float) -> Any:
        params = replace(scorer.rerank_params, diversity=d, long_tail=t)
        return lambda s, k: top_reranked(s, unit, head, k, params)

    return served


def _exposure(
    ranker: Any, prepared: Any, manifest: dict[str, Any], served: Any, params: Any, sweep: bool
) -> dict[str, Any]:
    """The served lists' figures (stream_rec.eval.beyond), with the sweep when asked."""
    from stream_rec.eval import beyond

    cutoff = manifest.get("train_until_ts")
    exposed = beyond.score_exposure(
        ranker, prepared.split, prepared.dataset, prepared.text_vectors, cutoff
    )
    out: dict[str, Any] = {
        "diversity": params.diversity,
        "long_tail": params.long_tail,
        "pool": params.pool,
        "chrono_cutoff": exposed.chrono.cutoff,
        "chrono_users": len(exposed.chrono.histories),
        "chrono_in_sample": cutoff is None,
        "served": exposed.figures(served(params.diversity, params.long_tail)).as_dict(),
    }
    if params.on:
        out["not_reranked"] = exposed.figures(served(0.0, 0.0)).as_dict()
    if sweep:
        rows = beyond.sweep(exposed, served)
        out["sweep"] = [{"diversity": d, "long_tail": t, **e.as_dict()} for d, t, e in rows]
        best = beyond.pick(rows)
        out["pick"] = None if best is None else {"diversity": best[0], "long_tail": best[1]}
    return out


_EXPOSURE_COLS = (
    ("HR@10", "hr10"),
    ("NDCG@10", "ndcg10"),
    ("coverage@10", "coverage10"),
    ("tail slots", "tail_slots"),
    ("tail inter.", "tail_interactions"),
    ("ILD", "ild"),
    ("genres", "genres"),
    ("P@10 chrono", "precision10"),
)


def _exposure_table(title: str, rows: list[tuple[str, str, dict[str, float]]]) -> Table:
    table = Table(title=title)
    table.add_column("diversity")
    table.add_column("long tail")
    for col, _ in _EXPOSURE_COLS:
        table.add_column(col)
    for d, t, m in rows:
        table.add_row(d, t, *(f"{m[key]:.4f}" for _, key in _EXPOSURE_COLS))
    return table


def _print_exposure(exposure: dict[str, Any]) -> None:
    rows = [(str(exposure["diversity"]), str(exposure["long_tail"]), exposure["served"])]
    if "not_reranked" in exposure:
        rows.append(("0.0", "0.0", exposure["not_reranked"]))
    _print_table(_exposure_table("Served top-10 (all test users; stream_rec.eval.beyond)", rows))
    how = (
        "in sample: the model was trained on all data; train with --until-quantile for an "
        "out-of-sample figure"
        if exposure["chrono_in_sample"]
        else "the model's training cutoff"
    )
    console.print(
        f"P@10 chrono: {exposure['chrono_users']} users, cutoff ts {exposure['chrono_cutoff']:.0f}"
        f" ({how}); tail = items outside the 20 % most popular; ILD = mean pairwise cosine "
        "distance of item text vectors; pool of the re-ranker: "
        f"{exposure['pool']}",
        soft_wrap=True,
    )
    if "sweep" in exposure:
        rows = [(str(r["diversity"]), str(r["long_tail"]), r) for r in exposure["sweep"]]
        _print_table(_exposure_table("Re-ranking sweep", rows))
        best = exposure["pick"]
        console.print(
            "pick (NDCG@10 within 2 % of no re-ranking, tail slots ≥ tail interactions, then "
            "the highest ILD): "
            + (
                "none"
                if best is None
                else f"diversity {best['diversity']}, long tail {best['long_tail']}"
            ),
            soft_wrap=True,
        )


def bench_model_command(
    model: Annotated[Path | None, typer.Option(help="Version folder or registry root.")] = None,
    out_json: Annotated[Path, typer.Option(help="Where the JSON report goes.")] = Path(
        "bench-model.json"
    ),
    events: Annotated[int, typer.Option(help="Single-event scoring calls to time.")] = 2000,
    threads: Annotated[int, typer.Option(help="CPU threads for ORT and torch.")] = 2,
    train_epochs: Annotated[
        int, typer.Option(help="Also time a training run of this many epochs (0 = skip).")
    ] = 0,
) -> None:
    """CPU latency (p50/p99) and batch throughput: ONNX Runtime vs torch eager, same model."""
    _offline()
    from stream_rec.bench.model import run_model_bench
    from stream_rec.model.pipeline import default_registry
    from stream_rec.settings import load_settings

    settings = load_settings()
    report = run_model_bench(
        model or default_registry(settings), settings, events, threads, train_epochs
    )
    out_json.write_text(json.dumps(report, indent=2))
    console.print_json(json.dumps(report))
