"""vdsr.images: discovery and reading of the image kinds users have."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

from vdsr.errors import InputError
from vdsr.images import find_images, read_image, write_image


def test_find_images_recursive_sorted_and_names_skipped(tmp_path):
    (tmp_path / "b").mkdir()
    for name in ("z.png", "a.JPG", "b/c.bmp", "b/d.tif"):
        Image.new("RGB", (4, 4)).save(tmp_path / name, format={"png": "PNG", "jpg": "JPEG", "bmp": "BMP", "tif": "TIFF"}[name.rsplit(".", 1)[1].lower()])
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / ".DS_Store").write_bytes(b"\0")
    images, skipped = find_images(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in images] == ["a.JPG", "b/c.bmp", "b/d.tif", "z.png"]
    assert sorted(p.name for p, _ in skipped) == [".DS_Store", "notes.txt"]
    assert all("not an image" in why for _, why in skipped)
    with pytest.raises(InputError, match="no such folder"):
        find_images(tmp_path / "nope")


@pytest.mark.parametrize(
    "mode,shape,warns",
    [
        ("L", (6, 5), False),
        ("RGB", (6, 5, 3), False),
        ("RGBA", (6, 5, 3), True),
        ("P", (6, 5, 3), False),
        ("1", (6, 5), False),
        ("CMYK", (6, 5, 3), False),
        ("I;16", (6, 5), True),
    ],
)
def test_read_modes(tmp_path, mode, shape, warns):
    path = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png")
    img = Image.new(mode, (5, 6))
    if mode == "I;16":
        img = Image.fromarray(np.full((6, 5), 65535, np.uint16))
    img.save(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        arr = read_image(path)
    assert arr.shape == shape and arr.dtype == np.uint8 and arr.flags.writeable
    assert bool(caught) == warns
    if warns:
        assert str(path) in str(caught[0].message)
    if mode == "I;16":
        assert arr.max() == 255


def test_corrupt_and_non_image_files(tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (64, 64), (10, 200, 30)).save(good)
    truncated = tmp_path / "trunc.png"
    truncated.write_bytes(good.read_bytes()[:60])
    with pytest.raises(InputError, match=r"trunc\.png: cannot decode"):
        read_image(truncated)
    fake = tmp_path / "fake.png"
    fake.write_text("not a picture")
    with pytest.raises(InputError, match=r"fake\.png: not an image"):
        read_image(fake)
    with pytest.raises(InputError, match="no such file"):
        read_image(tmp_path / "missing.png")


def test_write_image_atomic(tmp_path):
    arr = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    write_image(tmp_path / "sub" / "o.png", arr)
    assert np.array_equal(read_image(tmp_path / "sub" / "o.png"), arr)
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["o.png"]
