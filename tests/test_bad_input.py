"""Every entry point survives bad input: one line on stderr naming the problem, no traceback,
exit status 2 (1 for a folder batch where some files failed), and nothing created or changed.

Table-driven: each case runs an entry point in a sandbox folder (``in/`` holds the inputs) and
compares a snapshot of the sandbox (every file's bytes and mode) before and after. The ``vdsr``
command runs in this process; ``launch/train.py`` and the benchmark scripts in subprocesses.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vdsr.checkpoint import save_weights
from vdsr.cli import main as vdsr_main
from vdsr.model import VDSR

REPO = Path(__file__).resolve().parent.parent

# (id, entry point, argv, exit status, text the one stderr line must contain)
CASES = [
    # ---- vdsr upscale
    ("upscale-tile-negative", "vdsr", "upscale in/gray.png --scale 2 --tile -5 -o out/t.png", 2, "argument --tile: -5: expected an integer in [16, 65536]"),
    ("upscale-tile-one", "vdsr", "upscale in/gray.png --scale 2 --tile 1 -o out/t.png", 2, "argument --tile: 1"),
    ("upscale-scale-huge", "vdsr", "upscale in/gray.png --scale=1e6 -o out/t.png", 2, "argument --scale: 1e6: expected a number in [1, 16]"),
    ("upscale-scale-zero", "vdsr", "upscale in/gray.png --scale 0 -o out/t.png", 2, "argument --scale: 0"),
    ("upscale-scale-nan", "vdsr", "upscale in/gray.png --scale nan -o out/t.png", 2, "argument --scale: nan"),
    ("upscale-scale-text", "vdsr", "upscale in/gray.png --scale two -o out/t.png", 2, "argument --scale: 'two'"),
    ("upscale-device", "vdsr", "upscale in/gray.png --scale 2 --device foo -o out/t.png", 2, "--device foo: not a device"),
    ("upscale-output-under-file", "vdsr", "upscale in/gray.png --scale 2 -o in/gray.png/x.png", 2, "in/gray.png is a file, not a folder"),
    ("upscale-two-files-one-name", "vdsr", "upscale in/a/x.png in/b/x.png --scale 2 -o out/coll", 2, "both in/a/x.png and in/b/x.png"),
    ("upscale-two-folders-one-name", "vdsr", "upscale in/a in/b --scale 2 -o out/coll", 2, "both in/a/x.png and in/b/x.png"),
    ("upscale-overwrite-input", "vdsr", "upscale in/gray.png --scale 2 -o in/gray.png", 2, "would overwrite its input"),
    ("upscale-missing-input", "vdsr", "upscale in/nope.png --scale 2 -o out/t.png", 2, "in/nope.png: no such file or folder"),
    ("upscale-unknown-format", "vdsr", "upscale in/gray.png --scale 2 -o out/t.xyz", 2, "unknown output format '.xyz'"),
    ("upscale-many-into-one-file", "vdsr", "upscale in/a/x.png in/gray.png --scale 2 -o out/one.png", 2, "need an output folder"),
    ("upscale-output-folder-is-file", "vdsr", "upscale in/a in/gray.png --scale 2 -o in/notes.txt", 2, "in/notes.txt: exists and is not a folder"),
    ("upscale-missing-weights", "vdsr", "upscale in/gray.png --scale 2 -o out/t.png --checkpoint in/none.safetensors", 2, "no such weights file"),
    ("upscale-weights-folder-without-model", "vdsr", "upscale in/gray.png --scale 2 -o out/t.png --checkpoint in/a", 2, "in/a: a folder without model.safetensors"),
    ("upscale-weights-not-safetensors", "vdsr", "upscale in/gray.png --scale 2 -o out/t.png --checkpoint in/notes.txt", 2, "not a safetensors weights file"),
    # ---- vdsr eval
    ("eval-json-under-file", "vdsr", "eval --data in/a --json in/gray.png/out.json", 2, "in/gray.png is a file, not a folder"),
    ("eval-scale-one", "vdsr", "eval --data in/a --scales 1", 2, "argument --scales: 1"),
    ("eval-scale-text", "vdsr", "eval --data in/a --scales 2 x", 2, "argument --scales: 'x'"),
    ("eval-missing-folder", "vdsr", "eval --data in/nowhere", 2, "in/nowhere: no such folder"),
    ("eval-empty-folder", "vdsr", "eval --data in/empty", 2, "no images"),
    ("eval-device", "vdsr", "eval --data in/a --device cuda:x", 2, "--device cuda:x"),
    ("eval-checkpoint-with-bicubic", "vdsr", "eval --data in/a --checkpoint in/tiny.safetensors", 2, "only used with --method vdsr"),
    ("eval-save-images-is-file", "vdsr", "eval --data in/a --save-images in/gray.png", 2, "in/gray.png: exists and is not a folder"),
    ("eval-corrupt-image", "vdsr", "eval --data in/bad", 2, "in/bad/corrupt.png: not an image"),
    # ---- vdsr compare
    ("compare-tiny-image", "vdsr", "compare in/five.png --scale 3 -o out/f.png", 2, "5x5 is too small for x3"),
    ("compare-scale-zero", "vdsr", "compare in/gray.png --scale 0 -o out/f.png", 2, "argument --scale: 0: expected an integer in [2, 8]"),
    ("compare-scale-negative", "vdsr", "compare in/gray.png --scale=-2 -o out/f.png", 2, "argument --scale: -2"),
    ("compare-scale-one", "vdsr", "compare in/gray.png --scale 1 -o out/f.png", 2, "argument --scale: 1"),
    ("compare-not-png", "vdsr", "compare in/gray.png --scale 2 -o out/f.jpg", 2, "the figure is a PNG"),
    ("compare-missing-image", "vdsr", "compare in/nope.png --scale 2 -o out/f.png", 2, "in/nope.png: no such file"),
    ("compare-output-under-file", "vdsr", "compare in/gray.png --scale 2 -o in/gray.png/f.png", 2, "in/gray.png is a file"),
    # ---- vdsr import
    ("import-missing", "vdsr", "import in/none.mat -o out/m.safetensors", 2, "in/none.mat: no such file"),
    ("import-bad-suffix", "vdsr", "import in/notes.txt -o out/m.txt", 2, "must be a .safetensors file"),
    ("import-output-under-file", "vdsr", "import in/notes.txt -o in/gray.png/m.safetensors", 2, "in/gray.png is a file"),
    ("import-not-a-mat", "vdsr", "import in/notes.txt -o out/m.safetensors", 2, "not a MATLAB .mat file"),
    ("vdsr-unknown-command", "vdsr", "nosuch", 2, "invalid choice: 'nosuch'"),
    # ---- launch/train.py
    ("train-empty-data", "train", "--set data=", 2, "config: data = None"),
    ("train-output-dir-list", "train", "--set output_dir=[1,2]", 2, "output_dir = [1, 2]; expected a folder path"),
    ("train-missing-val-folder", "train", "--set val_data=/no/where --set val_every=0", 2, "config: val_data: /no/where: no such folder"),
    ("train-missing-val-folder-2nd-set", "train", "--set val_every=0 --set val_data=/no/where", 2, "config: val_data: /no/where: no such folder"),
    ("train-missing-data", "train", "--data in/nowhere", 2, "config: data: in/nowhere: no such folder"),
    ("train-output-dir-is-file", "train", "--output-dir in/gray.png", 2, "output_dir: in/gray.png: exists and is not a folder"),
    ("train-epochs-zero", "train", "--epochs 0", 2, "argument --epochs: 0: expected an integer >= 1"),
    ("train-lr-negative", "train", "--lr=-1", 2, "argument --lr: -1"),
    ("train-depth-one", "train", "--depth 1", 2, "argument --depth: 1"),
    ("train-world-size-zero", "train", "--world-size 0", 2, "argument --world-size: 0"),
    ("train-set-not-a-number", "train", "--set epochs=ten", 2, "epochs = 'ten'; expected an integer"),
    ("train-set-unknown-key", "train", "--set nokey=1", 2, "unknown key 'nokey'"),
    ("train-set-no-equals", "train", "--set lr", 2, "--set lr: expected KEY=VALUE"),
    ("train-set-bad-yaml", "train", "--set lr=[", 2, "--set lr=[: not a YAML value"),
    ("train-no-such-recipe", "train", "--config nonesuch", 2, "--config nonesuch: no such recipe"),
    ("train-downsize-out-of-range", "train", "--set downsize=[2]", 2, "downsize = [2]"),
    # ---- the benchmark and tool scripts
    ("bench-kernels-repeats", "launch/bench_kernels.py", "--smoke --repeats 0", 2, "argument --repeats: 0"),
    ("bench-train-steps", "launch/bench_train.py", "--steps 0", 2, "argument --steps: 0"),
    ("bench-train-json-under-file", "launch/bench_train.py", "--json in/gray.png/x.json", 2, "in/gray.png is a file"),
    ("bench-recipes-epochs", "launch/bench_recipes.py", "--epochs 0", 2, "argument --epochs: 0"),
    ("bench-recipes-compare-not-json", "launch/bench_recipes.py", "--compare in/notes.txt -o out/c.png", 2, "in/notes.txt: not a JSON file"),
    ("bench-recipes-compare-no-out", "launch/bench_recipes.py", "--compare in/notes.txt", 2, "--compare needs -o OUT.png"),
    ("bench-data-batches", "launch/bench_data.py", "--data in/a --batches -1", 2, "argument --batches: -1"),
    ("bench-resize-repeats", "launch/bench_resize.py", "--repeats 0", 2, "argument --repeats: 0"),
    ("bench-precision-seeds", "launch/bench_precision.py", "--seeds -1", 2, "argument --seeds: -1"),
    ("compile-kernels-json-under-file", "launch/compile_kernels.py", "--json in/gray.png/x.json", 2, "in/gray.png is a file"),
    ("compile-kernels-arch", "launch/compile_kernels.py", "--arch 7", 2, "argument --arch: invalid choice"),
]


@pytest.fixture
def sandbox(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    inp = tmp_path / "in"
    for d in ("a", "b", "empty", "bad"):
        (inp / d).mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (30, 40), dtype=np.uint8)).save(inp / "gray.png")
    for d in ("a", "b"):
        Image.fromarray(rng.integers(0, 256, (24, 28, 3), dtype=np.uint8)).save(inp / d / "x.png")
    Image.fromarray(rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)).save(inp / "five.png")
    (inp / "bad" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(60))
    (inp / "notes.txt").write_text("not an image, not weights\n")
    save_weights(inp / "tiny.safetensors", VDSR(3, 4))
    return tmp_path


def snapshot(root: Path) -> dict:
    """Every file and folder under ``root``: content hash and mode."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = ("dir", p.stat().st_mode) if p.is_dir() else (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode)
    return out


def run_case(entry: str, argv: list[str], cwd: Path, capsys, monkeypatch) -> tuple[int, str]:
    if entry == "vdsr":
        monkeypatch.chdir(cwd)
        capsys.readouterr()
        code = vdsr_main(argv)
        return code, capsys.readouterr().err
    script = REPO / "launch" / "train.py" if entry == "train" else REPO / entry
    env = {**os.environ, "PYTHONPATH": str(REPO), "TRITON_INTERPRET": "1"}
    if entry.endswith("compile_kernels.py"):
        env.pop("TRITON_INTERPRET")  # it compiles for the GPU, which the interpreter is not
    proc = subprocess.run([sys.executable, str(script), *argv], cwd=cwd, capture_output=True, text=True, timeout=300, env=env)
    return proc.returncode, proc.stderr


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, sandbox, capsys, monkeypatch):
    _, entry, args, code, needle = case
    before = snapshot(sandbox)
    got_code, err = run_case(entry, args.split(), sandbox, capsys, monkeypatch)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err, err
    assert got_code == code, (got_code, err)
    assert len(lines) == 1, lines
    assert needle in lines[0], lines[0]
    assert lines[0].split(":")[0] in ("vdsr", "vdsr upscale", "vdsr eval", "vdsr compare", "vdsr import", "train.py") or \
        lines[0].startswith(Path(entry).name), lines[0]  # fmt: skip
    assert snapshot(sandbox) == before  # nothing created, nothing changed


def test_the_table_is_large_and_covers_every_entry_point():
    entries = {c[1] for c in CASES}
    assert len(CASES) >= 40
    assert {"vdsr", "train", "launch/bench_kernels.py", "launch/bench_train.py", "launch/bench_recipes.py",
            "launch/bench_data.py", "launch/bench_resize.py", "launch/bench_precision.py",
            "launch/compile_kernels.py"} <= entries  # fmt: skip
    for sub in ("upscale", "eval", "compare", "import"):
        assert any(c[1] == "vdsr" and c[2].startswith(sub) for c in CASES)


def test_a_destination_that_is_a_folder_is_found_before_any_work(sandbox, capsys, monkeypatch):
    out = sandbox / "out"
    (out / "x.png").mkdir(parents=True)  # where in/a/x.png would be written
    monkeypatch.chdir(sandbox)
    code = vdsr_main(["upscale", "in/a", "in/gray.png", "--scale", "2", "-o", "out", "--checkpoint", "in/tiny.safetensors"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(err) == 1 and "out/x.png: is a folder" in err[0]
    assert not (out / "gray.png").exists()


def test_a_write_failure_in_a_folder_batch_is_counted_and_the_rest_completes(sandbox, capsys, monkeypatch):
    """A disk-full error on one file: one line naming it, the other files written, exit 1."""
    import errno

    from PIL import Image as PILImage

    real_save = PILImage.Image.save

    def save(self, fp, *a, **k):
        if Path(str(fp)).name.startswith(".x.png."):  # the temporary file of out/x.png
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, fp, *a, **k)

    monkeypatch.setattr(PILImage.Image, "save", save)
    monkeypatch.chdir(sandbox)
    code = vdsr_main(["upscale", "in/a", "in/gray.png", "-o", "out", "--scale", "2", "--checkpoint", "in/tiny.safetensors"])
    captured = capsys.readouterr()
    err = [ln for ln in captured.err.splitlines() if ln.strip()]
    assert code == 1
    assert err == ["vdsr upscale: error: out/x.png: cannot write (No space left on device)"]
    assert (sandbox / "out" / "gray.png").is_file()  # the rest completed
    assert not (sandbox / "out" / "x.png").exists() and not any((sandbox / "out").glob(".*"))  # no temp left
    assert "1 of 2 images upscaled x2; 1 failed" in captured.out


def test_repeated_set_accumulates(sandbox):
    env = {**os.environ, "PYTHONPATH": str(REPO), "TRITON_INTERPRET": "1"}
    tiny = sandbox / "tiny.yaml"
    tiny.write_text("data: [demo]\nval_data: []\ndepth: 3\nchannels: 4\nbatch_size: 4\npatches_per_epoch: 8\n"
                    "epochs: 1\nloader: torch\nlog_every: 1\ncheckpoint_every: 100\n")  # fmt: skip
    proc = subprocess.run([sys.executable, str(REPO / "launch" / "train.py"), "--config", str(tiny), "--output-dir", "5",
                           "--set", "max_steps=1", "--set", "seed=7"], cwd=sandbox, capture_output=True, text=True,
                          timeout=300, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    import json

    cfg = json.loads((sandbox / "5" / "config.json").read_text())
    assert cfg["max_steps"] == 1 and cfg["seed"] == 7  # both --set applied
    assert oct((sandbox / "5" / "model.safetensors").stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    assert "Model weights saved" not in proc.stderr + proc.stdout  # Accelerate's per-checkpoint lines are quiet


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m
