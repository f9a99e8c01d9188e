"""Colour conversion as MATLAB's ``rgb2ycbcr`` / ``ycbcr2rgb`` (ITU-R BT.601, studio swing).

For RGB in [0, 1]::

    Y  = (16  +  65.481 R + 128.553 G +  24.966 B) / 255     in [16/255, 235/255]
    Cb = (128 -  37.797 R -  74.203 G + 112.000 B) / 255     in [16/255, 240/255]
    Cr = (128 + 112.000 R -  93.786 G -  18.214 B) / 255

All functions take and return float tensors on the [0, 1] scale with the three channels on
dim -3 (``... x 3 x H x W``); multiply by 255 for MATLAB's uint8 scale (before rounding).
"""

from __future__ import annotations

import torch

__all__ = ["rgb_to_ycbcr", "ycbcr_to_rgb", "rgb_to_y"]

_MATRIX = ((65.481, 128.553, 24.966), (-37.797, -74.203, 112.0), (112.0, -93.786, -18.214))
_OFFSET = (16.0, 128.0, 128.0)


def _check(x: torch.Tensor, what: str) -> None:
    if not x.is_floating_point():
        raise TypeError(f"{what}: expected a float tensor on [0, 1], got {x.dtype}")
    if x.ndim < 3 or x.shape[-3] != 3:
        raise ValueError(f"{what}: expected ... x 3 x H x W, got shape {tuple(x.shape)}")


def _affine(x: torch.Tensor, matrix: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """``matrix @ pixel + offset`` for every pixel of ``... x 3 x H x W``."""
    return torch.einsum("ij,...jhw->...ihw", matrix, x) + offset[:, None, None]


def rgb_to_ycbcr(rgb: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] (``... x 3 x H x W``) to YCbCr on the [0, 1] scale, same shape and dtype."""
    _check(rgb, "rgb_to_ycbcr")
    m = torch.tensor(_MATRIX, dtype=rgb.dtype, device=rgb.device) / 255.0
    off = torch.tensor(_OFFSET, dtype=rgb.dtype, device=rgb.device) / 255.0
    return _affine(rgb, m, off)


def ycbcr_to_rgb(ycbcr: torch.Tensor) -> torch.Tensor:
    """YCbCr on the [0, 1] scale back to RGB (not clamped: out-of-gamut values survive)."""
    _check(ycbcr, "ycbcr_to_rgb")
    inv = torch.linalg.inv(torch.tensor(_MATRIX, dtype=torch.float64)) * 255.0
    off = torch.tensor(_OFFSET, dtype=torch.float64) / 255.0
    m = inv.to(dtype=ycbcr.dtype, device=ycbcr.device)
    return _affine(ycbcr, m, -(inv @ off).to(dtype=ycbcr.dtype, device=ycbcr.device))


def rgb_to_y(rgb: torch.Tensor) -> torch.Tensor:
    """The luma of the evaluation protocol: ``... x 3 x H x W`` RGB in [0, 1] to ``... x 1 x H x W``."""
    _check(rgb, "rgb_to_y")
    w = torch.tensor(_MATRIX[0], dtype=rgb.dtype, device=rgb.device) / 255.0
    return torch.einsum("j,...jhw->...hw", w, rgb).unsqueeze(-3) + 16.0 / 255.0
