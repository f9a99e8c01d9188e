"""MATLAB-exact bicubic resize in Triton: separable passes over the reference's tables.

Each pass resizes one axis of ``N x C x H x W`` with the weight/index tables of
:func:`vdsr.resize.resize_tables` (the same tables as the reference, sent to the device once as
float32 weights and int32 indices): output sample ``i`` is ``sum_p w[i, p] * x[idx[i, p]]``,
float32 math. A program owns a 2-D tile whose last dimension is the contiguous one in memory
(columns), so loads and stores coalesce in both passes; the taps are unrolled.

* :func:`imresize` is ``vdsr.resize.imresize`` (float32 math; any scale or size; the axis with
  the smaller scale first, as MATLAB).
* :func:`degrade` is the LR synthesis of training, ``up(down(hr, 1/s), s)``: four passes on the
  device, no host round trip.

The plain PyTorch twins: :func:`vdsr.resize.imresize` and :func:`vdsr.evaluate.degrade`.
"""

from __future__ import annotations

import os
from typing import Sequence

import torch
import triton
import triton.language as tl

from vdsr.resize import output_size, resize_tables

__all__ = ["imresize", "degrade", "compile_specs"]

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
# (rows, columns) of a tile; one big tile in the interpreter keeps it fast
BLOCK = (64, 128) if INTERPRET else (8, 128)  # (8, 128): no register spills on sm_90 (launch/compile_kernels.py)


@triton.jit
def _resize_axis_kernel(
    x_ptr, out_ptr, w_ptr, idx_ptr,
    R_OUT, C_OUT, x_sn, x_sr, x_sc, o_sn, o_sr, o_sc,
    TAPS: tl.constexpr, AXIS: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Resize rows (AXIS = 0) or columns (AXIS = 1) of image ``program_id(2)``."""
    n = tl.program_id(2).to(tl.int64)
    offs_r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    r_mask = offs_r < R_OUT
    c_mask = offs_c < C_OUT
    mask = r_mask[:, None] & c_mask[None, :]
    x_img = x_ptr + n * x_sn
    acc = tl.zeros([BLOCK_R, BLOCK_C], dtype=tl.float32)
    for p in tl.static_range(TAPS):
        if AXIS == 0:
            wv = tl.load(w_ptr + offs_r * TAPS + p, mask=r_mask, other=0.0)
            iv = tl.load(idx_ptr + offs_r * TAPS + p, mask=r_mask, other=0)
            xv = tl.load(x_img + iv[:, None] * x_sr + offs_c[None, :] * x_sc, mask=mask, other=0.0)
            acc += wv[:, None] * xv.to(tl.float32)
        else:
            wv = tl.load(w_ptr + offs_c * TAPS + p, mask=c_mask, other=0.0)
            iv = tl.load(idx_ptr + offs_c * TAPS + p, mask=c_mask, other=0)
            xv = tl.load(x_img + offs_r[:, None] * x_sr + iv[None, :] * x_sc, mask=mask, other=0.0)
            acc += wv[None, :] * xv.to(tl.float32)
    out = out_ptr + n * o_sn + offs_r[:, None] * o_sr + offs_c[None, :] * o_sc
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=mask)


_TABLES: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _device_tables(in_len: int, out_len: int, scale: float, device: torch.device):
    """The reference tables as float32 weights and int32 indices on ``device`` (cached)."""
    key = (in_len, out_len, scale, str(device))
    hit = _TABLES.get(key)
    if hit is None:
        w, idx = resize_tables(in_len, out_len, scale)
        hit = (
            torch.tensor(w, dtype=torch.float32, device=device),
            torch.tensor(idx, dtype=torch.int32, device=device),
        )
        if len(_TABLES) > 256:
            _TABLES.clear()
        _TABLES[key] = hit
    return hit


def _resize_axis(x: torch.Tensor, axis: int, out_len: int, scale: float) -> torch.Tensor:
    """``x``: ``B x R x C`` (any strides). Resize rows (axis 0) or columns (axis 1)."""
    b, r, c = x.shape
    w, idx = _device_tables(x.shape[1 + axis], out_len, scale, x.device)
    r_out, c_out = (out_len, c) if axis == 0 else (r, out_len)
    out = torch.empty(b, r_out, c_out, dtype=x.dtype, device=x.device)
    block_r, block_c = BLOCK
    grid = (triton.cdiv(r_out, block_r), triton.cdiv(c_out, block_c), b)
    if b > 65535:
        raise ValueError(f"resize: at most 65535 images per call, got {b}")
    _resize_axis_kernel[grid](
        x, out, w, idx, r_out, c_out, *x.stride(), *out.stride(),
        TAPS=w.shape[1], AXIS=axis, BLOCK_R=block_r, BLOCK_C=block_c,
    )  # fmt: skip
    return out


def _pair(v) -> tuple:
    return (v, v) if isinstance(v, (int, float)) else tuple(v)


def imresize(
    x: torch.Tensor, scale: float | Sequence[float] | None = None, size: Sequence[int] | None = None
) -> torch.Tensor:
    """MATLAB bicubic resize of ``N x C x H x W`` (or ``... x H x W``) on the device.

    Same contract as :func:`vdsr.resize.imresize`, in float32 math (float32/bf16/fp16 in, the
    input's dtype out).
    """
    if (scale is None) == (size is None):
        raise ValueError("imresize: give exactly one of scale or size")
    if not x.is_floating_point() or x.dtype == torch.float64:
        raise TypeError(f"imresize (triton): expected float32/bf16/fp16, got {x.dtype}; float64 is the reference's")
    lead, (h, w) = x.shape[:-2], x.shape[-2:]
    if size is not None:
        out_h, out_w = (int(v) for v in _pair(size))
        sh, sw = out_h / h, out_w / w
    else:
        sh, sw = (float(v) for v in _pair(scale))
        if not (sh > 0 and sw > 0):
            raise ValueError(f"imresize: scale must be positive, got {scale}")
        out_h, out_w = output_size(h, sh), output_size(w, sw)
    y = x.reshape(-1, h, w)
    steps = [(0, out_h, sh), (1, out_w, sw)]
    if sw < sh:
        steps.reverse()
    for axis, out_len, s in steps:
        if out_len == y.shape[1 + axis] and s == 1.0:
            continue
        y = _resize_axis(y, axis, out_len, s)
    return y.reshape(*lead, y.shape[-2], y.shape[-1])


def degrade(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """``imresize(imresize(hr, 1/scale), scale)`` on the device: the bicubic LR input of VDSR.

    ``hr``: ``N x C x H x W`` (H and W multiples of ``scale``), float32 on [0, 1] (any range).
    """
    return imresize(imresize(hr, 1.0 / scale), scale)


def compile_specs(scales: Sequence[int] = (2, 3, 4), patch: int = 84) -> list[dict]:
    """Every variant of the resize kernel that :func:`degrade` launches for these scales on a
    GPU (dtype x axis x tap count of the down and up tables), as compile jobs for
    ``launch/compile_kernels.py``: same keys as :func:`vdsr_kernels.conv.compile_specs`, plus
    ``variant`` (the tap count)."""
    taps = set()
    for s in scales:
        for n in (patch, 1080):  # a training crop and a 1080p image (taps depend on the size)
            lo = output_size(n, 1.0 / s)
            taps |= {resize_tables(n, lo, 1.0 / s)[0].shape[1], resize_tables(lo, n, float(s))[0].shape[1]}
    config = triton.Config({"BLOCK_R": BLOCK[0], "BLOCK_C": BLOCK[1]}, num_warps=4, num_stages=3)
    specs = []
    for t in ("fp32", "bf16", "fp16"):
        for axis in (0, 1):
            for p in sorted(taps):
                specs.append(dict(
                    kernel=f"resize_axis{axis}", fn=_resize_axis_kernel, dtype=t, variant=f"TAPS={p}",
                    pointers={"x_ptr": t, "out_ptr": t, "w_ptr": "fp32", "idx_ptr": "i32"},
                    constexprs={"TAPS": p, "AXIS": axis}, configs=[config],
                ))  # fmt: skip
    return specs
