"""scripts/results_table.py: the README's results table comes from the eval JSON files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "results_table.py"


def _evals(tmp_path):
    model = {"Set5": {"2": {"psnr": 36.7051, "ssim": 0.95461, "images": 5}}}
    bicubic = {"Set5": {"2": {"psnr": 33.6563, "ssim": 0.92961, "images": 5}}}
    (tmp_path / "m.json").write_text(json.dumps(model))
    (tmp_path / "b.json").write_text(json.dumps(bicubic))
    return ["--model", str(tmp_path / "m.json"), "--bicubic", str(tmp_path / "b.json")]


def test_table_gain_and_gap_to_paper(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), *_evals(tmp_path), "--official", "none"],
                         capture_output=True, text=True, check=True)  # fmt: skip
    row = [line for line in out.stdout.splitlines() if line.startswith("| Set5")]
    assert row == ["| Set5 | x2 | 33.66 | **36.71** / 0.9546 | +3.05 | 37.53 / 0.9587 | -0.82 |"]


def test_write_replaces_only_between_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- table:start -->\nold table\n<!-- table:end -->\nafter\n")
    subprocess.run([sys.executable, str(SCRIPT), *_evals(tmp_path), "--official", "none", "--write", str(readme)], check=True)
    text = readme.read_text()
    assert text.startswith("intro\n<!-- table:start -->\n| dataset |") and text.endswith("<!-- table:end -->\nafter\n")
    assert "old table" not in text and "+3.05" in text


def test_missing_markers_is_an_error_and_leaves_the_file(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("no markers\n")
    proc = subprocess.run([sys.executable, str(SCRIPT), *_evals(tmp_path), "--write", str(readme)], capture_output=True, text=True)
    assert proc.returncode == 2 and "README.md" in proc.stderr
    assert readme.read_text() == "no markers\n"


def test_public_model_columns(tmp_path):
    official = {"Set5": {"2": {"psnr": 37.513, "ssim": 0.95846, "images": 5}}}
    (tmp_path / "o.json").write_text(json.dumps(official))
    out = subprocess.run([sys.executable, str(SCRIPT), *_evals(tmp_path), "--official", str(tmp_path / "o.json")],
                         capture_output=True, text=True, check=True)  # fmt: skip
    head = out.stdout.splitlines()[0]
    assert "authors' model (measured)" in head and "pytorch-vdsr (measured)" in head
    row = [line for line in out.stdout.splitlines() if line.startswith("| Set5")]
    # shipped 36.71 vs the better public model (pytorch-vdsr 37.57) = -0.86
    assert row == ["| Set5 | x2 | 33.66 | **36.71** / 0.9546 | +3.05 | 37.51 / 0.9585 | 37.57 | -0.86 | 37.53 / 0.9587 | -0.82 |"]


def test_readme_table_is_the_committed_evaluations():
    """The README's table is what the script writes by default from weights/*-eval.json (with the
    authors' model's columns): a new shipped model without a rewritten table fails here."""
    out = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, check=True)
    assert "authors' model (measured)" in out.stdout.splitlines()[0]
    readme = (REPO / "README.md").read_text()
    assert f"<!-- table:start -->\n{out.stdout}<!-- table:end -->" in readme
