"""Who had the CPU around a `stream-rec demo` stall: 20 samples a second of each process's CPU
ticks (the worker per thread) and the kernel's CPU and I/O pressure (Linux PSI), lined up with
the demo's live phase (docs/hot-path.md, round six).

    python docs/hot-path/cpu_sampler.py record /tmp/samples.jsonl &   # then run the demo
    python docs/hot-path/cpu_sampler.py show /tmp/samples.jsonl <run>/report.json --end 0.5

``show`` prints, per sample inside the window (seconds from the live phase's start), the ticks
(1/100 s of CPU) each process used since the previous sample and the microseconds some task
waited for a CPU (``psi_cpu``) or on I/O (``psi_io``): a worker with no ticks while nothing
waits for a CPU is waiting on something else, not starved.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

ROLES = {"stream_rec worker": "worker", "stream_rec trainer": "trainer", "kafka.Kafka": "broker",
         "stream-rec demo": "demo"}  # fmt: skip


def _pids() -> dict[str, str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout  # noqa: S607
    found = {}
    for line in out.splitlines()[1:]:
        pid, _, args = line.strip().partition(" ")
        for needle, role in ROLES.items():
            if needle in args:
                found[role] = pid
    return found


def _ticks(stat: str) -> int | None:
    try:
        fields = Path(stat).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])  # utime + stime


def _psi(kind: str) -> list[int] | None:
    try:
        lines = Path(f"/proc/pressure/{kind}").read_text().splitlines()
    except OSError:
        return None
    return [int(line.rsplit("total=", 1)[1]) for line in lines if line]


def record(out: Path, period: float) -> None:
    known: dict[str, str] = {}
    looked = 0.0
    with out.open("w") as f:
        while True:
            now = time.time()
            if now - looked > 1.0:
                known, looked = _pids(), now
            row: dict[str, Any] = {"t": round(now, 3), "psi_cpu": _psi("cpu"), "psi_io": _psi("io")}
            for role, pid in known.items():
                row[role] = _ticks(f"/proc/{pid}/stat")
            if "worker" in known:
                task = Path(f"/proc/{known['worker']}/task")
                for tid in os.listdir(task) if task.exists() else []:
                    row[f"worker thread {tid}"] = _ticks(str(task / tid / "stat"))
            f.write(json.dumps(row) + "\n")
            f.flush()
            time.sleep(period)


def show(samples: Path, report: Path, start: float, end: float) -> None:
    live = json.loads(report.read_text())["live_started_unix"]
    prev = None
    for line in samples.read_text().splitlines():
        s = json.loads(line)
        t = s["t"] - live
        if prev is not None and start <= t <= end:
            used = {
                k: s[k] - prev[k]
                for k in s
                if isinstance(s[k], int) and isinstance(prev.get(k), int) and s[k] > prev[k]
            }
            cpu = [a - b for a, b in zip(s["psi_cpu"] or [], prev["psi_cpu"] or [], strict=False)]
            io = [a - b for a, b in zip(s["psi_io"] or [], prev["psi_io"] or [], strict=False)]
            print(f"{t:7.3f} s  psi_cpu some {cpu[:1]}  psi_io some/full {io}  ticks {used}")
        prev = s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("out", type=Path)
    r.add_argument("--period", type=float, default=0.05)
    s = sub.add_parser("show")
    s.add_argument("samples", type=Path)
    s.add_argument("report", type=Path)
    s.add_argument("--start", type=float, default=-0.5)
    s.add_argument("--end", type=float, default=1.0)
    args = ap.parse_args()
    if args.cmd == "record":
        record(args.out, args.period)
    else:
        show(args.samples, args.report, args.start, args.end)


if __name__ == "__main__":
    main()
