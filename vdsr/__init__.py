"""VDSR: a fast, exact, distributed trainer for the Kim et al. (CVPR 2016) super-resolution network.

The reference pieces (plain PyTorch): :mod:`vdsr.model`, :mod:`vdsr.resize` (MATLAB-exact
bicubic), :mod:`vdsr.color`, :mod:`vdsr.metrics`, :mod:`vdsr.evaluate` (the protocol).
"""

from .model import VDSR
from .resize import imresize

__all__ = ["VDSR", "imresize"]
__version__ = "0.1.0"
