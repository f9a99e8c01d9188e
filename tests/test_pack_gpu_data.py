"""scripts/pack_gpu_data.py: the images for a GPU call, smaller and pixel for pixel the same."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent


def test_pack_is_pixel_exact_keeps_greyscale_as_png_and_replaces_an_older_pack(tmp_path):
    sys.path.insert(0, str(REPO / "scripts"))
    from pack_gpu_data import main

    src, out = tmp_path / "src", tmp_path / "out"
    rng = np.random.default_rng(0)
    images = {}
    for name in ("Set5", "Set14", "T91", "BSD200"):
        (src / name).mkdir(parents=True)
        rgb = rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(src / name / "a.png")
        images[(name, "a")] = rgb
    grey = rng.integers(0, 256, (16, 18), dtype=np.uint8)
    Image.fromarray(grey).save(src / "Set14" / "bridge.png")
    (out / "Set5").mkdir(parents=True)
    Image.fromarray(images[("Set5", "a")]).save(out / "Set5" / "a.png")  # an older pack's PNG copy
    assert main(["--src", str(src), "--out", str(out), "--workers", "1"]) == 0
    for (name, stem), rgb in images.items():
        assert sorted(p.name for p in (out / name).iterdir() if p.stem == stem) == [f"{stem}.webp"]  # one copy
        with Image.open(out / name / f"{stem}.webp") as im:
            assert im.mode == "RGB" and np.array_equal(np.asarray(im), rgb)
    with Image.open(out / "Set14" / "bridge.png") as im:
        assert im.mode == "L" and np.array_equal(np.asarray(im), grey)
    assert main(["--src", str(tmp_path / "none"), "--out", str(out)]) == 2


def test_pack_sets_packs_those_and_removes_an_earlier_packs_others(tmp_path):
    """--sets T91 BSD200 Set5: a smaller carry; Set14 from an earlier pack would still travel."""
    sys.path.insert(0, str(REPO / "scripts"))
    from pack_gpu_data import main

    src, out = tmp_path / "src", tmp_path / "out"
    for name in ("Set5", "T91", "BSD200"):  # no Set14 at the source: not asked for, not needed
        (src / name).mkdir(parents=True)
        Image.fromarray(np.full((8, 8, 3), 7, np.uint8)).save(src / name / "a.png")
    (out / "Set14").mkdir(parents=True)
    (out / "Set14" / "old.webp").write_bytes(b"an earlier pack")
    assert main(["--src", str(src), "--out", str(out), "--workers", "1", "--sets", "T91", "BSD200", "Set5"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["BSD200", "Set5", "T91"]
    assert main(["--src", str(src), "--out", str(out), "--workers", "1"]) == 2  # all four: Set14 missing


def test_pack_adds_the_working_tree_and_refuses_a_call_over_the_limit(tmp_path):
    """The call carries the working tree (tracked and untracked-not-ignored files) plus the pack:
    the sum is printed, and over --limit-mib the exit status is 3 with the largest files named."""
    import subprocess

    sys.path.insert(0, str(REPO / "scripts"))
    from pack_gpu_data import main, working_tree_files

    repo, src = tmp_path / "repo", tmp_path / "src"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / ".gitignore").write_text("gpu_data/\nruns/\n")
    (repo / "big.bin").write_bytes(b"\1" * (3 << 20))  # untracked, not ignored: it travels
    (repo / "runs").mkdir()
    (repo / "runs" / "ignored.bin").write_bytes(b"\2" * (5 << 20))  # ignored: it stays
    (repo / "kept.txt").write_text("x")
    subprocess.run(["git", "-C", str(repo), "add", "kept.txt"], check=True)
    names = [name for _, name in working_tree_files(repo)]
    assert names == [".gitignore", "big.bin", "kept.txt"]
    for name in ("Set5", "T91", "BSD200"):
        (src / name).mkdir(parents=True)
        Image.fromarray(np.full((8, 8, 3), 7, np.uint8)).save(src / name / "a.png")
    args = ["--src", str(src), "--out", str(repo / "gpu_data"), "--workers", "1", "--sets", "T91", "BSD200", "Set5",
            "--repo", str(repo)]  # fmt: skip
    assert main(args + ["--limit-mib", "4"]) == 0
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "pack_gpu_data.py"), *args, "--limit-mib", "2"],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    assert "device call: working tree 3.0 MiB + gpu_data 0.0 MiB = 3.0 MiB of 2" in proc.stdout
    assert "over 2 MiB" in proc.stderr and "big.bin (3.0 MiB)" in proc.stderr and "ignored.bin" not in proc.stderr
    (repo / "big.bin").unlink()  # moved out of the tree for the call
    assert main(args + ["--limit-mib", "2"]) == 0
    assert working_tree_files(tmp_path / "src") is None  # not a git tree: nothing to add, the check is skipped
