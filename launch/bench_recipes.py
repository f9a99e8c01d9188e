"""Which training recipe learns fastest? Train each arm for the same budget, side by side.

    python launch/bench_recipes.py [--arms theta1e-4 theta1e-3 sum-norm0.4 theta1e-4+downsize]
        [--config paper] [--epochs 20] [--lr-step-epochs 5] [--json benchmarks/recipes-<device>.json]
    python launch/bench_recipes.py --compare A.json B.json [...] -o both.png

Every arm is the same base recipe (default: ``paper``: VDSR-20, the 291 images, batch 64,
x2/x3/x4, flips + rotations, bf16) shortened to ``--epochs`` epochs with the lr divided by 10
every ``--lr-step-epochs`` (so each arm runs a whole schedule within the budget), with the
overrides of the arm (``--set`` keys of ``launch/train.py``):

* ``theta1e-4``: the paper's adjustable clipping at theta = 1e-4 (the shipped model's step);
* ``theta1e-3``: the same at theta = 1e-3;
* ``sum-norm0.4``: pytorch-vdsr's step: squared error summed over the batch, global-norm
  clipping at 0.4;
* ``theta1e-4+downsize``: theta = 1e-4 with 0.7 and 0.5 copies of the training images;
* ``sum-norm0.4+downsize``: pytorch-vdsr's step and its downsizing together;
* ``pytorch-vdsr-net``, ``pytorch-vdsr-net+downsize``: the two ``sum-norm0.4`` arms on
  pytorch-vdsr's network as well: no biases (``bias=false``) and its He initialisation over the
  fan-out (``init=fan_out``); ``sum-norm0.4+downsize+no-bias`` and ``+fan-out`` each take one
  of the two; ``theta1e-4+pytorch-vdsr-net``: the paper's step on pytorch-vdsr's network;
* ``adam``: caffe-vdsr's Adam step (lr 1e-4, betas 0.9 / 0.999, no clipping, its released
  ``VDSR_Adam`` model), with its own schedule: lr / 10 once, for the last quarter of the budget.

Set5 PSNR (x2, x3, x4) is validated every ``--val-every`` steps during each run, so the curves
show whether the ranking at the end is settled (it held over the last evaluations) or still
changing. Runs live in ``--runs/<arm>``; an interrupted arm resumes from its checkpoint and a
finished one is reused. Prints a table; writes JSON and a PNG of Set5 PSNR against
patch-steps. On a 2-core CPU one arm of 2,500 steps takes about 25 minutes.

``--compare`` trains nothing: it sets the arms of several result files side by side (each arm
labelled with its file's extra ``--set`` overrides, e.g. ``bf16=false``), prints every final
PSNR with its difference from the first file's arm of the same name, and plots them in one PNG.
"""

from __future__ import annotations

import json
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from vdsr.atomic import atomic_path, write_json  # noqa: E402
from vdsr.cliargs import ArgParser, number  # noqa: E402

ARMS = {
    "theta1e-4": ["clip=adjustable", "clip_theta=0.0001"],
    "theta1e-3": ["clip=adjustable", "clip_theta=0.001"],
    "sum-norm0.4": ["loss=sse_sum", "clip=norm", "clip_theta=0.4"],
    "theta1e-4+downsize": ["clip=adjustable", "clip_theta=0.0001", "downsize=[0.7, 0.5]"],
    "sum-norm0.4+downsize": ["loss=sse_sum", "clip=norm", "clip_theta=0.4", "downsize=[0.7, 0.5]"],
    "adam": ["optimizer=adam", "lr=0.0001", "clip=none"],
    "pytorch-vdsr-net": ["loss=sse_sum", "clip=norm", "clip_theta=0.4", "bias=false", "init=fan_out"],
    "pytorch-vdsr-net+downsize": ["loss=sse_sum", "clip=norm", "clip_theta=0.4", "bias=false", "init=fan_out",
                                  "downsize=[0.7, 0.5]"],
    "sum-norm0.4+downsize+no-bias": ["loss=sse_sum", "clip=norm", "clip_theta=0.4", "bias=false",
                                     "downsize=[0.7, 0.5]"],
    "sum-norm0.4+downsize+fan-out": ["loss=sse_sum", "clip=norm", "clip_theta=0.4", "init=fan_out",
                                     "downsize=[0.7, 0.5]"],
    "theta1e-4+pytorch-vdsr-net": ["clip=adjustable", "clip_theta=0.0001", "bias=false", "init=fan_out"],
}
# arms with their own lr schedule: epochs -> lr_step_epochs. Adam (caffe-vdsr's step: lr 1e-4,
# no clipping) divides its lr by 10 once, for the last quarter of the budget: at 1e-6 and
# below (the SGD arms' last steps) it would barely move.
ARM_LR_STEP = {"adam": lambda epochs: max(1, epochs * 3 // 4)}


def device_label() -> str:
    if torch.cuda.is_available():
        return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name().lower()).strip("-")
    return "cpu"


def run_arm(name: str, args) -> dict:
    out = Path(args.runs) / name
    lr_step = ARM_LR_STEP[name](args.epochs) if name in ARM_LR_STEP else args.lr_step_epochs
    cmd = [
        sys.executable, str(REPO / "launch" / "train.py"), "--config", args.config,
        "--epochs", str(args.epochs), "--seed", str(args.seed), "--output-dir", str(out),
        "--set", f"lr_step_epochs={lr_step}", f"val_every={args.val_every}",
        f"checkpoint_every={args.checkpoint_every}", *ARMS[name], *args.set,
    ]  # fmt: skip
    if args.max_steps:
        cmd += ["--max-steps", str(args.max_steps)]
    if args.val_data:
        cmd += ["--val-data", *args.val_data]
    if args.data:
        cmd += ["--data", *args.data]
    if (out / "summary.json").exists():
        print(f"reusing {out}/summary.json", file=sys.stderr)
    else:
        print("$ " + " ".join(cmd), file=sys.stderr)
        subprocess.run(cmd + ["--resume"], check=True)  # an interrupted arm continues; none: starts fresh
    summary = json.loads((out / "summary.json").read_text())
    history = json.loads((out / "history.json").read_text())
    batch = json.loads((out / "config.json").read_text())["batch_size"]
    curves = {
        ds: {s: [[step * batch, psnr] for step, psnr in pts] for s, pts in by.items()}
        for ds, by in history["val"].items()
    }
    return {"overrides": ARMS[name], "lr_step_epochs": lr_step, "summary": summary, "curves": curves}


def plot(results: dict, dataset: str, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scales = sorted({s for r in results.values() for s in r["curves"].get(dataset, {})}, key=int)
    fig, axes = plt.subplots(1, len(scales), figsize=(4.2 * len(scales), 3.8), squeeze=False)
    for ax, s in zip(axes[0], scales):
        for name, r in results.items():
            pts = r["curves"].get(dataset, {}).get(s)
            if pts:
                xs, ys = zip(*pts)
                ax.plot([x / 1e3 for x in xs], ys, marker="o", ms=3, label=name)
        bic = next((r["summary"]["bicubic_psnr"].get(dataset, {}).get(s) for r in results.values()), None)
        if bic:
            ax.axhline(bic, color="grey", ls="--", lw=0.8, label="bicubic")
        ax.set(xlabel="patch-steps (thousands)", ylabel="PSNR (dB)", title=f"{dataset} x{s}")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def load_results(path: str) -> dict:
    """A result file of this script; ``ValueError`` with one line naming the file otherwise."""
    try:
        d = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a JSON file ({e})") from None
    if not isinstance(d, dict) or not isinstance(d.get("arms"), dict) or "base" not in d:
        raise ValueError(f"{path}: not a result file of bench_recipes.py (no 'arms' and 'base')")
    return d


def compare(files: dict[str, dict], out_png: Path, arms: list[str] | None = None) -> dict:
    """Arms of several result files (``{path: loaded JSON}``) in one table and one figure;
    returns ``{label: arm result}`` (empty if no arm matched).

    Each arm is labelled ``"<arm> [<extra overrides of its file>]"``; the difference column is
    against the same arm in the first file (blank where the first file lacks it). ``arms``: only
    these.
    """
    results, first = {}, None
    for d in files.values():
        tag = " ".join(d["base"].get("extra") or []) or "as recipe"
        for name, r in d["arms"].items():
            if arms and name not in arms:
                continue
            label = f"{name} [{tag}]"
            results[label] = r
            ref = first.get(name, {}) if first is not None else {}
            for ds, final in r["summary"]["final_psnr"].items():
                print(f"{label:<36} {ds}: {psnr_cells(final, ref.get(ds))}")
        if first is None:
            first = {name: r["summary"]["final_psnr"] for name, r in d["arms"].items()}
    dataset = first_dataset(results)
    if dataset:
        plot(results, dataset, out_png, "compared: " + ", ".join(Path(p).name for p in files))
        print(f"wrote {out_png}", file=sys.stderr)
    return results


def psnr_cells(final: dict, ref: dict | None = None) -> str:
    """``{scale: psnr}`` as ``x2 35.651  x3 ...``, each with its difference from ``ref`` where given."""
    cells = []
    for s, v in sorted(final.items(), key=lambda kv: int(kv[0])):
        delta = f" ({v - ref[s]:+.3f})" if ref and s in ref else ""
        cells.append(f"x{s} {v:.3f}{delta}")
    return "  ".join(cells)


def schedules(results: dict) -> str:
    """The arms' lr steps in words: ``5`` when all share one, else ``5 (adam: 15)``."""
    steps = {name: r["lr_step_epochs"] for name, r in results.items()}
    values = list(steps.values())
    common = max(values, key=lambda v: (values.count(v), -values.index(v)))  # the most shared; a tie: the first arm's
    others = ", ".join(f"{n}: {v}" for n, v in steps.items() if v != common)
    return f"{common} ({others})" if others else str(common)


def first_dataset(results: dict) -> str | None:
    """The validation set of the first arm's final PSNRs (None if there is none)."""
    return next(iter(next(iter(results.values()))["summary"]["final_psnr"]), None) if results else None


def main(argv=None) -> int:
    ap = ArgParser(description=__doc__.splitlines()[0])
    ap.add_argument("--compare", nargs="+", metavar="JSON", help="set earlier result files side by side (trains nothing)")
    ap.add_argument("-o", "--out", help="with --compare: the PNG to write")
    ap.add_argument("--arms", nargs="+", choices=list(ARMS), help=f"default: {' '.join(list(ARMS)[:4])} (with --compare: all)")
    ap.add_argument("--config", default="paper", help="base recipe (name or YAML file)")
    ap.add_argument("--epochs", type=number(int, 1), default=20)
    ap.add_argument("--lr-step-epochs", type=number(int, 1), default=5)
    ap.add_argument("--max-steps", type=number(int, 1), help="stop every arm here (the schedule still follows --epochs)")
    ap.add_argument("--val-every", type=number(int, 1), default=500)
    ap.add_argument("--checkpoint-every", type=number(int, 1), default=250)
    ap.add_argument("--seed", type=number(int, 0), default=0)
    ap.add_argument("--data", nargs="+", help="training folders (default: the recipe's)")
    ap.add_argument("--val-data", nargs="+", help="validation folders (default: the recipe's: Set5)")
    ap.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE", help="more overrides for every arm")
    ap.add_argument("--runs", default="runs/recipes", help="folder for the arms' runs")
    ap.add_argument("--json", help="default: benchmarks/recipes-<device>.json (and .png beside it)")
    args = ap.parse_args(argv)
    if args.compare:
        if not args.out:
            ap.error("--compare needs -o OUT.png")
        try:
            files = {path: load_results(path) for path in args.compare}
        except ValueError as e:
            ap.exit(2, f"{ap.prog}: error: {e}\n")
        ap.check_output(args.out)
        if not compare(files, Path(args.out), args.arms):
            ap.exit(2, f"{ap.prog}: error: no arm {' '.join(args.arms)} in {' '.join(args.compare)}\n")
        return 0
    json_path = Path(args.json or REPO / "benchmarks" / f"recipes-{device_label()}.json")
    ap.check_output(json_path)
    ap.check_output(args.runs, folder=True)

    t0 = time.time()
    results = {name: run_arm(name, args) for name in args.arms or list(ARMS)[:4]}
    dataset = first_dataset(results)
    rows = []
    print(f"\nrecipes at equal budget ({args.config}, {args.epochs} epochs); final PSNR dB on {dataset}")
    for name, r in results.items():
        final = r["summary"]["final_psnr"].get(dataset, {})
        rows.append({"arm": name, "final": final, "patch_steps": r["summary"]["patches_seen"],
                     "seconds": r["summary"]["seconds"]})  # fmt: skip
        print(f"{name:<24} {psnr_cells(final)}   ({r['summary']['patches_seen']:,} patch-steps, "
              f"lr /10 every {r['lr_step_epochs']} epochs, {r['summary']['seconds']:.0f} s)")  # fmt: skip
    ranking = sorted(rows, key=lambda r: -sum(r["final"].values()) / max(1, len(r["final"])))
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"
    write_json(json_path, {
        "what": "training recipes at equal budget: Set5 PSNR (vdsr eval code, float32) against patch-steps",
        "base": {"config": args.config, "epochs": args.epochs, "lr_step_epochs": args.lr_step_epochs,
                 "max_steps": args.max_steps, "seed": args.seed, "extra": args.set},
        "arms": results, "ranking_by_mean_final_psnr": [r["arm"] for r in ranking],
        "device": device, "torch": torch.__version__, "wall_seconds": round(time.time() - t0, 1),
    })  # fmt: skip
    if dataset:
        plot(results, dataset, json_path.with_suffix(".png"),
             f"{args.config} base, {args.epochs} epochs (lr /10 every {schedules(results)}), {device}")  # fmt: skip
    print(f"wrote {json_path} and {json_path.with_suffix('.png')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
