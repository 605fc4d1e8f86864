"""Shared output of the benchmarks: a rich table of the figures and the same as JSON."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from stream_rec.settings import Settings


def print_and_save(
    console: Console, title: str, results: dict[str, Any], out: Path, skip: Iterable[str] = ()
) -> None:
    hidden = set(skip)
    t = Table(title=title)
    t.add_column("figure")
    t.add_column("value", justify="right")
    for k, v in results.items():
        if k not in hidden:
            t.add_row(k, f"{v:.2f}" if isinstance(v, float) else str(v))
    console.print(t)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    console.print(f"wrote {out}")


def scratch_run(settings: Settings, kind: str) -> tuple[str, Settings, Path]:
    """A throw-away run of a benchmark: its id, its settings (topic prefix ``<kind>-<id>.`` and
    consumer group ``<kind>-<id>``, so its topics can be deleted by that prefix afterwards) and
    its work folder (created)."""
    run_id = uuid.uuid4().hex[:8]
    name = f"{kind}-{run_id}"
    ns = settings.replace(topic_prefix=f"{name}.", app_id=name)
    work = settings.observability.home / "bench" / name
    work.mkdir(parents=True, exist_ok=True)
    return run_id, ns, work
