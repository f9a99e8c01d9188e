"""Benchmark: the reference MATLAB-exact imresize (down by s, then up by s) against Pillow.

Both do the same work over every Set14 image (mod-cropped Y): Pillow's BICUBIC on mode 'F'
images (float32 storage, C loops, one thread) and ``vdsr.resize.imresize`` (float64, and
float32, on the CPU with torch's default threads and with one thread). Prints a table and the
ratio ours/Pillow (lower is better; goal <= 2), and writes JSON.

    python launch/bench_resize.py [--data ../shared/data/Set14] [--repeats 7] [--json FILE]
"""

from __future__ import annotations

import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vdsr.atomic import write_json
from vdsr.cliargs import ArgParser, number  # noqa: E402
from vdsr.evaluate import luma, modcrop, open_dataset, to_unit
from vdsr.images import read_image
from vdsr.resize import imresize

REPO = Path(__file__).resolve().parent.parent


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: tables built and cached
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = ArgParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "Set14"))
    ap.add_argument("--repeats", type=number(int, 1, 10000), default=7)
    ap.add_argument("--json", default=str(REPO / "benchmarks" / "resize-cpu.json"))
    args = ap.parse_args()
    ap.check_output(args.json)

    ds = open_dataset(args.data)
    images = [read_image(p) for p in ds.files]
    rows = []
    for s in (2, 3, 4):
        ys = [luma(to_unit(modcrop(img, s)))[None] for img in images]  # 1 x 1 x H x W float64
        pil = [Image.fromarray(y[0, 0].numpy().astype(np.float32), mode="F") for y in ys]

        def ours(dtype=torch.float64):
            for y in ys:
                imresize(imresize(y.to(dtype), 1 / s), s)

        def pillow():
            for im in pil:
                w, h = im.size
                im.resize((w // s, h // s), Image.BICUBIC).resize((w, h), Image.BICUBIC)

        threads = torch.get_num_threads()
        t_pil = median_seconds(pillow, args.repeats)
        t64 = median_seconds(ours, args.repeats)
        t32 = median_seconds(lambda: ours(torch.float32), args.repeats)
        torch.set_num_threads(1)
        t64_1 = median_seconds(ours, args.repeats)
        torch.set_num_threads(threads)
        rows.append(
            {
                "scale": s,
                "images": len(ys),
                "pillow_ms": t_pil * 1e3,
                "ours_f64_ms": t64 * 1e3,
                "ours_f32_ms": t32 * 1e3,
                "ours_f64_1thread_ms": t64_1 * 1e3,
                "ratio_f64": t64 / t_pil,
                "ratio_f64_1thread": t64_1 / t_pil,
            }
        )

    print(f"imresize down+up over {ds.name} ({len(images)} images), median of {args.repeats}, CPU, {torch.get_num_threads()} torch threads")
    print(f"{'scale':>5} {'Pillow F (ms)':>14} {'ours f64':>9} {'ours f32':>9} {'ours f64 1T':>12} {'f64/Pillow':>11} {'1T/Pillow':>10}")
    for r in rows:
        print(
            f"{'x' + str(r['scale']):>5} {r['pillow_ms']:14.1f} {r['ours_f64_ms']:9.1f} {r['ours_f32_ms']:9.1f}"
            f" {r['ours_f64_1thread_ms']:12.1f} {r['ratio_f64']:11.2f} {r['ratio_f64_1thread']:10.2f}"
        )
    total = {k: sum(r[k] for r in rows) for k in ("pillow_ms", "ours_f64_ms", "ours_f64_1thread_ms")}
    ratio = total["ours_f64_ms"] / total["pillow_ms"]
    print(f"total: Pillow {total['pillow_ms']:.1f} ms, ours {total['ours_f64_ms']:.1f} ms: ratio {ratio:.2f} (goal <= 2)")
    print("CPU times are for the ratio only (measured side by side in this run), not absolute performance figures.")
    write_json(
        args.json,
        {
            "benchmark": "imresize down+up vs Pillow BICUBIC mode F",
            "device": "cpu",
            "cpu": platform.processor() or platform.machine(),
            "cores": torch.get_num_threads(),
            "torch": torch.__version__,
            "pillow": Image.__version__,
            "dataset": ds.name,
            "rows": rows,
            "total_ratio_f64": ratio,
        },
    )
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
