"""How well do given weights fit the training distribution? PSNR on training patches, per scale.

    python launch/bench_fit.py --weights A.safetensors B.safetensors ... [--batches 32]
        [--json benchmarks/fit-cpu.json]

Draws ``--batches`` batches of ``--batch-size`` patches exactly as ``launch/train.py`` does (41 x 41,
scales 2/3/4, flips and 90-degree rotations, LR by MATLAB-exact bicubic; ``--data``: the 291
images) and runs every weights file on the same batches in float32, eval mode. For each file and
scale it reports the PSNR of the network's output (``psnr``) and of the bicubic input
(``bicubic``) against the HR patch, from the mean squared error over all pixels of all patches of
that scale (values in [0, 1], no shaving, no rounding: a training-loss view, not the evaluation
protocol).

Why: set beside ``vdsr eval``'s test PSNR it separates two kinds of gap between two models. If
model A beats model B on Set5 but not on the training patches, A learned something the training
distribution here does not reward (a mismatch between the data and the protocol); if A beats B on
both by about as much, B is simply less well fitted (an optimisation gap: more or better steps).
On the 2-core Xeon a batch of 64 takes about 1 s a model.
"""

from __future__ import annotations

import math
import platform
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from vdsr.atomic import write_json  # noqa: E402
from vdsr.checkpoint import file_sha256, load_weights  # noqa: E402
from vdsr.cliargs import ArgParser, number  # noqa: E402
from vdsr.data import PatchLoader, PatchSampler, add_downsized, crop_size, edge_pad, load_store, pad_edges  # noqa: E402

SHARED = REPO.parent / "shared" / "data"


def provenance(t0: float) -> dict:
    """What a benchmark record says about its run: the command, the CPU, torch, the seconds."""
    cpu = platform.processor() or platform.machine()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "machine": f"{cpu}, {torch.get_num_threads()} threads", "torch": torch.__version__,
        "seconds": round(time.perf_counter() - t0, 1),
    }  # fmt: skip


def psnr_of(sse: float, n: int) -> float:
    """PSNR (dB) of a mean squared error ``sse / n`` on [0, 1] values."""
    return round(10 * math.log10(n / sse), 4) if sse > 0 else float("inf")


@torch.no_grad()
def sse_by_scale(batches: list, scales: list[int], model: torch.nn.Module | None, bar: tqdm | None = None) -> dict:
    """Per scale: the summed squared error of the model's output (``None``: of the bicubic input
    itself) against the HR patches, and the pixel count."""
    sse = {s: 0.0 for s in scales}
    n = {s: 0 for s in scales}
    for lr, hr, scale in batches:
        out = lr if model is None else model(lr)
        for s in scales:
            m = scale == s
            sse[s] += float((out[m].double() - hr[m].double()).pow(2).sum())
            n[s] += int(hr[m].numel())
        if bar is not None:
            bar.update(1)
    return {s: (sse[s], n[s]) for s in scales}


def main() -> int:
    ap = ArgParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", nargs="+", required=True, help="safetensors weights files")
    ap.add_argument("--data", nargs="+", default=[str(SHARED / "T91"), str(SHARED / "BSD200")])
    ap.add_argument("--batches", type=number(int, 1), default=32)
    ap.add_argument("--batch-size", type=number(int, 1), default=64)
    ap.add_argument("--scales", type=number(int, 2), nargs="+", default=[2, 3, 4])
    ap.add_argument("--seed", type=number(int, 0), default=1234)
    ap.add_argument("--downsize", type=float, default=None,
                    help="draw the patches from copies of the images shrunk by this factor in (0, 1) "
                         "(the downsizing augmentation's copies) instead of the images themselves")  # fmt: skip
    ap.add_argument("--edge-patches", action="store_true",
                    help="draw patches up to the image edges (train.py's edge_patches), not only 4s and more inside")
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args()
    t0 = time.perf_counter()

    store = load_store(args.data, crop_size(args.scales))
    if args.downsize is not None:
        n = len(store.images)
        add_downsized(store, [args.downsize], crop_size(args.scales))
        store.images, store.paths = store.images[n:], store.paths[n:]
    if args.edge_patches:
        pad_edges(store, edge_pad(args.scales), math.lcm(*args.scales))
    sampler = PatchSampler(store.sizes, args.scales, args.batch_size, "random", args.batch_size * args.batches,
                           rotate=True, seed=args.seed, pad=store.pad)  # fmt: skip
    batches = [(lr, hr, s) for lr, hr, s in PatchLoader(store, sampler, "torch").epoch(0)][: args.batches]

    patch_px = batches[0][1][0].numel()
    bicubic = {s: psnr_of(*v) for s, v in sse_by_scale(batches, args.scales, None).items()}  # the same for every model
    rows = []
    bar = tqdm(total=len(batches) * len(args.weights), unit="batch", desc="forward")
    for w in args.weights:
        path = Path(w).resolve()
        model = load_weights(path).float().eval()
        name = str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(w)
        fit = sse_by_scale(batches, args.scales, model, bar)
        scales = {str(s): {"psnr": psnr_of(*fit[s]), "bicubic": bicubic[s], "patches": fit[s][1] // patch_px} for s in args.scales}
        rows.append({"weights": name, "sha256": file_sha256(path), "scales": scales})
    bar.close()

    copies = f", copies shrunk by {args.downsize:g}" if args.downsize else ""
    copies += ", patches up to the image edges" if args.edge_patches else ""
    print(f"{'weights':44s} " + " ".join(f"{'x' + str(s):>8s}" for s in args.scales) + f"   (training-patch PSNR, dB{copies})")
    print(f"{'bicubic':44s} " + " ".join(f"{rows[0]['scales'][str(s)]['bicubic']:8.3f}" for s in args.scales))
    for r in rows:
        print(f"{r['weights'][-44:]:44s} " + " ".join(f"{r['scales'][str(s)]['psnr']:8.3f}" for s in args.scales))
    if args.json:
        write_json(args.json, {
            "what": "PSNR of each weights file on the same training patches, float32, per scale (launch/bench_fit.py)",
            **provenance(t0), "batches": len(batches), "batch_size": args.batch_size, "scales": args.scales,
            "seed": args.seed, "downsize": args.downsize, "edge_patches": args.edge_patches,
            "data": [Path(d).name for d in args.data], "rows": rows,
        })  # fmt: skip
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
