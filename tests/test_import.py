"""`vdsr import`: the authors' MatConvNet model into safetensors, and what it scores."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.io
import torch

from vdsr.checkpoint import load_weights, read_metadata
from vdsr.cli import main

# The authors' model under this project's protocol (Set5, Set14; x2, x3, x4), as measured once;
# the paper reports 37.53 / 33.66 / 31.35 and 33.03 / 29.77 / 28.01.
EXPECTED = {"Set5": {"2": 37.51, "3": 33.65, "4": 31.34}, "Set14": {"2": 33.06, "3": 29.80, "4": 28.01}}


def test_import_official_model_reproduces_the_paper(official_mat, shared_data, tmp_path, capsys):
    out = tmp_path / "official.safetensors"
    assert main(["import", str(official_mat), "-o", str(out)]) == 0
    assert "VDSR-20, 64 channels, 665,921 parameters" in capsys.readouterr().out
    meta = read_metadata(out)
    assert meta["source"] == "VDSR_Official.mat" and len(meta["source_sha256"]) == 64
    model = load_weights(out)
    assert model.depth == 20 and model.channels == 64
    # layer 1 is MatConvNet's weight[0] transposed (3, 2, 0, 1), not flipped
    raw = scipy.io.loadmat(str(official_mat))["model"]["weight"][0, 0][0, 0]
    assert torch.equal(model.layers[0].weight[0, 0], torch.from_numpy(raw[:, :, 0, 0].astype(np.float32)))
    assert torch.equal(model.layers[0].weight[5, 0], torch.from_numpy(raw[:, :, 0, 5].astype(np.float32)))
    report = tmp_path / "eval.json"
    rc = main(["eval", "--data", str(shared_data / "Set5"), str(shared_data / "Set14"), "--method", "vdsr",
               "--checkpoint", str(out), "--json", str(report), "--device", "cpu"])  # fmt: skip
    assert rc == 0
    got = json.loads(report.read_text())
    for name, by_scale in EXPECTED.items():
        for s, psnr in by_scale.items():
            assert abs(got[name][s]["psnr"] - psnr) <= 0.02, (name, s, got[name][s]["psnr"])


def _mat(tmp_path, **variables):
    path = tmp_path / "model.mat"
    scipy.io.savemat(str(path), variables)
    return path


def _cell(arrays):
    c = np.empty((1, len(arrays)), dtype=object)
    for i, a in enumerate(arrays):
        c[0, i] = a
    return c


@pytest.mark.parametrize("case", ["not-mat", "hdf5", "no-model", "bad-shape", "missing-output-suffix"])
def test_import_bad_input_is_one_line(case, tmp_path, capsys):
    out = tmp_path / "out.safetensors"
    if case == "not-mat":
        src = tmp_path / "x.mat"
        src.write_bytes(b"this is not a mat file at all" * 10)
    elif case == "hdf5":
        src = tmp_path / "x.mat"
        src.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(200))
    elif case == "no-model":
        src = _mat(tmp_path, net=np.zeros(3))
    else:
        rng = np.random.default_rng(0)
        w = [rng.standard_normal((3, 3, 1, 8))] + [rng.standard_normal((3, 3, 8, 8))] + [rng.standard_normal((3, 3, 7))]
        b = [np.zeros((8, 1)), np.zeros((8, 1)), np.zeros((1, 1))]
        src = _mat(tmp_path, model={"weight": _cell(w), "bias": _cell(b)})
        if case == "missing-output-suffix":
            out = tmp_path / "out.bin"
    assert main(["import", str(src), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("vdsr import: error:") and "Traceback" not in err
    assert not out.exists()
    if case == "bad-shape":
        assert "layer 3" in err


def test_import_small_model_roundtrip(tmp_path):
    """A 3-layer MatConvNet model of width 8 converts to the same function in PyTorch."""
    rng = np.random.default_rng(1)
    w = [rng.standard_normal((3, 3, 1, 8)), rng.standard_normal((3, 3, 8, 8)), rng.standard_normal((3, 3, 8))]
    b = [rng.standard_normal((8, 1)), rng.standard_normal((8, 1)), rng.standard_normal((1, 1))]
    src = _mat(tmp_path, model={"weight": _cell(w), "bias": _cell(b)})
    out = tmp_path / "small.safetensors"
    assert main(["import", str(src), "-o", str(out)]) == 0
    model = load_weights(out)
    x = torch.rand(1, 1, 6, 7, dtype=torch.float64)
    # the same network by hand, as MatConvNet computes it (correlation, zero padding 1)
    h = x
    for i in range(3):
        wt = torch.from_numpy(w[i] if w[i].ndim == 4 else w[i][..., None]).permute(3, 2, 0, 1)
        h = torch.nn.functional.conv2d(h, wt, torch.from_numpy(b[i].reshape(-1)), padding=1)
        h = torch.relu(h) if i < 2 else h
    assert torch.allclose(model.double()(x), x + h, atol=1e-5)
