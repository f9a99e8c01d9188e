"""The wheel installs beside the ecosystem: every top-level name is ours (no bare `kernels`, the
import name of Hugging Face's package), and an installed wheel works outside the checkout:
`vdsr --help`, `vdsr eval` with the shipped model (package data), `vdsr.load_pretrained()`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_wheel_top_level_names_and_an_install_outside_the_checkout(shared_data, tmp_path):
    # build from a copy: setuptools writes build/ and *.egg-info into the tree it builds
    src = tmp_path / "src"
    skip = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "runs", "outputs", "gpu_data", "__pycache__")
    shutil.copytree(REPO, src, ignore=skip)
    dist = tmp_path / "dist"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(src)],
                           capture_output=True, text=True, timeout=600, cwd=tmp_path)  # fmt: skip
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = dist.glob("vdsr-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert all(t.startswith("vdsr") for t in top), top  # vdsr, vdsr_kernels, vdsr_weights, vdsr-*.dist-info
    assert "kernels" not in top and {"vdsr", "vdsr_kernels", "vdsr_weights"} <= top
    assert "vdsr_weights/vdsr20_x234.safetensors" in names and "vdsr_kernels/conv.py" in names

    # a fresh venv: the wheel in its own site-packages; torch & co. from this environment's
    # site-packages, appended after it by a .pth (no network here; the checkout is not on the path)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    Path(site, "zz_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    inst = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert inst.returncode == 0, inst.stderr[-3000:]

    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "two").mkdir(parents=True)
    for name in ("bird.png", "butterfly.png"):
        shutil.copy(shared_data / "Set5" / name, elsewhere / "two" / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TRITON_INTERPRET")}
    run = lambda *cmd: subprocess.run(cmd, cwd=elsewhere, capture_output=True, text=True, timeout=600, env=env)  # noqa: E731

    where = run(str(py), "-c", "import vdsr, vdsr_kernels, json; print(json.dumps([vdsr.__file__, vdsr_kernels.__file__]))")
    assert where.returncode == 0, where.stderr[-2000:]
    for f in json.loads(where.stdout):
        assert Path(f).is_relative_to(venv) and not Path(f).is_relative_to(REPO), f
    helped = run(str(venv / "bin" / "vdsr"), "--help")
    assert helped.returncode == 0 and "eval" in helped.stdout and "upscale" in helped.stdout
    ev = run(str(venv / "bin" / "vdsr"), "eval", "--data", "two", "--scales", "2", "--method", "vdsr", "--device", "cpu", "--json", "out.json")
    assert ev.returncode == 0, ev.stderr[-2000:]
    result = json.loads((elsewhere / "out.json").read_text())["two"]["2"]
    bic = run(str(venv / "bin" / "vdsr"), "eval", "--data", "two", "--scales", "2", "--json", "bicubic.json")
    assert bic.returncode == 0, bic.stderr[-2000:]
    bicubic = json.loads((elsewhere / "bicubic.json").read_text())["two"]["2"]
    assert result["images"] == 2 and result["psnr"] > bicubic["psnr"] + 1  # the shipped model ran
    loaded = run(str(py), "-c", "import vdsr; m = vdsr.load_pretrained(); from vdsr.upscale import DEFAULT_WEIGHTS as W; print(m.depth, W)")
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    depth, path = loaded.stdout.split()
    assert depth == "20" and Path(path).is_relative_to(venv)
