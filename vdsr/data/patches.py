"""Patch geometry, the seeded per-rank sampler, and on-the-fly LR synthesis.

Geometry. A training sample is a ``P x P`` HR patch (P = 41) and its LR input, the bicubic
``up(down(HR, 1/s), s)``. So that a patch sees exactly what whole-image degradation would give,
an ``L x L`` crop around it is degraded and the patch is cut from the middle:

* output pixel i of ``up(down(., 1/s), s)`` depends on input pixels k with ``|i - k| < 4s``
  (two LR taps of the upscale, each reading 2s HR pixels of the antialiased downscale), so a
  margin of ``4s`` around the patch suffices;
* the crop starts on the scale grid (a multiple of s), so its LR pixels are the image's LR
  pixels; the patch sits at offset ``4s + (y mod s)`` inside it;
* ``L`` (:func:`crop_size`) is one size for every scale of the set (84 for {2, 3, 4}), a
  multiple of each scale, so crops of all scales batch together.

Edges. By default a crop must fit inside the image, so no patch comes nearer than ``4s`` to its
top or left edge (and further from the others). With ``edge_patches`` the store's images carry a
mirrored border (:func:`~vdsr.data.store.pad_edges`, ``pad`` = :func:`edge_pad`) and patches are
drawn anywhere inside the image, up to its edges, where the test images' pixels also lie (the
protocol shaves only ``s`` pixels, and 20 layers of zero padding reach 20 pixels in).

Augmentation is an element of the dihedral group: optional horizontal flip, vertical flip,
then transpose (flips only by default; with ``rotate=True`` all eight, i.e. the 90-degree
rotations too). Up(down(.)) commutes with these on a crop whose side divides by s, so the crop
is augmented first and the patch offset is mapped with it (:func:`augmented_offset`).

Sampling. :class:`PatchSampler` turns (seed, epoch, rank) into batches of draws (image,
position, scale, flips) with numpy generators, so the DALI and PyTorch executors run the same
draws. ``random`` mode draws fresh patches every epoch (``patches_per_epoch`` in all ranks
together); ``fixed`` mode cuts the disjoint grid of P x P patches from every image once (a
seeded subset of ``fixed_count`` if asked, as the seed recipe's 2490), shuffles them each epoch
and deals them to the ranks. Every rank gets the same number of full batches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

__all__ = [
    "PATCH",
    "margin",
    "crop_size",
    "edge_pad",
    "crop_origin",
    "position_range",
    "augmented_offset",
    "Draws",
    "PatchSampler",
    "synthesize",
]

PATCH = 41


def margin(scale: int) -> int:
    """HR pixels around a patch that ``up(down(., 1/s), s)`` reads: 4s."""
    return 4 * scale


def crop_size(scales: Sequence[int], patch: int = PATCH) -> int:
    """The crop side L: a multiple of every scale, room for offset + patch + both margins."""
    lcm = math.lcm(*scales)
    need = max(patch + 2 * margin(s) + s - 1 for s in scales)
    return lcm * math.ceil(need / lcm)


def edge_pad(scales: Sequence[int], patch: int = PATCH) -> int:
    """The mirrored border (pixels, a multiple of every scale) that lets a patch touch any edge
    of the image with its whole crop inside the padded image."""
    lcm, crop = math.lcm(*scales), crop_size(scales, patch)
    # near edge: the crop starts 4s before the patch; far edge: it ends crop - 4s - patch after it
    need = max(max(margin(s), crop - margin(s) - patch) for s in scales)
    return lcm * math.ceil(need / lcm)


def crop_origin(pos, scale):
    """Top (or left) of the aligned crop holding a patch at ``pos``: on the scale grid (ints or arrays)."""
    return (pos // scale) * scale - margin(scale)


def position_range(length, scale, crop: int):
    """Inclusive range of patch positions along a side of ``length`` whose crop fits inside
    (ints, or numpy arrays that broadcast)."""
    lo = margin(scale) + 0 * length  # crop_origin(lo) == 0
    hi = ((length - crop + margin(scale)) // scale) * scale + scale - 1
    return lo, hi


def augmented_offset(oy, ox, flip_h, flip_v, transpose, crop: int, patch: int = PATCH):
    """Where the patch at ``(oy, ox)`` of a crop lands after flip_h, flip_v, then transpose."""
    ox = np.where(flip_h, crop - patch - ox, ox)
    oy = np.where(flip_v, crop - patch - oy, oy)
    return np.where(transpose, ox, oy), np.where(transpose, oy, ox)


@dataclass
class Draws:
    """One batch of draws. All arrays have length B; positions are patch top-left corners."""

    image: np.ndarray
    y: np.ndarray
    x: np.ndarray
    scale: np.ndarray
    flip_h: np.ndarray
    flip_v: np.ndarray
    transpose: np.ndarray

    def crop_boxes(self, crop: int, patch: int):
        """Crop origins ``(cy, cx)`` and the offsets of the ``patch x patch`` patch inside the augmented crop."""
        s = self.scale
        cy, cx = crop_origin(self.y, s), crop_origin(self.x, s)
        oy, ox = augmented_offset(self.y - cy, self.x - cx, self.flip_h, self.flip_v, self.transpose, crop, patch)
        return cy, cx, oy, ox


class PatchSampler:
    """Seeded, sharded draws of training patches.

    Args:
        sizes: ``(H, W)`` of every image in the store.
        scales: the scale set (one drawn uniformly per sample).
        batch_size: patches per batch on each rank.
        mode: ``"random"`` or ``"fixed"``.
        patches_per_epoch: random mode: patches per epoch over all ranks.
        fixed_count: fixed mode: a seeded subset of this many grid patches (None: all).
        rotate: also draw transposes (with the flips: the 90-degree rotations).
        seed, rank, world: the run seed and this process's place in it.
        pad: the store's mirrored border (:func:`edge_pad`; 0: none). With a border, ``sizes``
            are the padded sizes and patches are drawn anywhere inside the image, edges included.
    """

    def __init__(
        self,
        sizes: Sequence[tuple[int, int]],
        scales: Sequence[int] = (2, 3, 4),
        batch_size: int = 64,
        mode: str = "random",
        patches_per_epoch: int = 64 * 100,
        fixed_count: int | None = None,
        rotate: bool = False,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        patch: int = PATCH,
        pad: int = 0,
    ):
        if mode not in ("random", "fixed"):
            raise ValueError(f"sampling mode must be 'random' or 'fixed', got {mode!r}")
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} outside world of {world}")
        self.sizes = [tuple(int(v) for v in s) for s in sizes]
        self.scales = np.array(sorted(set(int(s) for s in scales)))
        self.batch_size, self.mode, self.rotate = batch_size, mode, rotate
        self.seed, self.rank, self.world, self.patch = seed, rank, world, patch
        self.crop = crop_size(list(self.scales), patch)
        self.pad = int(pad)
        if self.pad:
            need = edge_pad(list(self.scales), patch)
            if self.pad < need or any(self.pad % int(s) for s in self.scales):
                raise ValueError(f"pad {self.pad}: need a multiple of every scale {list(self.scales)}, at least {need}")
        if mode == "fixed":
            self.grid = self._grid()
            self.grid_count = len(self.grid)
            if fixed_count is not None:
                if fixed_count > len(self.grid):
                    raise ValueError(f"fixed_count {fixed_count} > {len(self.grid)} grid patches")
                pick = np.random.default_rng([seed, 0xF1]).choice(len(self.grid), fixed_count, replace=False)
                self.grid = self.grid[np.sort(pick)]
            per_rank = len(self.grid) // world
        else:
            per_rank = patches_per_epoch // world
            p2 = 2 * self.pad
            areas = np.array([(h - p2) * (w - p2) for h, w in self.sizes], dtype=np.float64)
            self.image_p = areas / areas.sum()  # every pixel equally likely
        self.batches_per_epoch = per_rank // batch_size
        if self.batches_per_epoch == 0:
            raise ValueError(f"fewer than one batch of {batch_size} per rank per epoch ({per_rank} patches per rank)")

    def _range(self, length, scale):
        """Inclusive range of patch positions along a side of ``length`` (ints or arrays)."""
        if self.pad:
            return self.pad + 0 * length + 0 * scale, length - self.pad - self.patch + 0 * scale
        return position_range(length, scale, self.crop)

    def _grid(self) -> np.ndarray:
        """Disjoint P x P patches on a grid, every crop fitting for every scale: rows (image, y, x)."""
        rows = []
        for i, (h, w) in enumerate(self.sizes):
            ry = [self._range(h, int(s)) for s in self.scales]
            rx = [self._range(w, int(s)) for s in self.scales]
            y_lo, y_hi = max(r[0] for r in ry), min(r[1] for r in ry)
            x_lo, x_hi = max(r[0] for r in rx), min(r[1] for r in rx)
            for y in range(y_lo, y_hi + 1, self.patch):
                for x in range(x_lo, x_hi + 1, self.patch):
                    rows.append((i, y, x))
        return np.array(rows, dtype=np.int64).reshape(-1, 3)

    def __len__(self) -> int:
        return self.batches_per_epoch

    def _flips(self, rng: np.random.Generator, n: int):
        flip_h = rng.random(n) < 0.5
        flip_v = rng.random(n) < 0.5
        transpose = (rng.random(n) < 0.5) if self.rotate else np.zeros(n, dtype=bool)
        return flip_h, flip_v, transpose

    def epoch(self, epoch: int) -> Iterator[Draws]:
        """The batches of draws of ``epoch`` for this rank (deterministic in seed, epoch, rank)."""
        b, n = self.batch_size, self.batches_per_epoch * self.batch_size
        rng = np.random.default_rng([self.seed, epoch, self.rank])
        scale = rng.choice(self.scales, n)
        flip_h, flip_v, transpose = self._flips(rng, n)
        if self.mode == "fixed":
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.grid))  # same on every rank
            mine = self.grid[order[self.rank :: self.world][:n]]
            image, y, x = mine[:, 0], mine[:, 1], mine[:, 2]
        else:
            image = rng.choice(len(self.sizes), n, p=self.image_p)
            hw = np.array(self.sizes, dtype=np.int64)[image]  # n x 2
            lo, hi = self._range(hw, scale[:, None])
            # one call, drawing y0, x0, y1, x1, ...: the same numbers as a loop of scalar draws
            yx = rng.integers(lo, hi + 1)
            y, x = yx[:, 0], yx[:, 1]
        for start in range(0, n, b):
            sl = slice(start, start + b)
            yield Draws(image[sl], y[sl], x[sl], scale[sl], flip_h[sl], flip_v[sl], transpose[sl])


def default_degrade(device: torch.device) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """The exact LR synthesis for ``device``: the Triton kernel on a GPU, the reference on the CPU."""
    if device.type == "cuda":
        from vdsr_kernels.resize import degrade

        return degrade
    from ..evaluate import degrade

    return degrade


def synthesize(
    crops: torch.Tensor,
    scale: np.ndarray,
    oy: np.ndarray,
    ox: np.ndarray,
    degrade: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
    patch: int = PATCH,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Degrade each augmented ``L x L`` crop at its scale and cut the patch from both.

    Args:
        crops: ``B x L x L`` float32 HR crops (augmented), on the device of the work.
        scale, oy, ox: per-sample scale and patch offset inside the augmented crop.
        degrade: ``(N x 1 x L x L, s) -> N x 1 x L x L``; default: :func:`default_degrade`.

    Returns:
        ``(lr, hr)``, both ``B x 1 x P x P`` float32: the bicubic input and the target.
    """
    degrade = degrade or default_degrade(crops.device)
    b, crop = crops.shape[0], crops.shape[-1]
    full = torch.empty_like(crops)
    for s in np.unique(scale):
        sel = np.flatnonzero(scale == s)
        if len(sel) == b:
            full = degrade(crops.unsqueeze(1), int(s)).squeeze(1).to(crops.dtype)
        else:
            idx = torch.from_numpy(sel).to(crops.device)
            full[idx] = degrade(crops[idx].unsqueeze(1), int(s)).squeeze(1).to(full.dtype)
    # cut the P x P patch at each sample's offset: one gather over the flattened crops
    ar = np.arange(patch)
    flat = (np.asarray(oy)[:, None, None] + ar[None, :, None]) * crop + (np.asarray(ox)[:, None, None] + ar[None, None, :])
    flat = torch.from_numpy(flat.reshape(b, -1)).to(crops.device)
    lr = torch.gather(full.reshape(b, -1), 1, flat).view(b, 1, patch, patch)
    hr = torch.gather(crops.reshape(b, -1), 1, flat).view(b, 1, patch, patch)
    return lr, hr
