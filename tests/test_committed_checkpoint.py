"""The in-progress run's committed checkpoint (checkpoints/README.md) is the one the docs resume.

``pytorch-vdsr`` (launch/configs/pytorch-vdsr.yaml, 430,000 steps from initialisation) spans
working sessions: each CPU session or GPU loan resumes the checkpoint folder committed under
``checkpoints/`` and replaces it with its newest one, moving the step in five places
(``scripts/commit_checkpoint.py`` does all five; tests/test_commit_checkpoint.py tests it). A
missed place sends a GPU loan's first call to a folder that is gone (a refused call, out of 15
minutes), or tells a reader the wrong progress; these tests fail instead. When the run ends and
its checkpoint leaves the tree, this file leaves with it.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

from commit_checkpoint import NEEDED, PROGRESS, committed, read_state, resume_docs  # noqa: E402

RECIPE = "pytorch-vdsr"
BATCH = 128  # the recipe's batch_size, one process or split over the ranks


def _committed() -> Path:
    return committed(REPO, RECIPE)  # exactly one folder, or Refused naming what it found


def _state() -> dict:
    return read_state(_committed())  # whole (every file of NEEDED, readable safetensors), or Refused


def test_one_committed_checkpoint_whole_and_named_for_its_step():
    ckpt = _committed()
    assert set(NEEDED) <= {p.name for p in ckpt.iterdir()}
    state = _state()
    assert ckpt.name == f"{RECIPE}-step-{state['step']:07d}", (ckpt.name, state["step"])
    assert state["optimizer"] == "sgd" and state["patches_seen"] == BATCH * state["step"], state
    text = (REPO / "launch" / "configs" / f"{RECIPE}.yaml").read_text()
    assert re.search(rf"^batch_size:\s*{BATCH}\b", text, re.M), "the recipe's batch size changed"


def test_the_run_started_from_initialisation():
    """No init_weights: the run is pytorch-vdsr's from He initialisation, and its train_state says so."""
    text = (REPO / "launch" / "configs" / f"{RECIPE}.yaml").read_text()
    assert not re.search(r"^init_weights:", text, re.M)
    assert _state()["init_sha256"] is None


def test_the_committed_weights_are_the_recipes_network_and_finite():
    """pytorch-vdsr's network: 20 layers of 3x3 convolutions, 64 channels, no biases (``bias:
    false`` keeps the tensors at zero, frozen); the raw weights and their moving average both load
    (safetensors) and hold no NaN or inf."""
    for name in ("model.safetensors", "ema.safetensors"):
        tensors = load_file(str(_committed() / name))
        convs = sorted(k for k, v in tensors.items() if v.ndim == 4)
        biases = [v for v in tensors.values() if v.ndim == 1]
        assert len(convs) == 20 and len(biases) == 20 and len(tensors) == 40, sorted(tensors)
        assert all(not b.any() for b in biases), f"{name}: a bias moved off zero"
        shapes = [tuple(tensors[k].shape) for k in convs]
        assert shapes.count((64, 64, 3, 3)) == 18 and {(64, 1, 3, 3), (1, 64, 3, 3)} <= set(shapes), shapes
        assert all(torch.isfinite(v).all() for v in tensors.values()), name


def test_the_docs_resume_the_committed_checkpoint():
    ckpt = _committed()
    step = _state()["step"]
    for doc in resume_docs(RECIPE):  # each names the checkpoint's path, and only the newest
        named = set(re.findall(rf"checkpoints/({RECIPE}-step-\d+)", (REPO / doc).read_text()))
        assert named == {ckpt.name}, f"{doc} names {sorted(named)}, the committed checkpoint is {ckpt.name}"
    # README: the recipes table's row and the narrative ("begun / started on the CPU ..., at step N")
    progress = [n for _, n in PROGRESS.findall((REPO / "README.md").read_text())]
    assert len(progress) == 2 and set(progress) == {f"{step:,}"}, (progress, step)
