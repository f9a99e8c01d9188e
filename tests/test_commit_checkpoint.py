"""scripts/commit_checkpoint.py, on a scratch repository with a run in progress.

A run that spans working sessions on the CPU commits its newest whole checkpoint under
``checkpoints/RECIPE-step-N``, and five places in the docs name that step (the script's
docstring). These tests build one in a scratch repository, so that they hold whichever run is in
progress (``pytorch-vdsr`` since 2026-12-05) or none: a small but whole Accelerate checkpoint and
the five places, and check that the script moves the folder and every step, or refuses and
changes nothing. The run in progress has, beside these, tests/test_committed_checkpoint.py: its
own committed checkpoint is whole and the one its docs resume.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
RECIPE = "some-long-run"
STEP = 12000


def _checkpoint(folder: Path, step: int, **state) -> Path:
    """A whole checkpoint folder (what ``accelerator.save_state`` and train.py write)."""
    from vdsr.checkpoint import save_weights
    from vdsr.model import VDSR

    folder.mkdir(parents=True)
    torch.manual_seed(step)
    m = VDSR(depth=3, channels=4)
    save_weights(folder / "model.safetensors", m)
    save_weights(folder / "ema.safetensors", m)
    (folder / "optimizer.bin").write_bytes(b"optimizer state")
    full = {"step": step, "patches_seen": 64 * step, "seconds": 1.0, "init_sha256": "a" * 64, "optimizer": "sgd"}
    (folder / "train_state.json").write_text(json.dumps({**full, **state}))
    return folder


def _repo(tmp: Path) -> Path:
    """A scratch repository: the committed checkpoint at STEP and the five places that name it."""
    from commit_checkpoint import resume_docs

    repo = tmp / "repo"
    name = f"{RECIPE}-step-{STEP:07d}"
    _checkpoint(repo / "checkpoints" / name, STEP)
    for doc in resume_docs(RECIPE):
        (repo / doc).parent.mkdir(parents=True, exist_ok=True)
        (repo / doc).write_text(f"# {doc}\nresume with --resume checkpoints/{name} (another run: 12,000 steps)\n")
    (repo / "README.md").write_text(
        f"| `{RECIPE}` (begun on the CPU 2026-12-01, at step {STEP:,}: `checkpoints/`) | 12,000 more |\n\n"
        f"The run, started on the CPU and taken on by a GPU, at step {STEP:,} of 180,000. Another: 12,000.\n"
    )
    return repo


def _named(repo: Path) -> set[str]:
    from commit_checkpoint import resume_docs

    return {m for doc in resume_docs(RECIPE) for m in re.findall(rf"checkpoints/({RECIPE}-step-\d+)", (repo / doc).read_text())}


def test_commit_checkpoint_moves_the_folder_and_every_step(tmp_path, monkeypatch, capsys):
    """The newer folder replaces the committed one, byte for byte; the three paths and README's
    two progress phrases name its step; nothing else in the text moves (the other 12,000s stay);
    the printed next step names the folder as the repository does (checkpoints/NAME)."""
    import commit_checkpoint
    from commit_checkpoint import PROGRESS, main, resume_docs

    monkeypatch.setattr(commit_checkpoint, "README_RUN", RECIPE)  # README's progress is this run's

    assert resume_docs(RECIPE) == ("benchmarks/README.md", "checkpoints/README.md", f"launch/configs/{RECIPE}.yaml")
    repo = _repo(tmp_path)
    before = {doc: (repo / doc).read_text() for doc in (*resume_docs(RECIPE), "README.md")}
    src = _checkpoint(tmp_path / "run" / "step-0013500", STEP + 1500)
    assert main([str(src), "--repo", str(repo), "--recipe", RECIPE]) == 0
    new = repo / "checkpoints" / f"{RECIPE}-step-{STEP + 1500:07d}"
    assert sorted(p.name for p in (repo / "checkpoints").glob(f"{RECIPE}-step-*")) == [new.name]
    for name in ("model.safetensors", "ema.safetensors", "optimizer.bin", "train_state.json"):
        assert (new / name).read_bytes() == (src / name).read_bytes()
    assert _named(repo) == {new.name}
    readme = (repo / "README.md").read_text()
    assert [n for _, n in PROGRESS.findall(readme)] == ["13,500", "13,500"]
    assert readme.count("12,000") == 2 and "Another: 12,000." in readme
    for doc in resume_docs(RECIPE):
        assert (repo / doc).read_text() == before[doc].replace(f"-step-{STEP:07d}", f"-step-{STEP + 1500:07d}")
    out = capsys.readouterr().out
    assert f"session_row.py checkpoints/{new.name} --since" in out and str(tmp_path) not in out


def test_a_record_of_an_earlier_step_stays(tmp_path):
    """Only the committed checkpoint's path moves: a line that records where another run began
    (an earlier step of this run, by its path) keeps its step."""
    from commit_checkpoint import main

    repo = _repo(tmp_path)
    doc = repo / "benchmarks" / "README.md"
    record = f"the side run began at `checkpoints/{RECIPE}-step-{STEP - 500:07d}`\n"
    doc.write_text(doc.read_text() + record)
    assert main([str(_checkpoint(tmp_path / "run" / "step-0013000", STEP + 1000)), "--repo", str(repo), "--recipe", RECIPE]) == 0
    text = doc.read_text()
    assert text.endswith(record) and f"--resume checkpoints/{RECIPE}-step-{STEP + 1000:07d} " in text


def test_a_side_run_moves_its_paths_and_leaves_readme_alone(tmp_path):
    """A recipe other than README_RUN (pytorch-vdsr-cut beside pytorch-vdsr): its three paths move,
    README's progress phrases, which give the main run's step, do not."""
    from commit_checkpoint import README_RUN, main, resume_docs

    assert README_RUN == "pytorch-vdsr" != RECIPE
    repo = _repo(tmp_path)
    readme = (repo / "README.md").read_text()
    (repo / "README.md").write_text(readme.replace(f"{STEP:,}", "74,500"))  # the main run's step
    before = (repo / "README.md").read_text()
    assert main([str(_checkpoint(tmp_path / "run" / "step-0013000", STEP + 1000)), "--repo", str(repo), "--recipe", RECIPE]) == 0
    assert _named(repo) == {f"{RECIPE}-step-{STEP + 1000:07d}"}
    assert (repo / "README.md").read_text() == before
    assert all(f"-step-{STEP:07d}" not in (repo / doc).read_text() for doc in resume_docs(RECIPE))


def test_another_recipes_run_is_refused(tmp_path, capsys):
    """A run resumed from this recipe's checkpoint under another schedule (same init_sha256 and
    optimizer: pytorch-vdsr-cut from pytorch-vdsr's step 74,500) is refused by its config.json;
    one whose config.json agrees with the recipe's YAML is taken."""
    from commit_checkpoint import main

    repo = _repo(tmp_path)
    yaml_path = repo / "launch" / "configs" / f"{RECIPE}.yaml"
    yaml_path.write_text(yaml_path.read_text() + "lr: 0.1\nlr_step_epochs: 10\nbatch_size: 128\n")
    snapshot = {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()}
    side = _checkpoint(tmp_path / "side" / "checkpoints" / "step-0013000", STEP + 1000)
    (tmp_path / "side" / "config.json").write_text(json.dumps({"lr": 0.01, "lr_step_epochs": 10, "batch_size": 128}))
    assert main([str(side), "--repo", str(repo), "--recipe", RECIPE]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "another recipe" in err and "lr 0.01 (the recipe: 0.1)" in err, err
    assert str(side) in err and "lr_step_epochs" not in err and "batch_size" not in err
    assert {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()} == snapshot
    same = _checkpoint(tmp_path / "same" / "checkpoints" / "step-0013000", STEP + 1000)
    (tmp_path / "same" / "config.json").write_text(json.dumps({"lr": 0.1, "lr_step_epochs": 10, "batch_size": 128}))
    assert main([str(same), "--repo", str(repo), "--recipe", RECIPE]) == 0


def test_commit_checkpoint_refuses_and_changes_nothing(tmp_path, capsys):
    """Not whole, another run, not newer, a truncated weights file, or docs that do not name the
    committed folder: exit status 2, one line naming the folder or file, nothing changed."""
    from commit_checkpoint import main

    repo = _repo(tmp_path)
    snapshot = {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()}
    broken = _checkpoint(tmp_path / "broken", STEP + 10)
    (broken / "ema.safetensors").unlink()
    other_run = _checkpoint(tmp_path / "other", STEP + 20, init_sha256="0" * 64)
    older = _checkpoint(tmp_path / "older", STEP)
    truncated = _checkpoint(tmp_path / "truncated", STEP + 30)
    (truncated / "model.safetensors").write_bytes((truncated / "model.safetensors").read_bytes()[:100])
    why = {broken: "not a whole checkpoint", other_run: "another run", older: "not newer", truncated: "not a readable safetensors"}
    for src, reason in why.items():
        assert main([str(src), "--repo", str(repo), "--recipe", RECIPE]) == 2, src
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and reason in err and str(src) in err, err
    assert {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()} == snapshot
    stale = repo / "benchmarks" / "README.md"
    stale.write_text(stale.read_text().replace(f"-step-{STEP:07d}", "-step-0000001"))
    snapshot = {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()}
    assert main([str(_checkpoint(tmp_path / "ok", STEP + 40)), "--repo", str(repo), "--recipe", RECIPE]) == 2
    assert "does not name" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()} == snapshot
    shutil.rmtree(tmp_path / "ok")
