"""Share of a py-spy profile's samples whose stack holds a given frame (docs/hot-path.md).

``py-spy record --format raw`` writes one line per distinct stack (frames joined by ``;``,
the thread first) with its sample count. This prints, for each pattern, the samples whose
stack has a frame containing it, and their share of all samples; ``--threads`` also splits
the samples by thread:

    python docs/hot-path/stack_share.py PROFILE.txt "Logger._log" "EpollSelector.select"
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path


def shares(lines: list[str], patterns: list[str]) -> tuple[int, Counter[str], Counter[str]]:
    total, hits, threads = 0, Counter[str](), Counter[str]()
    for line in lines:
        stack, _, n = line.rstrip().rpartition(" ")
        if not stack:
            continue
        frames = stack.split(";")
        count = int(n)
        total += count
        threads[frames[0]] += count
        for p in patterns:
            if any(p in f for f in frames[1:]):
                hits[p] += count
    return total, hits, threads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("profile", type=Path)
    ap.add_argument("patterns", nargs="+")
    ap.add_argument("--threads", action="store_true")
    a = ap.parse_args()
    total, hits, threads = shares(a.profile.read_text().splitlines(), a.patterns)
    print(f"{total} samples")
    for p in a.patterns:
        print(f"{hits[p]:6d} {100 * hits[p] / max(total, 1):5.1f} %  {p}")
    if a.threads:
        for t, n in threads.most_common():
            print(f"{n:6d} {100 * n / max(total, 1):5.1f} %  {t}")


if __name__ == "__main__":
    main()
