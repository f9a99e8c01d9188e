"""VDSR (Kim, Lee, Lee, "Accurate Image Super-Resolution Using Very Deep Convolutional
Networks", CVPR 2016): the reference model, plain PyTorch.

``depth`` 3x3 convolutions, zero padding 1, ReLU after all but the last:

    x (N x 1 x H x W) -> conv 1->C -> ReLU -> (depth - 2) x [conv C->C -> ReLU] -> conv C->1 = r
    output = x + r            (the network learns the residual: high frequencies only)

``x`` is the bicubic-upscaled luma (Y) on the [0, 1] scale. Works in float32 and bfloat16,
with NCHW or channels_last tensors. Weights use He (Kaiming normal) initialisation, by default
over the fan-in as in the paper (std sqrt(2 / (9 Cin))); ``init="fan_out"`` is pytorch-vdsr's
(std sqrt(2 / (9 Cout)): a first layer 8x smaller, a last layer 8x larger). Biases start at
zero; ``bias=False`` keeps them there (frozen: no gradient, so no optimiser moves them), as
pytorch-vdsr's convolutions have none, while the weights file keeps its one format.

``backend="triton"`` runs the same parameters through the fused Triton kernels of
``kernels/`` (a CUDA device, or ``TRITON_INTERPRET=1`` on the CPU): inference uses the
ping-pong stack, training an autograd.Function with a torch backward. Float32 keeps float32
accuracy (3xTF32 on the GPU, exact in the interpreter) unless
``torch.set_float32_matmul_precision("high")`` allows TF32 (``vdsr_kernels.conv.default_precision``).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["VDSR"]


class VDSR(nn.Module):
    """The VDSR network. ``layers[i]`` is the i-th ``nn.Conv2d``; there are ``depth`` of them.

    Args:
        depth: number of conv layers (20 in the paper; >= 2).
        channels: width of the hidden layers (64 in the paper).
        backend: ``"torch"`` (the reference) or ``"triton"`` (fused kernels).
        init: ``"fan_in"`` (He over the fan-in, the paper's) or ``"fan_out"`` (pytorch-vdsr's).
        bias: False freezes every bias at zero (``requires_grad`` off; the tensors stay).
    """

    BACKENDS = ("torch", "triton")
    INITS = ("fan_in", "fan_out")

    def __init__(self, depth: int = 20, channels: int = 64, backend: str = "torch", init: str = "fan_in",
                 bias: bool = True):  # fmt: skip
        super().__init__()
        if depth < 2:
            raise ValueError(f"VDSR depth must be >= 2, got {depth}")
        if backend not in self.BACKENDS:
            raise ValueError(f"VDSR backend must be one of {self.BACKENDS}, got {backend!r}")
        if init not in self.INITS:
            raise ValueError(f"VDSR init must be one of {self.INITS}, got {init!r}")
        self.depth, self.channels, self.backend = depth, channels, backend
        self._packed_cache: tuple | None = None
        widths = [1] + [channels] * (depth - 1) + [1]
        self.layers = nn.ModuleList(
            nn.Conv2d(cin, cout, kernel_size=3, padding=1) for cin, cout in zip(widths[:-1], widths[1:])
        )
        self.reset_parameters(init)
        if not bias:
            for conv in self.layers:
                conv.bias.requires_grad_(False)

    def reset_parameters(self, init: str = "fan_in") -> None:
        """He normal init for every conv (std = sqrt(2 / (9 * Cin)), or with ``init="fan_out"``
        sqrt(2 / (9 * Cout))), zero biases."""
        for conv in self.layers:
            nn.init.kaiming_normal_(conv.weight, mode=init, nonlinearity="relu")
            nn.init.zeros_(conv.bias)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """The predicted residual ``f(x)``, N x 1 x H x W, same dtype as ``x``."""
        h = x
        for conv in self.layers[:-1]:
            h = F.relu(conv(h), inplace=True)
        return self.layers[-1](h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x + f(x)``. ``x``: N x 1 x H x W luma in [0, 1] (unclamped output, same dtype)."""
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"VDSR expects N x 1 x H x W, got shape {tuple(x.shape)}")
        if self.backend == "triton":
            return self._forward_triton(x)
        return x + self.residual(x)

    def _forward_triton(self, x: torch.Tensor) -> torch.Tensor:
        from vdsr_kernels.conv import default_precision
        from vdsr_kernels.stack import pack_layers, vdsr_forward, vdsr_forward_train

        precision = default_precision()
        if torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters()):
            return vdsr_forward_train(x, self.layers, precision)
        dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
        key = (dtype, x.device, tuple((p.data_ptr(), p._version) for p in self.parameters()))
        if self._packed_cache is None or self._packed_cache[0] != key:
            self._packed_cache = (key, pack_layers(self.layers, dtype))
        return vdsr_forward(x, self._packed_cache[1], precision)
