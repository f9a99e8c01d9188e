"""`vdsr upscale`, `vdsr compare` and the Python API: sizes, tiling, colour, modes, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import vdsr
from vdsr.checkpoint import save_weights
from vdsr.cli import main
from vdsr.model import VDSR
from vdsr.resize import imresize
from vdsr.upscale import _to_planes, default_tile, upscale, upscale_planes


def random_model(depth=4, channels=8, seed=0) -> VDSR:
    torch.manual_seed(seed)
    m = VDSR(depth, channels)
    for c in m.layers:
        torch.nn.init.normal_(c.bias, 0, 0.05)
    return m.eval()


def zero_model() -> VDSR:
    m = VDSR(3, 4)
    for c in m.layers:
        torch.nn.init.zeros_(c.weight)
    return m.eval()


@pytest.fixture
def ckpt(tmp_path):
    path = tmp_path / "m.safetensors"
    save_weights(path, random_model())
    return path


def test_output_size_as_matlab():
    for (h, w), s in [((11, 17), 3), ((10, 13), 2.5), ((7, 9), 4), ((8, 8), 1.5)]:
        out = upscale(np.zeros((h, w, 3), np.uint8), s, random_model())
        assert out.shape[:2] == imresize(torch.zeros(h, w, dtype=torch.float64), s).shape


@pytest.mark.parametrize("scale", [2, 3, 2.5])
def test_tiled_equals_untiled(scale, rng):
    planes = rng.random((3, 45, 61))
    model = random_model(depth=6)
    whole = upscale_planes(planes, scale, model)
    for tile in (16, 40, 77):
        assert np.abs(upscale_planes(planes, scale, model, tile=tile) - whole).max() <= 1e-5
    # chroma is exactly the MATLAB bicubic of the chroma
    assert np.abs(whole[1:] - imresize(torch.from_numpy(planes[1:]), scale).numpy()).max() <= 1e-12


def test_flat_luma_colour_follows_bicubic(rng):
    """Y constant, chroma varying: the colour of the result is the bicubic colour."""
    h, w = 24, 30
    cb = 0.5 + 0.2 * np.sin(np.arange(w) / 3.0)[None, :].repeat(h, 0)
    cr = 0.5 + 0.2 * np.cos(np.arange(h) / 4.0)[:, None].repeat(w, 1)
    planes = np.stack([np.full((h, w), 0.5), cb, cr])
    from vdsr.upscale import _from_planes

    img = _from_planes(planes, 255, np.uint8, np.zeros((h, w, 3)))
    bic = upscale(img, 2, bicubic=True)
    zero = upscale(img, 2, zero_model())  # zero residual: bicubic, up to the float32 network path's rounding
    assert np.abs(zero.astype(int) - bic.astype(int)).max() <= 1
    shift = zero_model()
    torch.nn.init.constant_(shift.layers[-1].bias, 0.02)  # the network brightens Y by 0.02
    out = upscale(img, 2, shift)
    chroma = lambda a: _to_planes(a, 255)[1:]  # noqa: E731
    luma = lambda a: _to_planes(a, 255)[0]  # noqa: E731
    assert np.abs(luma(out) - luma(bic) - 0.02).max() <= 2 / 255  # Y changed ...
    assert np.abs(chroma(out) - chroma(bic)).max() <= 2 / 255  # ... the colour did not (rounding aside)


def test_modes_round_trip(tmp_path):
    model = zero_model()
    grey = Image.fromarray(np.tile(np.arange(0, 240, 8, dtype=np.uint8), (20, 1)))
    out = upscale(grey, 2, model)
    assert out.mode == "L" and out.size == (60, 40)
    rgba = Image.new("RGBA", (10, 8), (200, 50, 20, 128))
    out = upscale(rgba, 3, model)
    assert out.mode == "RGBA" and out.size == (30, 24)
    assert np.all(np.asarray(out)[..., 3] == 128)  # alpha upscaled (bicubic of a constant) and kept
    deep = Image.fromarray(np.full((12, 14), 40000, np.uint16))
    out = upscale(deep, 2, model)
    assert out.mode == "I;16" and np.all(np.asarray(out) == 40000)
    la = upscale(Image.new("LA", (6, 5), (90, 200)), 2, model)
    assert la.mode == "LA" and np.all(np.asarray(la)[..., 1] == 200)
    arr = upscale(np.full((5, 6, 3), 77, np.uint8), 2, model)
    assert arr.dtype == np.uint8 and arr.shape == (10, 12, 3)
    assert default_tile(torch.device("cpu"), budget_bytes=64 * 2**20) == 256


def test_python_api_uses_given_weights(ckpt):
    model = vdsr.load_pretrained(ckpt)
    img = Image.new("RGB", (16, 12), (30, 120, 200))
    assert vdsr.upscale(img, 2, model).size == (32, 24)
    with pytest.raises(vdsr.errors.InputError, match="no such weights"):
        vdsr.load_pretrained(ckpt.parent / "none.safetensors")
    with pytest.raises(vdsr.errors.InputError, match="scale 0.5"):
        vdsr.upscale(img, 0.5, model)


def test_cli_single_file_exif_and_icc(ckpt, tmp_path, capsys):
    src = tmp_path / "photo.jpg"
    img = Image.fromarray((np.random.default_rng(0).random((20, 30, 3)) * 255).astype(np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    img.save(src, exif=exif, icc_profile=icc)
    out = tmp_path / "big.png"
    assert main(["upscale", str(src), "--scale", "2", "-o", str(out), "--checkpoint", str(ckpt)]) == 0
    res = Image.open(out)
    assert res.size == (40, 60)  # EXIF orientation applied: 30x20 shown as 20x30, then x2
    assert res.info.get("icc_profile") == icc
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left


def test_cli_folder_with_a_corrupt_file(ckpt, tmp_path, capsys):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    for name in ("a.png", "sub/b.png"):
        Image.new("RGB", (12, 10), (10, 20, 30)).save(src / name)
    (src / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (src / "notes.txt").write_text("x")
    code = main(["upscale", str(src), "--scale", "3", "-o", str(tmp_path / "out"), "--checkpoint", str(ckpt), "--tile", "16"])
    out, err = capsys.readouterr()
    assert code == 1  # one file failed
    assert Image.open(tmp_path / "out" / "a.png").size == (36, 30)
    assert Image.open(tmp_path / "out" / "sub" / "b.png").size == (36, 30)
    errors = [ln for ln in err.splitlines() if ln.startswith("vdsr upscale: error:")]
    assert len(errors) == 1 and "bad.png" in errors[0]
    assert "2 of 3 images upscaled x3; 1 failed; 1 non-image files skipped" in out


def test_cli_refuses_to_overwrite_and_bad_scale(ckpt, tmp_path, capsys):
    src = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(src)
    assert main(["upscale", str(src), "--scale", "2", "-o", str(src), "--checkpoint", str(ckpt)]) == 2
    assert "would overwrite its input" in capsys.readouterr().err
    assert main(["upscale", str(src), "--scale", "0.5", "-o", str(tmp_path / "y.png"), "--checkpoint", str(ckpt)]) == 2
    with pytest.warns(UserWarning, match="trained on x2, x3 and x4"):
        assert main(["upscale", str(src), "--scale", "1.5", "-o", str(tmp_path / "z.png"), "--checkpoint", str(ckpt)]) == 0
    assert Image.open(tmp_path / "z.png").size == (12, 12)


def test_compare_figure(ckpt, tmp_path, capsys):
    from vdsr.demo import demo_files

    src = tmp_path / "gt.png"
    Image.open(demo_files()[0]).crop((100, 100, 196, 172)).save(src)
    out = tmp_path / "fig.png"
    assert main(["compare", str(src), "--scale", "3", "-o", str(out), "--checkpoint", str(ckpt)]) == 0
    assert Image.open(out).size[0] > 600
    assert "bicubic" in capsys.readouterr().out
