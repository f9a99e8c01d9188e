"""Write the README's results table from `vdsr eval --json` files.

    python scripts/results_table.py                      # print the table
    python scripts/results_table.py --write README.md    # replace it between the table markers

Inputs (both written by `vdsr eval ... --json FILE`, shape {dataset: {scale: {psnr, ssim, images}}}):
  --model    weights/vdsr20_x234-eval.json   (`--method vdsr`, the shipped weights)
  --bicubic  weights/bicubic-eval.json       (`--method bicubic`)
The paper's column is Kim et al., CVPR 2016, Table 2 (PSNR / SSIM).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- table:start -->", "<!-- table:end -->"

# Kim et al. (CVPR 2016), Table 2: VDSR PSNR (dB) / SSIM.
PAPER = {
    "Set5": {"2": (37.53, 0.9587), "3": (33.66, 0.9213), "4": (31.35, 0.8838)},
    "Set14": {"2": (33.03, 0.9124), "3": (29.77, 0.8314), "4": (28.01, 0.7674)},
}


def table(model: dict, bicubic: dict) -> str:
    """Markdown rows: dataset | scale | bicubic | shipped | gain | paper | vs paper."""
    rows = [
        "| dataset | scale | bicubic | shipped VDSR-20 | gain | VDSR, paper | vs paper |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, scales in model.items():
        for scale, cell in scales.items():
            bic = bicubic[name][scale]["psnr"]
            paper = PAPER.get(name, {}).get(scale)
            paper_cells = f"{paper[0]:.2f} / {paper[1]:.4f} | {cell['psnr'] - paper[0]:+.2f}" if paper else "- | -"
            rows.append(
                f"| {name} | x{scale} | {bic:.2f} | **{cell['psnr']:.2f}** / {cell['ssim']:.4f} "
                f"| {cell['psnr'] - bic:+.2f} | {paper_cells} |"
            )
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=ROOT / "weights/vdsr20_x234-eval.json", type=Path)
    ap.add_argument("--bicubic", default=ROOT / "weights/bicubic-eval.json", type=Path)
    ap.add_argument("--write", metavar="README", type=Path, help="replace the table between the markers")
    args = ap.parse_args()
    try:
        model = json.loads(args.model.read_text())
        bicubic = json.loads(args.bicubic.read_text())
        text = table(model, bicubic)
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
