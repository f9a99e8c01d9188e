"""vdsr.resize.imresize: against the definition, against Pillow, and its invariants."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from slow_imresize import slow_imresize
from vdsr.resize import band_blocks, imresize, output_size, resize_tables

SCALES = [1 / 2, 1 / 3, 1 / 4, 0.7, 2, 3, 4]


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("size", [(17, 23), (24, 18), (9, 12)])
def test_matches_definition(scale, size, rng):
    img = rng.random(size)
    got = imresize(torch.from_numpy(img), scale).numpy()
    want = slow_imresize(img, scale)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_tiny_inputs_mirror_many_times(rng):
    """A 2-pixel image shrunk by 4 reads taps far outside it: the mirror must wrap repeatedly."""
    for shape in [(2, 3), (1, 5), (3, 1)]:
        img = rng.random(shape)
        for s in (1 / 4, 4):
            np.testing.assert_allclose(imresize(torch.from_numpy(img), s).numpy(), slow_imresize(img, s), atol=1e-12)


@pytest.mark.parametrize("scale", [2, 3, 4, 1 / 2, 1 / 3, 1 / 4])
def test_against_pillow_bicubic(scale, rng):
    """Pillow's BICUBIC on mode 'F' is an independent implementation of the same filter
    (Keys a = -0.5, support widened by 1/scale when shrinking, same pixel-centre map) but it
    clips the kernel at the border and renormalises where MATLAB mirrors. So: away from the
    border the two agree to Pillow's float32 output precision (measured max 1.1e-7 on [0, 1]
    data, about one float32 ulp; asserted 3e-7); within the kernel's reach of the border they
    differ (measured up to 6e-2), and the test checks that they do."""
    h, w = (96, 72) if scale > 1 else (96 * 4, 72 * 4)
    img = rng.random((h, w)).astype(np.float32)
    oh, ow = output_size(h, scale), output_size(w, scale)
    ours = imresize(torch.from_numpy(img.astype(np.float64)), scale).numpy()
    pil = np.asarray(Image.fromarray(img, mode="F").resize((ow, oh), Image.BICUBIC), dtype=np.float64)
    border = int(np.ceil(2 * max(scale, 1 / scale))) + 1  # output pixels the kernel reaches from the edge
    inner = (slice(border, -border), slice(border, -border))
    assert np.abs(ours[inner] - pil[inner]).max() < 3e-7
    assert np.abs(ours - pil).max() > 1e-4  # the borders differ: mirror vs renormalised clip


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_constant_stays_constant(scale, dtype):
    x = torch.full((2, 3, 19, 26), 0.3, dtype=dtype)
    y = imresize(x, scale)
    tol = 1e-6 if dtype == torch.float32 else 1e-14
    assert torch.allclose(y, torch.full_like(y, 0.3), atol=tol, rtol=0)


def test_shapes_dtypes_and_batching(rng):
    x = torch.from_numpy(rng.random((3, 2, 30, 41)))
    assert imresize(x, 0.5).shape == (3, 2, 15, 21)  # ceil(20.5)
    assert imresize(x, 3).shape == (3, 2, 90, 123)
    assert imresize(x, 1 / 3).shape == (3, 2, 10, 14)
    assert imresize(x, size=(7, 50)).shape == (3, 2, 7, 50)
    assert imresize(x, (0.5, 2)).shape == (3, 2, 15, 82)
    assert imresize(x[0, 0], 2).shape == (60, 82)
    # batched == one by one; float32 close to float64
    each = torch.stack([torch.stack([imresize(c, 0.7) for c in n]) for n in x])
    assert torch.allclose(imresize(x, 0.7), each, atol=1e-14)
    assert torch.allclose(imresize(x.float(), 0.7).double(), imresize(x, 0.7), atol=2e-6)
    assert imresize(x.float(), 2).dtype == torch.float32
    assert torch.equal(imresize(x, 1), x)


def test_size_uses_size_ratio_as_scale(rng):
    img = rng.random((20, 30))
    np.testing.assert_allclose(imresize(torch.from_numpy(img), size=(10, 15)).numpy(), slow_imresize(img, 0.5), atol=1e-12)


def test_bad_arguments():
    x = torch.zeros(1, 1, 8, 8)
    with pytest.raises(ValueError):
        imresize(x)
    with pytest.raises(ValueError):
        imresize(x, 2, size=(4, 4))
    with pytest.raises(ValueError):
        imresize(x, -2)
    with pytest.raises(TypeError):
        imresize(torch.zeros(8, 8, dtype=torch.uint8), 2)


@pytest.mark.parametrize("in_len,scale", [(41, 1 / 3), (100, 0.7), (13, 4), (2, 1 / 4)])
def test_tables_and_blocks(in_len, scale):
    out_len = output_size(in_len, scale)
    w, idx = resize_tables(in_len, out_len, scale)
    assert w.shape == idx.shape and w.shape[0] == out_len
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-14)
    assert idx.min() >= 0 and idx.max() < in_len
    dense = np.zeros((out_len, in_len))
    np.add.at(dense, (np.repeat(np.arange(out_len), w.shape[1]), idx.ravel()), w.ravel())
    blocks, starts = band_blocks(in_len, out_len, scale)
    rebuilt = np.zeros((blocks.shape[0] * blocks.shape[1], in_len))
    for b, c0 in enumerate(starts):
        rebuilt[b * blocks.shape[1] : (b + 1) * blocks.shape[1], c0 : c0 + blocks.shape[2]] = blocks[b]
    np.testing.assert_array_equal(rebuilt[:out_len], dense)
    assert not w.flags.writeable
