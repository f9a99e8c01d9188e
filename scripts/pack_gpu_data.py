"""Pack the benchmark and training images for a GPU machine call (which carries at most 64 MiB).

    python scripts/pack_gpu_data.py [--src ../shared/data] [--out gpu_data] [--sets NAME ...]

Every RGB image becomes lossless WebP (about two thirds of the size of its PNG; every file
decoded back and checked pixel for pixel against its PNG): T91 and BSD200 (the 291 training
images, 61.5 MB as PNG), and Set5 and Set14 too (evaluation reads pixels, not bytes). A
greyscale image (Set14's bridge) is copied as PNG: WebP has no greyscale mode. In all 43.0
MiB, which leaves the repository (models, a committed checkpoint) 21 MiB of the call's 64 MiB.
``gpu_data/`` is git-ignored: name it in the device call's ``carry``. Prints the sizes; exit
status 1 if a file would not round-trip.

``--sets T91 BSD200 Set5`` packs only those folders (and removes an earlier pack's others), for a
call whose working tree is too big for all four: leaving Set14 out saves 3.2 MiB, and
``scripts/gpu_run.sh`` then evaluates on Set5 alone (Set14 waits for the CPU: cycle_report).
"""

from __future__ import annotations

import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vdsr.cliargs import ArgParser, number  # noqa: E402

SETS = ("Set5", "Set14", "T91", "BSD200")  # the folders of ../shared/data a GPU call can use


def to_webp(src: Path, dst: Path) -> tuple[str, int, int, bool]:
    """Lossless WebP of an RGB image (else a PNG copy); returns (name, in bytes, out bytes, exact)."""
    with Image.open(src) as im:
        im.load()
        mode = im.mode
        pixels = np.asarray(im)
    if mode != "RGB":
        dst = dst.with_suffix(src.suffix)
        shutil.copyfile(src, dst)
        return src.name, src.stat().st_size, dst.stat().st_size, True
    tmp = dst.with_name(dst.name + ".tmp")
    Image.fromarray(pixels).save(tmp, format="WEBP", lossless=True, quality=100, method=4)
    with Image.open(tmp) as back:
        exact = back.mode == "RGB" and np.array_equal(np.asarray(back.convert("RGB")), pixels)
    tmp.replace(dst)
    return src.name, src.stat().st_size, dst.stat().st_size, exact


def main(argv=None) -> int:
    ap = ArgParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=ROOT / "gpu_data")
    ap.add_argument("--workers", type=number(int, 1, 64), default=2)
    ap.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS), metavar="NAME",
                    help=f"the folders to pack (default: all of {', '.join(SETS)}; gpu_run.sh needs T91, BSD200, Set5)")
    args = ap.parse_args(argv)
    ap.check_output(args.out, folder=True)
    for name in args.sets:
        if not (args.src / name).is_dir():
            print(f"pack_gpu_data: error: {args.src / name}: no such folder", file=sys.stderr)
            return 2
    for name in sorted(set(SETS) - set(args.sets)):  # an earlier pack's copy would still travel
        if (args.out / name).is_dir():
            shutil.rmtree(args.out / name)
            print(f"{args.out / name}: removed (not in --sets)", file=sys.stderr)
    total_in = total_out = 0
    bad = []
    for name in args.sets:
        dst = args.out / name
        dst.mkdir(parents=True, exist_ok=True)
        files = sorted((args.src / name).glob("*.png"))
        for f in files:  # an earlier pack's copy in the other format would be a second copy of the image
            for old in (dst / (f.stem + ".png"), dst / (f.stem + ".webp")):
                old.unlink(missing_ok=True)
        with ProcessPoolExecutor(args.workers) as pool:
            for fname, n_in, n_out, exact in pool.map(to_webp, files, [dst / (f.stem + ".webp") for f in files]):
                total_in += n_in
                total_out += n_out
                if not exact:
                    bad.append(f"{name}/{fname}")
        print(f"{name}: {len(files)} images", file=sys.stderr)
    print(f"{args.out}: {total_out / 2**20:.1f} MiB (from {total_in / 2**20:.1f} MiB of PNG)")
    if bad:
        print(f"pack_gpu_data: error: not bit-exact after WebP: {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
