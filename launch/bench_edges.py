"""How much of a model's test PSNR is made near the image edges? The protocol, an inner crop, and mirrored context.

    python launch/bench_edges.py --weights A.safetensors B.safetensors ... [--band 24]
        [--json benchmarks/edges-cpu.json]

For every weights file, test folder (default Set5 and Set14) and scale it gives three mean PSNRs
(dB, float32 forward):

* ``protocol``: the standard evaluation (``vdsr eval``: shave s pixels);
* ``inner``: the same outputs, shaved by ``--band`` pixels instead (VDSR-20's receptive field
  reaches 20 pixels): the pixels whose computation never meets the image edge;
* ``mirrored``: the network run on the bicubic image mirrored ``--band`` pixels beyond every edge
  (``torch.nn.functional.pad(mode="reflect")``), cropped back, shaved s: the edge pixels
  computed with context instead of the network's zero padding.

Set beside another model, ``protocol`` minus ``inner`` says whether a gap lives near the edges,
and ``mirrored`` minus ``protocol`` whether it is the edge itself (the zero padding, the bicubic's
edge rule) or the content that happens to lie there. On the 2-core Xeon about 40 s a model.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "launch"))

from bench_fit import provenance  # noqa: E402

from vdsr.atomic import write_json  # noqa: E402
from vdsr.checkpoint import file_sha256, load_weights  # noqa: E402
from vdsr.cliargs import ArgParser, number  # noqa: E402
from vdsr.evaluate import degrade, luma, modcrop, open_dataset, quantize, to_unit  # noqa: E402
from vdsr.images import read_image  # noqa: E402
from vdsr.metrics import psnr  # noqa: E402

SHARED = REPO.parent / "shared" / "data"


@torch.inference_mode()
def edge_psnrs(model: torch.nn.Module, folder: str, scale: int, band: int) -> dict:
    """Mean PSNR over the folder's images: the protocol's, inside ``band``, with mirrored context."""
    rows = []
    for path in open_dataset(folder).files:
        y = luma(to_unit(modcrop(read_image(path), scale)))[None]  # 1 x 1 x H x W, float64
        bic = degrade(y, scale)
        gt = quantize(y)[0, 0]
        out = quantize(model(bic.float()).double().clamp(0, 1))[0, 0]
        ctx = F.pad(bic.float(), (band,) * 4, mode="reflect")
        mirrored = quantize(model(ctx)[..., band:-band, band:-band].double().clamp(0, 1))[0, 0]
        rows.append((psnr(gt, out, shave=scale), psnr(gt, out, shave=band), psnr(gt, mirrored, shave=scale)))
    m = np.mean(rows, axis=0)
    return {"protocol": round(float(m[0]), 4), "inner": round(float(m[1]), 4), "mirrored": round(float(m[2]), 4)}


def main() -> int:
    ap = ArgParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", nargs="+", required=True, help="safetensors weights files")
    ap.add_argument("--data", nargs="+", default=[str(SHARED / "Set5"), str(SHARED / "Set14")])
    ap.add_argument("--scales", type=number(int, 2), nargs="+", default=[2, 3, 4])
    ap.add_argument("--band", type=number(int, 1), default=24, help="inner shave and mirrored margin (pixels)")
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args()
    t0 = time.perf_counter()

    rows = []
    bar = tqdm(total=len(args.weights) * len(args.data) * len(args.scales), unit="set", desc="edges")
    for w in args.weights:
        path = Path(w).resolve()
        model = load_weights(path).float().eval()
        name = str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(w)
        sets = {}
        for d in args.data:
            sets[Path(d).name] = {}
            for s in args.scales:
                sets[Path(d).name][str(s)] = edge_psnrs(model, d, s, args.band)
                bar.update(1)
        rows.append({"weights": name, "sha256": file_sha256(path), "sets": sets})
    bar.close()

    print(f"{'weights':40s} {'set':6s} {'scale':>5s} {'protocol':>9s} {'inner':>8s} {'mirrored':>9s}")
    for r in rows:
        for name, by_scale in r["sets"].items():
            for s, v in by_scale.items():
                print(f"{r['weights'][-40:]:40s} {name:6s} {'x' + s:>5s} {v['protocol']:9.3f} {v['inner']:8.3f} {v['mirrored']:9.3f}")
    if args.json:
        write_json(args.json, {
            "what": "mean PSNR (dB) by the protocol (shave s), inside a band (shave band) and with mirrored context "
                    "(launch/bench_edges.py)",
            **provenance(t0), "band": args.band, "scales": args.scales, "rows": rows,
        })  # fmt: skip
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
