"""VDSR: a fast, exact, distributed trainer for the Kim et al. (CVPR 2016) super-resolution network.

The reference pieces (plain PyTorch): :mod:`vdsr.model`, :mod:`vdsr.resize` (MATLAB-exact
bicubic), :mod:`vdsr.color`, :mod:`vdsr.metrics`, :mod:`vdsr.evaluate` (the protocol).
Upscaling your own images: ``vdsr.upscale(image, scale)`` with ``vdsr.load_pretrained()``.
"""

from .model import VDSR
from .resize import imresize
from .upscale import load_pretrained, upscale

__all__ = ["VDSR", "imresize", "load_pretrained", "upscale"]
__version__ = "0.1.0"
