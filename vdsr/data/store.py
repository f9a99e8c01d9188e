"""Decode-once image store: every training image as its Y channel, float32 on [0, 1], in memory.

Decoding a PNG costs about a millisecond, so a stream that decoded a file per patch would top
out near 750 patches/s on a 2-core CPU; decoding each image once and cropping from memory
removes that ceiling. Y is the evaluation protocol's (``vdsr.color.rgb_to_y`` on the uint8 RGB;
a single-channel image is its own Y), computed in float64 and stored as float32.

Bad files never stop the run and are never skipped silently: each is converted (palette,
alpha, 16-bit, CMYK) or skipped (corrupt, not an image, smaller than a patch plus its margin)
with a warning naming it, and the summary counts them. A store with no usable image raises
:class:`~vdsr.errors.InputError` before training starts.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from ..color import rgb_to_y
from ..errors import InputError
from ..images import find_images, read_image

__all__ = ["ImageStore", "load_store", "to_y", "add_downsized", "pad_edges"]

log = logging.getLogger("vdsr.data")


def to_y(img: np.ndarray) -> np.ndarray:
    """uint8 ``H x W`` (grey: its own Y) or ``H x W x 3`` RGB -> float32 Y on [0, 1]."""
    if img.ndim == 2:
        return img.astype(np.float32) / np.float32(255.0)
    rgb = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).to(torch.float64) / 255.0
    return rgb_to_y(rgb)[0].to(torch.float32).numpy()


@dataclass
class ImageStore:
    """Decoded training images. ``images[i]`` is an ``H x W`` float32 C-contiguous array.

    ``pad > 0`` (set by :func:`pad_edges`): every image carries a mirrored border of ``pad``
    pixels on each side; the image itself is ``images[i][pad:-pad, pad:-pad]``."""

    images: list[np.ndarray]
    paths: list[Path]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    converted: list[tuple[Path, str]] = field(default_factory=list)
    per_folder: dict[str, int] = field(default_factory=dict)
    decoder: str = "pillow"
    pad: int = 0

    @property
    def sizes(self) -> list[tuple[int, int]]:
        return [im.shape for im in self.images]

    def summary(self) -> str:
        folders = ", ".join(f"{k}: {v}" for k, v in self.per_folder.items())
        return (
            f"{len(self.images)} training images of {sum(self.per_folder.values())} found ({folders}); "
            f"decoded once by {self.decoder}; "
            f"{len(self.converted)} converted, {len(self.skipped)} skipped"
        )


# Pillow modes that DALI decodes exactly as the protocol wants (8-bit grey or RGB).
_DALI_MODES = ("L", "RGB")


def _probe(path: Path) -> tuple[str, tuple[int, int]] | str:
    """(mode, (H, W)) from the header, or the reason the file is unusable."""
    try:
        with Image.open(path) as img:
            return img.mode, (img.size[1], img.size[0])
    except Exception as e:  # noqa: BLE001 - any failure to identify is a bad file
        return f"not an image Pillow can read ({type(e).__name__})"


def _decode_pillow(path: Path) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the store warns once per converted file itself
        img = read_image(path)  # raises InputError naming the file
    return to_y(img)


def _decode_dali(paths: Sequence[Path], threads: int) -> list[np.ndarray | None]:
    """Decode 8-bit grey/RGB files with DALI on the CPU, in batches; ``None`` where a file fails
    (the caller retries those with Pillow to name the problem)."""
    from nvidia.dali import fn, pipeline_def, types

    batch = 16
    out: list[np.ndarray | None] = []
    for start in range(0, len(paths), batch):
        chunk = list(paths[start : start + batch])
        data = [np.fromfile(p, dtype=np.uint8) for p in chunk]

        @pipeline_def(batch_size=len(chunk), num_threads=threads, device_id=None, prefetch_queue_depth=1)
        def decode():
            enc = fn.external_source(source=lambda: data, batch=True, no_copy=True)
            return fn.decoders.image(enc, device="cpu", output_type=types.ANY_DATA)

        pipe = decode()
        pipe.build()
        try:
            (decoded,) = pipe.run()
        except RuntimeError:  # a corrupt file fails the whole DALI batch: split it to find it
            decoded = None
        del pipe
        if decoded is not None:
            for i in range(len(chunk)):
                arr = np.array(decoded[i])
                out.append(to_y(arr[..., 0] if arr.shape[2] == 1 else arr[..., :3]))
        elif len(chunk) == 1:
            out.append(None)
        else:
            out.extend(_decode_dali(chunk, threads))
    return out


def load_store(
    folders: Sequence[str | Path],
    min_side: int,
    decoder: str = "pillow",
    threads: int = 2,
) -> ImageStore:
    """Find the images under ``folders`` (recursive, sorted) and decode each once.

    Args:
        folders: folders (searched recursively) or single image files.
        min_side: images with a side below this (a patch plus its margin) are skipped.
        decoder: ``"pillow"`` or ``"dali"`` (8-bit grey/RGB files through DALI's CPU decoder;
            the other modes, and any file DALI fails on, through Pillow).
        threads: DALI decoding threads.

    Raises:
        InputError: a missing folder, or no usable image at all.
    """
    files: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    per_folder: dict[str, int] = {}
    for folder in folders:
        if Path(folder).is_file():
            files.append(Path(folder))
            per_folder[Path(folder).parent.name] = per_folder.get(Path(folder).parent.name, 0) + 1
            continue
        found, other = find_images(folder)
        files += found
        skipped += other
        per_folder[Path(folder).name or str(folder)] = len(found)
        log.info("%s: %d image files", folder, len(found))
    for path, why in skipped:
        warnings.warn(f"skipped {path}: {why}", stacklevel=2)

    usable: list[Path] = []
    modes: list[str] = []
    converted: list[tuple[Path, str]] = []
    for path in files:
        probe = _probe(path)
        if isinstance(probe, str):
            skipped.append((path, probe))
            warnings.warn(f"skipped {path}: {probe}", stacklevel=2)
            continue
        mode, (h, w) = probe
        if min(h, w) < min_side:
            why = f"{w}x{h} is smaller than a patch plus its margin ({min_side}x{min_side})"
            skipped.append((path, why))
            warnings.warn(f"skipped {path}: {why}", stacklevel=2)
            continue
        if mode not in _DALI_MODES:
            converted.append((path, f"mode {mode}"))
            warnings.warn(f"converted {path}: mode {mode} to 8-bit Y (alpha dropped, 16-bit scaled)", stacklevel=2)
        usable.append(path)
        modes.append(mode)

    decoded: list[np.ndarray | None] = [None] * len(usable)
    if decoder == "dali":
        idx = [i for i, m in enumerate(modes) if m in _DALI_MODES]
        for i, arr in zip(idx, _decode_dali([usable[i] for i in idx], threads)):
            decoded[i] = arr
    elif decoder != "pillow":
        raise ValueError(f"decoder must be 'pillow' or 'dali', got {decoder!r}")

    images, paths = [], []
    for path, arr in zip(usable, decoded):
        if arr is None:
            try:
                arr = _decode_pillow(path)
            except InputError as e:
                why = str(e).removeprefix(f"{path}: ")
                skipped.append((path, why))
                warnings.warn(f"skipped {path}: {why}", stacklevel=2)
                continue
        images.append(np.ascontiguousarray(arr, dtype=np.float32))
        paths.append(path)

    store = ImageStore(images, paths, skipped, converted, per_folder, decoder)
    if not images:
        names = ", ".join(str(f) for f in folders)
        raise InputError(f"{names}: no usable training image ({len(skipped)} files skipped; need at least {min_side}x{min_side})")
    log.info(store.summary())
    return store


def add_downsized(store: ImageStore, factors: Sequence[float], min_side: int) -> ImageStore:
    """Add a copy of every image shrunk by each factor (the downsizing augmentation of
    pytorch-vdsr and caffe-vdsr: 0.7 and 0.5 copies of the 291 images), in place.

    Each copy is the MATLAB-exact bicubic ``imresize`` of the stored Y (float64, antialiased,
    clamped to [0, 1]); copies with a side below ``min_side`` are left out. The random sampler
    draws every pixel equally likely, so a 0.5 copy gets a quarter of its original's patches.
    """
    from ..resize import imresize

    if store.pad:
        raise ValueError("add the downsized copies before pad_edges")
    if any(not 0 < f < 1 for f in factors):
        raise InputError(f"downsize factors must be in (0, 1), got {list(factors)}")
    n = len(store.images)
    added = 0
    for f in factors:
        for i in range(n):
            y = imresize(torch.from_numpy(store.images[i]).double(), float(f)).clamp_(0, 1)
            if min(y.shape) < min_side:
                continue
            store.images.append(np.ascontiguousarray(y.numpy(), dtype=np.float32))
            store.paths.append(store.paths[i].with_name(f"{store.paths[i].stem}@{f:g}{store.paths[i].suffix}"))
            added += 1
        store.per_folder[f"downsized x{f:g}"] = sum(1 for p in store.paths if f"@{f:g}" in p.stem)
    log.info("downsizing: %d copies added (factors %s); %d images in all", added, list(factors), len(store.images))
    return store


def pad_edges(store: ImageStore, pad: int, multiple: int) -> ImageStore:
    """Let patches reach the image edges with exact whole-image LR there, in place.

    Each image is cropped to a multiple of ``multiple`` (the lcm of the scales: a mod-crop
    valid for every scale, from the bottom and right as the protocol's) and given a
    half-sample symmetric border of ``pad`` pixels (MATLAB ``imresize``'s edge rule,
    ``numpy.pad(mode="symmetric")``). Mirroring about the edge commutes with the bicubic
    down- and upscale when the image side is a multiple of the scale, so a crop that reaches
    into the border degrades, inside the image, exactly as the whole image does; the test
    images are degraded that way, and their edges are where the network's zero padding meets
    real content. ``pad`` must be a multiple of ``multiple`` (crops stay on every scale's grid)
    and at least :func:`~vdsr.data.patches.edge_pad`; the sampler is told it
    (``PatchSampler(pad=store.pad)``) and keeps every patch inside the image.
    """
    if store.pad:
        raise ValueError(f"store already padded by {store.pad}")
    if pad <= 0 or multiple <= 0 or pad % multiple:
        raise ValueError(f"pad {pad} must be a positive multiple of {multiple}")
    for i, im in enumerate(store.images):
        h, w = (im.shape[0] // multiple) * multiple, (im.shape[1] // multiple) * multiple
        store.images[i] = np.ascontiguousarray(np.pad(im[:h, :w], pad, mode="symmetric"))
    store.pad = pad
    log.info("edge patches: images mod-cropped to a multiple of %d and mirrored by %d pixels", multiple, pad)
    return store
