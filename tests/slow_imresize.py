"""A slow, plainly correct MATLAB ``imresize(..., 'bicubic')`` written from the definition:
scalar Python loops over output samples and taps, float64, no shared code with vdsr.resize."""

from __future__ import annotations

import math

import numpy as np


def keys_cubic(t: float) -> float:
    t = abs(t)
    if t <= 1:
        return 1.5 * t**3 - 2.5 * t**2 + 1
    if t <= 2:
        return -0.5 * t**3 + 2.5 * t**2 - 4 * t + 2
    return 0.0


def mirror(j: int, n: int) -> int:
    """1-based index j reflected into 1..n with symmetric edges: ... 2 1 | 1 2 ... n | n n-1 ..."""
    m = (j - 1) % (2 * n)
    return m + 1 if m < n else 2 * n - m


def resize_rows(a: np.ndarray, out_len: int, scale: float) -> np.ndarray:
    """Resize the first axis of a 2-D float64 array."""
    n = a.shape[0]
    width = 4.0 / scale if scale < 1 else 4.0
    out = np.zeros((out_len, a.shape[1]))
    for i in range(1, out_len + 1):
        u = i / scale + 0.5 * (1 - 1 / scale)
        left = math.floor(u - width / 2)
        taps = []
        for p in range(math.ceil(width) + 2):
            j = left + p
            w = scale * keys_cubic(scale * (u - j)) if scale < 1 else keys_cubic(u - j)
            taps.append((j, w))
        total = sum(w for _, w in taps)
        for j, w in taps:
            out[i - 1] += (w / total) * a[mirror(j, n) - 1]
    return out


def slow_imresize(img: np.ndarray, scale: float) -> np.ndarray:
    """2-D float64 image, one scale for both axes: rows first, then columns."""
    h, w = img.shape
    oh, ow = math.ceil(h * scale - 1e-9), math.ceil(w * scale - 1e-9)
    return resize_rows(resize_rows(img, oh, scale).T, ow, scale).T
