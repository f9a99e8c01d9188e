"""Fused 3x3 convolution (stride 1, zero padding 1) + bias (+ ReLU | + residual) in Triton.

Implicit GEMM on NHWC activations: output pixels are the GEMM's M, output channels its N, and
K = 9 * Cin runs over (kh, kw, ci) in that order, so the weights are packed ``[3, 3, Cin, Cout]``
and each K step loads ``BLOCK_K`` contiguous input channels of one tap. Accumulation is float32.

Three kernels, one per VDSR layer kind, and a fourth for training:

* ``first``: Cin = 1 (K = 9). Nine rank-1 updates (tap value x weight row) in float32 FMAs: no
  K padding, no tensor cores needed. It reads the network input in its own dtype (float32 in
  training), so a bf16 stack never rounds the input.
* ``mid``:   Cin, Cout >= 16 (VDSR: 64 -> 64). A software-pipelined K loop of ``tl.dot`` (see
  :func:`_conv_mid_kernel`), fused bias + ReLU.
* ``last``:  Cout = 1. A dot product per pixel; fused bias and the residual add
  ``out = x + conv(h)`` in float32, written as ``N x 1 x H x W`` (the same bytes as NHWC with
  C = 1) in the dtype of ``x``: a bf16 stack still returns a float32 image, as eager autocast
  does (``x + r`` rounded to bf16 would be as coarse as 8-bit pixels).
* ``wgrad``: the weight and bias gradients of a hidden layer (bf16/fp16), ``A^T @ G`` per tap,
  the pixels (the dot's K) split into chunks summed in float32 (:func:`conv3x3_wgrad`).

The training backward's input gradient is a 3x3 conv too (of the output gradient, with the
kernel flipped and transposed: :func:`pack_dgrad_weight`): ``first`` (from the last layer's
one channel) and ``mid`` run it with ``relu_mask``, the ReLU backward of the layer below fused
into the epilogue in place of bias and ReLU.

Dtypes: bfloat16, float16 and float32; the weights' dtype is the compute dtype, and the hidden
activations are stored in it. Float32 ``precision`` (the ``mid`` kernel's dot; the other two
kernels are plain float32 FMAs):

* ``"tf32"``: one TF32 tensor-core dot (10-bit mantissa operands, float32 accumulation), what
  cuDNN does when ``torch.backends.cudnn.allow_tf32`` is on.
* ``"tf32x3"``: float32 accuracy on tensor cores. Each operand is split into a TF32 high part
  (rounded to nearest) and the TF32 residual; three dots ``lo*hi + hi*lo + hi*hi`` give the
  product to about 2^-21 relative (measured parity: :data:`PARITY_TOLERANCE`). Compiled, the
  tensor core's float32 accumulation is coarser than IEEE round-to-nearest: one 64 -> 64 layer
  measured 4.0e-6 relative to float64 on an H200 (Triton 3.6; cuDNN float32 with TF32 off:
  1.1e-6; TF32: 7.6e-4), the VDSR-20 residual 6.5e-5.
* ``"ieee"``: float32 accuracy, whatever it costs where it runs: an exact float32 dot in the
  interpreter (cheap there), ``"tf32x3"`` when compiled. A compiled IEEE ``tl.dot`` is scalar
  FMAs on Hopper (36,864 per thread at BLOCK_M = 128, minutes of compile, register spills), so
  it is never compiled.

:func:`default_precision` picks what torch's ``float32_matmul_precision`` asks for.

Under ``TRITON_INTERPRET=1`` (CPU) one large tile is used so the interpreter stays fast, and
what the GPU does differently from numpy is emulated, so every dtype is parity-tested on the CPU
with the tolerance the GPU needs: bf16/fp16 dot operands are upcast (the interpreter's bf16
``tl.dot`` is wrong in triton 3.7), TF32 operands are truncated to TF32 before the dot (the
interpreter ignores ``input_precision``; the tensor core reads the top 19 bits), and float32 ->
bf16 stores are rounded to nearest even by hand (the interpreter truncates; a GPU rounds).

:func:`compile_specs` lists every (kernel, dtype, precision, config) this module launches on a
GPU, for ``launch/compile_kernels.py``, which compiles them ahead of time on the CPU.

The plain PyTorch twins are :func:`conv3x3_reference` and :func:`conv3x3_wgrad_reference`.
"""

from __future__ import annotations

import os
from typing import Sequence

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

__all__ = [
    "INTERPRET",
    "PRECISIONS",
    "PARITY_TOLERANCE",
    "pack_weight",
    "pack_dgrad_weight",
    "pack_weights",
    "pack_dgrad_weights",
    "conv3x3",
    "conv3x3_wgrad",
    "conv3x3_wgrad_partial",
    "wgrad_partial_shape",
    "reduce_wgrad",
    "interpreter_loop_problem",
    "conv3x3_wgrad_reference",
    "conv3x3_reference",
    "default_precision",
    "compile_specs",
]

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
# VDSR_AUTOTUNE=first: launch the first listed config of each kernel, no autotuning (for
# correctness runs on a GPU, e.g. the parity tests in scripts/gpu_run.sh, where the time of
# compiling every config is better spent elsewhere; launch/compile_kernels.py checks them all).
AUTOTUNE = os.environ.get("VDSR_AUTOTUNE", "all") != "first"
PRECISIONS = ("ieee", "tf32", "tf32x3")

# (dtype, precision) -> max relative error (max |got - ref| / max |ref|) against float64 that the
# parity tests allow for one layer; measured in the interpreter with the GPU's rounding emulated
# (tests/test_parity_conv.py prints the measured values with -s).
PARITY_TOLERANCE = {
    (torch.float32, "ieee"): 1e-5,
    (torch.float32, "tf32x3"): 1e-5,
    (torch.float32, "tf32"): 5e-3,
    (torch.bfloat16, "ieee"): 2e-2,
    (torch.float16, "ieee"): 2e-2,
}

# ---------------------------------------------------------------------------------------------
# Autotune configs (Hopper, sm_90). Each list is checked by launch/compile_kernels.py: it
# compiles, fits shared memory and does not spill, and no two entries give the same kernel.
# ---------------------------------------------------------------------------------------------
_INTERPRET_CONFIG = triton.Config({"BLOCK_M": 128, "BLOCK_K": 64}, num_warps=4, num_stages=1)


def _cfg(block_m: int, block_k: int, warps: int, stages: int) -> triton.Config:
    return triton.Config({"BLOCK_M": block_m, "BLOCK_K": block_k}, num_warps=warps, num_stages=stages)


def mid_configs(dtype: torch.dtype, precision: str) -> list[triton.Config]:
    """The tiles the ``mid`` kernel's autotuner tries for this dtype and float32 precision.

    ``BLOCK_K`` is the channels per K step (of 9 x Cin); ``num_stages`` the depth of the
    software pipeline over K steps (shared-memory buffers in flight)."""
    if INTERPRET:
        return [_INTERPRET_CONFIG]
    if dtype != torch.float32:  # bf16 / fp16: 2-byte tiles
        return [_cfg(128, 64, 4, 3), _cfg(128, 64, 4, 4), _cfg(128, 64, 8, 3), _cfg(256, 64, 8, 3), _cfg(64, 64, 4, 4)]
    if precision == "tf32":
        return [_cfg(128, 32, 4, 3), _cfg(128, 32, 4, 4), _cfg(128, 64, 4, 3), _cfg(128, 32, 8, 3), _cfg(64, 32, 4, 4)]
    return [_cfg(128, 32, 4, 3), _cfg(128, 32, 8, 3), _cfg(64, 32, 4, 3), _cfg(64, 32, 4, 4)]  # tf32x3


def first_configs() -> list[triton.Config]:
    """Tiles of the ``first`` kernel (float32 FMAs; no K loop to pipeline)."""
    if INTERPRET:
        return [_INTERPRET_CONFIG]
    return [_cfg(m, 16, w, 1) for m, w in ((64, 4), (128, 4), (128, 8))]


def last_configs() -> list[triton.Config]:
    """Tiles of the ``last`` kernel (Cout = 1: a float32 dot product per pixel)."""
    if INTERPRET:
        return [_INTERPRET_CONFIG]
    return [_cfg(64, 64, 4, 3), _cfg(128, 64, 4, 3), _cfg(128, 32, 4, 4)]


def wgrad_configs() -> list[triton.Config]:
    """Tiles of the ``wgrad`` kernel (bf16/fp16): ``BLOCK_M`` pixels (the dot's K) a step of its
    loop over the program's chunk of pixels; ``BLOCK_K`` is unused (the configs share a shape)."""
    if INTERPRET:
        return [_INTERPRET_CONFIG]
    return [_cfg(128, 64, 4, 3), _cfg(64, 64, 4, 4), _cfg(128, 64, 8, 3)]


def _same_config(a: triton.Config, b: triton.Config) -> bool:
    return (a.kwargs, a.num_warps, a.num_stages) == (b.kwargs, b.num_warps, b.num_stages)


def _union(*lists: list[triton.Config]) -> list[triton.Config]:
    out: list[triton.Config] = []
    for c in (c for lst in lists for c in lst):
        if not any(_same_config(c, o) for o in out):
            out.append(c)
    return out


def _prune_mid(configs, named_args, **kwargs):
    """Autotune only the tiles listed for this call's dtype and precision (the first, without
    autotuning: ``VDSR_AUTOTUNE=first``)."""
    want = mid_configs(named_args["w_ptr"].dtype, kwargs.get("PRECISION", named_args.get("PRECISION")))
    return [c for c in configs if any(_same_config(c, w) for w in want[: None if AUTOTUNE else 1])]


def _first_only(configs, named_args, **kwargs):
    return configs if AUTOTUNE else configs[:1]


_MID_ALL = _union(*(mid_configs(dt, p) for dt, p in PARITY_TOLERANCE))


# ---------------------------------------------------------------------------------------------
# Device helpers
# ---------------------------------------------------------------------------------------------
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
def _tf32_round(x):
    """Float32 -> the nearest TF32 value (10-bit mantissa; ties away from zero, as cvt.rna)."""
    bits = x.to(tl.uint32, bitcast=True)
    return ((bits + 0x1000) & 0xFFFFE000).to(tl.float32, bitcast=True)


@triton.jit
def _tf32_trunc(x, EMULATE: tl.constexpr):
    """What the tensor core reads of a float32 operand in a TF32 dot (its top 19 bits); only
    applied (EMULATE) in the interpreter, whose dot is exact float32."""
    if EMULATE:
        x = (x.to(tl.uint32, bitcast=True) & 0xFFFFE000).to(tl.float32, bitcast=True)
    return x


@triton.jit
def _dot(a, b, acc, PRECISION: tl.constexpr, EMULATE: tl.constexpr):
    """``acc + a @ b`` in the given float32 precision (bf16/fp16 operands: PRECISION "ieee")."""
    if PRECISION == "tf32x3":
        a_hi = _tf32_round(a)
        b_hi = _tf32_round(b)
        a_lo = _tf32_trunc(a - a_hi, EMULATE)
        b_lo = _tf32_trunc(b - b_hi, EMULATE)
        acc = tl.dot(a_lo, b_hi, acc, input_precision="tf32")
        acc = tl.dot(a_hi, b_lo, acc, input_precision="tf32")
        acc = tl.dot(a_hi, b_hi, acc, input_precision="tf32")
    elif PRECISION == "tf32":
        acc = tl.dot(_tf32_trunc(a, EMULATE), _tf32_trunc(b, EMULATE), acc, input_precision="tf32")
    else:
        acc = tl.dot(a, b, acc, input_precision="ieee")
    return acc


@triton.jit
def _pixel_coords(pid, M, H, W, BLOCK_M: tl.constexpr):
    """Flat output pixel indices of this tile, their (h, w), and the in-range mask."""
    offs_m = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    m_mask = offs_m < M
    w_ = offs_m % W
    h_ = (offs_m // W) % H
    return offs_m, h_, w_, m_mask


@triton.jit
def _tap_source(offs_m, h_, w_, m_mask, H, W, tap):
    """For tap ``(kh, kw) = divmod(tap, 3)``: the flat input pixel each output pixel reads, and
    whether it lies inside the image (zero padding 1 outside). ``tap`` may be a constexpr or a
    loop variable."""
    dh = tap // 3 - 1
    dw = tap % 3 - 1
    hh = h_ + dh
    ww = w_ + dw
    valid = m_mask & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
    return offs_m + dh * W + dw, valid


@triton.jit
def _load_a(x_ptr, src, valid, k0, CIN: tl.constexpr, BLOCK_K: tl.constexpr, EVEN_K: tl.constexpr):
    """A ``[BLOCK_M, BLOCK_K]`` tile of the implicit GEMM's A: input channels ``k0..`` of the
    pixels ``src`` (zero where not ``valid``). Returns the tile, its channel indices and mask."""
    ci = k0 + tl.arange(0, BLOCK_K)
    ptrs = x_ptr + src.to(tl.int64)[:, None] * CIN + ci[None, :]
    if EVEN_K:  # Cin is a multiple of BLOCK_K: no channel mask (keeps the loads vectorised)
        k_mask = ci < CIN + BLOCK_K
        a = tl.load(ptrs, mask=valid[:, None], other=0.0)
    else:
        k_mask = ci < CIN
        a = tl.load(ptrs, mask=valid[:, None] & k_mask[None, :], other=0.0)
    return a, ci, k_mask


@triton.jit
def _bias_relu_store(
    acc, b_ptr, out_ptr, mask_ptr, offs_m, m_mask, offs_n, n_mask,
    COUT: tl.constexpr, RELU: tl.constexpr, DGRAD: tl.constexpr, ROUND_BF16: tl.constexpr,
):  # fmt: skip
    """The fused epilogue, storing the NHWC tile in the output's dtype. Forward: + bias
    (float32), ReLU. ``DGRAD`` (an input gradient): no bias; zero where the saved activation
    at ``mask_ptr`` (same NHWC shape) is not > 0: the ReLU backward of the layer below."""
    offs = offs_m.to(tl.int64)[:, None] * COUT + offs_n[None, :]
    tile_mask = m_mask[:, None] & n_mask[None, :]
    if DGRAD:
        saved = tl.load(mask_ptr + offs, mask=tile_mask, other=0.0)
        acc = tl.where(saved > 0, acc, 0.0)
    else:
        acc += tl.load(b_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
        if RELU:
            acc = tl.maximum(acc, 0.0)
    tl.store(out_ptr + offs, _rne_bf16(acc, ROUND_BF16).to(out_ptr.dtype.element_ty), mask=tile_mask)


# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------
@triton.autotune(configs=first_configs(), key=["M_LOG2", "COUT"], prune_configs_by={"early_config_prune": _first_only})
@triton.jit
def _conv_first_kernel(
    x_ptr, w_ptr, b_ptr, out_ptr, mask_ptr, M, H, W, M_LOG2,
    COUT: tl.constexpr, COUT_P: tl.constexpr, RELU: tl.constexpr, DGRAD: tl.constexpr,
    ROUND_BF16: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """Cin = 1: nine rank-1 updates, unrolled (``BLOCK_K`` is unused: the configs share a shape)."""
    offs_m, h_, w_, m_mask = _pixel_coords(tl.program_id(0), M, H, W, BLOCK_M)
    offs_n = tl.arange(0, COUT_P)
    n_mask = offs_n < COUT
    acc = tl.zeros([BLOCK_M, COUT_P], dtype=tl.float32)
    for tap in tl.static_range(9):
        src, valid = _tap_source(offs_m, h_, w_, m_mask, H, W, tap)
        a = tl.load(x_ptr + src, mask=valid, other=0.0).to(tl.float32)
        wrow = tl.load(w_ptr + tap * COUT + offs_n, mask=n_mask, other=0.0).to(tl.float32)
        acc += a[:, None] * wrow[None, :]
    _bias_relu_store(acc, b_ptr, out_ptr, mask_ptr, offs_m, m_mask, offs_n, n_mask, COUT, RELU, DGRAD, ROUND_BF16)


@triton.autotune(
    configs=_MID_ALL,
    key=["M_LOG2", "CIN", "COUT", "PRECISION"],  # + the tensors' dtypes (added by the autotuner)
    prune_configs_by={"early_config_prune": _prune_mid},
)
@triton.jit
def _conv_mid_kernel(
    x_ptr, w_ptr, b_ptr, out_ptr, mask_ptr, M, H, W, M_LOG2,
    CIN: tl.constexpr, COUT: tl.constexpr, CIN_P: tl.constexpr, COUT_P: tl.constexpr,
    RELU: tl.constexpr, DGRAD: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr, EMULATE_TF32: tl.constexpr,
    ROUND_BF16: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """Cin, Cout >= 16: ``acc[BLOCK_M, COUT] += A_k @ B_k`` over the 9 * CIN_P / BK K steps.

    The K loop (tap x channel block) is a runtime loop, not unrolled, so Triton's software
    pipeliner overlaps the loads of later K steps with the tensor-core work of this one. Seen in
    the sm_90 PTX (triton 3.7.1 and 3.6.0; ``launch/compile_kernels.py --only conv_mid --ptx
    DIR``), bf16, BLOCK_M 128, BLOCK_K 64, 4 warps, 3 stages: the A tile (the shifted pixels,
    zero-filled by the mask: the padding) and the B tile arrive by 16-byte ``cp.async`` into 3
    shared-memory buffers, one commit group each; the prologue issues two K steps; the loop
    body, per K step, waits once on ``cp.async.wait_group 2`` (the next step's two groups stay
    in flight), issues 8 ``wgmma.mma_async`` (m64n64k16) and waits once on ``wgmma.wait_group
    1`` (one wgmma group stays in flight), then issues the copies for step k + 2. The unrolled
    version (``tl.static_range``) had no async copies: each of its 9 steps loaded, then waited
    for its wgmma. 3xTF32 keeps the pipelined copies but its split operands pass through
    registers and shared memory, so its three dots wait in turn (``wgmma.wait_group 0`` x 3).
    """
    offs_m, h_, w_, m_mask = _pixel_coords(tl.program_id(0), M, H, W, BLOCK_M)
    offs_n = tl.arange(0, COUT_P)
    n_mask = offs_n < COUT
    acc = tl.zeros([BLOCK_M, COUT_P], dtype=tl.float32)
    BK: tl.constexpr = BLOCK_K if BLOCK_K < CIN_P else CIN_P  # channels per K step
    KB: tl.constexpr = CIN_P // BK  # K steps per tap
    EVEN_K: tl.constexpr = CIN % BK == 0
    for kk in tl.range(0, 9 * KB):
        tap = kk // KB
        k0 = (kk - tap * KB) * BK
        src, valid = _tap_source(offs_m, h_, w_, m_mask, H, W, tap)
        a, ci, k_mask = _load_a(x_ptr, src, valid, k0, CIN, BK, EVEN_K)
        b_ptrs = w_ptr + (tap * CIN + ci)[:, None] * COUT + offs_n[None, :]
        if EVEN_K and COUT == COUT_P:
            b = tl.load(b_ptrs)
        else:
            b = tl.load(b_ptrs, mask=k_mask[:, None] & n_mask[None, :], other=0.0)
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = _dot(a, b, acc, PRECISION, EMULATE_TF32)
    _bias_relu_store(acc, b_ptr, out_ptr, mask_ptr, offs_m, m_mask, offs_n, n_mask, COUT, RELU, DGRAD, ROUND_BF16)


@triton.autotune(configs=last_configs(), key=["M_LOG2", "CIN"], prune_configs_by={"early_config_prune": _first_only})
@triton.jit
def _conv_last_kernel(
    x_ptr, w_ptr, b_ptr, res_ptr, out_ptr, M, H, W, M_LOG2,
    CIN: tl.constexpr, CIN_P: tl.constexpr, RESIDUAL: tl.constexpr,
    ROUND_BF16: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """Cout = 1: a float32 dot product per output pixel over the same K loop as ``mid``."""
    offs_m, h_, w_, m_mask = _pixel_coords(tl.program_id(0), M, H, W, BLOCK_M)
    acc = tl.zeros([BLOCK_M], dtype=tl.float32)
    BK: tl.constexpr = BLOCK_K if BLOCK_K < CIN_P else CIN_P
    KB: tl.constexpr = CIN_P // BK
    for kk in tl.range(0, 9 * KB):
        tap = kk // KB
        k0 = (kk - tap * KB) * BK
        src, valid = _tap_source(offs_m, h_, w_, m_mask, H, W, tap)
        a, ci, k_mask = _load_a(x_ptr, src, valid, k0, CIN, BK, CIN % BK == 0)
        wv = tl.load(w_ptr + tap * CIN + ci, mask=k_mask, other=0.0)
        acc += tl.sum(a.to(tl.float32) * wv.to(tl.float32)[None, :], axis=1)
    acc += tl.load(b_ptr).to(tl.float32)
    if RESIDUAL:
        acc += tl.load(res_ptr + offs_m, mask=m_mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + offs_m, _rne_bf16(acc, ROUND_BF16).to(out_ptr.dtype.element_ty), mask=m_mask)


@triton.autotune(configs=wgrad_configs(), key=["M_LOG2", "CIN", "COUT"], prune_configs_by={"early_config_prune": _first_only})
@triton.jit
def _conv_wgrad_kernel(
    x_ptr, g_ptr, part_ptr, bpart_ptr, M, H, W, M_LOG2, CHUNK,
    CIN: tl.constexpr, COUT: tl.constexpr, CIN_P: tl.constexpr, COUT_P: tl.constexpr,
    UPCAST: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """The weight gradient of one tap over one chunk of pixels: ``part[chunk, tap] = A^T @ G``;
    the tenth program of a chunk (``tap == 9``) sums ``G``'s columns, the bias gradient:
    ``bpart[chunk] = sum over the chunk's pixels of G``.

    Program ``(chunk, tap)``: ``A`` is the input shifted by the tap (``CHUNK`` pixels x Cin, zero
    outside the image: the padding), ``G`` the output gradient (the same pixels x Cout); the
    ``Cin x Cout`` float32 sum over the chunk goes to its slot of ``part``, and the host adds the
    chunks (deterministic: no atomics). The ten programs of a chunk read the same gradient rows,
    which stay in L2."""
    chunk = tl.program_id(0)
    tap = tl.program_id(1)
    offs_c = tl.arange(0, CIN_P)
    offs_n = tl.arange(0, COUT_P)
    c_mask = offs_c < CIN
    n_mask = offs_n < COUT
    lo = chunk * CHUNK
    hi = tl.minimum(lo + CHUNK, M)
    if tap == 9:  # the bias: column sums of G in float32 (no dot)
        bacc = tl.zeros([COUT_P], dtype=tl.float32)
        for start in tl.range(lo, hi, BLOCK_M):
            offs_m = start + tl.arange(0, BLOCK_M)
            m_mask = offs_m < hi
            g = tl.load(g_ptr + offs_m.to(tl.int64)[:, None] * COUT + offs_n[None, :], mask=m_mask[:, None] & n_mask[None, :], other=0.0)
            bacc += tl.sum(g.to(tl.float32), axis=0)
        tl.store(bpart_ptr + chunk * COUT_P + offs_n, bacc)
    else:
        acc = tl.zeros([CIN_P, COUT_P], dtype=tl.float32)
        for start in tl.range(lo, hi, BLOCK_M):
            offs_m = start + tl.arange(0, BLOCK_M)
            m_mask = offs_m < hi
            w_ = offs_m % W
            h_ = (offs_m // W) % H
            src, valid = _tap_source(offs_m, h_, w_, m_mask, H, W, tap)
            a = tl.load(x_ptr + src.to(tl.int64)[:, None] * CIN + offs_c[None, :], mask=valid[:, None] & c_mask[None, :], other=0.0)
            g = tl.load(g_ptr + offs_m.to(tl.int64)[:, None] * COUT + offs_n[None, :], mask=m_mask[:, None] & n_mask[None, :], other=0.0)
            if UPCAST:
                a = a.to(tl.float32)
                g = g.to(tl.float32)
            acc = tl.dot(tl.trans(a), g, acc)
        out = part_ptr + ((chunk * 9 + tap) * CIN_P + offs_c)[:, None] * COUT_P + offs_n[None, :]
        tl.store(out, acc)


# ---------------------------------------------------------------------------------------------
# Host side
# ---------------------------------------------------------------------------------------------
def default_precision() -> str:
    """Float32 precision of the ``mid`` dot from torch's setting: ``"highest"`` -> ``"ieee"``
    (exact in the interpreter, 3xTF32 when compiled); ``"high"``/``"medium"`` -> ``"tf32"``."""
    return "ieee" if torch.get_float32_matmul_precision() == "highest" else "tf32"


def pack_weight(weight: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``Cout x Cin x 3 x 3`` (nn.Conv2d) -> ``3 x 3 x Cin x Cout`` contiguous, in ``dtype``."""
    if weight.shape[-2:] != (3, 3):
        raise ValueError(f"expected 3x3 conv weights, got {tuple(weight.shape)}")
    src = weight.detach().permute(2, 3, 1, 0)
    return torch.empty(src.shape, dtype=dtype or weight.dtype, device=weight.device).copy_(src)  # one launch


def _round_bf16(dtype: torch.dtype) -> bool:
    return INTERPRET and dtype == torch.bfloat16


def _p2(n: int) -> int:
    return max(16, triton.next_power_of_2(n))


def _compiled_precision(dtype: torch.dtype, precision: str) -> str:
    """The PRECISION constexpr: float32 only; "ieee" means 3xTF32 unless interpreted."""
    if precision not in PRECISIONS:
        raise ValueError(f"conv3x3: precision must be one of {PRECISIONS}, got {precision!r}")
    if dtype != torch.float32:
        return "ieee"  # bf16/fp16 operands: the dot is exact products, float32 accumulation
    return "tf32x3" if precision == "ieee" and not INTERPRET else precision


def first_meta(cout: int, relu: bool, out_dtype: torch.dtype, dgrad: bool = False) -> dict:
    """Constexpr arguments of ``_conv_first_kernel``."""
    return dict(COUT=cout, COUT_P=_p2(cout), RELU=relu and not dgrad, DGRAD=dgrad, ROUND_BF16=_round_bf16(out_dtype))


def mid_meta(cin: int, cout: int, relu: bool, dtype: torch.dtype, precision: str, dgrad: bool = False) -> dict:
    """Constexpr arguments of ``_conv_mid_kernel`` (the tile comes from the autotuner)."""
    return dict(
        CIN=cin, COUT=cout, CIN_P=_p2(cin), COUT_P=_p2(cout), RELU=relu and not dgrad, DGRAD=dgrad,
        PRECISION=_compiled_precision(dtype, precision),
        UPCAST=INTERPRET and dtype in (torch.bfloat16, torch.float16),
        EMULATE_TF32=INTERPRET, ROUND_BF16=_round_bf16(dtype),
    )  # fmt: skip


def last_meta(cin: int, residual: bool, out_dtype: torch.dtype) -> dict:
    """Constexpr arguments of ``_conv_last_kernel``."""
    return dict(CIN=cin, CIN_P=_p2(cin), RESIDUAL=residual, ROUND_BF16=_round_bf16(out_dtype))


def pack_dgrad_weight(weight: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The input gradient of a 3x3 conv is a 3x3 conv of the output gradient with the kernel
    flipped and its channels swapped: ``Cout x Cin x 3 x 3`` -> packed ``3 x 3 x Cout x Cin``
    (``[kh, kw, co, ci] = weight[co, ci, 2 - kh, 2 - kw]``), contiguous, in ``dtype``."""
    if weight.shape[-2:] != (3, 3):
        raise ValueError(f"expected 3x3 conv weights, got {tuple(weight.shape)}")
    src = weight.detach().flip(2, 3).permute(2, 3, 0, 1)
    return torch.empty(src.shape, dtype=dtype or weight.dtype, device=weight.device).copy_(src)  # two launches


def pack_weights(weights: Sequence[torch.Tensor], dtype: torch.dtype | None = None) -> torch.Tensor:
    """:func:`pack_weight` of ``L`` layers of one shape at once: ``L`` tensors ``Cout x Cin x 3 x 3``
    -> ``L x 3 x 3 x Cin x Cout`` contiguous in ``dtype`` (default: the weights'), whose ``[l]``
    equals ``pack_weight(weights[l], dtype)``. Two launches whatever ``L`` (a stack, then one
    permuting cast), where packing layer by layer takes ``L``: on a GPU the training step's
    packing is small kernels whose launches, not bytes, cost."""
    shapes = {tuple(w.shape) for w in weights}
    if len(shapes) != 1 or next(iter(shapes))[-2:] != (3, 3):
        raise ValueError(f"pack_weights: expected 3x3 conv weights of one shape, got {sorted(shapes)}")
    stacked = torch.stack([w.detach() for w in weights])
    cout, cin = stacked.shape[1:3]
    out = torch.empty(len(weights), 3, 3, cin, cout, dtype=dtype or stacked.dtype, device=stacked.device)
    return out.copy_(stacked.permute(0, 3, 4, 2, 1))


def pack_dgrad_weights(packed: torch.Tensor) -> torch.Tensor:
    """:func:`pack_dgrad_weight` of every layer from :func:`pack_weights`' ``L x 3 x 3 x Cin x
    Cout``: ``L x 3 x 3 x Cout x Cin``, ``[l, kh, kw, co, ci] = packed[l, 2 - kh, 2 - kw, ci, co]``
    (the same values, so the same dtype and rounding), contiguous; two launches."""
    if packed.dim() != 5 or packed.shape[1:3] != (3, 3):
        raise ValueError(f"pack_dgrad_weights: expected L x 3 x 3 x Cin x Cout, got {tuple(packed.shape)}")
    return packed.flip(1, 2).transpose(3, 4).contiguous()


def conv3x3(
    x: torch.Tensor,
    w_packed: torch.Tensor,
    bias: torch.Tensor | None,
    relu: bool = True,
    residual: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
    precision: str = "ieee",
    relu_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """One fused 3x3 conv layer on NHWC activations.

    Args:
        x: ``N x H x W x Cin`` contiguous, in the weights' dtype; for Cin = 1 any contiguous
            ``N x 1 x H x W`` float tensor (read in its own dtype, math in float32).
        w_packed: ``3 x 3 x Cin x Cout`` (:func:`pack_weight`); its dtype is the compute dtype.
        bias: ``Cout`` (any float dtype; added in float32); None only with ``relu_mask``.
        relu: apply ReLU (ignored when Cout = 1).
        residual: for Cout = 1: ``N x 1 x H x W`` added to the output (``x + conv(h)``).
        out: optional preallocated output (``N x H x W x Cout``; ``N x 1 x H x W`` when Cout = 1).
        precision: ``"ieee"``, ``"tf32x3"`` or ``"tf32"`` for float32 weights (module
            docstring); ignored for bf16/fp16.
        relu_mask: the input-gradient mode (Cout > 1): ``x`` is an output gradient, the weights
            come from :func:`pack_dgrad_weight`, no bias, no ReLU, and the result is zeroed
            where ``relu_mask`` (the saved ``N x H x W x Cout`` post-ReLU activation of the layer
            below, contiguous, the output's dtype) is not > 0: the ReLU backward, fused.

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
    dgrad = relu_mask is not None
    if dgrad:
        if cout == 1:
            raise ValueError("conv3x3: relu_mask needs Cout > 1 (the masked layer's channels)")
        if relu_mask.shape != (n, h, w, cout) or not relu_mask.is_contiguous() or relu_mask.dtype != w_packed.dtype:
            raise ValueError(
                f"conv3x3: relu_mask must be contiguous {(n, h, w, cout)} {w_packed.dtype}, "
                f"got {tuple(relu_mask.shape)} {relu_mask.dtype}"
            )
        bias = w_packed  # unread: a valid pointer for the kernel's bias argument
    elif bias is None:
        raise ValueError("conv3x3: bias is required (None only with relu_mask)")
    m = n * h * w
    grid = lambda meta: (triton.cdiv(m, meta["BLOCK_M"]),)  # noqa: E731
    if cout == 1:
        if residual is not None and (residual.shape != (n, 1, h, w) or not residual.is_contiguous()):
            raise ValueError(f"conv3x3: residual must be contiguous {(n, 1, h, w)}, got {tuple(residual.shape)}")
        if out is None:
            out_dtype = residual.dtype if residual is not None else x.dtype
            out = torch.empty(n, 1, h, w, dtype=out_dtype, device=x.device)
        res = residual if residual is not None else out
        _conv_last_kernel[grid](
            x, w_packed, bias, res, out, m, h, w, m.bit_length(), **last_meta(cin, residual is not None, out.dtype)
        )
        return out
    if out is None:
        out = torch.empty(n, h, w, cout, dtype=w_packed.dtype, device=x.device)
    mask = relu_mask if dgrad else out  # unread unless dgrad
    if cin == 1:
        _conv_first_kernel[grid](
            x, w_packed, bias, out, mask, m, h, w, m.bit_length(), **first_meta(cout, relu, out.dtype, dgrad)
        )
        return out
    _conv_mid_kernel[grid](
        x, w_packed, bias, out, mask, m, h, w, m.bit_length(), **mid_meta(cin, cout, relu, w_packed.dtype, precision, dgrad)
    )
    return out


WGRAD_DTYPES = (torch.bfloat16, torch.float16)


def wgrad_meta(cin: int, cout: int) -> dict:
    """Constexpr arguments of ``_conv_wgrad_kernel``."""
    return dict(CIN=cin, COUT=cout, CIN_P=_p2(cin), COUT_P=_p2(cout), UPCAST=INTERPRET)


WGRAD_PROGRAMS = 64  # chunks of pixels per tap: 64 x 9 programs fill an H100/H200's 132 SMs


def _wgrad_chunk(m: int, block: int = 128, programs: int | None = None) -> int:
    """Pixels a program of the wgrad kernel sums: about ``m / programs`` (``WGRAD_PROGRAMS``),
    a multiple of every config's BLOCK_M (128), so each chunk's steps are whole tiles but the last."""
    return block * max(1, -(-m // (block * (programs or WGRAD_PROGRAMS))))


def wgrad_partial_shape(x: torch.Tensor, cout: int) -> tuple[int, int, int, int]:
    """The shape of :func:`conv3x3_wgrad_partial`'s float32 weight partials for the layer input
    ``x`` (``N x H x W x Cin``) and ``cout`` output channels: ``(chunks, 9, CIN_P, COUT_P)``; its
    bias partials are ``(chunks, COUT_P)``."""
    n, h, w, cin = x.shape
    m = n * h * w
    meta = wgrad_meta(cin, cout)
    return -(-m // _wgrad_chunk(m)), 9, meta["CIN_P"], meta["COUT_P"]


def conv3x3_wgrad_partial(
    x: torch.Tensor,
    g: torch.Tensor,
    part: torch.Tensor | None = None,
    bpart: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight and bias gradients of a 3x3 conv (stride 1, zero padding 1) before their last
    sum: one launch writing each chunk of pixels' float32 sums (``Cin x Cout`` a tap, and ``Cout``
    for the bias).

    Args:
        x: the layer's input, ``N x H x W x Cin`` contiguous NHWC, bfloat16 or float16.
        g: the gradient of its (pre-activation) output, ``N x H x W x Cout``, the same dtype;
            Cin, Cout >= 16 (the hidden layers: tensor-core dots over the pixels).
        part, bpart: where to write, float32 contiguous ``(chunks, 9, CIN_P, COUT_P)`` and
            ``(chunks, COUT_P)`` (:func:`wgrad_partial_shape`); slices of buffers for many layers,
            so that one :func:`reduce_wgrad` sums them all. Default: new tensors.

    Returns:
        ``(part, bpart)``; :func:`reduce_wgrad` turns them (or stacks of them) into the gradients.
    """
    if x.dim() != 4 or g.dim() != 4 or not x.is_contiguous() or not g.is_contiguous():
        raise ValueError("conv3x3_wgrad: x and g must be contiguous 4-D NHWC tensors")
    n, h, w, cin = x.shape
    cout = g.shape[3]
    if g.shape[:3] != x.shape[:3]:
        raise ValueError(f"conv3x3_wgrad: x is {tuple(x.shape)}, g {tuple(g.shape)}: the pixels differ")
    if x.dtype not in WGRAD_DTYPES or g.dtype != x.dtype:
        raise ValueError(f"conv3x3_wgrad: bfloat16 or float16 x and g of one dtype, got {x.dtype} and {g.dtype}")
    if min(cin, cout) < 16:
        raise ValueError(f"conv3x3_wgrad: Cin and Cout must be >= 16, got {cin} and {cout}")
    if INTERPRET and (why := interpreter_loop_problem()):
        raise RuntimeError(f"conv3x3_wgrad: {why}")
    shape = wgrad_partial_shape(x, cout)
    bshape = (shape[0], shape[3])
    part = _out_buffer(part, shape, x.device, "part")
    bpart = _out_buffer(bpart, bshape, x.device, "bpart")
    m = n * h * w
    _conv_wgrad_kernel[(shape[0], 10)](x, g, part, bpart, m, h, w, m.bit_length(), _wgrad_chunk(m), **wgrad_meta(cin, cout))
    return part, bpart


def _version(text: str) -> tuple[int, int]:
    major, minor = (text.split(".") + ["0"])[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def interpreter_loop_problem(triton_version: str | None = None, numpy_version: str | None = None) -> str | None:
    """Why the interpreter cannot run the wgrad kernel here (None: it can).

    The wgrad kernel loops over runtime bounds (its chunk of pixels). Triton 3.6's interpreter
    turns such a bound into a 1-element array and calls ``int()`` on it, which NumPy 2.4 refuses
    ("only 0-dimensional arrays can be converted to Python scalars"; seen with 2.4.6, while 2.3.5
    works); triton 3.7's interpreter squeezes it first. Compiled (a GPU), triton 3.6 and 3.7 both
    build the kernel (``benchmarks/compile-sm90*.md``)."""
    import numpy

    tv, nv = _version(triton_version or triton.__version__), _version(numpy_version or numpy.__version__)
    if tv < (3, 7) and nv >= (2, 4):
        return (f"triton {tv[0]}.{tv[1]}'s interpreter (TRITON_INTERPRET=1) cannot loop over runtime bounds with "
                f"NumPy {nv[0]}.{nv[1]}: install triton>=3.7 (the pin) or numpy<2.4, or run on a GPU")  # fmt: skip
    return None


def _out_buffer(buf: torch.Tensor | None, shape: tuple, device: torch.device, name: str) -> torch.Tensor:
    if buf is None:
        return torch.empty(shape, dtype=torch.float32, device=device)
    if buf.shape != shape or buf.dtype != torch.float32 or not buf.is_contiguous():
        raise ValueError(f"conv3x3_wgrad: {name} must be contiguous float32 {shape}, got {buf.dtype} {tuple(buf.shape)}")
    return buf


def reduce_wgrad(part: torch.Tensor, bpart: torch.Tensor, cin: int, cout: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`conv3x3_wgrad_partial`'s ``... x chunks x 9 x CIN_P x COUT_P`` and ``... x chunks x
    COUT_P`` (any leading dims, e.g. ``L`` layers) -> ``(... x Cout x Cin x 3 x 3, ... x Cout)``
    float32, contiguous: the chunks summed in a fixed order (deterministic), in three launches
    whatever the leading dims."""
    lead = part.shape[:-4]
    s = part.sum(-4)[..., :cin, :cout].reshape(*lead, 3, 3, cin, cout)  # [..., kh, kw, ci, co]
    nd = len(lead)
    gw = s.permute(*range(nd), nd + 3, nd + 2, nd, nd + 1).contiguous()
    return gw, bpart.sum(-2)[..., :cout].contiguous()


def conv3x3_wgrad(x: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight and bias gradients of a 3x3 conv (stride 1, zero padding 1).

    Args:
        x: the layer's input, ``N x H x W x Cin`` contiguous NHWC, bfloat16 or float16.
        g: the gradient of its (pre-activation) output, ``N x H x W x Cout``, the same dtype;
            Cin, Cout >= 16 (the hidden layers: tensor-core dots over the pixels).

    Returns:
        ``(grad_weight Cout x Cin x 3 x 3, grad_bias Cout)``, float32: the products are exact
        and summed in float32 (over chunks of pixels, then the chunks).
    """
    return reduce_wgrad(*conv3x3_wgrad_partial(x, g), x.shape[3], g.shape[3])


def conv3x3_wgrad_reference(x_nchw: torch.Tensor, g_nchw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The PyTorch twin of :func:`conv3x3_wgrad` on NCHW: ``(conv2d_weight(...), g.sum((0, 2, 3)))``."""
    cout = g_nchw.shape[1]
    gw = torch.nn.grad.conv2d_weight(x_nchw, (cout, x_nchw.shape[1], 3, 3), g_nchw, padding=1)
    return gw, g_nchw.sum((0, 2, 3))


def compile_specs(cin: int = 64, cout: int = 64) -> list[dict]:
    """Every (kernel, dtype, precision, config) that :func:`conv3x3` launches on a GPU for a
    VDSR of width ``cin = cout`` channels, as compile jobs for ``launch/compile_kernels.py``.

    Each: ``kernel`` (name), ``fn`` (the ``triton.jit`` function), ``dtype`` (label),
    ``pointers`` (pointer argument -> Triton type), ``constexprs``, ``configs``."""
    tname = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
    specs = []
    for dt in (torch.float32, torch.bfloat16, torch.float16):
        t = tname[dt]
        # the network input and the image output stay float32 whatever the stack's dtype
        specs.append(dict(
            kernel="conv_first", fn=_conv_first_kernel.fn, dtype=t,
            pointers={"x_ptr": "fp32", "w_ptr": t, "b_ptr": "fp32", "out_ptr": t, "mask_ptr": t},
            constexprs=first_meta(cout, True, dt), configs=first_configs(),
        ))  # fmt: skip
        precisions = ("tf32x3", "tf32") if dt == torch.float32 else ("ieee",)
        for p in precisions:
            specs.append(dict(
                kernel="conv_mid", fn=_conv_mid_kernel.fn, dtype=t if dt != torch.float32 else p,
                pointers={"x_ptr": t, "w_ptr": t, "b_ptr": "fp32", "out_ptr": t, "mask_ptr": t},
                constexprs=mid_meta(cin, cout, True, dt, p), configs=mid_configs(dt, p),
            ))  # fmt: skip
        # the training backward's input gradients (kernels/stack.py), in the dtypes training
        # runs in: the output gradient of the last layer (Cout = 1) through the first kernel,
        # the 64 -> 64 layers' through the mid kernel, both with the ReLU mask fused
        if dt != torch.float16:
            specs.append(dict(
                kernel="conv_first_dgrad", fn=_conv_first_kernel.fn, dtype=t,
                pointers={"x_ptr": t, "w_ptr": t, "b_ptr": t, "out_ptr": t, "mask_ptr": t},
                constexprs=first_meta(cin, False, dt, dgrad=True), configs=first_configs(),
            ))  # fmt: skip
            for p in precisions:
                specs.append(dict(
                    kernel="conv_mid_dgrad", fn=_conv_mid_kernel.fn, dtype=t if dt != torch.float32 else p,
                    pointers={"x_ptr": t, "w_ptr": t, "b_ptr": t, "out_ptr": t, "mask_ptr": t},
                    constexprs=mid_meta(cout, cin, False, dt, p, dgrad=True), configs=mid_configs(dt, p),
                ))  # fmt: skip
        if dt == torch.bfloat16:  # the training backward's weight gradients (bf16 training)
            specs.append(dict(
                kernel="conv_wgrad", fn=_conv_wgrad_kernel.fn, dtype=t,
                pointers={"x_ptr": t, "g_ptr": t, "part_ptr": "fp32", "bpart_ptr": "fp32"},
                constexprs=wgrad_meta(cin, cout), configs=wgrad_configs(),
            ))  # fmt: skip
        specs.append(dict(
            kernel="conv_last", fn=_conv_last_kernel.fn, dtype=t,
            pointers={"x_ptr": t, "w_ptr": t, "b_ptr": "fp32", "res_ptr": "fp32", "out_ptr": "fp32"},
            constexprs=last_meta(cin, True, torch.float32), configs=last_configs(),
        ))  # fmt: skip
    return specs


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
