"""scripts/gpu_run.sh --dry-run: the prepared GPU run, every part at toy size on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_gpu_run_dry_run_runs_every_part(shared_data, tmp_path):
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_run.sh"), "--dry-run", "--out", str(out), "--data", str(shared_data)],
                          capture_output=True, text=True, timeout=1200, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    summary = (out / "summary.txt").read_text().splitlines()
    parts = [line.split()[0] for line in summary]
    assert parts == ["install", "parity", "bench_kernels", "bench_train", "train", "eval"]
    assert all(line.split()[1] == "ok" for line in summary), summary
    assert (out / "benchmarks" / "kernels-smoke-cpu-interpreter.json").is_file()
    assert json.loads((out / "benchmarks" / "train-dry-run.json").read_text())["rows"]
    assert (out / "run" / "model.safetensors").is_file()
    assert "Set5" in json.loads((out / "run" / "eval.json").read_text())
    assert any((out / "run" / "checkpoints").glob("step-*"))


def test_gpu_run_refuses_bad_arguments(tmp_path):
    for args, message in [(["--bogus"], "unknown argument"), (["--dry-run", "--data", str(tmp_path)], "no such folder"),
                          (["--dry-run", "--train-minutes", "-1"], "--train-minutes"),
                          (["--dry-run", "--resume", str(tmp_path / "none")], "no such checkpoint folder")]:  # fmt: skip
        proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_run.sh"), *args, "--out", str(tmp_path / "o")],
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, (args, proc.stderr)
