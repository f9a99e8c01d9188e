"""MATLAB-exact bicubic resize: ``imresize(x, scale)`` as MATLAB's ``imresize(..., 'bicubic')``.

The definition, written out (MATLAB's ``imresize.m``, per axis):

* kernel: Keys cubic convolution with a = -0.5,
  ``k(t) = 1.5|t|^3 - 2.5|t|^2 + 1`` for ``|t| <= 1``,
  ``-0.5|t|^3 + 2.5|t|^2 - 4|t| + 2`` for ``1 < |t| <= 2``, else 0;
* when shrinking (scale < 1) the kernel is widened by 1/scale and scaled,
  ``h(t) = scale * k(scale * t)`` (antialiasing), so it spans ``4 / scale`` input pixels;
* output sample x (1-based) maps to input coordinate ``u = x / scale + 0.5 (1 - 1/scale)``;
* taps are input pixels ``floor(u - width/2) + p`` for ``p = 0 .. ceil(width) + 1``,
  weighted ``h(u - index)`` and normalised to sum 1 per output sample;
* indices outside the image are mirrored (symmetric padding: ``... 2 1 | 1 2 3 ... n | n n-1 ...``);
* tap columns whose weight is zero for every output are dropped;
* output length ``ceil(in * scale)``; the axis with the smaller scale is resized first
  (rows first on a tie).

:func:`resize_tables` returns the per-axis weight/index tables, computed once (float64, numpy)
and cached. :func:`imresize` applies them to batched ``N x C x H x W`` tensors on any device
(float32 or float64), one axis at a time, as a banded matrix product cut into small dense blocks
(:func:`band_blocks`): O(n) work, BLAS speed, no per-pixel loops.
The Triton kernel in ``kernels/resize.py`` reuses the same tables.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import numpy as np
import torch

__all__ = ["cubic", "resize_tables", "band_blocks", "output_size", "imresize"]


def cubic(t: np.ndarray) -> np.ndarray:
    """Keys cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``), elementwise, float64."""
    at = np.abs(t)
    at2 = at * at
    at3 = at2 * at
    return (1.5 * at3 - 2.5 * at2 + 1.0) * (at <= 1) + (-0.5 * at3 + 2.5 * at2 - 4.0 * at + 2.0) * (
        (1 < at) & (at <= 2)
    )


def output_size(in_len: int, scale: float) -> int:
    """``ceil(in_len * scale)`` as MATLAB computes it, robust to float noise (``300 * (1/3)``)."""
    return int(math.ceil(in_len * scale - 1e-9))


@lru_cache(maxsize=256)
def resize_tables(in_len: int, out_len: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Weights and source indices of MATLAB bicubic resize along one axis.

    Args:
        in_len: input length (pixels), >= 1.
        out_len: output length (pixels), >= 1.
        scale: the scale factor the coordinate map uses (``out_len / in_len`` when a size was
            asked for; the given factor otherwise, as MATLAB does).

    Returns:
        ``(weights, indices)``, both of shape ``(out_len, P)``: float64 weights summing to 1 per
        row, and int64 0-based indices into the input, already mirrored into ``[0, in_len)``.
        Output sample ``i`` is ``sum_p weights[i, p] * input[indices[i, p]]``. The arrays are
        cached and read-only.
    """
    if in_len < 1 or out_len < 1:
        raise ValueError(f"resize lengths must be >= 1, got {in_len} -> {out_len}")
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    width = 4.0 / scale if scale < 1 else 4.0
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - width / 2.0)
    taps = int(math.ceil(width)) + 2
    idx = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]  # 1-based
    dist = u[:, None] - idx
    w = scale * cubic(scale * dist) if scale < 1 else cubic(dist)
    w = w / w.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    idx = mirror[np.mod(idx.astype(np.int64) - 1, 2 * in_len)]
    keep = np.any(w != 0, axis=0)
    w, idx = np.ascontiguousarray(w[:, keep]), np.ascontiguousarray(idx[:, keep])
    w.setflags(write=False)
    idx.setflags(write=False)
    return w, idx


_BLOCK = 32  # output samples per band block: measured fastest for 256..2048 px on 2 CPU cores


@lru_cache(maxsize=256)
def band_blocks(in_len: int, out_len: int, scale: float, block: int = _BLOCK):
    """The tables of :func:`resize_tables` as dense blocks of a banded matrix.

    The resize along an axis is ``out = M @ in`` with ``M[i, indices[i, p]] += weights[i, p]``
    (mirrored taps folded in). ``M`` is banded, so it is cut into row blocks of ``block``
    outputs; block ``b`` reads only the ``L`` inputs ``starts[b] .. starts[b] + L - 1``.

    Returns:
        ``(blocks, starts)``: float64 array ``(nb, block, L)`` (rows past ``out_len`` are zero)
        and a tuple of ``nb`` ints. Cached and read-only.
    """
    w, idx = resize_tables(in_len, out_len, scale)
    m = np.zeros((out_len, in_len))
    np.add.at(m, (np.repeat(np.arange(out_len), w.shape[1]), idx.reshape(-1)), w.reshape(-1))
    nb = -(-out_len // block)
    spans = []
    for b in range(nb):
        cols = np.flatnonzero(m[b * block : (b + 1) * block].any(axis=0))
        spans.append((int(cols[0]), int(cols[-1])))
    length = min(in_len, max(hi - lo + 1 for lo, hi in spans))
    starts = tuple(min(lo, in_len - length) for lo, _ in spans)
    blocks = np.zeros((nb, block, length))
    for b, c0 in enumerate(starts):
        rows = m[b * block : (b + 1) * block, c0 : c0 + length]
        blocks[b, : rows.shape[0]] = rows
    blocks.setflags(write=False)
    return blocks, starts


_TENSOR_CACHE: dict[tuple, torch.Tensor] = {}


def _blocks_on(in_len: int, out_len: int, scale: float, dtype: torch.dtype, device: torch.device):
    """:func:`band_blocks` as a tensor on ``device`` (cached per device and dtype)."""
    key = (in_len, out_len, scale, dtype, str(device))
    hit = _TENSOR_CACHE.get(key)
    if hit is None:
        blocks, _ = band_blocks(in_len, out_len, scale)
        hit = torch.tensor(blocks, dtype=dtype, device=device)
        if len(_TENSOR_CACHE) > 512:
            _TENSOR_CACHE.clear()
        _TENSOR_CACHE[key] = hit
    return hit


def _resize_axis(x: torch.Tensor, dim: int, out_len: int, scale: float) -> torch.Tensor:
    """Resize ``x`` along ``dim`` (-1 or -2): one small matmul per block of the banded matrix."""
    in_len = x.shape[dim]
    _, starts = band_blocks(in_len, out_len, scale)
    blocks = _blocks_on(in_len, out_len, scale, x.dtype, x.device)
    nb, block, length = blocks.shape
    if dim == -2:
        out = x.new_empty(*x.shape[:-2], nb * block, x.shape[-1])
        for b, c0 in enumerate(starts):
            torch.matmul(blocks[b], x[..., c0 : c0 + length, :], out=out[..., b * block : (b + 1) * block, :])
        return out[..., :out_len, :]
    out = x.new_empty(*x.shape[:-1], nb * block)
    blocks_t = blocks.transpose(-1, -2)
    for b, c0 in enumerate(starts):
        torch.matmul(x[..., c0 : c0 + length], blocks_t[b], out=out[..., b * block : (b + 1) * block])
    return out[..., :out_len]


def _pair(v, what: str) -> tuple:
    if isinstance(v, (int, float)):
        return (v, v)
    if len(v) != 2:
        raise ValueError(f"{what} must be a number or a pair (H, W), got {v!r}")
    return tuple(v)


def imresize(
    x: torch.Tensor,
    scale: float | Sequence[float] | None = None,
    size: Sequence[int] | None = None,
) -> torch.Tensor:
    """MATLAB ``imresize(x, scale, 'bicubic')`` (or ``imresize(x, size, 'bicubic')``).

    Args:
        x: ``N x C x H x W`` (or ``H x W``, ``C x H x W``) float32/float64 tensor, any device,
            any value range (the resize is linear; no clamping, no rounding).
        scale: factor, or a pair ``(sh, sw)``; output size ``ceil(in * scale)``.
        size: output ``(H, W)`` instead of ``scale``; the factors are then ``out / in``.

    Returns:
        The resized tensor, same dtype and device, shape ``... x H' x W'``.
    """
    if (scale is None) == (size is None):
        raise ValueError("imresize: give exactly one of scale or size")
    if not x.is_floating_point() or x.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"imresize: expected a float32/float64 tensor, got {x.dtype}")
    if x.ndim < 2:
        raise ValueError(f"imresize: expected ... x H x W, got shape {tuple(x.shape)}")
    in_h, in_w = x.shape[-2], x.shape[-1]
    if size is not None:
        out_h, out_w = (int(s) for s in _pair(size, "size"))
        if out_h < 1 or out_w < 1:
            raise ValueError(f"imresize: size must be positive, got {size}")
        sh, sw = out_h / in_h, out_w / in_w
    else:
        sh, sw = (float(s) for s in _pair(scale, "scale"))
        if not (sh > 0 and sw > 0):
            raise ValueError(f"imresize: scale must be positive, got {scale}")
        out_h, out_w = output_size(in_h, sh), output_size(in_w, sw)
    # MATLAB resizes the dimension with the smallest scale first (stable: rows on a tie).
    order = [(-2, out_h, sh), (-1, out_w, sw)]
    if sw < sh:
        order.reverse()
    for dim, out_len, s in order:
        if out_len == x.shape[dim] and s == 1.0:
            continue  # the identity, exactly (the tables give weights 1 at the same index)
        x = _resize_axis(x, dim, out_len, s)
    return x
