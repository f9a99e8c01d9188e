"""Are bf16 gradients good enough at the end of training? bf16 and TF32 vs float32 gradients at given weights.

    python launch/bench_grad_precision.py [--weights W.safetensors ... | he] [--batches 16]
        [--json benchmarks/grad-precision-cpu.json]

Training's loss gradient (``sse_mean``; the paper's patches: batches of 64 of 41 x 41 at scales
2/3/4 with flips and rotations, drawn from ``--data``) is computed on each of ``--batches``
batches three ways:

* ``fp32``: float32 throughout (the reference);
* ``bf16``: under bfloat16 autocast, channels_last, as ``launch/train.py`` trains with ``bf16``;
* ``tf32``: TF32 emulated, as cuDNN runs float32 convs with TF32 on (``tf32: true``): every
  conv's two operands rounded to TF32 (10-bit mantissa, to nearest even) in the forward and in
  both backward products (input and weight gradients), float32 sums and activations.

Per weights file and precision it reports, over all parameters:

* ``batch_noise``: ``|g_b - gbar| / |gbar|``, the mean over batches of how far one batch's float32
  gradient is from the mean over the batches (``gbar``): the noise SGD already lives with;
* ``error``: ``|g_b - g32_b| / |g32_b|``, the mean over batches, and the ``cosine`` of the two;
* ``bias``: ``|mean_b(g_b - g32_b)| / |gbar|``, the part of the error that does not average out
  over batches, beside ``mean_noise`` (``batch_noise / sqrt(batches)``: how much of ``gbar`` is
  itself noise). A bias well below the noise is invisible to SGD; one as large as ``gbar`` is a
  floor below which a run in that precision cannot train;
* ``loss_rel``: ``(loss - loss32) / loss32``, the mean over batches;
* ``error`` layer by layer (weight and bias together).

``he`` stands for a freshly initialised VDSR-20 (the start of training), for contrast with a
trained model. The same batches are used for every weights file. Prints a table; writes JSON.
On a 2-core AVX2 CPU (bf16 emulated) a batch of 64 takes about 6 s in float32, 9 s in TF32 and
55 s in bf16.
"""

from __future__ import annotations

import math
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from vdsr.atomic import write_json  # noqa: E402
from vdsr.checkpoint import file_sha256, load_weights  # noqa: E402
from vdsr.cliargs import ArgParser, number  # noqa: E402
from vdsr.data import PatchLoader, PatchSampler, crop_size, load_store  # noqa: E402
from vdsr.model import VDSR  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
PRECISIONS = ("bf16", "tf32")


def round_tf32(t: torch.Tensor) -> torch.Tensor:
    """float32 -> the nearest TF32 value (10-bit mantissa, ties to even), still float32."""
    bits = t.contiguous().view(torch.int32)
    bits = (bits + 0xFFF + ((bits >> 13) & 1)) & ~0x1FFF
    return bits.view(torch.float32)


def round_bf16(t: torch.Tensor) -> torch.Tensor:
    """float32 -> the nearest bfloat16 value (ties to even), still float32."""
    return t.bfloat16().float()


class RoundedConv(torch.autograd.Function):
    """3x3 conv (padding 1) with its operands rounded by ``rnd`` and float32 sums, in both
    directions (the forward, and the input- and weight-gradient products of the backward).

    ``rounds_results=False`` is TF32 as cuDNN does it (``round_tf32``: float32 bias, outputs and
    gradients); ``True`` is a GPU's bf16 autocast in float32 arithmetic (``round_bf16``: the bias
    and every product's result rounded too), about 6x faster than the CPU's own bf16 autocast
    where it has no bf16 instructions (``--bf16 emulated``)."""

    @staticmethod
    def forward(ctx, x, w, b, rnd, rounds_results):
        xr, wr = rnd(x), rnd(w)
        ctx.save_for_backward(xr, wr)
        ctx.rnd, ctx.rounds_results = rnd, rounds_results
        out = F.conv2d(xr, wr, rnd(b) if rounds_results else b, padding=1)
        return rnd(out) if rounds_results else out

    @staticmethod
    def backward(ctx, g):
        xr, wr = ctx.saved_tensors
        grads = torch.ops.aten.convolution_backward(
            ctx.rnd(g), xr, wr, [wr.shape[0]], [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [True, True, True]
        )
        return (*(ctx.rnd(t) if ctx.rounds_results else t for t in grads), None, None)


def forward(model: VDSR, x: torch.Tensor, precision: str, bf16: str = "autocast") -> torch.Tensor:
    if precision == "tf32" or (precision == "bf16" and bf16 == "emulated"):
        rounding = (round_tf32, False) if precision == "tf32" else (round_bf16, True)
        h = x
        for layer in model.layers[:-1]:
            h = F.relu(RoundedConv.apply(h, layer.weight, layer.bias, *rounding))
        return x + RoundedConv.apply(h, model.layers[-1].weight, model.layers[-1].bias, *rounding)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        return model(x.contiguous(memory_format=torch.channels_last))


def gradient(model: VDSR, lr: torch.Tensor, hr: torch.Tensor, precision: str, bf16: str = "autocast") -> tuple[torch.Tensor, float]:
    """The flat float32 gradient of train.py's ``sse_mean`` loss on one batch, and the loss."""
    model.zero_grad(set_to_none=True)
    out = forward(model, lr, precision, bf16)
    loss = 0.5 * (out.float() - hr).pow(2).flatten(1).sum(1).mean()
    loss.backward()
    return torch.cat([p.grad.float().flatten() for p in model.parameters()]), loss.item()


def compare(g32: torch.Tensor, gbar: torch.Tensor, l32: list, g: torch.Tensor, losses: list, sizes: list) -> dict:
    """The error of ``g`` (batches x parameters) against the float32 gradients ``g32`` (mean
    ``gbar``); ``sizes``: the parameters of each layer, for the errors layer by layer."""
    return {
        "error": round(float(((g - g32).norm(dim=1) / g32.norm(dim=1)).mean()), 4),
        "cosine": round(float(F.cosine_similarity(g, g32, dim=1).mean()), 5),
        "bias": round(float((g - g32).mean(0).norm() / gbar.norm()), 4),
        "loss_rel": float(f"{sum((a - b) / b for a, b in zip(losses, l32)) / len(l32):.3g}"),
        "layer_error": [round(float(((b - a).norm(dim=1) / a.norm(dim=1)).mean()), 4)
                        for a, b in zip(g32.split(sizes, dim=1), g.split(sizes, dim=1))],  # fmt: skip
    }


def measure(model: VDSR, batches: list, bar: tqdm, bf16: str = "autocast") -> dict:
    grads = {p: [] for p in ("fp32", *PRECISIONS)}
    losses = {p: [] for p in grads}
    for lr, hr in batches:
        for p in grads:
            g, loss = gradient(model, lr, hr, p, bf16)
            grads[p].append(g.double())
            losses[p].append(loss)
            bar.update(1)
    g32 = torch.stack(grads["fp32"])
    gbar = g32.mean(0)
    noise = float(((g32 - gbar).norm(dim=1) / gbar.norm()).mean())
    sizes = [c.weight.numel() + c.bias.numel() for c in model.layers]
    return {
        "batch_noise": round(noise, 4),
        "mean_noise": round(noise / math.sqrt(len(batches)), 4),
        "layer_batch_noise": [round(float(((a - a.mean(0)).norm(dim=1) / a.mean(0).norm()).mean()), 4)
                              for a in g32.split(sizes, dim=1)],  # fmt: skip
        "loss32": float(f"{sum(losses['fp32']) / len(batches):.5g}"),
        "grad_norm": float(f"{float(gbar.norm()):.4g}"),
        **{p: compare(g32, gbar, losses["fp32"], torch.stack(grads[p]), losses[p], sizes) for p in PRECISIONS},
    }


def main() -> int:
    ap = ArgParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", nargs="+", default=["he", str(REPO / "weights" / "vdsr20_x234.safetensors")],
                    help="safetensors weights files, or 'he' (a fresh VDSR-20)")  # fmt: skip
    ap.add_argument("--data", nargs="+", default=[str(SHARED / "T91"), str(SHARED / "BSD200")])
    ap.add_argument("--batches", type=number(int, 2), default=16)
    ap.add_argument("--batch-size", type=number(int, 1), default=64)
    ap.add_argument("--scales", type=number(int, 2), nargs="+", default=[2, 3, 4])
    ap.add_argument("--seed", type=number(int, 0), default=0)
    ap.add_argument("--bf16", choices=["autocast", "emulated"], default="autocast",
                    help="bf16 as torch's CPU autocast computes it (default), "
                         "or emulated in float32 (RoundedConv; faster)")  # fmt: skip
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args()
    t0 = time.perf_counter()

    store = load_store(args.data, crop_size(args.scales))
    sampler = PatchSampler(store.sizes, args.scales, args.batch_size, "random", args.batch_size * args.batches,
                           rotate=True, seed=args.seed)  # fmt: skip
    batches = [(lr, hr) for lr, hr, _ in PatchLoader(store, sampler, "torch").epoch(0)][: args.batches]

    rows = []
    bar = tqdm(total=(1 + len(PRECISIONS)) * len(batches) * len(args.weights), unit="grad", desc="gradients")
    for w in args.weights:
        if w == "he":
            torch.manual_seed(args.seed)
            model, name, sha = VDSR(), f"he-init (seed {args.seed})", None
        else:
            path = Path(w).resolve()
            model, sha = load_weights(path), file_sha256(path)
            name = str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(w)
        model = model.to(memory_format=torch.channels_last).train()
        rows.append({"weights": name, "sha256": sha, **measure(model, batches, bar, args.bf16)})
    bar.close()

    print(f"{'weights':34s} {'precision':9s} {'batch_noise':>11s} {'error':>7s} {'cosine':>8s} {'bias':>7s} "
          f"{'mean_noise':>10s} {'loss_rel':>9s}")  # fmt: skip
    for r in rows:
        for p in PRECISIONS:
            e = r[p]
            print(f"{r['weights'][-34:]:34s} {p:9s} {r['batch_noise']:11.4f} {e['error']:7.4f} {e['cosine']:8.5f} "
                  f"{e['bias']:7.4f} {r['mean_noise']:10.4f} {e['loss_rel']:9.2g}")  # fmt: skip
    for r in rows:
        for p in PRECISIONS:
            print(f"{p} error by layer, {r['weights'][-34:]}: " + " ".join(f"{x:.2f}" for x in r[p]["layer_error"]))
    if args.json:
        write_json(args.json, {
            "what": "bf16 autocast and (emulated) TF32 vs float32 loss gradients (sse_mean) on the same batches, at given weights",
            "command": "python launch/bench_grad_precision.py " + " ".join(sys.argv[1:]),
            "batches": len(batches), "batch_size": args.batch_size, "bf16": args.bf16, "scales": args.scales, "seed": args.seed,
            "data": [Path(d).name for d in args.data],
            "rows": rows,
            "device": f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)",
            "torch": torch.__version__,
            "wall_seconds": round(time.perf_counter() - t0, 1),
        })  # fmt: skip
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
