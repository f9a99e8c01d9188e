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
