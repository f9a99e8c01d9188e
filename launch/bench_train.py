"""Benchmark training throughput: the bare model step against the whole training loop.

    python launch/bench_train.py [--steps 60] [--json benchmarks/train-cpu.json]

Side by side in one run: (1) the bare step (forward, the SSE loss, backward, adjustable
clipping, SGD) on one fixed batch of 64 41x41 patches; (2) ``launch/train.py`` itself on the
demo recipe (data stream with LR synthesis, the step, logging, progress bar) for the same
number of steps, validation off. Both with the recipe's bf16 autocast and channels_last. Prints
patches/s of each, the loop's share of the bare speed (goal >= 90%), and the model FLOP
utilisation against the bf16 matmul rate measured in the same run; writes JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "launch"))

import train  # noqa: E402
from vdsr.atomic import write_json  # noqa: E402
from vdsr.model import VDSR  # noqa: E402


def train_flops_per_patch(depth=20, c=64, p=41) -> float:
    """Forward + backward (input and weight gradients): 3x the forward's 2 x MACs."""
    return 3 * 2.0 * 9 * (c + (depth - 2) * c * c + c) * p * p


def bare_step_seconds(steps: int, device: str, bf16: bool, batch: int = 64) -> float:
    torch.manual_seed(0)
    model = VDSR().to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    lr_in = torch.rand(batch, 1, 41, 41, device=device).contiguous(memory_format=torch.channels_last)
    hr = lr_in + 0.01 * torch.randn_like(lr_in)
    times = []
    for i in range(steps + 3):
        t = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            out = model(lr_in)
        loss = train.sse_loss(out, hr)
        loss.backward()
        torch.nn.utils.clip_grad_value_(model.parameters(), 1e-4 / 0.1)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
        if i >= 3:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def matmul_tflops(device: str) -> float:
    n = 2048
    a, b = torch.randn(n, n, device=device, dtype=torch.bfloat16), torch.randn(n, n, device=device, dtype=torch.bfloat16)
    a @ b
    t = time.perf_counter()
    for _ in range(5):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    return 5 * 2 * n**3 / (time.perf_counter() - t) / 1e12


def loop_patches_per_s(steps: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        code = train.main(
            ["--config", "demo", "--output-dir", tmp, "--max-steps", str(steps), "--set", "val_data=[]",
             "checkpoint_every=1000000", "log_every=10"]
        )  # fmt: skip
        assert code == 0
        return json.loads((Path(tmp) / "summary.json").read_text())["patches_per_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--json", default=str(REPO / "benchmarks" / "train-cpu.json"))
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    peak = matmul_tflops(device)
    bare1 = 64 / bare_step_seconds(args.steps, device, bf16=True)
    loop = loop_patches_per_s(args.steps)
    bare2 = 64 / bare_step_seconds(args.steps, device, bf16=True)
    bare = (bare1 + bare2) / 2
    fp32 = 64 / bare_step_seconds(max(10, args.steps // 3), device, bf16=False)
    tflops = bare * train_flops_per_patch() / 1e12
    result = {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(),
        "bare_step_patches_per_s": round(bare, 1),
        "bare_step_before_after": [round(bare1, 1), round(bare2, 1)],
        "training_loop_patches_per_s": round(loop, 1),
        "loop_share_of_bare": round(loop / bare, 3),
        "bare_step_fp32_patches_per_s": round(fp32, 1),
        "model_tflops_bf16": round(tflops, 3),
        "bf16_matmul_tflops": round(peak, 3),
        "mfu_vs_matmul": round(tflops / peak, 3),
        "steps": args.steps,
    }
    print(f"bare step (bf16, channels_last): {bare:.1f} patches/s (before {bare1:.1f}, after {bare2:.1f})")
    print(f"training loop (train.py, demo):  {loop:.1f} patches/s = {100 * loop / bare:.1f}% of the bare step (goal >= 90%)")
    print(f"bare step fp32:                  {fp32:.1f} patches/s (bf16 is {bare / fp32:.2f}x)")
    print(f"model FLOP rate {tflops:.3f} TFLOP/s = {100 * tflops / peak:.1f}% of the bf16 matmul rate ({peak:.2f} TFLOP/s) measured here")
    write_json(args.json, result)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
