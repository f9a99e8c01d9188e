"""The in-progress run's committed checkpoint (checkpoints/README.md) is the one the docs resume.

A session that trains ``paper-long-cycle2`` on the CPU replaces the committed checkpoint folder
with its newest one and updates the step in five places. A missed place sends a GPU loan's first
call to a folder that is gone (a refused call, out of 15 minutes), or tells a reader the wrong
progress; these tests fail instead. When the run ends and its checkpoint leaves the tree, this
file leaves with it.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RECIPE = "paper-long-cycle2"
# where a session writes the checkpoint's path (each must name it, and only the newest)
RESUME_DOCS = ("benchmarks/README.md", "checkpoints/README.md", f"launch/configs/{RECIPE}.yaml")


def _committed() -> Path:
    folders = sorted((REPO / "checkpoints").glob(f"{RECIPE}-step-*"))
    assert len(folders) == 1, f"one committed {RECIPE} checkpoint expected, found {[f.name for f in folders]}"
    return folders[0]


def test_one_committed_checkpoint_whole_and_named_for_its_step():
    ckpt = _committed()
    files = {p.name for p in ckpt.iterdir()}
    assert {"model.safetensors", "ema.safetensors", "optimizer.bin", "train_state.json"} <= files, files
    state = json.loads((ckpt / "train_state.json").read_text())
    assert ckpt.name == f"{RECIPE}-step-{state['step']:07d}", (ckpt.name, state["step"])
    assert state["optimizer"] == "sgd" and state["patches_seen"] == 64 * state["step"]  # batch 64, one process


def test_the_run_started_from_the_recipes_weights():
    """train_state.json keeps the sha256 of the file the run started from; it is still that file
    (the recipe's init_weights, the shipped model's frozen copy)."""
    state = json.loads((_committed() / "train_state.json").read_text())
    text = (REPO / "launch" / "configs" / f"{RECIPE}.yaml").read_text()
    init = re.search(r"^init_weights:\s*(\S+)", text, re.M).group(1)
    assert hashlib.sha256((REPO / init).read_bytes()).hexdigest() == state["init_sha256"], init


def test_the_docs_resume_the_committed_checkpoint():
    ckpt = _committed()
    step = json.loads((ckpt / "train_state.json").read_text())["step"]
    for doc in RESUME_DOCS:
        named = set(re.findall(rf"checkpoints/({RECIPE}-step-\d+)", (REPO / doc).read_text()))
        assert named == {ckpt.name}, f"{doc} names {sorted(named)}, the committed checkpoint is {ckpt.name}"
    # README: the recipes table's row and the narrative ("begun on the CPU, at step N of 180,000")
    progress = re.findall(r"(?:begun|started) on the CPU[^|.]*?, at step ([\d,]+)", (REPO / "README.md").read_text())
    assert len(progress) == 2 and set(progress) == {f"{step:,}"}, (progress, step)
