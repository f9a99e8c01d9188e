"""Fused 3x3 convolution (stride 1, zero padding 1) + bias (+ ReLU | + residual) in Triton.

Implicit GEMM on NHWC activations: output pixels are the GEMM's M, output channels its N, and
K = 9 * Cin runs over (kh, kw, ci) in that order, so the weights are packed ``[3, 3, Cin, Cout]``
and each K step loads ``BLOCK_K`` contiguous input channels of one tap. Accumulation is float32.

Three kernels, one per VDSR layer kind:

* ``first``: Cin = 1 (K = 9). Nine rank-1 updates (tap value x weight row): no K padding.
  It reads the network input in its own dtype (float32 in training), so a bf16 stack never
  rounds the input.
* ``mid``:   Cin, Cout >= 16 (VDSR: 64 -> 64). Nine ``tl.dot`` per K block, fused bias + ReLU.
* ``last``:  Cout = 1. A dot product per pixel; fused bias and the residual add
  ``out = x + conv(h)`` in float32, written as ``N x 1 x H x W`` (the same bytes as NHWC with
  C = 1) in the dtype of ``x``: a bf16 stack still returns a float32 image, as eager autocast
  does (``x + r`` rounded to bf16 would be as coarse as 8-bit pixels).

Dtypes: float32 (``precision="ieee"``, or ``"tf32"`` when asked), bfloat16, float16: the
weights' dtype is the compute dtype, and the hidden activations are stored in it. Under ``TRITON_INTERPRET=1`` (CPU) one large tile is used so the
interpreter stays fast, bf16/fp16 dot operands are upcast (the interpreter's bf16 ``tl.dot`` is
wrong in triton 3.7) and float32 -> bf16 stores are rounded to nearest even by hand (the
interpreter truncates; a GPU rounds), so every dtype is still parity-tested on the CPU.

The plain PyTorch twin is :func:`conv3x3_reference`.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

__all__ = ["INTERPRET", "pack_weight", "conv3x3", "conv3x3_reference"]

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def _configs(block_ms=(64, 128, 256), warps=(4, 8), stages=(3, 4)):
    """Hopper tiles to autotune over; a single large tile in the interpreter.

    Tuning is keyed on the channel counts and ``M_LOG2`` (the pixel count's power of two), so a
    new image size re-uses the tuning of a similar one instead of re-tuning."""
    if INTERPRET:
        return [triton.Config({"BLOCK_M": 128}, num_warps=4)]
    return [triton.Config({"BLOCK_M": m}, num_warps=w, num_stages=s) for m in block_ms for w in warps for s in stages]


@triton.jit
def _rne_bf16(x, ROUND_BF16: tl.constexpr):
    """Float32 rounded to the nearest bf16 value (ties to even), still as float32, when asked.

    Only used under the interpreter, whose float32 -> bf16 cast truncates: after this the
    truncating store is exact, as the GPU's rounding store would be."""
    if ROUND_BF16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + (((bits >> 16) & 1) + 0x7FFF)) & 0xFFFF0000
        x = bits.to(tl.float32, bitcast=True)
    return x


@triton.jit
def _pixel_coords(pid, M, H, W, BLOCK_M: tl.constexpr):
    """Flat output pixel indices of this tile, their (h, w), and the in-range mask."""
    offs_m = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    m_mask = offs_m < M
    w_ = offs_m % W
    h_ = (offs_m // W) % H
    return offs_m, h_, w_, m_mask


@triton.jit
def _load_a(x_ptr, offs_m, h_, w_, m_mask, H, W, tap: tl.constexpr, k0: tl.constexpr, CIN: tl.constexpr, BLOCK_K: tl.constexpr):
    """A ``[BLOCK_M, BLOCK_K]`` tile of the implicit GEMM's A: input channels ``k0..`` at tap
    ``(kh, kw) = divmod(tap, 3)`` of every output pixel, zero outside the image (padding 1).
    Returns the tile, its channel indices and their mask."""
    dh: tl.constexpr = tap // 3 - 1
    dw: tl.constexpr = tap % 3 - 1
    hh = h_ + dh
    ww = w_ + dw
    valid = m_mask & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
    ci = k0 + tl.arange(0, BLOCK_K)
    k_mask = ci < CIN
    src = (offs_m + dh * W + dw).to(tl.int64) * CIN
    a = tl.load(x_ptr + src[:, None] + ci[None, :], mask=valid[:, None] & k_mask[None, :], other=0.0)
    return a, ci, k_mask


@triton.jit
def _bias_relu_store(acc, b_ptr, out_ptr, offs_m, m_mask, offs_n, n_mask, COUT: tl.constexpr, RELU: tl.constexpr, ROUND_BF16: tl.constexpr):
    """The fused epilogue: + bias (float32), ReLU, store the NHWC tile in the output's dtype."""
    acc += tl.load(b_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
    if RELU:
        acc = tl.maximum(acc, 0.0)
    out = out_ptr + offs_m.to(tl.int64)[:, None] * COUT + offs_n[None, :]
    tl.store(out, _rne_bf16(acc, ROUND_BF16).to(out_ptr.dtype.element_ty), mask=m_mask[:, None] & n_mask[None, :])


@triton.autotune(configs=_configs(), key=["M_LOG2", "COUT"])
@triton.jit
def _conv_first_kernel(
    x_ptr, w_ptr, b_ptr, out_ptr, M, H, W, M_LOG2,
    COUT: tl.constexpr, COUT_P: tl.constexpr, RELU: tl.constexpr, ROUND_BF16: tl.constexpr,
    BLOCK_M: tl.constexpr,
):  # fmt: skip
    offs_m, h_, w_, m_mask = _pixel_coords(tl.program_id(0), M, H, W, BLOCK_M)
    offs_n = tl.arange(0, COUT_P)
    n_mask = offs_n < COUT
    acc = tl.zeros([BLOCK_M, COUT_P], dtype=tl.float32)
    for tap in tl.static_range(9):
        dh: tl.constexpr = tap // 3 - 1
        dw: tl.constexpr = tap % 3 - 1
        hh = h_ + dh
        ww = w_ + dw
        valid = m_mask & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
        a = tl.load(x_ptr + (offs_m + dh * W + dw), mask=valid, other=0.0).to(tl.float32)
        wrow = tl.load(w_ptr + tap * COUT + offs_n, mask=n_mask, other=0.0).to(tl.float32)
        acc += a[:, None] * wrow[None, :]
    _bias_relu_store(acc, b_ptr, out_ptr, offs_m, m_mask, offs_n, n_mask, COUT, RELU, ROUND_BF16)


@triton.autotune(configs=_configs(), key=["M_LOG2", "CIN", "COUT"])
@triton.jit
def _conv_mid_kernel(
    x_ptr, w_ptr, b_ptr, out_ptr, M, H, W, M_LOG2,
    CIN: tl.constexpr, COUT: tl.constexpr, CIN_P: tl.constexpr, COUT_P: tl.constexpr,
    BLOCK_K: tl.constexpr, RELU: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    ROUND_BF16: tl.constexpr, BLOCK_M: tl.constexpr,
):  # fmt: skip
    offs_m, h_, w_, m_mask = _pixel_coords(tl.program_id(0), M, H, W, BLOCK_M)
    offs_n = tl.arange(0, COUT_P)
    n_mask = offs_n < COUT
    acc = tl.zeros([BLOCK_M, COUT_P], dtype=tl.float32)
    for tap in tl.static_range(9):
        for k0 in tl.static_range(0, CIN_P, BLOCK_K):
            a, ci, k_mask = _load_a(x_ptr, offs_m, h_, w_, m_mask, H, W, tap, k0, CIN, BLOCK_K)
            b = tl.load(
                w_ptr + (tap * CIN + ci)[:, None] * COUT + offs_n[None, :],
                mask=k_mask[:, None] & n_mask[None, :],
                other=0.0,
            )
            if UPCAST:
                a = a.to(tl.float32)
                b = b.to(tl.float32)
            acc = tl.dot(a, b, acc, input_precision=PRECISION)
    _bias_relu_store(acc, b_ptr, out_ptr, offs_m, m_mask, offs_n, n_mask, COUT, RELU, ROUND_BF16)


@triton.autotune(configs=_configs(), key=["M_LOG2", "CIN"])
@triton.jit
def _conv_last_kernel(
    x_ptr, w_ptr, b_ptr, res_ptr, out_ptr, M, H, W, M_LOG2,
    CIN: tl.constexpr, CIN_P: tl.constexpr, BLOCK_K: tl.constexpr, RESIDUAL: tl.constexpr,
    ROUND_BF16: tl.constexpr, BLOCK_M: tl.constexpr,
):  # fmt: skip
    offs_m, h_, w_, m_mask = _pixel_coords(tl.program_id(0), M, H, W, BLOCK_M)
    acc = tl.zeros([BLOCK_M], dtype=tl.float32)
    for tap in tl.static_range(9):
        for k0 in tl.static_range(0, CIN_P, BLOCK_K):
            a, ci, k_mask = _load_a(x_ptr, offs_m, h_, w_, m_mask, H, W, tap, k0, CIN, BLOCK_K)
            wv = tl.load(w_ptr + tap * CIN + ci, mask=k_mask, other=0.0)
            acc += tl.sum(a.to(tl.float32) * wv.to(tl.float32)[None, :], axis=1)
    acc += tl.load(b_ptr).to(tl.float32)
    if RESIDUAL:
        acc += tl.load(res_ptr + offs_m, mask=m_mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + offs_m, _rne_bf16(acc, ROUND_BF16).to(out_ptr.dtype.element_ty), mask=m_mask)


def pack_weight(weight: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``Cout x Cin x 3 x 3`` (nn.Conv2d) -> ``3 x 3 x Cin x Cout`` contiguous, in ``dtype``."""
    if weight.shape[-2:] != (3, 3):
        raise ValueError(f"expected 3x3 conv weights, got {tuple(weight.shape)}")
    return weight.detach().permute(2, 3, 1, 0).to(dtype or weight.dtype).contiguous()


def _round_bf16(out: torch.Tensor) -> bool:
    return INTERPRET and out.dtype == torch.bfloat16


def _p2(n: int) -> int:
    return max(16, triton.next_power_of_2(n))


def conv3x3(
    x: torch.Tensor,
    w_packed: torch.Tensor,
    bias: torch.Tensor,
    relu: bool = True,
    residual: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
    precision: str = "ieee",
) -> torch.Tensor:
    """One fused 3x3 conv layer on NHWC activations.

    Args:
        x: ``N x H x W x Cin`` contiguous, in the weights' dtype; for Cin = 1 any contiguous
            ``N x 1 x H x W`` float tensor (read in its own dtype, math in float32).
        w_packed: ``3 x 3 x Cin x Cout`` (:func:`pack_weight`); its dtype is the compute dtype.
        bias: ``Cout`` (any float dtype; added in float32).
        relu: apply ReLU (ignored when Cout = 1).
        residual: for Cout = 1: ``N x 1 x H x W`` added to the output (``x + conv(h)``).
        out: optional preallocated output (``N x H x W x Cout``; ``N x 1 x H x W`` when Cout = 1).
        precision: ``"ieee"`` or ``"tf32"`` for float32 inputs of the ``mid`` kernel.

    Returns:
        ``N x H x W x Cout`` in the weights' dtype (Cout > 1), or ``N x 1 x H x W`` (Cout = 1)
        in the residual's dtype (the weights' dtype without a residual).
    """
    cin, cout = w_packed.shape[2], w_packed.shape[3]
    if x.dim() != 4 or not x.is_contiguous():
        raise ValueError("conv3x3: x must be a contiguous 4-D NHWC tensor")
    n, h, w = (x.shape[0], x.shape[2], x.shape[3]) if cin == 1 and x.shape[1] == 1 else x.shape[:3]
    if cin > 1 and x.shape[3] != cin:
        raise ValueError(f"conv3x3: x has {x.shape[3]} channels, weights expect {cin}")
    if cin > 1 and w_packed.dtype != x.dtype:
        raise ValueError(f"conv3x3: weights are {w_packed.dtype}, activations {x.dtype}")
    m = n * h * w
    grid = lambda meta: (triton.cdiv(m, meta["BLOCK_M"]),)  # noqa: E731
    if cout == 1:
        if residual is not None and (residual.shape != (n, 1, h, w) or not residual.is_contiguous()):
            raise ValueError(f"conv3x3: residual must be contiguous {(n, 1, h, w)}, got {tuple(residual.shape)}")
        if out is None:
            out_dtype = residual.dtype if residual is not None else x.dtype
            out = torch.empty(n, 1, h, w, dtype=out_dtype, device=x.device)
        res = residual if residual is not None else out
        cin_p = _p2(cin)
        _conv_last_kernel[grid](
            x, w_packed, bias, res, out, m, h, w, m.bit_length(),
            CIN=cin, CIN_P=cin_p, BLOCK_K=min(cin_p, 64), RESIDUAL=residual is not None,
            ROUND_BF16=_round_bf16(out),
        )  # fmt: skip
        return out
    if out is None:
        out = torch.empty(n, h, w, cout, dtype=w_packed.dtype, device=x.device)
    if cin == 1:
        _conv_first_kernel[grid](
            x, w_packed, bias, out, m, h, w, m.bit_length(),
            COUT=cout, COUT_P=_p2(cout), RELU=relu, ROUND_BF16=_round_bf16(out),
        )  # fmt: skip
        return out
    cin_p = _p2(cin)
    upcast = INTERPRET and x.dtype in (torch.bfloat16, torch.float16)
    _conv_mid_kernel[grid](
        x, w_packed, bias, out, m, h, w, m.bit_length(),
        CIN=cin, COUT=cout, CIN_P=cin_p, COUT_P=_p2(cout), BLOCK_K=min(cin_p, 64), RELU=relu,
        PRECISION=precision if x.dtype == torch.float32 else "ieee", UPCAST=upcast,
        ROUND_BF16=_round_bf16(out),
    )  # fmt: skip
    return out


def conv3x3_reference(
    x_nchw: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    relu: bool = True,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """The PyTorch twin of :func:`conv3x3` on NCHW: ``relu(conv2d(x) + b)`` or ``residual + conv2d(x) + b``."""
    y = F.conv2d(x_nchw, weight, bias, padding=1)
    if residual is not None:
        return residual + y
    return F.relu(y) if relu and weight.shape[0] > 1 else y
