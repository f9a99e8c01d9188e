"""The in-progress run's committed checkpoint (checkpoints/README.md) is the one the docs resume.

A session that trains ``paper-long-cycle2`` on the CPU replaces the committed checkpoint folder
with its newest one and updates the step in five places. A missed place sends a GPU loan's first
call to a folder that is gone (a refused call, out of 15 minutes), or tells a reader the wrong
progress; these tests fail instead. ``scripts/commit_checkpoint.py`` does all five (tested
below). When the run ends and its checkpoint leaves the tree, this
file leaves with it.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
RECIPE = "paper-long-cycle2"
# where a session writes the checkpoint's path (each must name it, and only the newest)
RESUME_DOCS = ("benchmarks/README.md", "checkpoints/README.md", f"launch/configs/{RECIPE}.yaml")


def _committed(repo: Path = REPO) -> Path:
    folders = sorted((repo / "checkpoints").glob(f"{RECIPE}-step-*"))
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


def _assert_docs_resume(repo: Path) -> None:
    ckpt = _committed(repo)
    step = json.loads((ckpt / "train_state.json").read_text())["step"]
    for doc in RESUME_DOCS:
        named = set(re.findall(rf"checkpoints/({RECIPE}-step-\d+)", (repo / doc).read_text()))
        assert named == {ckpt.name}, f"{doc} names {sorted(named)}, the committed checkpoint is {ckpt.name}"
    # README: the recipes table's row and the narrative ("begun on the CPU, at step N of 180,000")
    progress = re.findall(r"(?:begun|started) on the CPU[^|.]*?, at step ([\d,]+)", (repo / "README.md").read_text())
    assert len(progress) == 2 and set(progress) == {f"{step:,}"}, (progress, step)


def test_the_docs_resume_the_committed_checkpoint():
    _assert_docs_resume(REPO)


def _copy_repo(tmp: Path) -> Path:
    """The committed checkpoint and the five docs that name it, in a scratch repository."""
    repo = tmp / "repo"
    for doc in (*RESUME_DOCS, "README.md"):
        (repo / doc).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / doc, repo / doc)
    ckpt = _committed()
    shutil.copytree(ckpt, repo / "checkpoints" / ckpt.name)
    return repo


def _newer(tmp: Path, plus: int, **change) -> Path:
    """A copy of the committed checkpoint, its train_state.json moved on by plus steps."""
    src = tmp / f"run-{plus}"
    shutil.copytree(_committed(), src)
    state = json.loads((src / "train_state.json").read_text())
    state.update(step=state["step"] + plus, patches_seen=64 * (state["step"] + plus), **change)
    (src / "train_state.json").write_text(json.dumps(state))
    return src


def test_commit_checkpoint_moves_the_folder_and_every_step(tmp_path):
    """scripts/commit_checkpoint.py: the newer folder replaces the committed one and all five
    places name its step, so the checks above pass on the result."""
    from commit_checkpoint import PROGRESS, replace, resume_docs

    assert resume_docs(RECIPE) == RESUME_DOCS
    repo = _copy_repo(tmp_path)
    old = _committed(repo)
    step = json.loads((old / "train_state.json").read_text())["step"]
    src = _newer(tmp_path, 1234)
    _, new, changed = replace(src, repo, RECIPE)
    assert new.name == f"{RECIPE}-step-{step + 1234:07d}" and not old.exists()
    assert sorted(changed) == sorted((*RESUME_DOCS, "README.md"))
    assert (new / "model.safetensors").read_bytes() == (src / "model.safetensors").read_bytes()
    _assert_docs_resume(repo)
    # the rest of the text is untouched: only the progress phrases' step moved (masking just
    # those, so that the same number elsewhere in README, e.g. another run's 12,000, must stay)
    def mask(text: str) -> str:
        return PROGRESS.sub(lambda m: m.group(1) + "N", text)

    after = (repo / "README.md").read_text()
    assert f"at step {step + 1234:,}" in after
    assert mask(after) == mask((REPO / "README.md").read_text())


def test_commit_checkpoint_refuses_and_changes_nothing(tmp_path):
    from commit_checkpoint import main

    repo = _copy_repo(tmp_path)
    snapshot = {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()}
    broken = _newer(tmp_path, 10)
    (broken / "ema.safetensors").unlink()
    other_run = _newer(tmp_path, 20, init_sha256="0" * 64)
    older = _newer(tmp_path, 0)
    truncated = _newer(tmp_path, 30)
    (truncated / "model.safetensors").write_bytes((truncated / "model.safetensors").read_bytes()[:1000])
    for src in (broken, other_run, older, truncated):
        assert main([str(src), "--repo", str(repo), "--recipe", RECIPE]) == 2, src
    assert {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()} == snapshot
