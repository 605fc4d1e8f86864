"""How far can an incremental fine-tune lift new items, given all their evidence? (the
learning loop and new items)

Offline, no Kafka. The base version was trained without a share of the items (``stream-rec
train --until-quantile 0.8 --cold-items 0.1``). The events after its time cutoff (the ones
``stream-rec simulate`` replays, first ``--users`` users) are split in time: the first
``--stream-share`` are the stream the fine-tune learns from, every event a next-item example
(the history before it → the item; what ``STREAM_REC_LEARN_FROM_BEHAVIOR=true`` feeds the
trainer), in one fine-tune (``lora.finetune_incremental`` with catalogue growth: the new items
get rows); the rest are scored by the base version (new items embedded from their text, as a
worker does) and by the fine-tuned one, through the serving scorer (``OnnxScorer``, default
re-ranking, seen items excluded). HR@10 over the events whose target is a new item, and over
the rest. This is the online loop's best case: every interaction of the stream at once, no
window limits, no gate.

    PYTHONPATH=. python docs/experiments/new_item_ceiling.py --registry R --users 150 \\
        --epochs 3 10 --replay 0 2 --out docs/experiments/new-item-ceiling.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--registry", type=Path, required=True)
    ap.add_argument("--users", type=int, default=150)
    ap.add_argument("--stream-share", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, nargs="+", default=[3, 10])
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument(
        "--replay", type=float, nargs="+", default=[0.0],
        help="replay sample per stream example, from the registry's replay buffer (the "
        "trainer mixes in 2 per example); one fine-tune per value",
    )  # fmt: skip
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    from stream_rec.data.movielens import load_movielens
    from stream_rec.model import registry
    from stream_rec.model.lora import finetune_incremental
    from stream_rec.model.runtime import OnnxScorer
    from stream_rec.ops.simulate import new_item_ids, out_of_sample_events, train_until
    from stream_rec.serving.scorer import CatalogItem, ScoreRequest
    from stream_rec.settings import load_settings
    from stream_rec.training.replay import load_replay

    settings = load_settings()
    ds = load_movielens("movielens-100k", settings.observability.home)
    cutoff = train_until(args.registry)
    if cutoff is None:
        sys.exit("the registry's model must be trained with --until-quantile")
    new = new_item_ids(args.registry, ds)
    events, counted = out_of_sample_events(ds, cutoff, args.users, None)
    scored = [n for n, c in enumerate(counted) if c]
    split = scored[int(args.stream_share * len(scored))]  # first evaluated event
    hist: dict[str, list[str]] = {}
    examples: list[list[str]] = []
    evaluation: list[tuple[ScoreRequest, str]] = []
    for n, x in enumerate(events):
        h = hist.setdefault(x.user_id, [])
        if n < split:
            if h:
                examples.append([*h[-settings.serving.session_length :], x.item_id])
        elif counted[n] and h:
            evaluation.append((ScoreRequest(x.user_id, tuple(h[-50:]), frozenset(h)), x.item_id))
        h.append(x.item_id)
    catalog = [CatalogItem(i.item_id, i.title, i.text, i.attributes) for i in ds.items.values()]
    new_items = [ds.items[i] for i in sorted(new)]

    def hr10(version_dir: Path) -> dict[str, Any]:
        sc = OnnxScorer(version_dir, settings)
        sc.upsert_items(catalog)  # new items unknown to the version: embedded from text
        hits = {"new": [0, 0], "rest": [0, 0], "all": [0, 0]}
        for start in range(0, len(evaluation), 64):
            batch = evaluation[start : start + 64]
            for (_, target), items in zip(batch, sc.score([r for r, _ in batch], 10), strict=True):
                hit = target in [i.item_id for i in items]
                for g in (hits["new" if target in new else "rest"], hits["all"]):
                    g[0] += hit
                    g[1] += 1
        return {g: {"hr10": h / n if n else None, "events": n} for g, (h, n) in hits.items()}

    base_dir = registry.resolve(args.registry)
    report: dict[str, Any] = {
        "registry": str(base_dir), "new_items": len(new), "stream_examples": len(examples),
        "stream_examples_with_a_new_item": sum(1 for e in examples if e[-1] in new),
        "evaluated_events": len(evaluation), "lr": args.lr, "hardware": f"{os.cpu_count()} cores",
        "base": hr10(base_dir), "finetuned": {},
    }  # fmt: skip
    print(json.dumps({k: v for k, v in report.items() if k != "finetuned"}, indent=1))
    with tempfile.TemporaryDirectory() as tmp:
        buffer = load_replay(args.registry)
        for epochs in args.epochs:
            for per_example in args.replay:
                t0 = time.perf_counter()
                n_replay = min(len(buffer), int(per_example * len(examples)))
                replay = random.Random(0).sample(buffer, n_replay)  # noqa: S311
                name = str(epochs) if not per_example else f"{epochs}-replay{per_example:g}"
                out = finetune_incremental(
                    base_dir, examples, replay, Path(tmp) / f"e{name}", settings,
                    epochs=epochs, lr=args.lr, new_items=new_items, make_current=False,
                )  # fmt: skip
                if out is None:
                    sys.exit("the fine-tune published nothing")
                row = {**hr10(out), "replay": n_replay,
                       "finetune_s": round(time.perf_counter() - t0, 1)}  # fmt: skip
                report["finetuned"][name] = row
                print(f"epochs {name}: {json.dumps(row)}", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
