"""Two executors of the same draws: NVIDIA DALI and plain PyTorch.

Both turn the sampler's draws into batches; for the same draws they give the same batches (the
HR targets bit for bit, the LR inputs to float32 rounding, about 1e-7).

* PyTorch (the fallback): on the calling thread, cut each aligned ``L x L`` crop from the
  decoded-once images with numpy, flip/transpose it, then synthesise: degrade the crops with
  the exact MATLAB resize (the Triton kernel on a GPU, the reference on the CPU) and cut the
  patch. Chosen automatically, with a one-line warning, where DALI cannot be imported, or
  explicitly (``loader="torch"``).
* DALI: a parallel ``fn.external_source`` runs in DALI's worker processes, prefetching whole
  batches ahead of the consumer: each worker cuts the crops of its batch (and, for a CPU run,
  synthesises the LR/HR patch pairs with the reference resize, one thread each). Transposes
  (the rotation part of the augmentation) are free during the workers' numpy copy; the DALI
  graph applies the flips (``fn.flip``). For a GPU run the workers hand over crops, DALI flips
  them and the Triton kernel synthesises on the device. Up(down(.)) commutes with flips and transposes of a crop whose side divides by the
  scale, so augmenting before or after the synthesis gives the same patches.

A batch is ``(lr, hr, scale)``: ``B x 1 x 41 x 41`` float32 twice (bicubic input, target) and
the ``B`` int64 scales, on the loader's device.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Iterator

import numpy as np
import torch

from .device_stream import DevicePatchStream
from .patches import Draws, PatchSampler, crop_origin, default_degrade, synthesize
from .store import ImageStore

__all__ = ["PatchLoader", "make_loader", "dali_available"]

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def dali_available() -> tuple[bool, str]:
    """Whether ``nvidia.dali`` imports here, and why not."""
    try:
        import nvidia.dali  # noqa: F401
    except Exception as e:  # noqa: BLE001 - ImportError, or a broken binary install
        return False, f"{type(e).__name__}: {e}"
    return True, ""


def torch_crops(store: ImageStore, draws: Draws, crop: int) -> torch.Tensor:
    """The augmented ``B x L x L`` crops of ``draws`` with numpy slicing (the PyTorch executor)."""
    cy, cx = crop_origin(draws.y, draws.scale), crop_origin(draws.x, draws.scale)
    out = np.empty((len(draws.image), crop, crop), dtype=np.float32)
    for k in range(len(out)):
        c = store.images[draws.image[k]][cy[k] : cy[k] + crop, cx[k] : cx[k] + crop]
        if draws.flip_h[k]:
            c = c[:, ::-1]
        if draws.flip_v[k]:
            c = c[::-1]
        if draws.transpose[k]:
            c = c.T
        out[k] = c
    return torch.from_numpy(out)


class _BatchSource:
    """The callable behind DALI's parallel external source (runs in forked worker processes).

    Batch ``k`` of epoch ``e`` is always the sampler's ``k``-th batch of ``e``: deterministic
    whichever worker makes it. Outputs are unaugmented: DALI's graph applies the flips."""

    def __init__(self, store: ImageStore, sampler: PatchSampler, start_epoch: int, synth: bool):
        self.store, self.sampler, self.start_epoch, self.synth = store, sampler, start_epoch, synth
        self._epoch, self._draws = None, []

    def draws(self, epoch: int, k: int) -> Draws:
        if self._epoch != epoch:
            self._epoch, self._draws = epoch, list(self.sampler.epoch(epoch))
        return self._draws[k]

    def __call__(self, info):
        if info.iteration >= self.sampler.batches_per_epoch:
            raise StopIteration
        d = self.draws(self.start_epoch + info.epoch_idx, info.iteration)
        # The transpose (the rotation part) is free during the numpy copy, so it happens here;
        # DALI applies the flips after it. A flip after a transpose is the other flip before it,
        # so transposed samples get their flags swapped: the result is flips, then transpose.
        none = np.zeros_like(d.flip_h)
        plain = dataclasses.replace(d, flip_h=none, flip_v=none)
        crops = torch_crops(self.store, plain, self.sampler.crop)
        fh = np.where(d.transpose, d.flip_v, d.flip_h).astype(np.int32)
        fv = np.where(d.transpose, d.flip_h, d.flip_v).astype(np.int32)
        flags = [fh, fv]
        if not self.synth:
            return [crops.numpy()[..., None], *flags]
        if torch.get_num_threads() != 1:
            torch.set_num_threads(1)  # one thread per worker process: the workers are the parallelism
        _, _, oy, ox = plain.crop_boxes(self.sampler.crop, self.sampler.patch)
        lr, hr = synthesize(crops, d.scale, oy, ox, default_degrade(torch.device("cpu")), self.sampler.patch)
        return [lr[:, 0, :, :, None].numpy(), hr[:, 0, :, :, None].numpy(), *flags]


class _DaliStream:
    """A DALI pipeline over :class:`_BatchSource`, one epoch at a time (``reset`` between)."""

    def __init__(self, store: ImageStore, sampler: PatchSampler, workers: int, start_epoch: int, synth: bool):
        from nvidia.dali import fn, pipeline_def

        self.synth, self.next_epoch = synth, start_epoch
        source = _BatchSource(store, sampler, start_epoch, synth)
        n_images = 2 if synth else 1

        # fork is fast and shares the decoded images; a process that has initialised CUDA must not
        # fork, so GPU runs (the workers only crop there) spawn and receive the store by pickle.
        start = "fork" if synth else "spawn"

        @pipeline_def(
            batch_size=sampler.batch_size, num_threads=1, device_id=None, py_num_workers=workers,
            py_start_method=start, prefetch_queue_depth=max(2, workers),
        )  # fmt: skip
        def patches_pipeline():
            outs = fn.external_source(
                source=source, num_outputs=n_images + 2, batch=True, parallel=True, batch_info=True,
                prefetch_queue_depth=2 * workers,  # batches in flight: two per worker
                layout=["HWC"] * n_images + [""] * 2,
            )  # fmt: skip
            *images, fh, fv = outs
            return tuple(fn.flip(img, horizontal=fh, vertical=fv) for img in images)

        self.pipe = patches_pipeline()
        self.pipe.build()
        self.sampler, self.source = sampler, source

    def epoch(self) -> Iterator[tuple[Draws, tuple[torch.Tensor, ...]]]:
        epoch = self.next_epoch
        self.next_epoch += 1
        k = 0
        while True:
            try:
                outs = self.pipe.run()
            except StopIteration:
                self.pipe.reset()
                return
            # DALI's buffers are reused by the next run(): copy out with numpy (a torch copy here
            # would wake torch's OpenMP pool, whose spinning threads starve DALI's workers)
            tensors = tuple(torch.from_numpy(np.array(o.as_tensor())[..., 0]) for o in outs)
            yield self.source.draws(epoch, k), tensors
            k += 1


class PatchLoader:
    """Batches ``(lr, hr, scale)`` of an epoch for this rank.

    Args:
        store: decoded images (:func:`~vdsr.data.store.load_store`).
        sampler: draws for this rank (:class:`~vdsr.data.patches.PatchSampler`).
        executor: ``"dali"`` or ``"torch"``.
        device: where the LR synthesis runs and the batches are returned.
        threads: DALI worker processes (the parallelism of the DALI executor).
    """

    def __init__(self, store: ImageStore, sampler: PatchSampler, executor: str = "torch", device="cpu", threads: int = 2):
        if executor not in ("dali", "torch"):
            raise ValueError(f"loader must be 'dali' or 'torch', got {executor!r}")
        self.store, self.sampler, self.executor = store, sampler, executor
        self.device, self.threads = torch.device(device), threads
        self.degrade = default_degrade(self.device)
        self._dali: _DaliStream | None = None

    def __len__(self) -> int:
        return self.sampler.batches_per_epoch

    def epoch(self, epoch: int) -> Iterator[Batch]:
        """The batches of ``epoch`` (same seed, epoch and rank: the same batches)."""
        crop = self.sampler.crop
        if self.executor == "torch":
            for draws in self.sampler.epoch(epoch):
                crops = torch_crops(self.store, draws, crop).to(self.device, non_blocking=True)
                _, _, oy, ox = draws.crop_boxes(crop, self.sampler.patch)
                lr, hr = synthesize(crops, draws.scale, oy, ox, self.degrade, self.sampler.patch)
                yield lr, hr, torch.as_tensor(draws.scale, dtype=torch.int64, device=self.device)
            return
        synth = self.device.type == "cpu"
        if self._dali is None or self._dali.next_epoch != epoch:
            self._dali = _DaliStream(self.store, self.sampler, self.threads, epoch, synth)
        for draws, tensors in self._dali.epoch():
            scale = torch.as_tensor(draws.scale, dtype=torch.int64, device=self.device)
            if synth:
                lr, hr = (t.unsqueeze(1) for t in tensors)
            else:
                crops = tensors[0].to(self.device, non_blocking=True)
                _, _, oy, ox = draws.crop_boxes(crop, self.sampler.patch)
                lr, hr = synthesize(crops, draws.scale, oy, ox, self.degrade, self.sampler.patch)
            yield lr, hr, scale


def make_loader(
    store: ImageStore, sampler: PatchSampler, loader: str = "auto", device="cpu", threads: int = 2, chunk: int = 1
) -> PatchLoader | DevicePatchStream:
    """The executor of the sampler's draws, all with ``epoch(e) -> iterator of (lr, hr, scale)``.

    ``loader``: ``"dali"``, ``"torch"``, ``"device"`` (:class:`DevicePatchStream`: the store on
    the device, batches built there, ``chunk`` at a time), or ``"auto"``: DALI where it imports;
    otherwise the device stream on a GPU and the PyTorch loader on the CPU (with a one-line note
    that DALI is missing).
    """
    if loader not in ("auto", "dali", "torch", "device"):
        raise ValueError(f"loader must be auto, dali, torch or device, got {loader!r}")
    if loader == "auto":
        ok, why = dali_available()
        if ok:
            loader = "dali"
        else:
            loader = "device" if torch.device(device).type == "cuda" else "torch"
            what = "device-resident stream" if loader == "device" else "PyTorch loader"
            warnings.warn(f"NVIDIA DALI is not available ({why}); using the {what}", stacklevel=2)
    elif loader == "dali":
        ok, why = dali_available()
        if not ok:
            from ..errors import InputError

            raise InputError(f"--loader dali: NVIDIA DALI cannot be imported ({why})")
    if loader == "device":
        return DevicePatchStream(store, sampler, device, chunk=chunk)
    return PatchLoader(store, sampler, loader, device, threads)
