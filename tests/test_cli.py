"""The ``vdsr eval`` command: output, JSON shape, the VDSR method, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vdsr.checkpoint import save_weights
from vdsr.cli import main
from vdsr.demo import demo_files
from vdsr.model import VDSR


@pytest.fixture
def photos(tmp_path) -> Path:
    """A small dataset of real photo crops (from the scikit-image demo set)."""
    folder = tmp_path / "Tiny"
    folder.mkdir()
    for path in demo_files()[:3]:
        img = Image.open(path)
        img.crop((100, 100, 100 + 50, 100 + 38)).save(folder / (path.stem + ".png"))
    return folder


def run(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_eval_bicubic_json_shape(photos, tmp_path, capsys):
    out_json = tmp_path / "r.json"
    code, out, _ = run(["eval", "--data", str(photos), "--scales", "2", "3", "--json", str(out_json)], capsys)
    assert code == 0
    result = json.loads(out_json.read_text())
    assert list(result) == ["Tiny"] and list(result["Tiny"]) == ["2", "3"]
    for r in result["Tiny"].values():
        assert set(r) == {"psnr", "ssim", "images"} and r["images"] == 3
        assert 15 < r["psnr"] < 50 and 0 < r["ssim"] < 1
    assert "Tiny" in out and "x3" in out and "bicubic" in out
    assert result["Tiny"]["2"]["psnr"] > result["Tiny"]["3"]["psnr"]


def test_eval_vdsr_checkpoint_and_saved_images(photos, tmp_path, capsys):
    ckpt = tmp_path / "m.safetensors"
    model = VDSR(depth=3, channels=4)
    for conv in model.layers:  # a model whose residual is exactly zero: VDSR == bicubic
        conv.weight.data.zero_()
    save_weights(ckpt, model)
    args = ["eval", "--data", str(photos), "--scales", "2", "--device", "cpu"]
    _, _, _ = run(args + ["--json", str(tmp_path / "b.json")], capsys)
    code, out, _ = run(
        args + ["--method", "vdsr", "--checkpoint", str(ckpt), "--json", str(tmp_path / "v.json"), "--save-images", str(tmp_path / "sr")],
        capsys,
    )
    assert code == 0 and "vdsr" in out
    b, v = (json.loads((tmp_path / f).read_text())["Tiny"]["2"] for f in ("b.json", "v.json"))
    assert v == b  # a zero residual reproduces bicubic exactly: the method path is wired right
    saved = sorted((tmp_path / "sr" / "Tiny" / "x2").iterdir())
    assert [p.name for p in saved] == sorted(p.name for p in photos.iterdir())
    assert np.asarray(Image.open(saved[0])).shape == (38, 50, 3)
    # a random model changes the numbers
    save_weights(ckpt, VDSR(depth=3, channels=4))
    run(args + ["--method", "vdsr", "--checkpoint", str(ckpt), "--json", str(tmp_path / "r.json")], capsys)
    r = json.loads((tmp_path / "r.json").read_text())["Tiny"]["2"]
    assert r != b
    # a training checkpoint folder (or a run folder) stands for its model.safetensors
    step = tmp_path / "run" / "checkpoints" / "step-0000010"
    step.mkdir(parents=True)
    (step / "model.safetensors").write_bytes(ckpt.read_bytes())
    code, _, _ = run(args + ["--method", "vdsr", "--checkpoint", str(step), "--json", str(tmp_path / "f.json")], capsys)
    assert code == 0 and json.loads((tmp_path / "f.json").read_text())["Tiny"]["2"] == r


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("vdsr eval: error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_bad_input_errors(photos, tmp_path, capsys):
    # corrupt image
    (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    code, _, err = run(["eval", "--data", str(photos), "--scales", "2"], capsys)
    assert code == 2 and "broken.png" in one_error_line(err)
    # --skip-bad: named and counted instead
    with pytest.warns(UserWarning, match="broken.png"):
        code, out, err = run(["eval", "--data", str(photos), "--scales", "2", "--skip-bad"], capsys)
    assert code == 0 and "1 file(s) skipped: broken.png" in out
    (photos / "broken.png").unlink()
    # a non-image file is skipped, named and counted, never silently
    (photos / "readme.txt").write_text("x")
    code, out, _ = run(["eval", "--data", str(photos), "--scales", "2"], capsys)
    assert code == 0 and "readme.txt (not an image" in out
    # an image too small for the scale
    Image.new("RGB", (15, 40)).save(photos / "small.png")
    code, _, err = run(["eval", "--data", str(photos), "--scales", "4"], capsys)
    line = one_error_line(err)
    assert code == 2 and "small.png" in line and "too small for scale 4" in line
    # empty folder, missing folder, unsupported scale, missing checkpoint
    (tmp_path / "empty").mkdir()
    code, _, err = run(["eval", "--data", str(tmp_path / "empty")], capsys)
    assert code == 2 and "no images" in one_error_line(err)
    code, _, err = run(["eval", "--data", str(tmp_path / "nowhere")], capsys)
    assert code == 2 and "no such folder" in one_error_line(err)
    code, _, err = run(["eval", "--data", str(photos), "--scales", "1"], capsys)
    assert code == 2 and "--scales: 1: expected an integer in [2, 16]" in one_error_line(err)
    code, _, err = run(["eval", "--data", str(photos), "--method", "vdsr", "--checkpoint", str(tmp_path / "x.safetensors")], capsys)
    assert code == 2 and "x.safetensors" in one_error_line(err)


def test_console_script_runs(photos, tmp_path):
    """The installed entry point (python -m vdsr), end to end in a fresh process."""
    proc = subprocess.run(
        [sys.executable, "-m", "vdsr", "eval", "--data", str(photos), "--scales", "2", "--json", str(tmp_path / "o.json")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "o.json").read_text())["Tiny"]["2"]["images"] == 3


def test_eval_backend_triton_matches_torch(photos, tmp_path):
    """`--backend triton` (the interpreter on the CPU) gives the torch backend's numbers."""
    ckpt = tmp_path / "m.safetensors"
    save_weights(ckpt, VDSR(depth=3, channels=16))
    results = {}
    for backend in ("torch", "triton"):
        out = tmp_path / f"{backend}.json"
        proc = subprocess.run(
            [sys.executable, "-m", "vdsr", "eval", "--data", str(photos), "--scales", "3", "--method", "vdsr",
             "--checkpoint", str(ckpt), "--backend", backend, "--device", "cpu", "--json", str(out)],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        results[backend] = json.loads(out.read_text())["Tiny"]["3"]
    assert results["triton"]["images"] == 3
    assert results["triton"]["psnr"] == pytest.approx(results["torch"]["psnr"], abs=1e-3)
    assert results["triton"]["ssim"] == pytest.approx(results["torch"]["ssim"], abs=1e-4)


@pytest.mark.parametrize("native", [True, False])
def test_bf16_warns_only_where_the_hardware_emulates_it(photos, tmp_path, capsys, monkeypatch, native):
    """``--bf16`` on an AVX2 CPU (no native bfloat16) runs over 10x slower than float32: one warning
    line says so; where the hardware has bfloat16 the run is quiet. Both still run under bf16."""
    from vdsr import precision

    monkeypatch.setattr(precision, "native_bf16", lambda device: native)
    ckpt = tmp_path / "m.safetensors"
    save_weights(ckpt, VDSR(depth=3, channels=4))
    src = sorted(photos.iterdir())[0]
    for args in (["eval", "--data", str(photos), "--scales", "2", "--method", "vdsr"],
                 ["upscale", str(src), "--scale", "2", "-o", str(tmp_path / "up.png")]):  # fmt: skip
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # each command is its own process for a user
            code, _, err = run(args + ["--checkpoint", str(ckpt), "--device", "cpu", "--bf16"], capsys)
        assert code == 0, err
        lines = [str(w.message) for w in caught if "bf16" in str(w.message)]
        assert len(lines) == (0 if native else 1), lines
        assert native or ("--bf16: bf16 on this CPU" in lines[0] and "emulated" in lines[0]), lines
    assert (tmp_path / "up.png").is_file()
