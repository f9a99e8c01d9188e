"""Geometric self-ensemble (vdsr.ensemble): the 8 symmetries, their inverses, the average, and
the ``--self-ensemble`` options of ``vdsr eval`` and ``vdsr upscale``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from vdsr.checkpoint import save_weights
from vdsr.cli import main
from vdsr.ensemble import SYMMETRIES, SelfEnsemble, dihedral, undo_dihedral
from vdsr.model import VDSR
from vdsr.upscale import upscale_planes

from test_upscale import random_model  # the small random VDSR of the upscale tests


def numpy_symmetry(a: np.ndarray, k: int) -> np.ndarray:
    """The same symmetry written with numpy on an H x W array, as the docstring describes it."""
    b = np.rot90(a, k % 4)
    return np.fliplr(b) if k >= 4 else b


def test_the_eight_symmetries_are_distinct_and_undone():
    x = torch.arange(5 * 7, dtype=torch.float32).reshape(1, 1, 5, 7)  # no symmetry of its own
    seen = []
    for k in range(SYMMETRIES):
        y = dihedral(x, k)
        assert np.array_equal(y[0, 0].numpy(), numpy_symmetry(x[0, 0].numpy(), k))
        assert y.shape[-2:] == ((7, 5) if k % 2 else (5, 7))
        assert torch.equal(undo_dihedral(y, k), x)
        assert not any(s.shape == y.shape and torch.equal(s, y) for s in seen)
        seen.append(y)
    with pytest.raises(ValueError, match="symmetry 8"):
        dihedral(x, 8)


def test_ensemble_is_equivariant_and_averages_the_model():
    model = random_model(depth=5)
    ens = SelfEnsemble(model)
    x = torch.rand(2, 1, 12, 17)
    with torch.no_grad():
        out = ens(x)
        for k in range(SYMMETRIES):
            # the plain model is not equivariant, the ensemble is (to float32 rounding)
            plain_gap = (model(dihedral(x, k)) - dihedral(model(x), k)).abs().max()
            ens_gap = (ens(dihedral(x, k)) - dihedral(out, k)).abs().max()
            if k:
                assert plain_gap > 1e-3
            assert ens_gap <= 1e-5
        manual = sum(undo_dihedral(model(dihedral(x, k).contiguous()), k) for k in range(SYMMETRIES)) / SYMMETRIES
    assert (out - manual).abs().max() <= 1e-6
    assert (out - model(x)).abs().max() > 1e-3
    assert out.shape == x.shape and out.dtype == x.dtype
    assert ens.depth == model.depth and next(ens.parameters()) is next(model.parameters())


def test_ensemble_of_a_zero_residual_is_the_input():
    model = VDSR(3, 4)
    for c in model.layers:
        torch.nn.init.zeros_(c.weight)
    x = torch.rand(1, 1, 9, 14)
    with torch.no_grad():
        assert (SelfEnsemble(model)(x) - x).abs().max() <= 1e-6  # 8 float32 copies summed, / 8


def test_ensemble_under_bf16_autocast():
    model = random_model(depth=3, channels=4)
    x = torch.rand(1, 1, 10, 12)
    with torch.no_grad():
        ref = SelfEnsemble(model)(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low, plain = SelfEnsemble(model)(x), model(x)
    assert low.dtype == plain.dtype  # the model's own output dtype (x + a bf16 residual: float32)
    assert 0 < (low.float() - ref).abs().max() <= 2e-2  # bf16 did run, and the average is close


def test_tiled_upscale_with_the_ensemble_equals_untiled(rng):
    planes = rng.random((3, 30, 41))
    ens = SelfEnsemble(random_model(depth=6))
    whole = upscale_planes(planes, 2, ens)
    assert np.abs(upscale_planes(planes, 2, ens, tile=24) - whole).max() <= 1e-5
    assert np.abs(whole[0] - upscale_planes(planes, 2, ens.model)[0]).max() > 1e-4


def test_cli_self_ensemble(tmp_path, capsys):
    ckpt = tmp_path / "m.safetensors"
    save_weights(ckpt, random_model())
    data = tmp_path / "Tiny"
    data.mkdir()
    rng = np.random.default_rng(1)
    base = rng.random((8, 10, 3))
    photo = np.kron(base, np.ones((6, 6, 1)))[:44, :52]  # smooth-ish, not symmetric
    Image.fromarray((photo * 255).astype(np.uint8)).save(data / "a.png")
    args = ["eval", "--data", str(data), "--scales", "2", "--method", "vdsr", "--checkpoint", str(ckpt), "--device", "cpu"]
    assert main(args + ["--json", str(tmp_path / "p.json")]) == 0
    assert main(args + ["--self-ensemble", "--json", str(tmp_path / "e.json")]) == 0
    out = capsys.readouterr().out
    assert "vdsr+" in out
    plain, ens = (json.loads((tmp_path / f).read_text())["Tiny"]["2"]["psnr"] for f in ("p.json", "e.json"))
    assert plain != ens
    assert main(["eval", "--data", str(data), "--scales", "2", "--self-ensemble"]) == 2
    assert "--self-ensemble is only used with --method vdsr" in capsys.readouterr().err

    for flag, name in (([], "p.png"), (["--self-ensemble"], "e.png")):
        assert main(["upscale", str(data / "a.png"), "--scale", "2", "-o", str(tmp_path / name), "--checkpoint", str(ckpt)] + flag) == 0
    p, e = (np.asarray(Image.open(tmp_path / n)) for n in ("p.png", "e.png"))
    assert p.shape == e.shape == (88, 104, 3)
    assert not np.array_equal(p, e)

    fig = tmp_path / "fig.png"
    assert main(["compare", str(data / "a.png"), "--scale", "2", "-o", str(fig), "--checkpoint", str(ckpt), "--self-ensemble"]) == 0
    assert "VDSR+" in capsys.readouterr().out and Image.open(fig).size[0] > 600


def test_ensemble_through_the_fused_kernels():
    """The 8 symmetries through ``backend="triton"`` (the interpreter on the CPU; transposed
    shapes and fresh channels_last copies) give the torch backend's ensemble."""
    code = """
import torch
from vdsr.ensemble import SelfEnsemble
from vdsr.model import VDSR
torch.manual_seed(0)
ref = VDSR(3, 16).eval()
fused = VDSR(3, 16, backend="triton").eval()
fused.load_state_dict(ref.state_dict())
x = torch.rand(1, 1, 11, 18)
with torch.no_grad():
    gap = (SelfEnsemble(fused)(x) - SelfEnsemble(ref)(x)).abs().max().item()
    moved = (SelfEnsemble(ref)(x) - ref(x)).abs().max().item()
print(gap, moved)
"""
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    gap, moved = map(float, proc.stdout.split())
    assert gap <= 1e-5 and moved > 1e-4
