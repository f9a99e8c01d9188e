"""The standard super-resolution evaluation protocol (the one published VDSR numbers use).

For every HR image and integer scale s:

1. mod-crop the HR image to a multiple of s (drop the last rows/columns);
2. take Y (``vdsr.color.rgb_to_y``; a single-channel image is its own Y), on [0, 1], float64;
3. LR = ``imresize(Y, 1/s)``; bicubic = ``imresize(LR, s)`` (MATLAB-exact, float64);
4. the method maps bicubic -> SR (bicubic itself, or VDSR on the bicubic Y, clamped to [0, 1]);
5. round ground truth and SR to integers in [0, 255] (MATLAB rounding: half away from zero);
6. shave s pixels from every side; PSNR and SSIM per image, then the mean over the folder.

``quantize_y=True`` rounds Y to integers before step 3, as Kim et al.'s MATLAB test script does
(it calls ``rgb2ycbcr`` on uint8 images). It changes bicubic PSNR by < 0.006 dB on Set5/Set14
and gives the SSIM values most papers quote (Set5 x2 bicubic 0.9299 instead of 0.9296).
"""

from __future__ import annotations

import math
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from .color import rgb_to_y, rgb_to_ycbcr, ycbcr_to_rgb
from .errors import InputError
from .images import IMAGE_EXTENSIONS, find_images, read_image, write_image
from .metrics import psnr, ssim
from .resize import imresize

__all__ = [
    "Dataset",
    "open_dataset",
    "check_scales",
    "min_image_side",
    "modcrop",
    "to_unit",
    "luma",
    "degrade",
    "quantize",
    "vdsr_method",
    "evaluate",
    "EvalReport",
]

#: An SR method: bicubic Y (N x 1 x H x W, float64, [0, 1]) -> restored Y (same shape).
Method = Callable[[torch.Tensor], torch.Tensor]

SSIM_WINDOW = 11


@dataclass
class Dataset:
    """A named list of HR images, and the files found beside them that are not images."""

    name: str
    files: list[Path]
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def open_dataset(folder: str | Path, name: str | None = None) -> Dataset:
    """The images under ``folder`` (recursive, sorted) as a dataset named by its basename.

    Raises:
        InputError: missing folder, or a folder with no image files.
    """
    folder = Path(folder)
    files, skipped = find_images(folder)
    if not files:
        extra = f" ({len(skipped)} other files)" if skipped else ""
        exts = ", ".join(e.lstrip(".") for e in IMAGE_EXTENSIONS)
        raise InputError(f"{folder}: no images ({exts}) found{extra}")
    return Dataset(name or folder.resolve().name, files, skipped)


def check_scales(scales: Iterable) -> list[int]:
    """Validate upscaling factors: integers >= 2, no repeats. Raises InputError."""
    out = []
    for s in scales:
        if isinstance(s, float) and s.is_integer():
            s = int(s)
        if not isinstance(s, int) or isinstance(s, bool) or s < 2:
            raise InputError(f"scale {s!r} is not supported: scales are integers >= 2")
        if s in out:
            raise InputError(f"scale {s} given twice")
        out.append(s)
    if not out:
        raise InputError("no scales given")
    return out


def min_image_side(scale: int) -> int:
    """Smallest side a HR image may have: after mod-crop and the shave, the 11 x 11 SSIM window fits."""
    return scale * math.ceil((SSIM_WINDOW + 2 * scale) / scale)


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop ``H x W [x C]`` to the largest multiple of ``scale`` (top-left kept)."""
    h, w = img.shape[0] - img.shape[0] % scale, img.shape[1] - img.shape[1] % scale
    return img[:h, :w]


def to_unit(img: np.ndarray, device="cpu") -> torch.Tensor:
    """uint8 ``H x W`` or ``H x W x 3`` to a float64 ``C x H x W`` tensor on [0, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(img)).to(device=device, dtype=torch.float64) / 255.0
    return t[None] if t.ndim == 2 else t.permute(2, 0, 1)


def luma(img01: torch.Tensor) -> torch.Tensor:
    """Y of a ``C x H x W`` image on [0, 1] as ``1 x H x W`` (a single channel is its own Y)."""
    return img01 if img01.shape[0] == 1 else rgb_to_y(img01)


def degrade(x: torch.Tensor, scale: int) -> torch.Tensor:
    """The LR synthesis: ``imresize(imresize(x, 1/scale), scale)`` (sizes must divide by scale)."""
    return imresize(imresize(x, 1.0 / scale), scale)


def quantize(x01: torch.Tensor) -> torch.Tensor:
    """[0, 1] values to integers in [0, 255] (float64), rounding half away from zero as MATLAB."""
    return torch.floor(x01.to(torch.float64) * 255.0 + 0.5).clamp_(0, 255)


def vdsr_method(model: torch.nn.Module, bf16: bool = False) -> Method:
    """VDSR as an SR method: runs ``model`` on the bicubic Y (float32 input; bf16 autocast when
    asked), returns float64 clamped to [0, 1]."""
    device = next(model.parameters()).device

    @torch.inference_mode()
    def run(bic: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            inp = bic.to(device=device, dtype=torch.float32).contiguous(memory_format=torch.channels_last)
            out = model(inp)
        return out.to(bic.dtype).clamp_(0.0, 1.0).to(bic.device)

    return run


@dataclass
class EvalReport:
    """Per dataset and scale: the per-image results and the files left out."""

    method: str
    # name -> scale -> list of (file, psnr, ssim)
    results: dict[str, dict[int, list[tuple[str, float, float]]]] = field(default_factory=dict)
    skipped: dict[str, list[tuple[Path, str]]] = field(default_factory=dict)

    def summary(self) -> dict:
        """``{"Set5": {"2": {"psnr": 33.656, "ssim": 0.9299, "images": 5}, ...}, ...}``."""
        out = {}
        for name, by_scale in self.results.items():
            out[name] = {}
            for s, rows in by_scale.items():
                n = len(rows)
                out[name][str(s)] = {
                    "psnr": round(sum(r[1] for r in rows) / n, 4) if n else None,
                    "ssim": round(sum(r[2] for r in rows) / n, 5) if n else None,
                    "images": n,
                }
        return out

    def table(self, per_image: bool = False) -> str:
        """A plain-text table: dataset x scale, PSNR (dB), SSIM, image count."""
        lines = [f"{'dataset':<16} {'scale':>5}  {'method':<8} {'PSNR (dB)':>9}  {'SSIM':>6}  {'images':>6}"]
        for name, by_scale in self.summary().items():
            for s, r in by_scale.items():
                p = f"{r['psnr']:9.3f}" if r["psnr"] is not None else f"{'-':>9}"
                q = f"{r['ssim']:6.4f}" if r["ssim"] is not None else f"{'-':>6}"
                lines.append(f"{name:<16} {'x' + s:>5}  {self.method:<8} {p}  {q}  {r['images']:>6}")
                if per_image:
                    for f, pv, sv in self.results[name][int(s)]:
                        lines.append(f"  {f:<26} {pv:9.3f}  {sv:6.4f}")
        for name, skipped in self.skipped.items():
            if skipped:
                lines.append(f"{name}: {len(skipped)} file(s) skipped: " + "; ".join(f"{p.name} ({why})" for p, why in skipped))
        return "\n".join(lines)


def _save_colour(path: Path, img01: torch.Tensor, sr_y: torch.Tensor, scale: int) -> None:
    """Colour SR image: SR luma with the bicubic-degraded chroma (grey images stay grey)."""
    if img01.shape[0] == 1:
        out = sr_y
    else:
        ycc = rgb_to_ycbcr(img01)
        chroma = degrade(ycc[1:], scale)
        out = ycbcr_to_rgb(torch.cat([sr_y, chroma]))
    arr = quantize(out).to(torch.uint8).cpu().numpy()
    write_image(path, arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0))


def evaluate(
    datasets: Sequence[Dataset],
    scales: Sequence[int],
    method: Method | None = None,
    method_name: str = "bicubic",
    device: str | torch.device = "cpu",
    save_images: str | Path | None = None,
    skip_bad: bool = False,
    progress: bool | None = None,
    quantize_y: bool = False,
) -> EvalReport:
    """Run the protocol over every image of every dataset at every scale.

    Args:
        datasets: from :func:`open_dataset`.
        scales: integer factors >= 2 (checked).
        method: bicubic Y -> SR Y (:data:`Method`); ``None`` is bicubic.
        device: where the resize (float64) and the method run.
        save_images: folder for the SR images as colour PNG: ``DIR/<dataset>/x<s>/<stem>.png``.
        skip_bad: skip unreadable or too-small images (named and counted) instead of raising.
        progress: show a progress bar (``None``: only on a terminal).
        quantize_y: round Y to 8-bit integers before the resize (Kim et al.'s MATLAB script).

    Raises:
        InputError: an unreadable or too-small image (unless ``skip_bad``), a bad scale.
    """
    scales = check_scales(scales)
    report = EvalReport(method_name)
    total = sum(len(d.files) for d in datasets) * len(scales)
    bar = tqdm(total=total, desc=f"eval {method_name}", unit="img", disable=None if progress is None else not progress, file=sys.stderr)
    try:
        for ds in datasets:
            report.results[ds.name] = {s: [] for s in scales}
            skipped = report.skipped.setdefault(ds.name, list(ds.skipped))
            for path in ds.files:
                try:
                    img = read_image(path)
                except InputError as e:
                    if not skip_bad:
                        raise
                    skipped.append((path, str(e).removeprefix(f"{path}: ")))
                    warnings.warn(f"skipped {e}", stacklevel=2)
                    bar.update(len(scales))
                    continue
                for s in scales:
                    bar.update(1)
                    side = min_image_side(s)
                    if min(img.shape[:2]) < side:
                        msg = f"{img.shape[1]}x{img.shape[0]} is too small for scale {s} (needs at least {side}x{side})"
                        if not skip_bad:
                            raise InputError(f"{path}: {msg}")
                        skipped.append((path, msg))
                        warnings.warn(f"skipped {path}: {msg}", stacklevel=2)
                        continue
                    hr01 = to_unit(modcrop(img, s), device)
                    y = luma(hr01)[None]  # 1 x 1 x H x W
                    if quantize_y:
                        y = quantize(y) / 255.0
                    bic = degrade(y, s)
                    sr = bic if method is None else method(bic)
                    gt_q, sr_q = quantize(y)[0, 0], quantize(sr)[0, 0]
                    report.results[ds.name][s].append(
                        (path.name, psnr(gt_q, sr_q, shave=s), ssim(gt_q, sr_q, shave=s))
                    )
                    if save_images is not None:
                        _save_colour(Path(save_images) / ds.name / f"x{s}" / f"{path.stem}.png", hr01, sr[0], s)
    finally:
        bar.close()
    return report
