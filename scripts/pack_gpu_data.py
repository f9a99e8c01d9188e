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

Then it adds what the device call would carry: the repository's working tree (``--repo``, default
this one: tracked files and untracked ones git does not ignore, as the device tool copies them)
plus the pack, and prints the sum against ``--limit-mib`` (64). Over it, exit status 3 with the
tree's largest files named, so a call is never started that would be refused (move a file the
device does not need out of the tree for the call, or pack fewer sets).
"""

from __future__ import annotations

import shutil
import subprocess
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


def working_tree_files(repo: Path) -> list[tuple[int, str]] | None:
    """(bytes, path) of each file a device call copies from ``repo``: git's tracked files that are
    present and its untracked, not-ignored ones; None when ``repo`` is not a git working tree."""
    try:
        out = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             capture_output=True, check=True).stdout  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    files = []
    for name in sorted(set(out.decode().split("\0")) - {""}):
        path = repo / name
        if path.is_file() and not path.is_symlink():  # a tracked file deleted from the tree does not travel
            files.append((path.stat().st_size, name))
    return files


def check_payload(repo: Path, pack: Path, limit_mib: float) -> int:
    """Print the call's payload (working tree + pack) against the limit; 0 if it fits, 3 if not."""
    files = working_tree_files(repo)
    if files is None:
        print(f"pack_gpu_data: {repo} is not a git working tree: the call's payload not checked", file=sys.stderr)
        return 0
    pack = pack.resolve()
    files = [(n, name) for n, name in files if pack not in (repo / name).resolve().parents]  # counted once, as the pack
    tree = sum(n for n, _ in files)
    packed = sum(f.stat().st_size for f in pack.rglob("*") if f.is_file())
    total = (tree + packed) / 2**20
    print(f"device call: working tree {tree / 2**20:.1f} MiB + {pack.name} {packed / 2**20:.1f} MiB = "
          f"{total:.1f} MiB of {limit_mib:g}")  # fmt: skip
    if total <= limit_mib:
        return 0
    biggest = ", ".join(f"{name} ({n / 2**20:.1f} MiB)" for n, name in sorted(files, reverse=True)[:5])
    print(f"pack_gpu_data: error: the call would carry {total:.1f} MiB, over {limit_mib:g} MiB: move files the device "
          f"does not need out of the working tree for the call, or pack fewer --sets; the largest: {biggest}",
          file=sys.stderr)  # fmt: skip
    return 3


def main(argv=None) -> int:
    ap = ArgParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=ROOT / "gpu_data")
    ap.add_argument("--workers", type=number(int, 1, 64), default=2)
    ap.add_argument("--repo", type=Path, default=ROOT, help="the working tree the call copies (default: this repository)")
    ap.add_argument("--limit-mib", type=number(float, 1, 1 << 20), default=64.0,
                    help="the call's limit, working tree plus carry (default 64)")
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
    return check_payload(args.repo, args.out, args.limit_mib)


if __name__ == "__main__":
    sys.exit(main())
