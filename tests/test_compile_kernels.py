"""launch/compile_kernels.py: every Triton kernel compiles ahead of time for Hopper (sm_90) on
the CPU with the pinned Triton, fits shared memory, does not spill, and the mid kernel's K loop
is software-pipelined (async copies, tensor-core dots). Runs without the interpreter, in a
subprocess (the interpreter replaces ``triton.jit`` functions in this process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "launch" / "compile_kernels.py"


def compiled_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(REPO)
    return env


def test_every_kernel_compiles_for_sm90_without_spills(tmp_path):
    out = tmp_path / "compile.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--json", str(out)], env=compiled_env(),
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    rows = json.loads(out.read_text())
    expected = json.loads(subprocess.run(
        [sys.executable, "-c", "import json; from vdsr_kernels import conv, resize; "
         "print(json.dumps([[s['kernel'], s['dtype'], len(s['configs'])] for s in conv.compile_specs() + resize.compile_specs()]))"],
        env=compiled_env(), capture_output=True, text=True, check=True).stdout)  # fmt: skip
    assert len(rows) == sum(n for _, _, n in expected)  # a row per kernel x dtype x config
    keys = {"kernel", "dtype", "config", "ok", "shared_bytes", "registers", "spill_bytes", "compile_s", "error"}
    for r in rows:
        assert keys <= set(r), r
        assert r["ok"] and r["error"] is None and r["spill_bytes"] == 0, r
        assert 0 <= r["shared_bytes"] <= 227 * 1024 and 0 < r["registers"] <= 255, r
        assert r["compile_s"] < 30, r
    kinds = {(r["kernel"], r["dtype"]) for r in rows}
    for dt in ("bf16", "fp16", "tf32", "tf32x3"):
        assert ("conv_mid", dt) in kinds
    for k in ("conv_first", "conv_last", "resize_axis0", "resize_axis1"):
        assert {(k, dt) for dt in ("fp32", "bf16", "fp16")} <= kinds
    # the training backward's input gradients, in the dtypes training runs in
    assert {("conv_first_dgrad", "bf16"), ("conv_first_dgrad", "fp32"), ("conv_mid_dgrad", "bf16"),
            ("conv_mid_dgrad", "tf32"), ("conv_mid_dgrad", "tf32x3"), ("conv_wgrad", "bf16")} <= kinds  # fmt: skip
    for r in rows:
        if r["kernel"] in ("conv_mid", "conv_mid_dgrad", "conv_wgrad"):  # tensor cores, fed by async copies of a pipelined loop
            assert r["tensor_core_ops"] > 0 and r["async_copies"] > 0, r
    configs = [(r["kernel"], r["dtype"], r["config"]) for r in rows]
    assert len(configs) == len(set(configs))  # no duplicate configs
    assert "0 with problems" in proc.stdout


def test_a_kernel_that_does_not_compile_is_reported(tmp_path):
    """The first-layer bug this tool was made for (a constexpr re-assigned in a static_range):
    a FAIL row with the error, exit status 1."""
    probe = tmp_path / "probe.py"
    probe.write_text(textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(REPO / "launch")!r})
        import triton, triton.language as tl
        import compile_kernels as ck

        @triton.jit
        def broken(x_ptr, N: tl.constexpr):
            for tap in tl.static_range(9):
                dh: tl.constexpr = tap // 3 - 1
                tl.store(x_ptr + tap, dh)

        spec = dict(kernel="broken", fn=broken, dtype="fp32", pointers={{"x_ptr": "fp32"}}, constexprs={{"N": 9}},
                    configs=[triton.Config({{}}, num_warps=4, num_stages=1)])
        row = ck.compile_one(spec, spec["configs"][0], 90)
        row.pop("_ptx", None)
        print(json.dumps(row))
    """))
    proc = subprocess.run([sys.executable, str(probe)], env=compiled_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    assert row["ok"] is False and "compile error" in row["problems"]
    assert "constexpr" in row["error"]


def test_the_interpreter_is_refused():
    proc = subprocess.run([sys.executable, str(SCRIPT)], env={**compiled_env(), "TRITON_INTERPRET": "1"},
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 1 and "TRITON_INTERPRET" in proc.stderr
