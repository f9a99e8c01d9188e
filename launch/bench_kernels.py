"""Benchmark the Triton kernels against eager PyTorch (cuDNN) and torch.compile.

On a GPU (the numbers that count):

    python launch/bench_kernels.py [--repeats 50] [--out benchmarks] [--compile-mode max-autotune]

* VDSR-20 forward at 1x1x540x960, 1x1x1080x1920 and the training shape 64x1x41x41: the fused
  Triton stack (fp32 as 3xTF32, TF32, bf16) against eager PyTorch/cuDNN (NCHW and
  channels_last; fp32 with cuDNN's TF32 off, TF32, bf16 autocast, and bf16 with the module
  cast to bf16 ahead of time, as the Triton stack's weights are packed ahead of time);
  graph against graph (the Triton bf16 stack and eager bf16 autocast channels_last, both
  captured in CUDA graphs); torch.compile(mode="max-autotune") bf16 channels_last (which
  captures CUDA graphs itself). Columns: median ms (CUDA events, after warm-up), TFLOP/s, % of
  the bf16 matmul rate measured in this run, speedup and the row it is divided by: Triton rows
  against the faster eager row of the same precision, graph rows against the graphed eager row.
* Resize: degrade (down by s, then up) at 1080p and on a training batch, Triton against
  F.interpolate(mode="bicubic", antialias=True) doing the same passes: GB/s (ideal bytes: read
  input + write output of every pass) and % of the device-to-device copy bandwidth measured in
  this run.
* Writes ``<out>/kernels-<device>.json`` and ``.md``.

On the CPU, ``--smoke`` runs tiny sizes in the Triton interpreter, checks parity, and prints
times that are NOT performance figures (``outputs/bench-kernels-smoke.json``).
"""

from __future__ import annotations

import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SMOKE = "--smoke" in sys.argv
if SMOKE:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before the kernels are imported

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import vdsr_kernels.resize as kresize  # noqa: E402
from vdsr_kernels.stack import pack_layers, vdsr_forward  # noqa: E402
from vdsr.atomic import atomic_path, write_json  # noqa: E402
from vdsr.cliargs import ArgParser, number  # noqa: E402
from vdsr.evaluate import degrade as degrade_reference  # noqa: E402
from vdsr.model import VDSR  # noqa: E402


def vdsr_flops(n: int, h: int, w: int, depth: int = 20, c: int = 64) -> float:
    """Multiply-adds x 2 of the convolutions (bias, ReLU and the add are not counted)."""
    macs_per_pixel = 9 * (1 * c + (depth - 2) * c * c + c * 1)
    return 2.0 * macs_per_pixel * n * h * w


def time_cuda(fn, repeats: int, warmup: int = 5) -> float:
    """Median milliseconds of ``fn()`` by CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def time_cpu(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def matmul_tflops(repeats: int) -> float:
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    ms = time_cuda(lambda: a @ b, repeats)
    return 2 * n**3 / ms / 1e9


def copy_gbps(repeats: int) -> float:
    src = torch.empty(256 * 2**20, dtype=torch.float32, device="cuda")
    dst = torch.empty_like(src)
    ms = time_cuda(lambda: dst.copy_(src), repeats)
    return 2 * src.numel() * 4 / ms / 1e6


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    return ((got.double() - ref.double()).abs().max() / ref.double().abs().max()).item()


def graphed(fn):
    """``fn`` captured in a CUDA graph (after warm-up on a side stream, which also runs Triton's
    autotuning and cuDNN's algorithm choice): returns a callable that replays it and returns the
    static output."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = fn()

    def replay():
        graph.replay()
        return static_out

    return replay


def forward_variants(model: VDSR, x: torch.Tensor, compile_mode: str):
    """name -> (callable, precision group, baseline name). Every callable returns the
    N x 1 x H x W output. A row's speedup is the baseline's time divided by its own: Triton and
    torch.compile rows are set against eager cuDNN in the same precision, a CUDA-graph row
    against eager captured in a CUDA graph too."""
    import copy

    cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    cl_bf16 = copy.deepcopy(cl).to(torch.bfloat16)  # weights cast once, ahead of time
    x_cl = x.contiguous(memory_format=torch.channels_last)
    x_cl_bf16 = x_cl.to(torch.bfloat16)
    packed = {dt: pack_layers(model.layers, dt) for dt in (torch.float32, torch.bfloat16)}
    cuda = x.device.type == "cuda"

    def eager(m, inp, dtype=None, tf32=False):
        def run():
            torch.backends.cudnn.allow_tf32 = tf32  # (its default is True: fp32 rows turn it off)
            with torch.autocast(inp.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                return m(inp)

        return run

    def eager_cast_ahead():
        return cl_bf16(x_cl_bf16).float()  # bf16 weights and input; x + r rounded to bf16

    E32, ETF, E16 = "eager fp32 channels_last", "eager tf32 channels_last", "eager bf16 autocast channels_last"
    variants = {
        "eager fp32 NCHW": (eager(model, x), "fp32", None),
        E32: (eager(cl, x_cl), "fp32", None),
        "eager tf32 NCHW": (eager(model, x, tf32=True), "tf32", None),
        ETF: (eager(cl, x_cl, tf32=True), "tf32", None),
        "eager bf16 autocast NCHW": (eager(model, x, torch.bfloat16), "bf16", None),
        E16: (eager(cl, x_cl, torch.bfloat16), "bf16", None),
        "eager bf16 weights cast ahead channels_last": (eager_cast_ahead, "bf16", None),
        "triton fp32 (3xTF32)" if cuda else "triton fp32 (ieee)": (lambda: vdsr_forward(x, packed[torch.float32], "ieee"), "fp32", "eager"),
        "triton tf32": (lambda: vdsr_forward(x, packed[torch.float32], "tf32"), "tf32", "eager"),
        "triton bf16": (lambda: vdsr_forward(x, packed[torch.bfloat16]), "bf16", "eager"),
    }  # fmt: skip
    if cuda:
        variants["eager bf16 autocast channels_last + CUDA graph"] = (graphed(eager(cl, x_cl, torch.bfloat16)), "bf16", None)
        variants["triton bf16 + CUDA graph"] = (
            graphed(lambda: vdsr_forward(x, packed[torch.bfloat16])), "bf16", "eager bf16 autocast channels_last + CUDA graph"
        )  # fmt: skip
        if compile_mode != "none":
            compiled = torch.compile(cl, mode=compile_mode)

            def run_compiled():
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    return compiled(x_cl)

            # max-autotune captures CUDA graphs itself: set against the graphed eager row
            base = "eager bf16 autocast channels_last + CUDA graph" if "autotune" in compile_mode else "eager"
            variants[f"torch.compile({compile_mode}) bf16 channels_last"] = (run_compiled, "bf16", base)
    return variants


def bench_forward(shapes, repeats: int, peak_tflops: float | None, device: str, compile_mode: str = "none"):
    rows = []
    torch.manual_seed(0)
    model = VDSR().to(device).eval()
    for n, h, w in shapes:
        x = torch.rand(n, 1, h, w, device=device)
        with torch.no_grad():
            ref = model.double()(x.double())
            model.float()
            variants = forward_variants(model, x, compile_mode)
            results = {}
            for name, (fn, group, base) in variants.items():
                err = rel_err(fn() - x, ref - x.double())  # on the residual
                ms = time_cuda(fn, repeats) if device == "cuda" else time_cpu(fn, repeats)
                results[name] = (ms, group, base, err)
        torch.backends.cudnn.allow_tf32 = True
        flops = vdsr_flops(n, h, w)
        for name, (ms, group, base, err) in results.items():
            if base == "eager":  # the faster eager layout/cast of the same precision, no graph
                base = min((k for k, v in results.items() if k.startswith("eager") and v[1] == group and "graph" not in k),
                           key=lambda k: results[k][0])  # fmt: skip
            tflops = flops / ms / 1e9
            rows.append(
                {
                    "shape": f"{n}x1x{h}x{w}",
                    "variant": name,
                    "ms": ms,
                    "tflops": tflops,
                    "pct_bf16_matmul": 100 * tflops / peak_tflops if peak_tflops else None,
                    "baseline": base,
                    "speedup": results[base][0] / ms if base else None,
                    "residual_rel_err": err,
                }
            )
    return rows


def bench_resize(cases, repeats: int, copy_bw: float | None, device: str):
    rows = []
    for n, h, w, s in cases:
        hr = torch.rand(n, 1, h, w, device=device)
        ref = degrade_reference(hr.double().cpu(), s)
        lr_h, lr_w = h // s, w // s
        # ideal bytes: each of the 4 passes reads its input and writes its output once (float32)
        sizes = [(h, w), (lr_h, w), (lr_h, lr_w), (h, lr_w), (h, w)]
        nbytes = 4 * n * sum(a * b + c * d for (a, b), (c, d) in zip(sizes[:-1], sizes[1:]))

        def torch_interp():
            lr = F.interpolate(hr, size=(lr_h, lr_w), mode="bicubic", antialias=True, align_corners=False)
            return F.interpolate(lr, size=(h, w), mode="bicubic", antialias=True, align_corners=False)

        for name, fn in (("triton degrade", lambda: kresize.degrade(hr, s)), ("F.interpolate bicubic aa", torch_interp)):
            out = fn()
            err = (out.double().cpu() - ref).abs().max().item()
            ms = time_cuda(fn, repeats) if device == "cuda" else time_cpu(fn, repeats)
            gbps = nbytes / ms / 1e6
            rows.append(
                {
                    "shape": f"{n}x1x{h}x{w}",
                    "scale": s,
                    "variant": name,
                    "ms": ms,
                    "gbps": gbps,
                    "pct_copy_bw": 100 * gbps / copy_bw if copy_bw else None,
                    "max_abs_err_vs_matlab": err,
                }
            )
    return rows


def markdown(device: str, env: dict, fwd: list[dict], rs: list[dict], smoke: bool) -> str:
    lines = [f"# Kernel benchmark: {device}", ""]
    if smoke:
        lines += ["**Smoke run in the Triton interpreter on the CPU: times are NOT performance figures.**", ""]
    lines += [", ".join(f"{k}: {v}" for k, v in env.items()), "", "## VDSR-20 forward", ""]
    lines += ["Speedup = the baseline's median time / this row's (baseline named in the row).", ""]
    lines += ["| shape | variant | median ms | TFLOP/s | % bf16 matmul | speedup | ÷ baseline | residual rel. err |", "|---|---|---|---|---|---|---|---|"]
    for r in fwd:
        pct = f"{r['pct_bf16_matmul']:.1f}" if r["pct_bf16_matmul"] is not None else "-"
        sp = f"{r['speedup']:.2f}x" if r["speedup"] else "-"
        lines.append(
            f"| {r['shape']} | {r['variant']} | {r['ms']:.3f} | {r['tflops']:.1f} | {pct} | {sp} | {r['baseline'] or '-'} | {r['residual_rel_err']:.1e} |"
        )
    lines += ["", "## Resize: degrade = bicubic down by s, then up", ""]
    lines += ["| shape | scale | variant | median ms | GB/s | % copy bw | max abs err vs MATLAB |", "|---|---|---|---|---|---|---|"]
    for r in rs:
        pct = f"{r['pct_copy_bw']:.1f}" if r["pct_copy_bw"] is not None else "-"
        lines.append(
            f"| {r['shape']} | x{r['scale']} | {r['variant']} | {r['ms']:.3f} | {r['gbps']:.1f} | {pct} | {r['max_abs_err_vs_matlab']:.1e} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = ArgParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="CPU: tiny sizes in the Triton interpreter, parity only")
    ap.add_argument("--repeats", type=number(int, 1, 10000), default=None)
    ap.add_argument("--out", default=None, help="output folder (default: benchmarks/, or outputs/ for --smoke)")
    ap.add_argument("--compile-mode", default="max-autotune", choices=["max-autotune", "default", "none"],
                    help="torch.compile mode of the compiled row (none: no such row); max-autotune takes minutes")
    args = ap.parse_args()
    ap.check_output(args.out, folder=True)

    if args.smoke:
        device, repeats = "cpu", args.repeats or 2
        shapes, resize_cases = [(2, 9, 11)], [(1, 24, 36, 2), (2, 24, 24, 3)]
        peak, copy_bw, name = None, None, "smoke-cpu-interpreter"
        out_dir = Path(args.out or REPO / "outputs")
    else:
        if not torch.cuda.is_available():
            sys.exit("bench_kernels: no GPU; run with --smoke on the CPU (parity only, no performance figures)")
        device, repeats = "cuda", args.repeats or 50
        shapes = [(1, 1080, 1920), (64, 41, 41), (1, 540, 960)]
        resize_cases = [(1, 1080, 1920, 2), (1, 1080, 1920, 3), (1, 1080, 1920, 4), (64, 41 * 3, 41 * 3, 3)]
        peak, copy_bw = matmul_tflops(repeats), copy_gbps(repeats)
        name = torch.cuda.get_device_name()
        out_dir = Path(args.out or REPO / "benchmarks")

    env = {
        "device": name,
        "torch": torch.__version__,
        "triton": __import__("triton").__version__,
        "bf16_matmul_tflops": round(peak, 1) if peak else None,
        "copy_gbps": round(copy_bw, 1) if copy_bw else None,
        "autotune": os.environ.get("VDSR_AUTOTUNE", "all"),  # "first": each kernel's first config, untuned
        "compile_mode": "none" if args.smoke else args.compile_mode,
    }
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    fwd, rs = [], []

    def save(final: bool) -> str:
        """Write what was measured so far (a run cut short by a time limit still leaves its rows)."""
        md = markdown(name, env, fwd, rs, args.smoke)
        write_json(out_dir / f"kernels-{slug}.json", {"env": env, "forward": fwd, "resize": rs, "smoke": args.smoke, "complete": final})
        with atomic_path(out_dir / f"kernels-{slug}.md") as tmp:
            tmp.write_text(md)
        return md

    rs += bench_resize(resize_cases, repeats, copy_bw, device)  # quick: first
    save(False)
    for shape in shapes:  # 1080p (the goal) first; torch.compile is each shape's last row
        fwd += bench_forward([shape], repeats, peak, device, "none" if args.smoke else args.compile_mode)
        save(False)
    print(save(True))
    print(f"wrote {out_dir / f'kernels-{slug}.json'} and .md")
    if args.smoke:
        bad = [r for r in fwd if r["variant"].startswith("triton") and r["residual_rel_err"] > 3e-2]
        bad += [r for r in rs if r["variant"].startswith("triton") and r["max_abs_err_vs_matlab"] > 1e-5]
        if bad:
            sys.exit(f"bench_kernels --smoke: parity failed: {json.dumps(bad)}")
        print("smoke: parity ok. These CPU interpreter times are not performance figures.")


if __name__ == "__main__":
    main()
