"""Benchmark training throughput: the bare model step against the whole training loop.

    python launch/bench_train.py [--steps 60] [--backends torch triton] [--precisions bf16 tf32]
        [--batch-sizes 64 [128 256 ...]] [--cuda-graph] [--config demo] [--data DIR ...]
        [--loader auto] [--profile STEPS] [--json benchmarks/train-<device>.json]

Side by side in one run, for every backend (``torch``: eager cuDNN; ``triton``: the fused
forward and backward of ``kernels/stack.py``) and precision (``bf16`` autocast; ``tf32``,
float32 math on TF32 tensor cores, a GPU only; ``fp32`` on the CPU):

1. the bare step: forward, the SSE loss, backward, adjustable clipping, SGD, on one fixed
   batch of 41x41 patches in channels_last (64, or each of ``--batch-sizes``: a bigger batch
   fills more of a GPU, and the rows say by how much), timed over ``--steps`` steps with one
   synchronisation at the end (after warm-up steps, which also run cuDNN's and Triton's
   autotuning);
   ``--cuda-graph`` (a GPU) adds, beside each row, the same step as one CUDA graph
   (``train.GraphedStep``: launched at once instead of kernel by kernel);
2. ``launch/train.py`` itself (data stream with LR synthesis, the step, the read-backs every
   ``log_every`` steps, progress bar, the final checkpoint; validation off; ``--cuda-graph``
   in the graphed rows) for ``max(--steps, --loop-steps)`` steps, its rate taken from the
   training clock between the first read point past warm-up and the end. ``--no-loop`` skips
   it (the loop fields are null): a quick race of the bare steps, as ``scripts/gpu_run.sh
   --backend auto`` runs before training.

``--profile STEPS`` adds to each eager row where its time goes (``torch.profiler``): on CUDA
the kernels by device time a step and how many launch a step; on the CPU the ops.

On CUDA it also counts the host synchronisations inside ``train.train_step`` with
``torch.cuda.set_sync_debug_mode("warn")`` (goal: 0). Prints patches/s of each, the loop's
share of the bare step (goal >= 90%), the model's TFLOP/s
(forward + backward = 3x the forward's multiply-adds) and its share of the bf16 matmul rate
measured in the same run; writes JSON. On a GPU, pass the training images (``--data``) and
``--config paper`` for the paper's data; the default is the demo recipe's photos.
"""

from __future__ import annotations

import itertools
import json
import platform
import re
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
from vdsr.cliargs import ArgParser, number  # noqa: E402
from vdsr.model import VDSR  # noqa: E402
from vdsr.precision import cpu_capability, native_bf16  # noqa: E402


def train_flops_per_patch(depth=20, c=64, p=41) -> float:
    """Forward + backward (input and weight gradients): 3x the forward's 2 x MACs."""
    return 3 * 2.0 * 9 * (c + (depth - 2) * c * c + c) * p * p


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def step_setup(device: str, backend: str, precision: str, depth: int = 20, batch: int = 64, channels: int = 64):
    """What ``train.train_step`` takes: ``(accelerator, cfg, model, optimizer, lr_in, hr)``, one
    fixed batch of 41 x 41 patches in channels_last; the caller calls ``step_teardown()`` when done.
    The model and optimizer are train.py's (``train.make_optimizer``) but not passed through
    ``accelerator.prepare``: in one process that adds only a second autocast around the forward
    (``train_step`` opens its own) and an optimizer wrapper whose step calls SGD's."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    torch.manual_seed(0)
    train.set_tf32(precision == "tf32")
    AcceleratorState._reset_state(reset_partial_state=True)
    acc = Accelerator(mixed_precision="bf16" if precision == "bf16" else "no", cpu=device == "cpu")
    cfg = train.Config(backend=backend, bf16=precision == "bf16", tf32=precision == "tf32")
    model = VDSR(depth, channels, backend=backend).to(device).to(memory_format=torch.channels_last)
    opt = train.make_optimizer(model, cfg)  # SGD, momentum 0.9, weight decay 1e-4
    lr_in = torch.rand(batch, 1, 41, 41, device=device).contiguous(memory_format=torch.channels_last)
    return acc, cfg, model, opt, lr_in, lr_in + 0.01 * torch.randn_like(lr_in)


def step_teardown() -> None:
    from accelerate.state import AcceleratorState

    train.set_tf32(False)
    AcceleratorState._reset_state(reset_partial_state=True)


def bare_patches_per_s(steps: int, device: str, backend: str, precision: str, depth: int = 20, batch: int = 64,
                       warmup: int = 5, graph: bool = False, channels: int = 64) -> float:  # fmt: skip
    """Patches/s of the bare step (no data, no logging); one host synchronisation at the end.
    ``graph``: ``train.GraphedStep`` (its eager warm-up and capture inside the warm-up steps)."""
    acc, cfg, model, opt, lr_in, hr = step_setup(device, backend, precision, depth, batch, channels)
    graphed = train.GraphedStep(model, opt, acc, cfg, world=1) if graph else None
    if graph:
        warmup = max(warmup, graphed.warmup + 2)

    def step():
        if graphed is not None:
            return graphed(lr_in, hr, 0.1)
        return train.train_step(model, opt, acc, cfg, lr_in, hr, 0.1, 1)

    for _ in range(warmup):
        step()
    sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        loss = step()
    sync(device)
    elapsed = time.perf_counter() - t
    assert torch.isfinite(loss)
    assert not graph or graphed.replays >= steps, "the graphed rows did not replay a graph"
    step_teardown()
    return steps * batch / elapsed


def matmul_tflops(device: str) -> float:
    """The bf16 matmul rate (TFLOP/s) of an n x n product: n doubles from 512 to 8192 (GPU) or
    2048 (CPU), stopping early once one product takes over 0.1 s (a CPU without native bfloat16
    emulates it: a 2048 product took 51 s on an AVX2 CPU); then timed over about a second."""
    n, n_max = 512, 8192 if device == "cuda" else 2048
    while True:
        a, b = torch.randn(n, n, device=device, dtype=torch.bfloat16), torch.randn(n, n, device=device, dtype=torch.bfloat16)
        for _ in range(3 if n == 512 else 1):
            a @ b
        sync(device)
        t = time.perf_counter()
        a @ b
        sync(device)
        one = time.perf_counter() - t
        if n >= n_max or one > 0.1:
            break
        n *= 2
    reps = max(3, min(50, int(1.0 / max(one, 1e-6))))
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return reps * 2 * n**3 / (time.perf_counter() - t) / 1e12


def loop_patches_per_s(steps: int, backend: str, precision: str, args, batch: int = 64, graph: bool = False) -> dict:
    """train.py for ``steps`` steps of ``batch`` patches (``graph``: ``--cuda-graph``); the rate
    after warm-up from its training clock."""
    with tempfile.TemporaryDirectory() as tmp:
        argv = ["--config", args.config, "--output-dir", tmp, "--max-steps", str(steps), "--backend", backend,
                "--loader", args.loader, "--bf16" if precision == "bf16" else "--no-bf16",
                "--tf32" if precision == "tf32" else "--no-tf32",
                "--depth", str(args.depth), "--set", f"channels={args.channels}", "val_data=[]", "val_every=0",
                f"log_every={args.log_every}",
                f"checkpoint_every={args.checkpoint_every}", f"epochs={10**6}", f"batch_size={batch}",
                f"patches_per_epoch={50 * batch}",  # random sampling: an epoch of 50 steps at any batch
                "--cuda-graph" if graph else "--no-cuda-graph"]  # fmt: skip
        if args.data:
            argv += ["--data", *args.data]
        code = train.main(argv)
        assert code == 0, f"train.py exited with {code}"
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state(reset_partial_state=True)
        summary = json.loads((Path(tmp) / "summary.json").read_text())
        assert not graph or summary["cuda_graph"], "train.py --cuda-graph ran the eager step"
        times = json.loads((Path(tmp) / "history.json").read_text()).get("time", [])
    start = next(((s, t) for s, t in times if s >= max(args.log_every, steps // 5)), None)
    end = times[-1] if times else None
    if start and end and end[0] > start[0]:
        rate = (end[0] - start[0]) * batch / (end[1] - start[1])
    else:
        rate = summary["patches_per_s"]
    return {"patches_per_s": rate, "patches_per_s_with_warmup": summary["patches_per_s"], "steps": steps}


def host_syncs_per_step(backend: str, precision: str, steps: int = 5) -> float:
    """Host synchronisations inside ``train.train_step`` on CUDA, counted by
    ``torch.cuda.set_sync_debug_mode("warn")`` over ``steps`` steps after warm-up (goal: 0)."""
    import warnings

    acc, cfg, model, opt, lr_in, hr = step_setup("cuda", backend, precision)
    for _ in range(3):
        train.train_step(model, opt, acc, cfg, lr_in, hr, 0.1, 1)
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(steps):
                train.train_step(model, opt, acc, cfg, lr_in, hr, 0.1, 1)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    step_teardown()
    return sum("synchroniz" in str(w.message) for w in caught) / steps


def step_profile(steps: int, device: str, backend: str, precision: str, depth: int = 20, batch: int = 64,
                 channels: int = 64, top: int = 12) -> dict:  # fmt: skip
    """Where the eager step's time goes: ``steps`` steps (after 3 of warm-up) under
    ``torch.profiler``. On CUDA, the device kernels (the Triton kernels by their names, cuDNN's,
    the optimizer's), with their launches and device time a step; on the CPU, the torch ops with
    their self CPU time. A CUDA graph launches the same kernels, less the gaps between them, so
    ``kernel_ms_per_step`` against the graphed row's step time shows what launching still costs.

    Returns ``{"steps", "kernels_per_step", "kernel_ms_per_step", "top": [{"name",
    "calls_per_step", "ms_per_step", "share"}]}`` (``top``: the ``top`` longest by time)."""
    from torch.profiler import ProfilerActivity, profile

    acc, cfg, model, opt, lr_in, hr = step_setup(device, backend, precision, depth, batch, channels)
    for _ in range(3):
        train.train_step(model, opt, acc, cfg, lr_in, hr, 0.1, 1)
    sync(device)
    cuda = device == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            train.train_step(model, opt, acc, cfg, lr_in, hr, 0.1, 1)
        sync(device)
    step_teardown()
    rows = []
    for e in prof.key_averages():
        if cuda:
            if e.device_type != torch.autograd.DeviceType.CUDA:
                continue
            us = getattr(e, "self_device_time_total", None)
            us = e.self_cuda_time_total if us is None else us
        else:
            us = e.self_cpu_time_total
        if e.count and us > 0:
            rows.append((e.key, e.count / steps, us / 1e3 / steps))
    rows.sort(key=lambda r: -r[2])
    total = sum(r[2] for r in rows)
    return {
        "steps": steps,
        "kernels_per_step": round(sum(r[1] for r in rows), 2),
        "kernel_ms_per_step": round(total, 4),
        "top": [{"name": name[:160], "calls_per_step": round(calls, 2), "ms_per_step": round(ms, 4),
                 "share": round(ms / total, 4) if total else None} for name, calls, ms in rows[:top]],  # fmt: skip
    }


def profile_row(args, device: str, backend: str, precision: str, batch: int) -> dict:
    """:func:`step_profile` for one row, printed; a profiler that fails (no CUPTI, say) gives
    ``{"error": ...}`` and the run goes on: the rates (a race's pick) must not be lost to it."""
    try:
        prof = step_profile(args.profile, device, backend, precision, args.depth, batch, args.channels)
    except Exception as e:
        step_teardown()
        prof = {"error": f"{type(e).__name__}: {e}"[:300]}
        print(f"{backend:>6} {precision:>4} batch {batch:>4} profile failed: {prof['error']}", flush=True)
        return prof
    print(f"{backend:>6} {precision:>4} batch {batch:>4} profile: {prof['kernels_per_step']:g} "
          f"{'kernels' if device == 'cuda' else 'ops'} a step, {prof['kernel_ms_per_step']:.3f} ms; longest: "
          + ", ".join(f"{t['name'][:40]} {100 * t['share']:.0f}%" for t in prof["top"][:4]), flush=True)  # fmt: skip
    return prof


def device_name(device: str) -> str:
    return torch.cuda.get_device_name() if device == "cuda" else "cpu"


def cpu_info() -> dict:
    """The CPU's model name, the vector ISA PyTorch runs on it, and whether bfloat16 is native
    there (without it bf16 autocast is emulated: see vdsr/precision.py)."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), platform.processor())
    return {"model": model or "unknown", "capability": cpu_capability(), "native_bf16": native_bf16("cpu")}


def main(argv=None) -> int:
    ap = ArgParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=number(int, 1, 10**6), default=60, help="timed bare steps (and the minimum loop length)")
    ap.add_argument("--loop-steps", type=number(int, 0, 10**7), default=0, help="train.py steps (default: --steps)")
    ap.add_argument("--backends", nargs="+", default=None, choices=["torch", "triton"],
                    help="default: torch and triton on a GPU, torch on the CPU (the interpreter is slow)")  # fmt: skip
    ap.add_argument("--precisions", nargs="+", default=None, choices=["bf16", "tf32", "fp32"],
                    help="default: bf16 and tf32 on a GPU, bf16 and fp32 on the CPU")  # fmt: skip
    ap.add_argument("--batch-sizes", nargs="+", type=number(int, 1, 65536), default=[64],
                    help="patches a step, one row each (default 64, the recipes' batch)")
    ap.add_argument("--cuda-graph", action="store_true",
                    help="also the graphed step (train.GraphedStep, train.py --cuda-graph): a row beside each eager one (a GPU only)")
    ap.add_argument("--no-loop", action="store_true", help="the bare step only (no train.py loop rows)")
    ap.add_argument("--config", default="demo", help="train.py recipe for the loop (its data, unless --data)")
    ap.add_argument("--data", nargs="+", help="training folders for the loop")
    ap.add_argument("--loader", default="auto", choices=["auto", "dali", "torch", "device"])
    ap.add_argument("--log-every", type=number(int, 1), default=10)
    ap.add_argument("--depth", type=number(int, 3, 1000), default=20, help="VDSR depth (20; smaller only for smoke tests)")
    ap.add_argument("--warmup", type=number(int, 1, 1000), default=5, help="untimed bare steps first (5; fewer only for smoke tests)")
    ap.add_argument("--channels", type=number(int, 1, 1024), default=64, help="VDSR width (64; smaller only for smoke tests)")
    ap.add_argument("--checkpoint-every", type=number(int, 1), default=10**9, help="default: only the final checkpoint")
    ap.add_argument("--profile", type=number(int, 0, 1000), default=0, metavar="STEPS",
                    help="also profile STEPS eager steps of each backend, precision and batch size: the "
                         "kernels (CUDA) or ops (CPU) by time, and their launches a step (default 0: off)")
    ap.add_argument("--json", help="default: benchmarks/train-<device>.json")
    args = ap.parse_args(argv)
    for key in ("steps", "log_every", "checkpoint_every", "depth"):
        if getattr(args, key) < 1:
            ap.error(f"--{key.replace('_', '-')} must be >= 1, got {getattr(args, key)}")
    if args.loop_steps < 0:
        ap.error(f"--loop-steps must be >= 0, got {args.loop_steps}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    backends = args.backends or (["torch", "triton"] if device == "cuda" else ["torch"])
    precisions = args.precisions or (["bf16", "tf32"] if device == "cuda" else ["bf16", "fp32"])
    if device == "cpu" and "tf32" in precisions:
        ap.error("--precisions tf32 needs a GPU (the CPU has no TF32)")
    if device == "cpu" and args.cuda_graph:
        ap.error("--cuda-graph needs a GPU (a CUDA graph)")
    graphs = [False, True] if args.cuda_graph else [False]
    name = device_name(device)
    json_path = Path(args.json or REPO / "benchmarks" / f"train-{re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')}.json")
    ap.check_output(json_path)

    peak = matmul_tflops(device)
    # an emulated bf16 matmul (a CPU without native bfloat16) is no ceiling: no share against it
    emulated = not native_bf16(device)
    per_patch = train_flops_per_patch(args.depth, args.channels)
    rows = []
    for backend, precision in itertools.product(backends, precisions):
        syncs = host_syncs_per_step(backend, precision) if device == "cuda" else None
        for batch, graph in itertools.product(args.batch_sizes, graphs):
            bare = bare_patches_per_s(args.steps, device, backend, precision, args.depth, batch, args.warmup,
                                      graph=graph, channels=args.channels)
            loop = {"patches_per_s": None, "patches_per_s_with_warmup": None}  # --no-loop: null fields
            if not args.no_loop:
                loop = loop_patches_per_s(max(args.steps, args.loop_steps), backend, precision, args, batch, graph)
            rate = loop["patches_per_s"]
            tflops = bare * per_patch / 1e12
            rows.append({
                "backend": backend, "precision": precision, "batch": batch, "cuda_graph": graph,
                "bare_step_patches_per_s": round(bare, 1),
                "loop_patches_per_s": None if rate is None else round(rate, 1),
                "loop_patches_per_s_with_warmup": loop["patches_per_s_with_warmup"],
                "loop_share_of_bare": None if rate is None else round(rate / bare, 3),
                "bare_step_tflops": round(tflops, 3),
                "bare_step_share_of_bf16_matmul": None if emulated else round(tflops / peak, 3),
                # CUDA only (set_sync_debug_mode), of the eager step; the CPU test checks by construction
                "host_syncs_per_train_step": syncs,
            })  # fmt: skip
            r = rows[-1]
            if args.profile and not graph:  # the eager step's kernels (a graph launches the same ones)
                r["profile"] = profile_row(args, device, backend, precision, batch)
            print(f"{backend:>6} {precision:>4} batch {batch:>4}{' graph' if graph else ''}: bare step {bare:9.1f} "
                  f"patches/s ({tflops:.2f} TFLOP/s, "
                  + ("bf16 emulated here" if emulated else f"{100 * tflops / peak:.1f}% of bf16 matmul") + ")"
                  + ("" if rate is None else f" | train.py loop {rate:9.1f} = "
                     f"{100 * r['loop_share_of_bare']:.1f}% of the bare step")
                  + (f" | {syncs:g} host syncs per step" if syncs is not None else ""), flush=True)  # fmt: skip
    result = {
        "device": name,
        "cpu": cpu_info(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "bf16_matmul_tflops": round(peak, 3),
        "bf16_emulated": emulated,
        "train_flops_per_patch": per_patch,
        "steps": args.steps,
        "batch_sizes": args.batch_sizes,
        "cuda_graph": args.cuda_graph,
        "profile_steps": args.profile,
        "depth": args.depth,
        "channels": args.channels,
        "loop": None if args.no_loop else {"config": args.config, "data": args.data, "loader": args.loader,
                                           "log_every": args.log_every, "checkpoint_every": args.checkpoint_every},  # fmt: skip
        "rows": rows,
    }
    print(f"bf16 matmul rate measured here: {peak:.2f} TFLOP/s. Goals: loop >= 90% of the bare step; "
          f"on a GPU, bare bf16 >= 40% of the bf16 matmul rate")  # fmt: skip
    write_json(json_path, result)
    print(f"wrote {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
