"""Shared fixtures. ``shared_data`` is the benchmark folder beside the repository
(``../shared/data``); tests that need it fail (not skip) when ``CI`` is set and it is missing."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("VDSR_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    needed = [SHARED_DATA / n for n in ("Set5", "Set14")]
    missing = [str(p) for p in needed if not p.is_dir()]
    if missing:
        msg = f"benchmark data missing: {', '.join(missing)} (set VDSR_SHARED_DATA)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return SHARED_DATA


SHARED_REFS = Path(os.environ.get("VDSR_SHARED_REFS", REPO.parent / "shared" / "refs"))


@pytest.fixture
def official_mat() -> Path:
    """The authors' released model (``../shared/refs/VDSR_Official.mat``): fail under CI when missing."""
    path = SHARED_REFS / "VDSR_Official.mat"
    if not path.is_file():
        msg = f"reference model missing: {path} (set VDSR_SHARED_REFS)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)

# Triton runs on the CPU only in its interpreter, chosen before the kernels are imported.
import torch  # noqa: E402

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
