"""Does bf16 *training* cost PSNR? Train the same short recipe in bf16 and in float32, side by side.

    python launch/bench_precision.py [--seeds 0 1] [--epochs 20] [--json benchmarks/precision-cpu.json]

For each seed, ``launch/train.py`` runs twice on the same recipe (default: the ``seed`` recipe
shortened to 20 epochs with the lr divided by 10 every 5, i.e. 760 steps of 64), once with bf16
autocast and once in float32; everything else (channels_last, data draws, init) is the same.
Each model is then evaluated in float32 on Set5 and Set14 with the code of ``vdsr eval``.
The bf16 - float32 difference per cell is set against the seed-to-seed spread of each precision:
a difference inside that spread is noise, not a cost. Prints a table; writes JSON.
On a 2-core CPU one bf16 run takes about 6 minutes and one float32 run about 23.
"""

from __future__ import annotations

import json
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from vdsr.atomic import write_json  # noqa: E402
from vdsr.cliargs import ArgParser, number  # noqa: E402


def run(precision: str, seed: int, args) -> dict:
    out = Path(args.runs) / f"{precision}-seed{seed}"
    cmd = [
        sys.executable, str(REPO / "launch" / "train.py"), "--config", args.config,
        "--epochs", str(args.epochs), "--seed", str(seed), "--output-dir", str(out),
        "--val-data", *args.val_data, "--bf16" if precision == "bf16" else "--no-bf16",
        "--set", f"lr_step_epochs={args.lr_step_epochs}", "val_every=0", "checkpoint_every=100000",
    ]  # fmt: skip
    if args.rerun:
        shutil.rmtree(out, ignore_errors=True)
    if (out / "summary.json").exists():
        print(f"reusing {out}/summary.json (--rerun trains again)", file=sys.stderr)
    else:
        print("$ " + " ".join(cmd), file=sys.stderr)
        subprocess.run(cmd + ["--resume"], check=True)  # an interrupted run continues; none: starts fresh
    return json.loads((out / "summary.json").read_text())


def main() -> int:
    ap = ArgParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="seed")
    ap.add_argument("--epochs", type=number(int, 1), default=20)
    ap.add_argument("--lr-step-epochs", type=number(int, 1), default=5)
    ap.add_argument("--seeds", type=number(int, 0), nargs="+", default=[0, 1])
    ap.add_argument("--val-data", nargs="+", default=[str(REPO.parent / "shared/data/Set5"), str(REPO.parent / "shared/data/Set14")])
    ap.add_argument("--runs", default="runs/precision", help="folder for the training runs")
    ap.add_argument("--rerun", action="store_true", help="train again even where a finished run exists")
    ap.add_argument("--json", default="benchmarks/precision-cpu.json")
    args = ap.parse_args()
    ap.check_output(args.json)
    ap.check_output(args.runs, folder=True)

    t0 = time.time()
    runs = {p: {s: run(p, s, args) for s in args.seeds} for p in ("bf16", "fp32")}
    cells = []
    any_run = runs["bf16"][args.seeds[0]]
    for name, scales in any_run["final_psnr"].items():
        for scale in scales:
            psnr = {p: [runs[p][s]["final_psnr"][name][scale] for s in args.seeds] for p in runs}
            diffs = [b - f for b, f in zip(psnr["bf16"], psnr["fp32"])]
            spread = max(max(v) - min(v) for v in psnr.values()) if len(args.seeds) > 1 else None
            cells.append({
                "dataset": name, "scale": int(scale), "bf16": psnr["bf16"], "fp32": psnr["fp32"],
                "bf16_minus_fp32_mean": round(statistics.mean(diffs), 4),
                "seed_spread_max": None if spread is None else round(spread, 4),
            })  # fmt: skip
    speed = {p: statistics.mean(runs[p][s]["patches_per_s"] for s in args.seeds) for p in runs}

    print(f"\nbf16 vs float32 training ({args.config} recipe, {args.epochs} epochs, seeds {args.seeds}); PSNR dB, float32 eval")
    print(f"{'dataset':8} {'scale':>5} {'bf16 (per seed)':>22} {'fp32 (per seed)':>22} {'bf16-fp32':>10} {'seed spread':>12}")
    for c in cells:
        bf = " ".join(f"{v:.3f}" for v in c["bf16"])
        fp = " ".join(f"{v:.3f}" for v in c["fp32"])
        spread = "-" if c["seed_spread_max"] is None else f"{c['seed_spread_max']:.3f}"
        print(f"{c['dataset']:8} {'x' + str(c['scale']):>5} {bf:>22} {fp:>22} {c['bf16_minus_fp32_mean']:>+10.3f} {spread:>12}")
    print(f"training speed: bf16 {speed['bf16']:.1f} patches/s, fp32 {speed['fp32']:.1f} ({speed['bf16'] / speed['fp32']:.2f}x)")

    write_json(args.json, {
        "what": "bf16 autocast vs float32 training: final PSNR (float32 eval, vdsr eval code) of the same recipe",
        "recipe": {"config": args.config, "epochs": args.epochs, "lr_step_epochs": args.lr_step_epochs,
                   "steps": any_run["steps"], "channels_last": True},
        "seeds": args.seeds, "cells": cells,
        "patches_per_s": {p: round(v, 1) for p, v in speed.items()},
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__, "wall_seconds": round(time.time() - t0, 1),
    })  # fmt: skip
    print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
