"""Finding, reading and writing images.

* :func:`find_images`: the image files under a folder (recursive, sorted), and the other
  files that were passed over, each with the reason, so nothing is skipped silently.
* :func:`read_image`: any common file to ``H x W`` (grey) or ``H x W x 3`` (RGB) uint8, or an
  :class:`~vdsr.errors.InputError` naming the file and the problem.
* :func:`write_image`: uint8 array to PNG (or any Pillow format), atomically.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .atomic import atomic_path
from .errors import InputError

__all__ = ["IMAGE_EXTENSIONS", "find_images", "read_image", "write_image"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def find_images(folder: str | Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Image files under ``folder``, recursively, in sorted (deterministic) order.

    Returns:
        ``(images, skipped)``: the files with an image extension, and ``(path, reason)`` for
        every other file found (hidden files included).

    Raises:
        InputError: the folder does not exist or is not a folder.
    """
    folder = Path(folder)
    if not folder.exists():
        raise InputError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    images, skipped = [], []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            images.append(path)
        else:
            skipped.append((path, f"not an image (extension {path.suffix or 'none'!r})"))
    return images, skipped


def _to_uint8(img: Image.Image, path: Path) -> np.ndarray:
    """Pillow image of any mode to a uint8 grey (H x W) or RGB (H x W x 3) array."""
    mode = img.mode
    if mode in ("L", "RGB"):
        return np.array(img)
    if mode in ("1", "LA", "La"):
        return np.array(img.convert("L"))
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(img).astype(np.float64)
        top = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        warnings.warn(f"{path}: {mode} image scaled from [0, {top:.0f}] to 8 bits", stacklevel=3)
        return np.clip(np.round(arr * (255.0 / top)), 0, 255).astype(np.uint8)
    if mode in ("RGBA", "RGBa", "PA") or (mode == "P" and "transparency" in img.info):
        warnings.warn(f"{path}: alpha channel ignored", stacklevel=3)
    return np.array(img.convert("RGB"))


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as uint8: ``H x W`` for single-channel files, ``H x W x 3`` otherwise.

    Palette, CMYK, 1-bit and alpha images are converted (alpha dropped, with a warning);
    16-bit images are scaled to 8 bits (with a warning); EXIF orientation is applied.

    Raises:
        InputError: the file is missing, truncated, corrupt or not an image (message names it).
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            return _to_uint8(img, path)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image Pillow can read") from None
    except (OSError, ValueError, SyntaxError) as e:  # truncated or corrupt data
        raise InputError(f"{path}: cannot decode image ({e})") from None


def write_image(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 ``H x W`` or ``H x W x 3`` array (format from the suffix), atomically."""
    path = Path(path)
    if array.dtype != np.uint8:
        raise TypeError(f"write_image: expected uint8, got {array.dtype}")
    with atomic_path(path, suffix=path.suffix) as tmp:
        Image.fromarray(array).save(tmp, format=Image.registered_extensions().get(path.suffix.lower()))
