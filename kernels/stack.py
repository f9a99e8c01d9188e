"""The whole VDSR forward with the fused Triton conv kernels, for inference and for training.

Inference (:func:`vdsr_forward`): the input ``N x 1 x H x W`` is already NHWC (C = 1), so the
layout change on entry and exit is free; the input and the output keep their dtype (float32)
while the hidden layers run in the weights' dtype (bf16, fp16 or fp32); hidden activations ping-pong between two preallocated
``N x H x W x C`` buffers (no allocation per layer; cached per shape, so the call can be
captured in a CUDA graph); the last layer adds the input and writes ``N x 1 x H x W``.

Training (:class:`FusedVDSRFunction`): the forward runs the same kernels but keeps every hidden
activation (as eager autograd would). The backward, layer by layer from the top:

* the input gradient from the same Triton kernels, since it is a 3x3 conv of the output
  gradient with the kernel flipped and transposed (:func:`~vdsr_kernels.conv.pack_dgrad_weight`),
  with the ReLU backward of the layer below fused into its epilogue (zero where that layer's
  saved output is not > 0);
* the weight and bias gradients of the hidden layers (Cin, Cout >= 16) in bf16/fp16 from
  :func:`~vdsr_kernels.conv.conv3x3_wgrad_partial` (tensor-core dots over chunks of pixels), every
  layer's chunk sums in one buffer that one :func:`~vdsr_kernels.conv.reduce_wgrad` adds up; the
  first and last layers' (Cin or Cout = 1), and every layer's in float32, from torch's
  convolution backward (cuDNN on a GPU), reading the NHWC tensors as channels_last views without
  copies.

Small launches cost on a GPU what their bytes do not (a few microseconds each, even inside a
CUDA graph), so the per-step weight work is batched: the hidden layers' weights are packed in
two launches (:func:`~vdsr_kernels.conv.pack_weights`), flipped for the backward in two more
(:func:`~vdsr_kernels.conv.pack_dgrad_weights`), and their weight and bias gradients (the wgrad
kernel sums the bias too) added up in three. The host-side torch launches of a step then do not
grow with depth, where they grew by eight a layer
(``tests/test_parity_conv.py::test_parity_fused_step_launches_do_not_grow_with_depth``).

The network input's gradient, needed only outside training, comes from torch's convolution
backward.

The plain PyTorch twin is :class:`vdsr.model.VDSR` with ``backend="torch"``.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .conv import (
    WGRAD_DTYPES,
    conv3x3,
    conv3x3_wgrad_partial,
    pack_dgrad_weight,
    pack_dgrad_weights,
    pack_weight,
    pack_weights,
    reduce_wgrad,
    wgrad_partial_shape,
)

__all__ = ["vdsr_forward", "vdsr_forward_train", "FusedVDSRFunction", "pack_layers"]

_BUFFERS: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def pack_layers(layers: Sequence[torch.nn.Conv2d], dtype: torch.dtype) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(packed weight [3,3,Cin,Cout] in dtype, float32 bias)`` per layer."""
    return [(pack_weight(c.weight, dtype), c.bias.detach().float().contiguous()) for c in layers]


def _ping_pong(n: int, h: int, w: int, c: int, dtype: torch.dtype, device: torch.device):
    key = (n, h, w, c, dtype, str(device))
    bufs = _BUFFERS.get(key)
    if bufs is None:
        if len(_BUFFERS) > 8:
            _BUFFERS.clear()
        bufs = (torch.empty(n, h, w, c, dtype=dtype, device=device), torch.empty(n, h, w, c, dtype=dtype, device=device))
        _BUFFERS[key] = bufs
    return bufs


def _check_input(x: torch.Tensor) -> torch.Tensor:
    if x.dim() != 4 or x.shape[1] != 1:
        raise ValueError(f"VDSR expects N x 1 x H x W, got shape {tuple(x.shape)}")
    return x.contiguous()


def vdsr_forward(
    x: torch.Tensor,
    packed: Sequence[tuple[torch.Tensor, torch.Tensor]],
    precision: str = "ieee",
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Inference forward: ``x + f(x)`` for ``x`` ``N x 1 x H x W`` (any float dtype).

    ``packed`` comes from :func:`pack_layers`; its dtype is the compute dtype. Returns a new
    ``N x 1 x H x W`` tensor in the dtype of ``x`` (or writes ``out``); the hidden buffers are
    reused between calls of the same shape.
    """
    x = _check_input(x)
    n, _, h, w = x.shape
    channels = packed[0][0].shape[3]
    bufs = _ping_pong(n, h, w, channels, packed[0][0].dtype, x.device)
    cur = conv3x3(x, *packed[0], relu=True, out=bufs[0])
    for i, (wp, b) in enumerate(packed[1:-1]):
        cur = conv3x3(cur, wp, b, relu=True, out=bufs[(i + 1) % 2], precision=precision)
    return conv3x3(cur, *packed[-1], residual=x, out=out)


class FusedVDSRFunction(torch.autograd.Function):
    """Autograd for the fused forward. Inputs: ``x``, the compute dtype, the float32 precision,
    then weight, bias of every layer.

    ``x`` and the output keep their dtype; the hidden layers run in ``dtype`` (the autocast
    dtype under autocast). Gradients are returned in the dtypes of the inputs they belong to.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, dtype: torch.dtype, precision: str, *params: torch.Tensor) -> torch.Tensor:
        weights, biases = params[0::2], params[1::2]
        x = _check_input(x)
        # the hidden layers' weights packed at once (two launches, not two a layer), kept for the
        # backward's flipped copies; the first and last layers' (Cin or Cout = 1) one by one
        hidden = pack_weights(weights[1:-1], dtype) if len(weights) > 2 else None
        packed = [pack_weight(weights[0], dtype)] + (list(hidden) if hidden is not None else [])
        acts = []  # NHWC outputs of every hidden layer (post-ReLU)
        cur = x
        for wp, b in zip(packed, biases[:-1]):
            cur = conv3x3(cur, wp, b.detach().float().contiguous(), relu=True, precision=precision)
            acts.append(cur)
        out = conv3x3(cur, pack_weight(weights[-1], dtype), biases[-1].detach().float().contiguous(), residual=x)
        ctx.save_for_backward(x, *acts, *weights, *([hidden] if hidden is not None else []))
        ctx.param_dtypes = [p.dtype for p in params]
        ctx.n_layers, ctx.dtype, ctx.precision = len(weights), dtype, precision
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        saved = ctx.saved_tensors
        n_layers = ctx.n_layers
        x, acts, weights = saved[0], saved[1:n_layers], saved[n_layers : 2 * n_layers]
        dtype = ctx.dtype
        # the hidden layers' input-gradient kernels, flipped and transposed all at once
        dgrad_hidden = pack_dgrad_weights(saved[2 * n_layers]) if n_layers > 2 else None
        # layer inputs as NCHW views: the network input, then the NHWC activations (channels_last)
        inputs = [x.to(dtype)] + [a.permute(0, 3, 1, 2) for a in acts]
        grad_x = grad_out.to(x.dtype, copy=True) if ctx.needs_input_grad[0] else None  # the residual path
        g = grad_out.to(dtype).contiguous()  # N x 1 x H x W, then N x H x W x C (NHWC)
        grads: list[torch.Tensor | None] = [None] * (2 * n_layers)
        # hidden layers' weight gradients in Triton (bf16/fp16, >= 16 channels): every layer's
        # chunk partials in one buffer, summed by one reduce_wgrad after the loop
        use_wgrad = n_layers > 2 and dtype in WGRAD_DTYPES and min(weights[1].shape[:2]) >= 16
        if use_wgrad:
            cout, cin = weights[1].shape[:2]
            shape = wgrad_partial_shape(acts[0], cout)
            parts = acts[0].new_empty((n_layers - 2, *shape), dtype=torch.float32)
            bparts = acts[0].new_empty((n_layers - 2, shape[0], shape[3]), dtype=torch.float32)
        for i in range(n_layers - 1, -1, -1):
            need_x = i == 0 and ctx.needs_input_grad[0]
            if use_wgrad and 0 < i < n_layers - 1:
                conv3x3_wgrad_partial(acts[i - 1], g, parts[i - 1], bparts[i - 1])
            else:
                w = weights[i].to(dtype)
                g_nchw = g if i == n_layers - 1 else g.permute(0, 3, 1, 2)
                gi, gw, gb = torch.ops.aten.convolution_backward(
                    g_nchw, inputs[i], w, [w.shape[0]], [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [need_x, True, True]
                )
                grads[2 * i] = gw.to(ctx.param_dtypes[2 * i])
                grads[2 * i + 1] = gb.to(ctx.param_dtypes[2 * i + 1])
            if i > 0:  # the input gradient of layer i, times the ReLU mask of layer i - 1
                wd = dgrad_hidden[i - 1] if i < n_layers - 1 else pack_dgrad_weight(weights[i], dtype)
                g = conv3x3(g, wd, None, relu_mask=acts[i - 1], precision=ctx.precision)
            elif need_x:
                grad_x = grad_x + gi.to(grad_x.dtype)
        if use_wgrad:
            gws, gbs = reduce_wgrad(parts, bparts, cin, cout)
            for i, (gw, gb) in enumerate(zip(gws, gbs), start=1):
                grads[2 * i], grads[2 * i + 1] = gw.to(ctx.param_dtypes[2 * i]), gb.to(ctx.param_dtypes[2 * i + 1])
        return (grad_x, None, None, *grads)


def vdsr_forward_train(x: torch.Tensor, layers: Sequence[torch.nn.Conv2d], precision: str = "ieee") -> torch.Tensor:
    """Differentiable fused forward. Under autocast the compute dtype is the autocast dtype."""
    dtype = x.dtype
    if torch.is_autocast_enabled(x.device.type):
        dtype = torch.get_autocast_dtype(x.device.type)
    params = [p for c in layers for p in (c.weight, c.bias)]
    with torch.autocast(x.device.type, enabled=False):
        return FusedVDSRFunction.apply(x, dtype, precision, *params)
