"""Cold items over several held-out item sets, with the frozen or the tuned text encoder.

For each seed, 10 % of the MovieLens-100K catalogue is held out of training
(``--cold-items 0.1 --cold-seed SEED``, the split of ``stream-rec train``), the model is
trained by the code of ``stream-rec train`` (``train_and_export`` without export: early
stopping, neighbour blend and new-item offset fitted on validation, refit on
train+validation), and the test metrics of all users and of the users whose test target is a
held-out item are computed with the torch ranker (the ONNX serving graph equals it within 1e-4,
``tests/unit/test_neighbours.py``) — at the offset each rule of ``calibrate.RULES`` picks on
validation, and at offset 0. ``--seeds none`` trains on the standard split (no held-out items).
The encoder is ``STREAM_REC_ENCODER_PATH`` (unset: the bundled all-MiniLM-L6-v2); the device
is ``STREAM_REC_DEVICE`` (auto: a GPU when torch sees one).

    PYTHONPATH=. python docs/experiments/cold_seeds.py --seeds 1 2 3 --epochs 20 \
        --out /tmp/runs/frozen
    PYTHONPATH=. python docs/experiments/cold_seeds.py --seeds 1 2 3 --epochs 20 \
        --tune-text --out /tmp/runs/tuned
    PYTHONPATH=. python docs/experiments/cold_seeds.py --table /tmp/runs/frozen /tmp/runs/tuned

Each seed writes ``<out>/seed-<s>.json``; ``--table`` prints the markdown table of the report
(each seed, the mean, and the standard error over users of each cold-target HR@10).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def run_seed(seed: int | None, args: argparse.Namespace) -> dict[str, Any]:
    from stream_rec.eval.protocol import evaluate
    from stream_rec.model.net import ModelConfig
    from stream_rec.model.pipeline import prepare, train_and_export
    from stream_rec.model.ranking import TorchRanker
    from stream_rec.model.train import TrainConfig
    from stream_rec.settings import load_settings

    settings = load_settings()
    cold = None if seed is None else str(args.fraction)
    prepared = prepare(settings, "movielens-100k", cold, seed or 0, settings.model.encoder_path)
    mcfg = ModelConfig(text_dim=int(prepared.text_vectors.shape[1]))
    tcfg = TrainConfig(
        epochs=args.epochs,
        patience=args.patience,
        eval_every=10,
        seed=args.train_seed,
        device=settings.model.device,
        tune_text=args.tune_text,
    )
    t0 = time.perf_counter()
    result, metrics, _ = train_and_export(
        settings, prepared, mcfg, tcfg, None, settings.model.encoder_path, None, export=False
    )
    wall = time.perf_counter() - t0
    model, split = result.model, prepared.split
    out: dict[str, Any] = {
        "seed": seed,
        "fraction": args.fraction if seed is not None else 0.0,
        "tune_text": args.tune_text,
        "epochs": args.epochs,
        "train_wall_s": metrics["train_wall_s"],
        "wall_s": wall,
        "best_epoch": metrics["best_epoch"],
        "history": result.history,
        "neighbour_blend": {k: v for k, v in metrics["neighbour_blend"].items() if k != "table"},
        "new_item_offset": metrics["new_item_offset"],
        "fitted": {k: v for k, v in metrics.items() if k.startswith("test")},
        "rules": {},
    }
    picks = dict(metrics["new_item_offset"].get("picks", {}))
    picks["zero"] = 0.0
    cfg = model.cfg
    for name, offset in picks.items():
        model.cfg = replace(cfg, new_item_offset=offset)
        ranker = TorchRanker(model)
        row = {"offset": offset, "test": evaluate(ranker, split, "test")[0].as_dict()}
        if split.cold:
            row["test_cold_target"] = evaluate(ranker, split, "test", split.cold_users())[
                0
            ].as_dict()
        out["rules"][name] = row
    model.cfg = cfg
    return out


def table(folders: list[Path]) -> str:
    lines = [
        "| run | seed | offset rule | offset | cold users | cold HR@10 ± se | cold NDCG@10 | "
        "all NDCG@10 ± se | all HR@10 | train s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for folder in folders:
        runs = [json.loads(p.read_text()) for p in sorted(folder.glob("seed-*.json"))]
        rules = sorted({r for run in runs for r in run["rules"]})
        for rule in rules:
            cold_hr, all_ndcg = [], []
            for run in runs:
                row = run["rules"].get(rule)
                if row is None:
                    continue
                t, c = row["test"], row.get("test_cold_target")
                cells = ["–", "–", "–"]
                if c is not None:  # a held-out draw (the standard split has no cold users)
                    cold_hr.append(c["hr10"])
                    all_ndcg.append(t["ndcg10"])
                    cells = [
                        str(int(c["users"])),
                        f"{c['hr10']:.4f} ± {c['hr10_se']:.4f}",
                        f"{c['ndcg10']:.4f}",
                    ]
                lines.append(
                    f"| {folder.name} | {run['seed']} | {rule} | {row['offset']:.1f} | "
                    + " | ".join(cells)
                    + f" | {t['ndcg10']:.4f} ± {t['ndcg10_se']:.4f} | {t['hr10']:.4f} | "
                    f"{run['train_wall_s']:.0f} |"
                )
            if len(cold_hr) > 1:  # the mean over the held-out draws
                mean_cold = f"{sum(cold_hr) / len(cold_hr):.4f}"
                low = f" (lowest {min(cold_hr):.4f})"
                lines.append(
                    f"| {folder.name} | **mean** | {rule} | | | **{mean_cold}**{low} | | "
                    f"{sum(all_ndcg) / len(all_ndcg):.4f} | | |"
                )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seeds", nargs="*", default=["1", "2", "3"], help="cold-item seeds, or none")
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--patience", type=int, default=3)
    ap.add_argument("--train-seed", type=int, default=0)
    ap.add_argument("--tune-text", action="store_true")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--table", nargs="*", type=Path)
    args = ap.parse_args()
    if args.table:
        print(table(args.table))
        return
    if args.out is None:
        sys.exit("--out is required unless --table")
    args.out.mkdir(parents=True, exist_ok=True)
    for s in args.seeds:
        seed = None if s == "none" else int(s)
        res = run_seed(seed, args)
        (args.out / f"seed-{s}.json").write_text(json.dumps(res, indent=2))
        print(json.dumps({k: res[k] for k in ("seed", "train_wall_s", "rules")}), flush=True)


if __name__ == "__main__":
    main()
