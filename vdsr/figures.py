"""The side-by-side figure of ``vdsr compare``: bicubic vs VDSR vs ground truth, zoomed crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .atomic import atomic_path
from .ensemble import SelfEnsemble
from .evaluate import luma, modcrop, quantize, to_unit
from .images import read_image
from .metrics import psnr
from .model import VDSR
from .resize import imresize
from .upscale import upscale

__all__ = ["compare_figure", "check_compare_image"]


def check_compare_image(path: Path, scale: int) -> None:
    """The image must be readable and, after the mod-crop, at least ``max(16, 4 * scale)``
    pixels a side (a low-resolution image of 4 pixels, a 16-pixel zoom, the PSNR shave).

    Raises:
        InputError: naming the file and its size."""
    from PIL import Image

    from .errors import InputError

    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        with Image.open(path) as im:
            w, h = im.size
    except Exception as e:  # noqa: BLE001 - any failure to identify
        raise InputError(f"{path}: not an image Pillow can read ({type(e).__name__})") from None
    need = max(16, 4 * scale)
    if min(h - h % scale, w - w % scale) < need:
        raise InputError(f"{path}: {w}x{h} is too small for x{scale} (needs at least {need}x{need})")


def _y_psnr(a: np.ndarray, b: np.ndarray, scale: int) -> float:
    ya, yb = (quantize(luma(to_unit(x)))[0] for x in (a, b))
    return psnr(ya, yb, shave=scale)


def compare_figure(path: Path, scale: int, model: VDSR | SelfEnsemble, out: Path) -> dict:
    """HR -> LR (exact bicubic, all channels) -> bicubic and VDSR, beside the ground truth.

    The zoomed crop is the window where VDSR and bicubic differ most. PSNR is the protocol's
    (Y, shave = scale). Writes a PNG; returns the two PSNRs and the method's name
    ("VDSR", or "VDSR+" for a :class:`vdsr.ensemble.SelfEnsemble`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hr = modcrop(read_image(path), scale)
    hr01 = to_unit(hr)
    lr = quantize(imresize(hr01, 1.0 / scale)).to(torch.uint8).numpy()
    lr = lr[0] if lr.shape[0] == 1 else lr.transpose(1, 2, 0)
    bic = upscale(lr, scale, bicubic=True)
    sr = upscale(lr, scale, model=model)
    p_bic, p_sr = _y_psnr(bic, hr, scale), _y_psnr(sr, hr, scale)
    # the zoom: a quarter-size window where VDSR changed bicubic the most
    diff = np.abs(sr.astype(np.float64) - bic.astype(np.float64))
    diff = diff.mean(axis=2) if diff.ndim == 3 else diff
    h, w = diff.shape
    k = max(16, min(h, w) // 4)
    integral = np.pad(diff.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = integral[k:, k:] - integral[:-k, k:] - integral[k:, :-k] + integral[:-k, :-k]
    y0, x0 = np.unravel_index(np.argmax(sums), sums.shape)
    name = "VDSR+" if isinstance(model, SelfEnsemble) else "VDSR"  # + : the self-ensemble
    panels = [(bic, f"bicubic  {p_bic:.2f} dB"), (sr, f"{name}  {p_sr:.2f} dB"), (hr, "ground truth")]
    cmap = "gray" if hr.ndim == 2 else None
    fig, axes = plt.subplots(2, 3, figsize=(12, 9.0), layout="constrained")
    for (img, title), top, bottom in zip(panels, axes[0], axes[1]):
        top.imshow(img, cmap=cmap, vmin=0, vmax=255)
        top.add_patch(plt.Rectangle((x0, y0), k, k, fill=False, ec="yellow", lw=1.5))
        top.set_title(title)
        bottom.imshow(img[y0 : y0 + k, x0 : x0 + k], cmap=cmap, vmin=0, vmax=255, interpolation="nearest")
        bottom.set_title(f"zoom ({k}x{k})")
        for ax in (top, bottom):
            ax.set_axis_off()
    fig.suptitle(f"{path.name}, x{scale}: PSNR on Y (MATLAB protocol)")
    fig.get_layout_engine().set(h_pad=0.25, hspace=0.12)  # room for the zoom titles under the top row
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return {"bicubic_psnr": p_bic, "vdsr_psnr": p_sr, "method": name, "crop": (int(y0), int(x0), k)}
