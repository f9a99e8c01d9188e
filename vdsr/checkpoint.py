"""Model weights as safetensors (never pickle): save atomically, load with clear errors.

A weights file holds the tensors of :class:`~vdsr.model.VDSR` (``layers.{i}.weight`` and
``layers.{i}.bias``, float32) and string metadata ``format=vdsr``, ``depth``, ``channels``
plus whatever the writer adds (scales, recipe, ...).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from .atomic import atomic_path
from .errors import InputError
from .model import VDSR

__all__ = ["save_weights", "load_weights", "read_metadata", "file_sha256"]


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes (hex): which weights a run started from."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def save_weights(path: str | Path, model: VDSR, metadata: dict[str, str] | None = None) -> None:
    """Write ``model``'s weights (as float32, contiguous) to ``path`` atomically."""
    model = getattr(model, "module", model)  # unwrap DDP
    tensors = {k: v.detach().float().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {"format": "vdsr", "depth": str(model.depth), "channels": str(model.channels)}
    meta.update({k: str(v) for k, v in (metadata or {}).items()})
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def read_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of a weights file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such checkpoint file")
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        raise InputError(f"{path}: not a safetensors weights file ({e})") from None


def load_weights(path: str | Path, device: str | torch.device = "cpu") -> VDSR:
    """Build a :class:`VDSR` from a weights file (depth and width read from the tensors).

    Raises:
        InputError: missing file, not safetensors, or tensors that are not a VDSR.
    """
    path = Path(path)
    read_metadata(path)  # existence and format, with a clear message
    tensors = load_file(str(path), device="cpu")
    weights = sorted(
        (int(k.split(".")[1]), v) for k, v in tensors.items() if k.startswith("layers.") and k.endswith(".weight")
    )
    if len(weights) < 2 or [i for i, _ in weights] != list(range(len(weights))):
        raise InputError(f"{path}: not VDSR weights (expected layers.0.weight ... layers.N.weight)")
    model = VDSR(depth=len(weights), channels=weights[0][1].shape[0])
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise InputError(f"{path}: weights do not fit VDSR ({' '.join(first[:2])})") from None
    return model.to(device).eval()
