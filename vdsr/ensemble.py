"""Geometric self-ensemble: a network run on the 8 flips and rotations of its input, averaged.

Timofte, Rothe and Van Gool, *Seven ways to improve example-based single image super
resolution* (CVPR 2016), section 2.4; the "+" models of EDSR/RCAN. Each of the 8 symmetries of
the square (the dihedral group D4: 4 rotations by 90 degrees, each with or without a mirror) is
applied to the input, the network runs on it, the inverse symmetry is applied to the output, and
the 8 outputs are averaged. A network that is exactly equivariant gains nothing from it; a trained
VDSR is only nearly so, and the average removes part of its error. It costs 8 forward passes.

This is a test-time option (``vdsr eval --self-ensemble``, ``vdsr upscale --self-ensemble``):
the model's own numbers, and those of the public models it is compared with, are without it.
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["SYMMETRIES", "dihedral", "undo_dihedral", "SelfEnsemble"]

#: The number of symmetries averaged: 4 rotations x {as is, mirrored}.
SYMMETRIES = 8


def _check_symmetry(k: int) -> None:
    if not 0 <= k < SYMMETRIES:
        raise ValueError(f"symmetry {k} is not in 0..{SYMMETRIES - 1}")


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """Symmetry ``k`` (0..7) of the last two dims of ``x`` (``... x H x W``): a rotation by
    ``k % 4`` quarter turns, then a left-right mirror when ``k >= 4``. ``k = 0`` is ``x`` itself;
    odd rotations swap H and W."""
    _check_symmetry(k)
    y = torch.rot90(x, k % 4, dims=(-2, -1))
    return y.flip(-1) if k >= 4 else y


def undo_dihedral(y: torch.Tensor, k: int) -> torch.Tensor:
    """The inverse of :func:`dihedral`: ``undo_dihedral(dihedral(x, k), k)`` equals ``x``."""
    _check_symmetry(k)
    if k >= 4:
        y = y.flip(-1)
    return torch.rot90(y, -(k % 4), dims=(-2, -1))


class SelfEnsemble(nn.Module):
    """``model`` averaged over the 8 symmetries of its input (see the module docstring).

    Takes and returns what ``model`` does: ``N x C x H x W`` (here the bicubic luma, float32 on
    [0, 1], any memory format); each symmetry's input is made channels_last-contiguous, as the
    fused kernels want it. The mean is taken in float32 (float64 if the model returns float64),
    so a bfloat16 model under autocast is averaged without further rounding; the result has the
    model's output dtype. ``depth`` and the parameters are the wrapped model's, so it can stand
    wherever a :class:`vdsr.model.VDSR` is used for inference (``vdsr.upscale``, ``vdsr_method``).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.depth = getattr(model, "depth", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the outputs have one channel: keeping all 8 costs little beside the hidden activations
        outs = [undo_dihedral(self.model(dihedral(x, k).contiguous(memory_format=torch.channels_last)), k) for k in range(SYMMETRIES)]
        wide = torch.promote_types(outs[0].dtype, torch.float32)
        return torch.stack(outs).to(wide).mean(0).to(outs[0].dtype)
