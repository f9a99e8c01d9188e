"""The benchmark scripts run (smoke mode on the CPU) and write what they promise."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_parity_bench_kernels_smoke(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "launch" / "bench_kernels.py"), "--smoke", "--repeats", "1", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**__import__("os").environ, "TRITON_INTERPRET": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "not performance figures" in proc.stdout
    data = json.loads((tmp_path / "kernels-smoke-cpu-interpreter.json").read_text())
    assert data["smoke"] is True
    variants = {r["variant"] for r in data["forward"]}
    assert {"triton fp32 (ieee)", "triton bf16", "eager bf16 channels_last"} <= variants
    assert all(r["max_abs_err_vs_matlab"] <= 1e-5 for r in data["resize"] if r["variant"] == "triton degrade")
    assert (tmp_path / "kernels-smoke-cpu-interpreter.md").read_text().startswith("# Kernel benchmark")
