"""Upscale your own images with VDSR: colour, any size, tiled, exact.

The pipeline for one image and scale s (``upscale``):

1. read it (EXIF orientation applied); RGB -> YCbCr (MATLAB's BT.601, float);
2. Y: MATLAB-exact bicubic upscale, then VDSR on it (the residual added, clamped to [0, 1]);
   Cb, Cr (and alpha): the same bicubic upscale;
3. back to RGB, clamped, rounded to 8 bits (16 bits for 16-bit greyscale input).

Tiles. The output is made tile by tile, so memory is the 8-bit input and output plus one tile,
whatever the image size: each output tile reads only the window of the input its bicubic taps
need (converted to YCbCr there), takes its bicubic rows and columns from the whole-axis MATLAB
tables (so any scale, even non-integer, gives exactly the whole-image bicubic), runs VDSR on the
tile plus a halo of ``depth`` pixels (its receptive field: one pixel per 3x3 layer), cuts the
halo away and writes its pixels to the output. A tiled result equals the untiled one (tested to
1e-5 before rounding); the untiled path is simply one tile.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageOps

from .checkpoint import load_weights
from .color import rgb_to_ycbcr, ycbcr_to_rgb
from .errors import InputError
from .model import VDSR
from .resize import output_size, resize_tables

__all__ = ["DEFAULT_WEIGHTS", "load_pretrained", "default_tile", "upscale_planes", "upscale", "upscale_file", "image_note"]

def _shipped_weights() -> Path:
    """The shipped model: package data of ``vdsr_weights`` (a wheel, or the checkout through an
    editable install), else ``weights/`` beside this package (a checkout on ``sys.path``)."""
    try:
        from importlib.resources import files

        path = Path(str(files("vdsr_weights") / "vdsr20_x234.safetensors"))
        if path.is_file():
            return path
    except (ImportError, TypeError):
        pass
    return Path(__file__).resolve().parent.parent / "weights" / "vdsr20_x234.safetensors"


#: The model shipped with the package (see weights/README.md for how it was trained).
DEFAULT_WEIGHTS = _shipped_weights()


def load_pretrained(path: str | Path | None = None, device: str | torch.device = "cpu", backend: str = "torch") -> VDSR:
    """The shipped VDSR-20 (x2/x3/x4), or the weights at ``path``, ready for inference.

    ``path``: a weights file, or a folder holding ``model.safetensors``: a finished run
    (``runs/NAME``) or one of its training checkpoints (``runs/NAME/checkpoints/step-*``).
    The model is in channels_last memory format: on the CPU (oneDNN) and with cuDNN the
    convolutions run 1.5x (float32) to 3.4x (bf16) faster than NCHW (measured on this CPU)."""
    path = Path(path) if path else DEFAULT_WEIGHTS
    if path.is_dir():
        if not (path / "model.safetensors").is_file():
            hint = "a run folder has it when the run ends; its checkpoints/step-* folders have it from the first checkpoint"
            raise InputError(f"{path}: a folder without model.safetensors ({hint})")
        path = path / "model.safetensors"
    if not path.is_file():
        hint = "train one with launch/train.py, or pass --checkpoint"
        if path == DEFAULT_WEIGHTS:
            hint = "the shipped model is missing from this install; get weights/vdsr20_x234.safetensors from the repository, or pass --checkpoint"
        raise InputError(f"{path}: no such weights file ({hint})")
    model = load_weights(path, device).to(memory_format=torch.channels_last)
    model.backend = backend
    return model.eval()


def default_tile(device: torch.device, budget_bytes: int | None = None) -> int:
    """Tile side (output pixels) whose VDSR activations fit the memory available.

    About 1 KB per pixel of tile (two 64-channel float32 activations, the conv's workspace and
    the bicubic planes); a quarter of the free memory, at most 512 MB on the CPU."""
    if budget_bytes is None:
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            budget_bytes = free // 4
        else:
            import psutil

            budget_bytes = min(psutil.virtual_memory().available // 4, 512 * 2**20)
    return max(64, int(math.sqrt(budget_bytes / 1024)) // 8 * 8)


def _rows(tables: tuple[np.ndarray, np.ndarray], lo: int, hi: int, device):
    """Rows ``lo:hi`` of the resize tables, indices relative to the first source row they read."""
    w, idx = tables
    w, idx = w[lo:hi], idx[lo:hi]
    base = int(idx.min())
    span = int(idx.max()) - base + 1
    return torch.tensor(w, device=device), torch.tensor(idx - base, device=device), base, span


PlaneSource = Callable[[int, int, int, int], np.ndarray]  # (r0, r1, c0, c1) -> C x (r1-r0) x (c1-c0)


def _tiles(
    source: PlaneSource,
    shape: tuple[int, int],
    scale: float,
    model: VDSR | None,
    tile: int | None,
    bf16: bool,
):
    """Yield ``(r0, r1, c0, c1, planes)``: each output tile as float64 planes on [0, 1].

    ``source`` gives any window of the low-resolution planes (plane 0 is luma). Each tile reads
    only the source window its bicubic taps need, for the tile plus a halo of ``model.depth``
    pixels; VDSR runs on the luma of that window and the halo is cut away."""
    h, w = shape
    big_h, big_w = output_size(h, scale), output_size(w, scale)
    th, tw = resize_tables(h, big_h, scale), resize_tables(w, big_w, scale)
    device = next(model.parameters()).device if model is not None else torch.device("cpu")
    tile = tile or max(big_h, big_w)
    halo = model.depth if model is not None else 0
    for r0 in range(0, big_h, tile):
        for c0 in range(0, big_w, tile):
            r1, c1 = min(r0 + tile, big_h), min(c0 + tile, big_w)
            hr0, hr1, hc0, hc1 = max(0, r0 - halo), min(big_h, r1 + halo), max(0, c0 - halo), min(big_w, c1 + halo)
            wr, ir, br, nr = _rows(th, hr0, hr1, "cpu")
            wc, ic, bc, nc = _rows(tw, hc0, hc1, "cpu")
            src = torch.from_numpy(np.ascontiguousarray(source(br, br + nr, bc, bc + nc), dtype=np.float64))
            rows = torch.einsum("op,copw->cow", wr, src[:, ir, :])
            win = torch.einsum("op,chop->cho", wc, rows[:, :, ic])  # C x (hr1-hr0) x (hc1-hc0): bicubic
            if model is not None:
                with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    inp = win[None, :1].to(device=device, dtype=torch.float32)
                    y = model(inp.contiguous(memory_format=torch.channels_last))[0]
                win[:1] = y.double().cpu().clamp(0.0, 1.0)
            yield r0, r1, c0, c1, win[:, r0 - hr0 : r1 - hr0, c0 - hc0 : c1 - hc0].numpy()


def upscale_planes(
    planes: np.ndarray,
    scale: float,
    model: VDSR | None,
    tile: int | None = None,
    bf16: bool = False,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Upscale ``C x h x w`` planes on [0, 1]: plane 0 is luma (VDSR), the others bicubic only.

    Args:
        planes: float array; C = 1 (Y), 2 (Y, alpha), 3 (Y, Cb, Cr) or 4 (Y, Cb, Cr, alpha).
        scale: the factor (>= 1); output size ``ceil(h * scale) x ceil(w * scale)``.
        model: VDSR (its device is used), or None for bicubic only.
        tile: output tile side (None: the whole image as one tile).
        bf16: run VDSR under bfloat16 autocast.
        progress: called with the output pixels of each finished tile.

    Returns:
        float64 ``C x H x W`` (luma clamped to [0, 1] when VDSR ran; the rest as bicubic left them).
    """
    c, h, w = planes.shape
    out = np.empty((c, output_size(h, scale), output_size(w, scale)))
    for r0, r1, c0, c1, t in _tiles(lambda a, b, x, y: planes[:, a:b, x:y], (h, w), scale, model, tile, bf16):
        out[:, r0:r1, c0:c1] = t
        if progress is not None:
            progress((r1 - r0) * (c1 - c0))
    return out


def _to_planes(arr: np.ndarray, top: float) -> np.ndarray:
    """H x W [x C] integer image -> C x H x W planes on [0, 1].

    Grey: Y. Grey + alpha: Y, alpha. RGB: Y, Cb, Cr. RGBA: Y, Cb, Cr, alpha."""
    x = arr.astype(np.float64) / top
    if x.ndim == 2:
        return x[None]
    x = x.transpose(2, 0, 1)
    if x.shape[0] <= 2:
        return np.ascontiguousarray(x)
    ycc = rgb_to_ycbcr(torch.from_numpy(np.ascontiguousarray(x[:3]))).numpy()
    return np.concatenate([ycc, x[3:]])


def _from_planes(planes: np.ndarray, top: int, dtype, like: np.ndarray) -> np.ndarray:
    """C x H x W planes on [0, 1] -> integers shaped like ``like`` (YCbCr back to RGB)."""
    x = planes
    if x.shape[0] >= 3:
        x = np.concatenate([ycbcr_to_rgb(torch.from_numpy(np.ascontiguousarray(x[:3]))).numpy(), x[3:]])
    q = np.floor(np.clip(x, 0, 1) * top + 0.5).astype(dtype)
    return q[0] if like.ndim == 2 else np.ascontiguousarray(q.transpose(1, 2, 0))


def _upscale_array(arr: np.ndarray, top: int, scale: float, model, tile, bf16, progress) -> np.ndarray:
    """Integer ``H x W [x C]`` in, the same dtype and channels out; memory: input + output + a tile."""
    h, w = arr.shape[:2]
    out = np.empty((output_size(h, scale), output_size(w, scale)) + arr.shape[2:], dtype=arr.dtype)
    source = lambda a, b, x, y: _to_planes(arr[a:b, x:y], top)  # noqa: E731 - YCbCr of a window only
    for r0, r1, c0, c1, t in _tiles(source, (h, w), scale, model, tile, bf16):
        out[r0:r1, c0:c1] = _from_planes(t, top, arr.dtype, arr)
        if progress is not None:
            progress((r1 - r0) * (c1 - c0))
    return out


# Pillow modes kept as they are, and what the others become (with a note where something is lost)
_KEPT = ("L", "LA", "RGB", "RGBA", "I;16", "I;16B", "I;16L")
_LOSSY = {
    "CMYK": "CMYK converted to RGB (the colour profile, if any, not applied)",
    "LAB": "Lab converted to RGB",
    "HSV": "HSV converted to RGB",
    "F": "32-bit float greyscale clipped to [0, 65535] and written as 16-bit",
    "I": "32-bit integer greyscale clipped to [0, 65535] and written as 16-bit",
    "La": "premultiplied alpha un-premultiplied (8-bit rounding)",
    "RGBa": "premultiplied alpha un-premultiplied (8-bit rounding)",
}


def image_note(image: Image.Image) -> str | None:
    """What upscaling this PIL image loses, in a few words (None: nothing: its mode is kept)."""
    if image.mode in _KEPT or image.mode in ("1", "P", "PA", "YCbCr"):
        return None  # kept, or converted without loss (bilevel -> grey, palette -> RGB(A))
    return _LOSSY.get(image.mode, f"mode {image.mode} converted to RGB")


def _pil_to_array(image: Image.Image) -> tuple[np.ndarray, int, type]:
    """A PIL image as (integer array, its full-scale value, dtype), keeping grey, alpha, 16 bits."""
    mode = image.mode
    if mode.startswith("I;16"):
        return np.asarray(image).astype(np.uint16), 65535, np.uint16
    if mode in ("I", "F"):
        return np.clip(np.asarray(image, dtype=np.float64), 0, 65535).round().astype(np.uint16), 65535, np.uint16
    if mode == "1":
        return np.asarray(image.convert("L")), 255, np.uint8
    keep = {"L": "L", "LA": "LA", "RGB": "RGB", "RGBA": "RGBA", "La": "LA", "RGBa": "RGBA", "PA": "RGBA"}.get(mode)
    target = keep or ("RGBA" if "A" in mode or "transparency" in image.info else "RGB")
    return np.asarray(image.convert(target)), 255, np.uint8


def upscale(
    image: Image.Image | np.ndarray,
    scale: float,
    model: VDSR | None = None,
    tile: int | None = None,
    bf16: bool = False,
    progress: Callable[[int], None] | None = None,
    bicubic: bool = False,
) -> Image.Image | np.ndarray:
    """Upscale a PIL image or a numpy array (uint8/uint16, H x W or H x W x 3/4) with VDSR.

    ``model`` defaults to :func:`load_pretrained` (wrap it in :class:`vdsr.ensemble.SelfEnsemble`
    for the 8-symmetry average); ``bicubic=True`` skips the network (the
    MATLAB-exact bicubic baseline). Returns the same kind (PIL in, PIL out; an array of the same
    dtype and channel count). Greyscale stays greyscale; alpha is upscaled bicubically and kept;
    16-bit greyscale stays 16-bit.
    """
    if not scale >= 1:
        raise InputError(f"scale {scale} is not supported: upscaling needs a scale >= 1")
    if bicubic:
        model = None
    elif model is None:
        model = load_pretrained()
    if isinstance(image, Image.Image):
        arr, top, dtype = _pil_to_array(image)
        return Image.fromarray(_upscale_array(arr.astype(dtype), top, scale, model, tile, bf16, progress))
    arr = np.asarray(image)
    if arr.dtype not in (np.uint8, np.uint16):
        raise InputError(f"upscale: expected a uint8 or uint16 array, got {arr.dtype}")
    top = 255 if arr.dtype == np.uint8 else 65535
    if arr.ndim == 3 and arr.shape[2] not in (1, 2, 3, 4):
        raise InputError(f"upscale: expected 1 to 4 channels, got shape {arr.shape}")
    return _upscale_array(arr, top, scale, model, tile, bf16, progress)


def _to_8bit(img16: Image.Image) -> Image.Image:
    return Image.fromarray(np.floor(np.asarray(img16, dtype=np.float64) / 257.0 + 0.5).astype(np.uint8))


def upscale_file(
    src: Path, dst: Path, scale: float, model: VDSR, tile: int | None, bf16: bool = False, progress=None
) -> tuple[int, int]:
    """Upscale one file to ``dst`` (format from its suffix; ICC profile kept), atomically.

    Returns the output size (W, H). Raises InputError naming ``src`` if it cannot be read.
    """
    from .atomic import atomic_path

    import warnings

    try:
        with Image.open(src) as img:
            # Pillow has no 16-bit colour mode: a 16-bit RGB(A) PNG or TIFF is read as 8 bits
            high_colour = img.mode in ("RGB", "RGBA") and any(";16" in str(t[3]) for t in (img.tile or []) if len(t) > 3)
            img.load()
            icc = img.info.get("icc_profile")
            img = ImageOps.exif_transpose(img)
    except FileNotFoundError:
        raise InputError(f"{src}: no such file") from None
    except Exception as e:  # noqa: BLE001 - any decode failure is a bad input file
        raise InputError(f"{src}: cannot read image ({type(e).__name__}: {e})") from None
    fmt = Image.registered_extensions().get(dst.suffix.lower())
    if fmt is None:
        raise InputError(f"{dst}: unknown output format {dst.suffix!r}")
    if high_colour:
        warnings.warn(f"{src}: 16-bit {img.mode} read as 8 bits per channel (Pillow has no 16-bit colour): the output is 8-bit")
    note = image_note(img)
    if note:
        warnings.warn(f"{src}: {note}")
    out = upscale(img, scale, model, tile, bf16, progress)
    if fmt == "JPEG" and out.mode in ("RGBA", "LA", "I;16"):
        warnings.warn(f"{dst}: JPEG has no {'alpha' if 'A' in out.mode else '16-bit'}: "
                      f"{'alpha dropped' if 'A' in out.mode else 'written as 8-bit'}")  # fmt: skip
        out = out.convert("RGB" if out.mode == "RGBA" else "L") if out.mode != "I;16" else _to_8bit(out)
    params = {"icc_profile": icc} if icc else {}
    if fmt == "JPEG":
        params["quality"] = 95
    with atomic_path(dst, suffix=dst.suffix) as tmp:
        out.save(tmp, format=fmt, **params)
    return out.size
