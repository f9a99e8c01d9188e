"""Compile every Triton kernel ahead of time for a GPU architecture, on the CPU: no GPU needed.

    python launch/compile_kernels.py [--arch 90] [--json FILE] [--ptx DIR] [--only conv_mid]

For every kernel in ``kernels/``, every dtype/precision it serves and every autotune config the
autotuner may try on that arch (``compile_specs()`` of ``kernels/conv.py`` and
``kernels/resize.py``, the same constexprs and config lists the launchers use), this runs
``triton.compile`` for ``GPUTarget("cuda", arch, 64)`` with the ``ptxas`` that ships in the
Triton wheel and prints a row: ok or the error, shared memory bytes, registers, spill bytes
(``ptxas -v``), tensor-core instructions in the PTX (``wgmma``/``mma``), ``cp.async`` copies,
compile seconds.

Exit status 1 on any compile error, any shared-memory overflow (more than the arch's per-block
limit: 227 KB on sm_90), any spill (every listed config may be picked by the autotuner), or two
configs of one kernel/dtype that compile to the same PTX (a duplicate wastes autotuning time).
``--json`` writes a list of objects with keys ``kernel``, ``dtype``, ``config``, ``ok``,
``shared_bytes``, ``registers``, ``spill_bytes``, ``compile_s``, ``error`` (and
``tensor_core_ops``, ``async_copies``, ``problems``). Compiles go to a fresh Triton cache, so
the times are real.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import os
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
if os.environ.get("TRITON_INTERPRET") == "1":
    sys.exit("compile_kernels: unset TRITON_INTERPRET: the interpreter's configs are not the GPU's")
os.environ.setdefault("TRITON_CACHE_DIR", tempfile.mkdtemp(prefix="vdsr-triton-cache-"))

import triton  # noqa: E402

from vdsr.cliargs import ArgParser  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

# Max dynamic shared memory per block (bytes), by compute capability.
SHARED_LIMIT = {80: 163 * 1024, 86: 99 * 1024, 89: 99 * 1024, 90: 227 * 1024, 100: 227 * 1024, 120: 99 * 1024}


def specs() -> list[dict]:
    """All compile jobs: the conv kernels (VDSR width 64) and the resize kernel."""
    from vdsr_kernels import conv, resize

    return conv.compile_specs() + resize.compile_specs()


def config_label(spec: dict, cfg: triton.Config) -> str:
    tile = " ".join(f"{k}={v}" for k, v in cfg.kwargs.items())
    variant = f"{spec['variant']} " if spec.get("variant") else ""
    return f"{variant}{tile} warps={cfg.num_warps} stages={cfg.num_stages}"


def parse_ptxas(log: str) -> tuple[int | None, int | None]:
    """Registers and spill bytes (stores + loads) from ``ptxas -v``."""
    regs = re.search(r"Used (\d+) registers", log)
    spills = re.findall(r"(\d+) bytes spill (?:stores|loads)", log)
    return (int(regs.group(1)) if regs else None), (sum(map(int, spills)) if spills else None)


def compile_one(spec: dict, cfg: triton.Config, arch: int) -> dict:
    fn = spec["fn"]
    const = {**spec["constexprs"], **cfg.kwargs}
    signature = {}
    for name in fn.arg_names:
        if name in const:
            signature[name] = "constexpr"
        elif name in spec["pointers"]:
            signature[name] = "*" + spec["pointers"][name]
        else:
            signature[name] = "i32"
    # torch allocations are 16-byte aligned, as the runtime's specialisation would note
    attrs = {(fn.arg_names.index(p),): [["tt.divisibility", 16]] for p in spec["pointers"]}
    row = dict(kernel=spec["kernel"], dtype=spec["dtype"], config=config_label(spec, cfg), ok=False,
               shared_bytes=None, registers=None, spill_bytes=None, compile_s=None, error=None,
               tensor_core_ops=None, async_copies=None, problems=[])  # fmt: skip
    log = io.StringIO()
    t0 = time.perf_counter()
    try:
        triton.knobs.nvidia.dump_ptxas_log = True
        with contextlib.redirect_stdout(log):
            kernel = triton.compile(
                ASTSource(fn, signature, const, attrs),
                target=GPUTarget("cuda", arch, 64),
                options={"num_warps": cfg.num_warps, "num_stages": cfg.num_stages},
            )
    except Exception as e:  # noqa: BLE001 - every failure is a row
        row["compile_s"] = round(time.perf_counter() - t0, 2)
        msg = " ".join(str(e).split())
        row["error"] = f"{type(e).__name__}: {msg[:400]}"
        row["problems"].append("compile error")
        return row
    row["compile_s"] = round(time.perf_counter() - t0, 2)
    ptx = kernel.asm["ptx"]
    row["_ptx"] = ptx
    row["shared_bytes"] = int(kernel.metadata.shared)
    row["registers"], row["spill_bytes"] = parse_ptxas(log.getvalue())
    row["tensor_core_ops"] = len(re.findall(r"\bwgmma\.mma_async|\bmma\.sync", ptx))
    row["async_copies"] = len(re.findall(r"\bcp\.async\.(?:ca|cg)\b|\bcp\.async\.bulk\.tensor", ptx))
    row["ok"] = True
    if row["spill_bytes"] is None or row["registers"] is None:
        row["problems"].append("no ptxas -v report")
    elif row["spill_bytes"] > 0:
        row["problems"].append(f"spills {row['spill_bytes']} B")
    if row["shared_bytes"] > SHARED_LIMIT.get(arch, 99 * 1024):
        row["problems"].append(f"shared {row['shared_bytes']} B > {SHARED_LIMIT.get(arch, 99 * 1024)} B")
    return row


def ptx_body(ptx: str) -> str:
    """The PTX without comments and file/loc debug lines: equal bodies mean the same kernel."""
    lines = (ln for ln in ptx.splitlines() if not ln.lstrip().startswith(("//", ".loc", ".file")))
    return "\n".join(lines)


def table(rows: list[dict]) -> str:
    """The rows as a fixed-width text table."""
    head = (f"{'kernel':<13} {'dtype':<7} {'config':<46} {'ok':<4} {'smem B':>7} {'regs':>4} {'spill':>5} "
            f"{'tc ops':>6} {'cp.async':>8} {'s':>5}  problems")  # fmt: skip
    out = [head, "-" * len(head)]
    fmt = lambda v: "-" if v is None else str(v)  # noqa: E731
    for r in rows:
        out.append(f"{r['kernel']:<13} {r['dtype']:<7} {r['config']:<46} {'ok' if r['ok'] else 'FAIL':<4} "
                   f"{fmt(r['shared_bytes']):>7} {fmt(r['registers']):>4} {fmt(r['spill_bytes']):>5} "
                   f"{fmt(r['tensor_core_ops']):>6} {fmt(r['async_copies']):>8} {fmt(r['compile_s']):>5}  "
                   f"{'; '.join(r['problems'])}{(' ' + r['error']) if r['error'] else ''}".rstrip())  # fmt: skip
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = ArgParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", type=int, default=90, choices=sorted(SHARED_LIMIT), help="compute capability (default 90: Hopper)")
    ap.add_argument("--json", type=Path, help="write the rows as JSON here")
    ap.add_argument("--ptx", type=Path, help="also write each kernel's PTX into this folder")
    ap.add_argument("--only", nargs="+", metavar="KERNEL", help="compile only these kernels (e.g. conv_mid)")
    args = ap.parse_args(argv)
    ap.check_output(args.json)
    ap.check_output(args.ptx, folder=True)

    from tqdm import tqdm

    jobs = [(s, c) for s in specs() if not args.only or s["kernel"] in args.only for c in s["configs"]]
    if not jobs:
        ap.error(f"--only {' '.join(args.only)}: no such kernel")
    rows, seen = [], {}
    for spec, cfg in tqdm(jobs, desc=f"compile sm_{args.arch}", unit="kernel", file=sys.stderr):
        row = compile_one(spec, cfg, args.arch)
        ptx = row.pop("_ptx", None)
        if ptx is not None:
            digest = hashlib.sha256(ptx_body(ptx).encode()).hexdigest()
            twin = seen.setdefault((row["kernel"], row["dtype"], digest), row["config"])
            if twin != row["config"]:
                row["problems"].append(f"same PTX as {twin}")
            if args.ptx:
                args.ptx.mkdir(parents=True, exist_ok=True)
                name = re.sub(r"[^A-Za-z0-9_.=-]+", "_", f"{row['kernel']}-{row['dtype']}-{row['config']}")
                (args.ptx / f"{name}.ptx").write_text(ptx)
        rows.append(row)

    bad = [r for r in rows if r["problems"]]
    total = sum(r["compile_s"] or 0 for r in rows)
    summary = (f"{len(rows)} kernels compiled for sm_{args.arch} with triton {triton.__version__} in {total:.1f} s "
               f"(slowest {max(r['compile_s'] or 0 for r in rows):.1f} s); {len(bad)} with problems")  # fmt: skip
    print(table(rows))
    print(f"\n{summary}")
    if args.json:
        from vdsr.atomic import atomic_path, write_json

        write_json(args.json, rows)
        with atomic_path(args.json.with_suffix(".md")) as tmp:
            tmp.write_text(f"# Ahead-of-time compile: sm_{args.arch}, triton {triton.__version__}\n\n"
                           f"`python launch/compile_kernels.py --arch {args.arch} --json {args.json}` on the CPU "
                           f"(no GPU). {summary}.\n\n```\n{table(rows)}\n```\n")  # fmt: skip
        print(f"wrote {args.json} and {args.json.with_suffix('.md')}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
