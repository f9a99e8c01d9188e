"""The ``vdsr`` command.

    vdsr eval [--data DIR ...] [--scales 2 3 4] [--method bicubic|vdsr] [--checkpoint FILE]
              [--json FILE] [--device cpu|cuda] [--backend torch|triton] [--save-images DIR]
              [--skip-bad] [--per-image] [--quantize-y]

Bad input ends the command with one line, ``vdsr <command>: error: <file>: <problem>``, and
exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

import torch

from .errors import InputError

__all__ = ["main", "DEFAULT_WEIGHTS"]

#: The model shipped in the repository (see the README for how it was trained).
DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "vdsr20_x234.safetensors"


def _device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {name}: CUDA is not available on this machine")
    return torch.device(name)


def _load_model(checkpoint: str | None, device: torch.device, backend: str = "torch"):
    from .checkpoint import load_weights

    path = Path(checkpoint) if checkpoint else DEFAULT_WEIGHTS
    if checkpoint is None and not path.is_file():
        raise InputError(
            f"{path}: no shipped model yet; pass --checkpoint FILE (a .safetensors written by launch/train.py)"
        )
    model = load_weights(path, device)
    if backend == "triton":
        if device.type == "cpu" and "kernels.conv" not in sys.modules:
            # Triton runs on the CPU only in its interpreter, which must be chosen before import.
            os.environ.setdefault("TRITON_INTERPRET", "1")
            warnings.warn("--backend triton on the CPU runs the Triton interpreter: correct but slow")
        model.backend = "triton"
    return model


def cmd_eval(args: argparse.Namespace) -> int:
    from .atomic import write_json
    from .demo import demo_files
    from .evaluate import Dataset, check_scales, evaluate, open_dataset, vdsr_method

    scales = check_scales(args.scales)
    device = _device(args.device)
    if args.data:
        datasets = [open_dataset(d) for d in args.data]
        names = [d.name for d in datasets]
        if len(set(names)) != len(names):
            raise InputError(f"--data: two folders share a basename ({', '.join(names)}); results are keyed by it")
    else:
        datasets = [Dataset("skimage", demo_files())]
        print("no --data given: evaluating the scikit-image sample photos", file=sys.stderr)
    method = None
    if args.method == "vdsr":
        model = _load_model(args.checkpoint, device, args.backend)
        method = vdsr_method(model)
    elif args.checkpoint:
        raise InputError("--checkpoint is only used with --method vdsr")
    report = evaluate(
        datasets,
        scales,
        method,
        args.method,
        device,
        save_images=args.save_images,
        skip_bad=args.skip_bad,
        quantize_y=args.quantize_y,
    )
    print(report.table(per_image=args.per_image))
    if args.json:
        write_json(args.json, report.summary())
        print(f"wrote {args.json}", file=sys.stderr)
    if args.save_images:
        print(f"wrote SR images under {args.save_images}/", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vdsr", description="VDSR super-resolution: evaluate, upscale.")
    sub = parser.add_subparsers(dest="command", required=True)

    ev = sub.add_parser(
        "eval",
        help="PSNR/SSIM under the standard protocol (mod-crop, Y, MATLAB bicubic, shave)",
        description="Evaluate bicubic or VDSR on folders of HR images under the standard protocol.",
    )
    ev.add_argument("--data", nargs="+", metavar="DIR", help="dataset folders (default: scikit-image sample photos)")
    ev.add_argument("--scales", nargs="+", type=int, default=[2, 3, 4], metavar="S", help="integer scales (default 2 3 4)")
    ev.add_argument("--method", choices=["bicubic", "vdsr"], default="bicubic")
    ev.add_argument("--checkpoint", metavar="FILE", help="VDSR weights (.safetensors); default: the shipped model")
    ev.add_argument("--json", metavar="FILE", help="write {dataset: {scale: {psnr, ssim, images}}} here")
    ev.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    ev.add_argument(
        "--backend",
        choices=["torch", "triton"],
        default="torch",
        help="VDSR forward: PyTorch reference or the fused Triton kernels (the protocol's resize stays float64)",
    )
    ev.add_argument("--save-images", metavar="DIR", help="write the SR images as colour PNG under DIR/<dataset>/x<s>/")
    ev.add_argument("--skip-bad", action="store_true", help="skip unreadable or too-small images (named and counted)")
    ev.add_argument("--per-image", action="store_true", help="also print every image's PSNR/SSIM")
    ev.add_argument(
        "--quantize-y",
        action="store_true",
        help="round Y to 8 bits before resizing, as Kim et al.'s MATLAB script (gives the commonly quoted SSIMs)",
    )
    ev.set_defaults(func=cmd_eval)
    return parser


def _warning_line(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.formatwarning = _warning_line
    try:
        return args.func(args)
    except InputError as e:
        print(f"vdsr {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vdsr {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
