"""A device-resident patch stream: the decoded store lives on the device, batches are built there.

The third executor of the sampler's draws (beside DALI and the PyTorch loader; same draws, same
batches): for GPU training, where cutting crops on the host in Python would starve a GPU that
finishes a VDSR-20 step of 64 patches in a millisecond or two.

* **Store on the device.** Every decoded image (Y, float32) is packed once into one flat
  tensor with per-image offsets and widths (the 291 images: about 175 MB).
* **Draws as index tensors.** The host makes the sampler's draws (numpy, so identical to the
  other loaders) and turns a batch into one small int64 table (crop origin, flips, transpose,
  patch offset, the batch sorted by scale), copied to the device in one non-blocking transfer
  from pinned memory.
* **One gather per batch.** The ``B x L x L`` crops, already flipped and transposed, come out of
  a single ``torch.take`` over the flat store: the dihedral augmentation is done in index space
  (flipped and transposed source coordinates), so no per-sample op runs.
* **LR synthesis on the device**: one degrade call per scale (bicubic down, then up: the
  Triton kernel on a GPU, the float64-exact reference on the CPU) over the contiguous slice of
  the scale-sorted batch, then one gather cuts the 41 x 41 patches from crops and LR.
* **Ahead, on a side stream.** On CUDA the next ``prefetch`` batches are prepared on a side
  stream while the current one trains; the consumer's stream waits on an event (a device-side
  wait: the host never synchronises).
* **Several batches at once** (``chunk``): the draws of ``chunk`` batches are built as one (one
  gather, one degrade call per scale), then split: the same batches, bit for bit (each image is
  degraded on its own), for a ``chunk``-th of the host's per-batch work (some 100 small ops),
  should that work, and not the GPU, limit a step that takes a millisecond or two.

The same code runs on the CPU (``device="cpu"``: no side stream, no pinned memory), which is
how the tests check it against the PyTorch loader: HR patches bit for bit, LR within the
float32 rounding of the synthesis.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import itertools
from typing import Callable, Iterator

import numpy as np
import torch

from .patches import Draws, PatchSampler, default_degrade
from .store import ImageStore

__all__ = ["DeviceStore", "DevicePatchStream"]

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
# columns of the per-batch draw table (int64, B rows; see draw_table)
_IMAGE, _CY, _CX, _FH, _FV, _TR, _OY, _OX, _SCALE, _ROWS = range(10)


class DeviceStore:
    """All images of an :class:`ImageStore` in one flat float32 tensor on ``device``.

    ``flat[offset[i] + y * width[i] + x]`` is pixel ``(y, x)`` of image ``i``."""

    def __init__(self, store: ImageStore, device: torch.device | str):
        device = torch.device(device)
        sizes = np.array(store.sizes, dtype=np.int64).reshape(-1, 2)
        areas = sizes[:, 0] * sizes[:, 1]
        offsets = np.concatenate([[0], np.cumsum(areas)[:-1]])
        flat = np.empty(int(areas.sum()), dtype=np.float32)
        for im, off, n in zip(store.images, offsets, areas):
            flat[off : off + n] = im.reshape(-1)
        self.flat = torch.from_numpy(flat).to(device)
        self.offset = torch.from_numpy(offsets).to(device)
        self.width = torch.from_numpy(sizes[:, 1].copy()).to(device)
        self.device = device

    @property
    def nbytes(self) -> int:
        return self.flat.numel() * 4


def draw_table(draws: Draws, crop: int, patch: int) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """The batch's draws as an int64 ``B x 10`` table, rows sorted by scale (stable), and the
    ``(scale, start, stop)`` row ranges of each scale. The last column (``_ROWS``) is each
    row's place in the sampler's order."""
    cy, cx, oy, ox = draws.crop_boxes(crop, patch)
    order = np.argsort(draws.scale, kind="stable")
    table = np.stack(
        [draws.image, cy, cx, draws.flip_h, draws.flip_v, draws.transpose, oy, ox, draws.scale, np.arange(len(cy))],
        axis=1,
    ).astype(np.int64)[order]
    groups = []
    for s in np.unique(draws.scale):
        rows = np.flatnonzero(table[:, _SCALE] == s)
        groups.append((int(s), int(rows[0]), int(rows[-1]) + 1))
    return table, groups


def gather_crops(store: DeviceStore, t: torch.Tensor, crop: int) -> torch.Tensor:
    """``B x L x L`` augmented crops for the device draw table ``t`` in one ``torch.take``.

    The crop is flipped horizontally, then vertically, then transposed (the order of
    :class:`~vdsr.data.patches.Draws`): output ``(i, j)`` reads crop pixel ``(a, b)`` with
    ``(a, b) = (j, i)`` if transposed, then ``a -> L-1-a`` if flipped vertically and
    ``b -> L-1-b`` if flipped horizontally."""
    ar = torch.arange(crop, device=t.device)
    i, j = ar.view(1, crop, 1), ar.view(1, 1, crop)
    tr = t[:, _TR].view(-1, 1, 1).bool()
    a = torch.where(tr, j, i)
    b = torch.where(tr, i, j)
    a = torch.where(t[:, _FV].view(-1, 1, 1).bool(), crop - 1 - a, a)
    b = torch.where(t[:, _FH].view(-1, 1, 1).bool(), crop - 1 - b, b)
    img = t[:, _IMAGE]
    base = store.offset[img] + t[:, _CY] * store.width[img] + t[:, _CX]
    idx = base.view(-1, 1, 1) + a * store.width[img].view(-1, 1, 1) + b
    return torch.take(store.flat, idx)


def cut_patches(full: torch.Tensor, t: torch.Tensor, patch: int) -> torch.Tensor:
    """``B x 1 x P x P`` patches of the ``B x L x L`` images at the table's offsets (one gather)."""
    crop = full.shape[-1]
    ar = torch.arange(patch, device=full.device)
    flat = (t[:, _OY].view(-1, 1, 1) + ar.view(1, -1, 1)) * crop + t[:, _OX].view(-1, 1, 1) + ar.view(1, 1, -1)
    return torch.gather(full.reshape(full.shape[0], -1), 1, flat.reshape(full.shape[0], -1)).view(-1, 1, patch, patch)


class DevicePatchStream:
    """Batches ``(lr, hr, scale)`` of an epoch, built on ``device`` from the device store.

    Args:
        store: decoded images; copied to the device once.
        sampler: this rank's draws.
        device: ``cuda`` (the point of it) or ``cpu`` (the same code, for tests).
        prefetch: batches (with ``chunk`` > 1: chunks) prepared ahead on a side CUDA stream.
        chunk: batches built together (1: one at a time).
        degrade: the LR synthesis ``(N x 1 x L x L, s) -> N x 1 x L x L``; default: the Triton
            kernel on a GPU, the reference on the CPU.
    """

    def __init__(
        self,
        store: ImageStore,
        sampler: PatchSampler,
        device="cuda",
        prefetch: int = 2,
        degrade: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
        chunk: int = 1,
    ):
        if not isinstance(chunk, int) or chunk < 1:
            raise ValueError(f"chunk must be an integer >= 1, got {chunk!r}")
        self.device = torch.device(device)
        self.sampler, self.prefetch, self.chunk = sampler, max(1, prefetch), chunk
        self.store = DeviceStore(store, self.device)
        self.degrade = degrade or default_degrade(self.device)
        self.cuda = self.device.type == "cuda"
        self.side = torch.cuda.Stream(self.device) if self.cuda else None

    def __len__(self) -> int:
        return self.sampler.batches_per_epoch

    def _build(self, draws: Draws) -> tuple[Batch, torch.cuda.Event | None]:
        crop, patch = self.sampler.crop, self.sampler.patch
        table, groups = draw_table(draws, crop, patch)
        host = torch.from_numpy(table)
        consumer = None
        if self.cuda:
            host = host.pin_memory()
            consumer = torch.cuda.current_stream(self.device)  # the training step's stream
        with torch.cuda.stream(self.side) if self.cuda else contextlib.nullcontext():
            t = host.to(self.device, non_blocking=True)
            crops = gather_crops(self.store, t, crop)  # B x L x L, sorted by scale
            full = torch.empty_like(crops)
            for s, lo, hi in groups:  # contiguous rows per scale: one degrade call each
                full[lo:hi] = self.degrade(crops[lo:hi].unsqueeze(1), s).squeeze(1).to(full.dtype)
            # back to the sampler's order (the other loaders' order), then cut the patches
            inv = torch.empty_like(t[:, _ROWS])
            inv[t[:, _ROWS]] = torch.arange(len(t), device=self.device)
            t, crops, full = t[inv], crops[inv], full[inv]
            lr, hr = cut_patches(full, t, patch), cut_patches(crops, t, patch)
            scale = t[:, _SCALE].clone()
            event = None
            if self.cuda:
                event = torch.cuda.Event()
                event.record(self.side)
                for x in (lr, hr, scale):  # used on the consumer's stream: keep the memory until then
                    x.record_stream(consumer)
        return (lr, hr, scale), event

    def _build_chunk(self, group: list[Draws]) -> tuple[list[Batch], torch.cuda.Event | None]:
        """The batches of ``group`` built as one, then split (views of the chunk's tensors)."""
        joined = Draws(*(np.concatenate([getattr(d, f.name) for d in group]) for f in dataclasses.fields(Draws)))
        sizes = [len(d.scale) for d in group]
        (lr, hr, scale), event = self._build(joined)
        return list(zip(lr.split(sizes), hr.split(sizes), scale.split(sizes))), event

    def epoch(self, epoch: int) -> Iterator[Batch]:
        """The batches of ``epoch`` (same seed, epoch and rank as the other loaders: same batches)."""
        pending: collections.deque = collections.deque()
        draws = iter(self.sampler.epoch(epoch))

        def build_next() -> bool:
            group = list(itertools.islice(draws, self.chunk))
            if group:
                pending.append(self._build_chunk(group))
            return bool(group)

        while len(pending) < self.prefetch and build_next():
            pass
        while pending:
            batches, event = pending.popleft()
            build_next()  # enqueued on the side stream before these train
            if event is not None:
                torch.cuda.current_stream(self.device).wait_event(event)
            yield from batches
