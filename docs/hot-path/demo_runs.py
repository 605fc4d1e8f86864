"""The table of `stream-rec demo` runs in docs/hot-path.md, from the runs' own figures.

Every demo run writes ``report.json`` into its folder (``~/.cache/stream-rec/demo/<run>/``; the
demo prints the path). This prints one markdown row per run and, with ``--save FILE``, keeps
the runs' figures without their per-event timelines (the timeline is what locates a tail in
time; the percentiles come from it):

    python docs/hot-path/demo_runs.py ~/.cache/stream-rec/demo/*/report.json
    python docs/hot-path/demo_runs.py --saved docs/hot-path/demo-runs.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """The run's figures without the per-event timeline, plus where its slow events were: how
    many live events took over 100 ms and between which seconds of the live phase."""
    out = {k: v for k, v in report.items() if k != "timeline"}
    if "timeline" in report:
        slow = [r[0] for r in report["timeline"]["rows"] if r[1] > 0.1]
        out["over_100ms"] = {
            "n": len(slow),
            "from_s": round(min(slow), 2) if slow else None,
            "to_s": round(max(slow), 2) if slow else None,
        }
    return out


def row(name: str, r: dict[str, Any]) -> str:
    lat = r["latency_ms"]

    def p(group: str, q: str) -> str:
        v = lat[group][q]
        return "–" if v is None else f"{v:.1f}"

    model = r.get("model") or {}
    since = model.get("serving_from_s")
    return (
        f"| {name} | {lat['all']['n']:,} | {p('all', 'p50')} / {p('all', 'p95')} / "
        f"{p('all', 'p99')} | {p('fallback', 'p99')} | {p('model', 'p99')} | "
        f"{'–' if since is None else f'{since:.0f} s'} | {slow(r)} | {gc(r)} | {acks(r)} |"
    )


def slow(r: dict[str, Any]) -> str:
    """Live events over 100 ms, and the seconds of the live phase they were answered in."""
    s = r.get("over_100ms")
    if s is None:
        return "–"
    return f"{s['n']} ({s['from_s']}–{s['to_s']} s)" if s["n"] else "0"


def acks(r: dict[str, Any]) -> str:
    """Live events the broker acknowledged to the demo 20 ms or more after their send (runs
    before the demo recorded it: –): none means every live event was in Kafka promptly."""
    rows = (r.get("demo_slow_acks") or {}).get("rows")
    return "–" if rows is None else str(len(rows))


def gc(r: dict[str, Any]) -> str:
    """The worker's full (generation 2) collections over its life: how many, how many took
    over 50 ms, and their time in all (runs before the demo recorded it: –)."""
    g2 = (r.get("worker_gc_pauses") or {}).get("2")
    if not g2:
        return "–"
    return f"{g2['count']:.0f}, {g2['over_50ms']:.0f} > 50 ms, {1000 * g2['seconds']:.0f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("reports", nargs="*", type=Path, help="report.json files of demo runs")
    ap.add_argument("--saved", type=Path, help="a file written by --save, instead")
    ap.add_argument("--save", type=Path, help="write the runs' figures (no timelines) here")
    args = ap.parse_args()
    runs: dict[str, dict[str, Any]] = {}
    if args.saved:
        runs.update(json.loads(args.saved.read_text()))
    for path in args.reports:
        runs[path.parent.name] = summary(json.loads(path.read_text()))
    print("| run | live events | p50 / p95 / p99 ms, all live | fallback period p99 | "
          "model period p99 | model from | live events > 100 ms | worker's full GCs | "
          "acks ≥ 20 ms |")  # fmt: skip
    print("|---|---:|---|---:|---:|---|---|---|---:|")
    for name, r in runs.items():
        print(row(name, r))
    if args.save:
        args.save.write_text(json.dumps(runs, indent=1) + "\n")


if __name__ == "__main__":
    main()
