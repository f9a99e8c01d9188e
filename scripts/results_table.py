"""Write the README's results table from `vdsr eval --json` files.

    python scripts/results_table.py                      # print the table
    python scripts/results_table.py --write README.md    # replace it between the table markers

Inputs (written by `vdsr eval ... --json FILE`, shape {dataset: {scale: {psnr, ssim, images}}}):
  --model    weights/vdsr20_x234-eval.json   (`--method vdsr`, the shipped weights)
  --bicubic  weights/bicubic-eval.json       (`--method bicubic`)
  --official weights/official-eval.json      (`--method vdsr` on the authors' released model,
                                              converted by `vdsr import VDSR_Official.mat`;
                                              the public-model columns; `--official none`
                                              leaves them out)
The pytorch-vdsr column (twtygqyy/pytorch-vdsr, model_epoch_50.pth) was measured with this
project's `vdsr eval` (float32) on its released weights (issue 12); those weights are a pickle,
which this project never loads, so its PSNRs are constants here. The paper's column is Kim et
al., CVPR 2016, Table 2 (PSNR / SSIM). The last column is the shipped model minus the best
public VDSR-20 of the row (the authors' or pytorch-vdsr's).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vdsr.cliargs import ArgParser  # noqa: E402
START, END = "<!-- table:start -->", "<!-- table:end -->"

# Kim et al. (CVPR 2016), Table 2: VDSR PSNR (dB) / SSIM.
PAPER = {
    "Set5": {"2": (37.53, 0.9587), "3": (33.66, 0.9213), "4": (31.35, 0.8838)},
    "Set14": {"2": (33.03, 0.9124), "3": (29.77, 0.8314), "4": (28.01, 0.7674)},
}


# twtygqyy/pytorch-vdsr model_epoch_50.pth under this project's `vdsr eval` (PSNR dB; issue 12).
PYTORCH_VDSR = {"Set5": {"2": 37.57, "3": 33.74, "4": 31.44}, "Set14": {"2": 33.04, "3": 29.84, "4": 28.08}}


def table(model: dict, bicubic: dict, official: dict | None = None) -> str:
    """Markdown rows: dataset | scale | bicubic | shipped | gain | [authors' model | pytorch-vdsr |
    shipped - best public] | paper | vs paper."""
    public = official is not None
    head = "| dataset | scale | bicubic | shipped VDSR-20 | gain |"
    head += " authors' model (measured) | pytorch-vdsr (measured) | vs best public |" if public else ""
    head += " VDSR, paper | vs paper |"
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, scales in model.items():
        for scale, cell in scales.items():
            bic = bicubic[name][scale]["psnr"]
            row = f"| {name} | x{scale} | {bic:.2f} | **{cell['psnr']:.2f}** / {cell['ssim']:.4f} | {cell['psnr'] - bic:+.2f} |"
            if public:
                off = official.get(name, {}).get(scale)
                ptv = PYTORCH_VDSR.get(name, {}).get(scale)
                best = max([v for v in (off and off["psnr"], ptv) if v is not None], default=None)
                row += f" {off['psnr']:.2f} / {off['ssim']:.4f} |" if off else " - |"
                row += f" {ptv:.2f} |" if ptv is not None else " - |"
                row += f" {cell['psnr'] - best:+.2f} |" if best is not None else " - |"
            paper = PAPER.get(name, {}).get(scale)
            row += f" {paper[0]:.2f} / {paper[1]:.4f} | {cell['psnr'] - paper[0]:+.2f} |" if paper else " - | - |"
            rows.append(row)
    return "\n".join(rows)


def main() -> int:
    ap = ArgParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=ROOT / "weights/vdsr20_x234-eval.json", type=Path)
    ap.add_argument("--bicubic", default=ROOT / "weights/bicubic-eval.json", type=Path)
    ap.add_argument("--official", default=str(ROOT / "weights/official-eval.json"),
                    help="eval JSON of the authors' model (the public-model columns); none: leave them out")
    ap.add_argument("--write", metavar="README", type=Path, help="replace the table between the markers")
    args = ap.parse_args()
    try:
        model = json.loads(args.model.read_text())
        bicubic = json.loads(args.bicubic.read_text())
        official = None if args.official == "none" else json.loads(Path(args.official).read_text())
        text = table(model, bicubic, official)
    except (OSError, ValueError, KeyError) as err:
        print(f"results_table: error: {err}", file=sys.stderr)
        return 2
    if not args.write:
        print(text)
        return 0
    readme = args.write.read_text()
    if readme.count(START) != 1 or readme.count(END) != 1:
        print(f"results_table: error: {args.write}: needs one {START} and one {END}", file=sys.stderr)
        return 2
    head, rest = readme.split(START)
    _, tail = rest.split(END)
    tmp = args.write.with_name(args.write.name + ".tmp")
    tmp.write_text(f"{head}{START}\n{text}\n{END}{tail}")
    os.replace(tmp, args.write)
    print(f"wrote the table into {args.write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
