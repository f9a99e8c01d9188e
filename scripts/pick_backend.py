"""Pick the training step's backend from a race of the bare steps (``scripts/gpu_run.sh --backend auto``).

    python scripts/pick_backend.py BENCH_JSON [--graph] [--batch 64] [--margin 0.02]

Reads the rows ``launch/bench_train.py --backends torch triton --no-loop`` wrote, takes the
bf16 ones at ``--batch`` (the recipes' 64) that were (``--graph``) or were not graphed, as
training will run, and prints the backend to train with: ``triton`` only where its bare step beats torch's by more than
``--margin`` (a share; torch's cuDNN step is the one measured over the long runs), else
``torch``. A second line (stderr) gives both rates. Exit status 1 if the file has no torch row
to compare with.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vdsr.cliargs import ArgParser, number  # noqa: E402


def pick_backend(rows: list[dict], graph: bool, batch: int = 64, margin: float = 0.02) -> tuple[str, dict[str, float]]:
    """``(backend, {backend: bare-step patches/s})`` from bench_train rows (bf16, ``batch``,
    graphed as ``graph``). Raises ValueError without a torch row."""
    rates = {
        r["backend"]: r["bare_step_patches_per_s"]
        for r in rows
        if r["precision"] == "bf16" and r.get("batch", 64) == batch and bool(r.get("cuda_graph")) == graph
    }
    if "torch" not in rates:
        raise ValueError(f"no torch bf16 batch-{batch} row{' graphed' if graph else ''} to race against")
    triton = rates.get("triton")
    best = "triton" if triton is not None and triton > (1 + margin) * rates["torch"] else "torch"
    return best, rates


def main(argv=None) -> int:
    ap = ArgParser(description=__doc__.splitlines()[0])
    ap.add_argument("bench_json", help="bench_train.py's JSON")
    ap.add_argument("--graph", action="store_true", help="training runs the step as a CUDA graph: race the graphed rows")
    ap.add_argument("--batch", type=number(int, 1), default=64, help="the rows of this batch size")
    ap.add_argument("--margin", type=number(float, 0.0, 1.0), default=0.02, help="triton must win by this share")
    args = ap.parse_args(argv)
    try:
        rows = json.loads(Path(args.bench_json).read_text())["rows"]
        best, rates = pick_backend(rows, args.graph, args.batch, args.margin)
    except (OSError, ValueError, KeyError) as e:
        print(f"pick_backend: {args.bench_json}: {e}", file=sys.stderr)
        return 1
    print(best)
    print("race (bare step, patches/s): " + ", ".join(f"{k} {v:,.0f}" for k, v in rates.items()) + f" -> {best}",
          file=sys.stderr)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
