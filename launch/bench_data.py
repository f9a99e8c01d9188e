"""Benchmark the patch stream: patches/s of the DALI and PyTorch loaders, LR synthesis included.

    python launch/bench_data.py --data ../shared/data/T91 ../shared/data/BSD200 \\
        --loader dali torch --batches 200 --json benchmarks/data-cpu.json

    python launch/bench_data.py --data gpu_data/T91 gpu_data/BSD200 --loader device --device cuda

Batches of 64 41x41 patches, x2/x3/x4 mixed in every batch, flips (``--rotate`` for the
90-degree rotations too), random mode. Each loader: one warm-up epoch, then the median time
per batch over ``--batches`` batches. ``device`` (the device-resident stream) on CUDA queues
its GPU work and returns: its time is the host's per batch, what the training loop pays on the
host beside the step (``host_time_only`` in the JSON); ``--chunk N`` builds N batches at once
(then the mean time per batch, not the median: one batch in N carries the work). Several
loaders in one call run side by side, in alternation over ``--rounds`` rounds, so they see the
same machine. Prints a table; writes JSON
``{"loader": ..., "patches_per_s": ..., "device": ..., ...}`` (a list when several loaders).
"""

from __future__ import annotations

import logging
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from vdsr.atomic import write_json  # noqa: E402
from vdsr.cliargs import ArgParser, number  # noqa: E402
from vdsr.data import PatchSampler, crop_size, load_store, make_loader  # noqa: E402


def per_batch_seconds(loader, epoch: int) -> list[float]:
    times, t = [], time.perf_counter()
    for _ in loader.epoch(epoch):
        now = time.perf_counter()
        times.append(now - t)
        t = now
    return times


def main() -> None:
    ap = ArgParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="+", required=True, metavar="DIR")
    ap.add_argument("--loader", nargs="+", choices=["dali", "torch", "device"], default=["dali", "torch"])
    ap.add_argument("--batches", type=number(int, 1), default=200)
    ap.add_argument("--rounds", type=number(int, 1), default=2)
    ap.add_argument("--batch-size", type=number(int, 1, 65535), default=64)
    ap.add_argument("--scales", nargs="+", type=number(int, 2, 16), default=[2, 3, 4])
    ap.add_argument("--rotate", action="store_true")
    ap.add_argument("--workers", type=number(int, 1, 256), default=2, help="DALI worker processes")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--chunk", type=number(int, 1, 1024), default=1, help="the device stream: batches built together")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    ap.check_output(args.json)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    t = time.perf_counter()
    store = load_store(args.data, crop_size(args.scales), decoder="pillow")
    decode_s = time.perf_counter() - t
    sampler = PatchSampler(
        store.sizes, args.scales, args.batch_size, "random", args.batch_size * args.batches, rotate=args.rotate
    )
    loaders = {k: make_loader(store, sampler, k, args.device, threads=args.workers, chunk=args.chunk) for k in args.loader}
    times: dict[str, list[float]] = {k: [] for k in loaders}
    for k, loader in loaders.items():
        per_batch_seconds(loader, 0)  # warm-up: DALI workers started, tables cached
    for r in range(args.rounds):
        for k, loader in loaders.items():
            times[k] += per_batch_seconds(loader, 1 + r)

    results = []
    print(f"{'loader':<7} {'patches/s':>10} {'ms/batch':>9}  (median of {args.rounds} x {args.batches} batches of {args.batch_size}"
          f"{'; the device stream: the mean, ' + str(args.chunk) + ' batches a chunk' if args.chunk > 1 else ''})")
    for k, ts in times.items():
        mean = k == "device" and args.chunk > 1  # the chunk's first batch carries its work
        per_batch = statistics.mean(ts) if mean else statistics.median(ts)
        results.append(
            {
                "loader": k,
                "patches_per_s": round(args.batch_size / per_batch, 1),
                "ms_per_batch": round(per_batch * 1e3, 3),
                "device": args.device,
                "gpu": torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else None,
                "batch_size": args.batch_size,
                "scales": args.scales,
                "rotate": args.rotate,
                "batches": len(ts),
                "images": len(store.images),
                "decode_s": round(decode_s, 2),
                "dali_workers": args.workers if k == "dali" else None,
                "host_time_only": k == "device" and args.device.startswith("cuda"),
                "chunk": args.chunk if k == "device" else None,
                "statistic": "mean" if mean else "median",
                "torch_threads": torch.get_num_threads(),
                "cpu": platform.machine(),
            }
        )
        print(f"{k:<7} {args.batch_size / per_batch:10.1f} {per_batch * 1e3:9.2f}")
    if args.json:
        write_json(args.json, results[0] if len(results) == 1 else results)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
