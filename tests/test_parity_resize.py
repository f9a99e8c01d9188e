"""Parity: the Triton resize and degrade against the reference imresize (float64).

CPU: Triton interpreter; GPU: unchanged. Max abs error <= 1e-5 on [0, 1] data."""

from __future__ import annotations

import pytest
import torch

import vdsr_kernels.resize as kr
from vdsr.evaluate import degrade as degrade_reference
from vdsr.resize import imresize as imresize_reference

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("scale", [2, 3, 4, 1 / 2, 1 / 3, 1 / 4, 0.7])
@pytest.mark.parametrize("h,w", [(24, 36), (25, 37)])
def test_parity_resize(scale, h, w):
    torch.manual_seed(0)
    x = torch.rand(2, 3, h, w, dtype=torch.float64)
    want = imresize_reference(x, scale)
    got = kr.imresize(x.float().to(DEVICE), scale)
    assert got.shape == want.shape and got.dtype == torch.float32
    assert not got.isnan().any()
    assert (got.cpu().double() - want).abs().max().item() <= 1e-5


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_parity_degrade(scale):
    torch.manual_seed(1)
    hr = torch.rand(3, 1, 12 * scale, 10 * scale, dtype=torch.float64)
    want = degrade_reference(hr, scale)
    got = kr.degrade(hr.float().to(DEVICE), scale)
    assert got.shape == hr.shape
    assert (got.cpu().double() - want).abs().max().item() <= 1e-5


def test_parity_resize_size_and_strided_input():
    torch.manual_seed(2)
    x = torch.rand(1, 2, 40, 30, dtype=torch.float64)
    want = imresize_reference(x, size=(17, 45))
    strided = x.float().to(DEVICE).transpose(-1, -2).contiguous().transpose(-1, -2)  # column-major
    got = kr.imresize(strided, size=(17, 45))
    assert (got.cpu().double() - want).abs().max().item() <= 1e-5


def test_parity_resize_writes_every_element(monkeypatch):
    """Outputs come from NaN-filled buffers: any element the kernel misses stays NaN."""
    real_empty = torch.empty

    def nan_empty(*args, **kwargs):
        return real_empty(*args, **kwargs).fill_(float("nan"))

    monkeypatch.setattr(kr.torch, "empty", nan_empty)
    x = torch.rand(2, 1, 33, 47, device=DEVICE)
    for s in (2, 1 / 3, 0.7):
        assert not kr.imresize(x, s).isnan().any()


def test_resize_rejects_float64():
    with pytest.raises(TypeError):
        kr.imresize(torch.zeros(1, 1, 8, 8, dtype=torch.float64), 2)
