"""Read the VDSR authors' released MATLAB (MatConvNet) model into this project's format.

``VDSR_Official.mat`` (Kim, Lee, Lee; distributed with caffe-vdsr) is a MATLAB v5 file holding
a struct ``model`` with fields ``weight`` and ``bias``: 1 x D cell arrays, layer 1 first.
Weights are MatConvNet ``[kh, kw, cin, cout]`` (the last layer ``3 x 3 x 64``: MATLAB drops
the trailing cout = 1), biases ``cout x 1``. MatConvNet's convolution is a correlation, as
PyTorch's ``conv2d``, so a layer's PyTorch weight is ``w.transpose(3, 2, 0, 1)`` with no flip.

The file is read with ``scipy.io.loadmat``, which parses arrays and executes no code.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from .errors import InputError
from .model import VDSR

__all__ = ["load_matconvnet"]


def _cells(model, key: str, path: Path) -> list[np.ndarray]:
    try:
        cells = model[key][0, 0] if model.dtype.names else None
    except (KeyError, IndexError, ValueError):
        cells = None
    if cells is None or cells.dtype != object:
        raise InputError(f"{path}: struct 'model' has no cell array '{key}' (expected MatConvNet VDSR weights)")
    return [np.asarray(c) for c in cells.reshape(-1)]


def load_matconvnet(path: str | Path) -> tuple[VDSR, dict[str, str]]:
    """The released MatConvNet VDSR as a float32 :class:`VDSR` (eval mode, CPU), and metadata
    for the safetensors file (source name, sha256, layout).

    Raises:
        InputError: a missing or unreadable file, a MATLAB v7.3 (HDF5) file, no ``model``
            struct, or layers whose shapes are not a VDSR's.
    """
    import scipy.io

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    raw = path.read_bytes()
    if raw[:8] == b"\x89HDF\r\n\x1a\n" or b"MATLAB 7.3" in raw[:128]:
        raise InputError(f"{path}: a MATLAB v7.3 (HDF5) file; save it with -v7 (or -v6) in MATLAB")
    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad file
        raise InputError(f"{path}: not a MATLAB .mat file scipy can read ({type(e).__name__}: {e})") from None
    if "model" not in mat:
        names = ", ".join(k for k in mat if not k.startswith("__")) or "none"
        raise InputError(f"{path}: no variable 'model' (has: {names})")
    model = mat["model"]
    weights, biases = _cells(model, "weight", path), _cells(model, "bias", path)
    depth = len(weights)
    if depth < 3 or len(biases) != depth:
        raise InputError(f"{path}: {depth} weights and {len(biases)} biases; expected the same number, >= 3")
    channels = weights[0].shape[-1] if weights[0].ndim == 4 else 0
    net = VDSR(depth=depth, channels=max(channels, 1))
    widths = [1] + [channels] * (depth - 1) + [1]
    with torch.no_grad():
        for i, (w, b, conv) in enumerate(zip(weights, biases, net.layers)):
            cin, cout = widths[i], widths[i + 1]
            if w.ndim == 3 and cout == 1:
                w = w[..., None]  # MATLAB dropped the trailing singleton cout
            if w.ndim == 2 and cin == 1 and cout == 1:
                w = w[..., None, None]
            if w.ndim == 3 and cin == 1:
                w = w[:, :, None, :]  # ... or the singleton cin of the first layer
            if w.shape != (3, 3, cin, cout) or b.size != cout:
                raise InputError(
                    f"{path}: layer {i + 1} has weight {tuple(np.asarray(weights[i]).shape)} and bias of "
                    f"{b.size}; expected (3, 3, {cin}, {cout}) and {cout}"
                )
            conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 0, 1), dtype=np.float32)))
            conv.bias.copy_(torch.from_numpy(b.reshape(-1).astype(np.float32)))
    meta = {
        "source": path.name,
        "source_sha256": hashlib.sha256(raw).hexdigest(),
        "converted_from": "MatConvNet [kh, kw, cin, cout] -> transpose(3, 2, 0, 1), no flip",
        "scales": "2,3,4",
    }
    return net.eval(), meta
