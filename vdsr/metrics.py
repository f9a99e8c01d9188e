"""Image quality metrics of the super-resolution protocol: PSNR and SSIM on the Y channel.

Both take two images as ``H x W`` arrays or tensors on the [0, ``data_range``] scale (the
protocol passes integers in [0, 255] as float64) and first shave ``shave`` pixels from every
side. The work is done in float64.

SSIM is Wang et al. (IEEE TIP 2004): an 11 x 11 Gaussian window, sigma 1.5, K1 = 0.01,
K2 = 0.03, the local statistics computed only where the window fits (the 'valid' region),
and the mean of the SSIM map. No downsampling.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["shave_border", "psnr", "ssim", "gaussian_1d", "gaussian_window"]


def _as_f64(x) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if t.ndim != 2:
        raise ValueError(f"expected an H x W image, got shape {tuple(t.shape)}")
    return t.to(torch.float64)


def shave_border(x: torch.Tensor, shave: int) -> torch.Tensor:
    """Drop ``shave`` pixels from each side of the last two dims."""
    if shave <= 0:
        return x
    if x.shape[-2] <= 2 * shave or x.shape[-1] <= 2 * shave:
        raise ValueError(f"image {tuple(x.shape[-2:])} is too small to shave {shave} px per side")
    return x[..., shave:-shave, shave:-shave]


def psnr(a, b, shave: int = 0, data_range: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB, ``10 log10(data_range^2 / MSE)``; inf when equal."""
    a, b = _as_f64(a), _as_f64(b)
    if a.shape != b.shape:
        raise ValueError(f"psnr: shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    mse = torch.mean((shave_border(a, shave) - shave_border(b, shave)) ** 2).item()
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def gaussian_1d(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Normalised 1-D Gaussian; ``outer(g, g)`` is MATLAB's ``fspecial('gaussian', size, sigma)``."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    return g / g.sum()


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """The normalised ``size x size`` Gaussian of MATLAB's ``fspecial('gaussian', size, sigma)``."""
    g = gaussian_1d(size, sigma)
    return torch.outer(g, g)


def ssim(a, b, shave: int = 0, data_range: float = 255.0) -> float:
    """Mean structural similarity (Wang et al. 2004) over the valid region; in [-1, 1]."""
    a, b = _as_f64(a), _as_f64(b)
    if a.shape != b.shape:
        raise ValueError(f"ssim: shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    a, b = shave_border(a, shave), shave_border(b, shave)
    g = gaussian_1d().to(a.device)
    if min(a.shape) < g.numel():
        raise ValueError(f"ssim: image {tuple(a.shape)} (after shave) is smaller than the 11 x 11 window")
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    x = torch.stack([a, b, a * a, b * b, a * b])[:, None]  # 5 x 1 x H x W
    # The 2-D Gaussian is separable: filter columns, then rows ('valid' region only).
    x = F.conv2d(F.conv2d(x, g.view(1, 1, -1, 1)), g.view(1, 1, 1, -1))
    mu_a, mu_b, e_aa, e_bb, e_ab = x[:, 0]
    var_a, var_b, cov = e_aa - mu_a**2, e_bb - mu_b**2, e_ab - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return torch.mean(num / den).item()
