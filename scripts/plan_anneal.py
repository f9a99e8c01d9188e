"""Fit a recipe's step decay into a time budget: the ``epochs`` and ``lr_step_epochs`` with which
a run (fresh, or resumed from a checkpoint) ends inside SECONDS at a measured rate, its last
``--anneal-fraction`` of the new steps at the decayed lr (lr x lr_gamma).

    python scripts/plan_anneal.py --config RECIPE --rate PATCHES_PER_S --seconds S
        [--resume CHECKPOINT_DIR] [--set KEY=VALUE ...] [--anneal-fraction 0.25] [--safety 0.85]

Prints ``epochs=E lr_step_epochs=S`` (for ``train.py --set``) and, on stderr, the plan in words.
Used by ``scripts/gpu_run.sh --anneal``, which takes the rate from its own bench_train part, so
that a short GPU call ends annealed rather than cut off in the middle of a phase. Exit status 1
when the budget holds less than one new epoch.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "launch"))

from vdsr.cliargs import ArgParser, number  # noqa: E402


def plan(start_step: int, steps_per_epoch: int, new_steps: int, anneal_fraction: float) -> tuple[int, int] | None:
    """(epochs, lr_step_epochs) ending at the last whole epoch inside start_step + new_steps, the
    decay epoch about anneal_fraction of the new steps before the end (at least one epoch, and not
    before the run's current epoch); None if not one whole new epoch fits."""
    first = math.ceil(start_step / steps_per_epoch)  # the first epoch boundary at or after the start
    end = (start_step + new_steps) // steps_per_epoch
    if end <= first:
        return None
    tail = max(1, round(anneal_fraction * (end * steps_per_epoch - start_step) / steps_per_epoch))
    return end, max(first, end - tail, 1)


def main(argv=None) -> int:
    ap = ArgParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, help="recipe name or YAML (as train.py --config)")
    ap.add_argument("--rate", type=number(float, 1e-9), required=True, help="training patches/s (measured)")
    ap.add_argument("--seconds", type=number(float, 1e-9), required=True, help="training time available")
    ap.add_argument("--resume", type=Path, help="the checkpoint folder the run continues (its train_state.json)")
    ap.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="the run's recipe overrides (train.py --set)")
    ap.add_argument("--anneal-fraction", type=number(float, 0.0, 0.5), default=0.25)
    ap.add_argument("--safety", type=number(float, 0.1, 1.0), default=0.85, help="share of the budget planned on")
    args = ap.parse_args(argv)
    from train import load_config, parse_args  # noqa: E402  (Accelerate's import is slow: after the argument check)

    from vdsr.errors import InputError  # noqa: E402

    try:
        cfg = load_config(parse_args(["--config", args.config, *(["--set", *args.set] if args.set else [])]))
    except InputError as e:
        print(f"plan_anneal: error: {e}", file=sys.stderr)
        return 2
    start = 0
    if args.resume is not None:
        state_file = args.resume / "train_state.json"
        try:
            start = int(json.loads(state_file.read_text())["step"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            print(f"plan_anneal: error: {state_file}: cannot read the step ({e})", file=sys.stderr)
            return 2
    if cfg.sampling != "random":  # a fixed grid's epoch length depends on the images (PatchSampler)
        print(f"plan_anneal: error: --config {args.config}: sampling {cfg.sampling}; plans are made for "
              "random sampling, whose epoch is patches_per_epoch // batch_size steps", file=sys.stderr)  # fmt: skip
        return 2
    per_epoch = cfg.patches_per_epoch // cfg.batch_size  # PatchSampler.batches_per_epoch (random sampling)
    new_steps = int(args.rate * args.seconds * args.safety / cfg.batch_size)
    got = plan(start, per_epoch, new_steps, args.anneal_fraction)
    if got is None:
        print(f"plan_anneal: error: {new_steps} new steps from step {start} do not reach an epoch boundary "
              f"({per_epoch} steps an epoch)", file=sys.stderr)  # fmt: skip
        return 1
    epochs, step_epochs = got
    print(f"plan_anneal: steps {start} to {epochs * per_epoch}: lr {cfg.lr:g} to step {step_epochs * per_epoch}, "
          f"then {cfg.lr * cfg.lr_gamma:g} ({new_steps} steps fit at {args.rate:.0f} patches/s in "
          f"{args.safety:.0%} of {args.seconds:.0f} s)", file=sys.stderr)  # fmt: skip
    print(f"epochs={epochs} lr_step_epochs={step_epochs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
