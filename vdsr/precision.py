"""Whether bfloat16 pays on a device, and what ``bf16: auto`` means.

bfloat16 autocast is fast only where the hardware computes in it: CUDA GPUs that support it
(Ampere and newer), and CPUs with native bfloat16 (AVX512-BF16 or AMX; oneDNN also takes
AVX512 cores). Elsewhere PyTorch emulates it, and emulation is far slower than float32: on a
2-core AMD EPYC (Zen 3, AVX2 only) the VDSR-20 training step (batch 64 of 41 x 41,
channels_last) ran 1.1 patches/s under bf16 autocast and 12.2 in float32, side by side
(``benchmarks/train-cpu-amd-epyc-avx2.json``), while a 2-core CPU with native bfloat16 ran
bf16 3.8x faster than float32 (``benchmarks/train-cpu.json``).
"""

from __future__ import annotations

import torch

from .errors import InputError


def native_bf16(device: torch.device | str) -> bool:
    """True where bfloat16 autocast runs on the hardware: a CUDA GPU that supports it, or a CPU
    that oneDNN runs bfloat16 on natively (``torch.ops.mkldnn._is_mkldnn_bf16_supported``)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):  # a build without oneDNN: no fast bfloat16
            return False
    return False


def cpu_capability() -> str:
    """The vector ISA PyTorch dispatches to on this CPU (e.g. ``AVX2``, ``AVX512``)."""
    try:
        return torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        return "unknown"


def _no_native_bf16(device: torch.device) -> str:
    """Where bfloat16 is missing, in words: ``this CPU (AVX2)`` or the device's name."""
    return f"this CPU ({cpu_capability()})" if device.type == "cpu" else str(device)


def check_bf16_setting(setting) -> None:
    """A ``bf16`` setting is true, false or ``"auto"`` (not 1, not "yes"); else InputError."""
    if not (setting is True or setting is False or setting == "auto"):
        raise InputError(f"bf16 = {setting!r}; expected true, false or auto")


def slow_bf16_warning(device: torch.device | str) -> str | None:
    """One line to print when bfloat16 is asked for on a device that only emulates it; else None."""
    device = torch.device(device)
    if native_bf16(device):
        return None
    return (f"bf16 on {_no_native_bf16(device)}, which has no native bfloat16, is emulated and runs over 10x "
            "slower than float32 (VDSR-20 training on an AVX2 CPU)")


def resolve_bf16(setting: bool | str, device: torch.device | str) -> tuple[bool, str | None]:
    """What a ``bf16`` setting means on ``device``: (use bfloat16 autocast, a line to log or None).

    ``"auto"``: bfloat16 where the hardware has it (:func:`native_bf16`), float32 elsewhere; the
    line (information) says which and why. ``True``: bfloat16 regardless, with a warning line
    where it is only emulated. ``False``: float32, no line.
    """
    check_bf16_setting(setting)
    device = torch.device(device)
    if setting is False:
        return False, None
    if setting is True:
        return True, slow_bf16_warning(device)
    if native_bf16(device):
        return True, f"bf16: auto -> bfloat16 ({device.type} has native bfloat16)"
    return False, f"bf16: auto -> float32 ({_no_native_bf16(device)} has no native bfloat16; emulated bfloat16 would be far slower)"
