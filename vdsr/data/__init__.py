"""Training data: 41 x 41 patches streamed from image folders, LR synthesised on the fly.

* :mod:`vdsr.data.store`: find the images and decode each once into memory as Y (float32).
* :mod:`vdsr.data.patches`: patch geometry, the seeded per-rank sampler (``random`` and
  ``fixed`` modes), and the LR synthesis (MATLAB-exact bicubic down + up of an aligned crop).
* :mod:`vdsr.data.loaders`: the executors of the same draws behind :func:`make_loader`:
  NVIDIA DALI, plain PyTorch, and :mod:`vdsr.data.device_stream` (the store on the GPU,
  batches gathered and synthesised there, ahead on a side stream).
"""

from .device_stream import DevicePatchStream
from .loaders import PatchLoader, make_loader
from .patches import PatchSampler, crop_size, edge_pad
from .store import ImageStore, add_downsized, load_store, pad_edges

__all__ = ["ImageStore", "load_store", "add_downsized", "pad_edges", "PatchSampler", "crop_size", "edge_pad", "PatchLoader", "make_loader", "DevicePatchStream"]
