"""The ``vdsr`` command.

    vdsr upscale INPUT... --scale S -o OUT [--checkpoint WEIGHTS] [--backend torch|triton]
                 [--device cpu|cuda] [--tile N] [--bf16]
    vdsr compare IMAGE --scale S -o FIGURE.png [--checkpoint WEIGHTS] [--device cpu|cuda]
    vdsr import MODEL.mat -o OUT.safetensors
    vdsr eval [--data DIR ...] [--scales 2 3 4] [--method bicubic|vdsr] [--checkpoint WEIGHTS]
              [--json FILE] [--device cpu|cuda] [--backend torch|triton] [--bf16]
              [--save-images DIR] [--skip-bad] [--per-image] [--quantize-y]

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

from .cliargs import ArgParser, check_device, check_writable, number
from .errors import InputError

__all__ = ["main"]

_device = check_device


def _load_model(checkpoint: str | None, device: torch.device, backend: str = "torch", self_ensemble: bool = False):
    """The weights for inference; ``self_ensemble``: wrapped in :class:`vdsr.ensemble.SelfEnsemble`."""
    from .ensemble import SelfEnsemble
    from .upscale import load_pretrained

    if backend == "triton" and device.type == "cpu" and "vdsr_kernels.conv" not in sys.modules:
        # Triton runs on the CPU only in its interpreter, which must be chosen before import.
        os.environ.setdefault("TRITON_INTERPRET", "1")
        warnings.warn("--backend triton on the CPU runs the Triton interpreter: correct but slow")
    model = load_pretrained(checkpoint, device, backend)
    return SelfEnsemble(model) if self_ensemble else model


def _warn_slow_bf16(bf16: bool, device: torch.device) -> None:
    """``--bf16`` on a device that only emulates bfloat16 (e.g. an AVX2 CPU): one warning line."""
    from .precision import slow_bf16_warning

    if bf16 and (line := slow_bf16_warning(device)):
        warnings.warn(f"--bf16: {line}")


def cmd_eval(args: argparse.Namespace) -> int:
    from .atomic import write_json
    from .demo import demo_files
    from .evaluate import Dataset, check_scales, evaluate, open_dataset, vdsr_method

    scales = check_scales(args.scales)
    device = _device(args.device)
    if args.json:
        check_writable(args.json)
    if args.save_images:
        check_writable(args.save_images, folder=True)
    if args.checkpoint and args.method != "vdsr":
        raise InputError("--checkpoint is only used with --method vdsr")
    if args.self_ensemble and args.method != "vdsr":
        raise InputError("--self-ensemble is only used with --method vdsr")
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
        model = _load_model(args.checkpoint, device, args.backend, args.self_ensemble)
        _warn_slow_bf16(args.bf16, device)
        method = vdsr_method(model, bf16=args.bf16)
    report = evaluate(
        datasets,
        scales,
        method,
        args.method + ("+" if args.self_ensemble else ""),
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


def _upscale_jobs(inputs: list[str], out: str) -> tuple[list[tuple[Path, Path]], list[tuple[Path, str]]]:
    """(source, destination) pairs and the skipped non-image files. One input file and an OUT
    with an image suffix: OUT is the file; otherwise OUT is a folder mirroring the inputs."""
    from .images import IMAGE_EXTENSIONS, find_images

    out_path = Path(out)
    sources: list[tuple[Path, Path]] = []  # (file, path relative to the output folder)
    skipped: list[tuple[Path, str]] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found, other = find_images(p)
            sources += [(f, f.relative_to(p)) for f in found]
            skipped += other
        elif p.exists():
            sources.append((p, Path(p.name)))
        else:
            raise InputError(f"{p}: no such file or folder")
    if not sources:
        raise InputError(f"{', '.join(inputs)}: no images found")
    # one input file and an OUT with a suffix (not an existing folder): OUT is the output file
    single = len(sources) == 1 and Path(inputs[0]).is_file() and bool(out_path.suffix) and not out_path.is_dir()
    if len(sources) > 1 and out_path.suffix.lower() in IMAGE_EXTENSIONS and not out_path.is_dir():
        raise InputError(f"-o {out}: {len(sources)} images need an output folder, not a file name")
    if not single:
        check_writable(out_path, folder=True)
    jobs = [(src, out_path if single else out_path / rel) for src, rel in sources]
    inputs_resolved = {src.resolve() for src, _ in jobs}
    first: dict[Path, Path] = {}
    for src, dst in jobs:
        key = dst.resolve()
        if key in inputs_resolved:
            raise InputError(f"{dst}: would overwrite its input; choose another output")
        if key in first:
            raise InputError(f"{dst}: both {first[key]} and {src} would be written there; upscale them separately")
        first[key] = src
        if dst.suffix.lower() not in IMAGE_EXTENSIONS:
            raise InputError(f"{dst}: unknown output format {dst.suffix!r} (use one of {', '.join(IMAGE_EXTENSIONS)})")
        check_writable(dst)
    return jobs, skipped


def cmd_upscale(args: argparse.Namespace) -> int:
    from PIL import Image
    from tqdm import tqdm

    from .resize import output_size
    from .upscale import default_tile, upscale_file

    if args.scale not in (2, 3, 4):
        warnings.warn(f"scale {args.scale:g}: the shipped model was trained on x2, x3 and x4 only")
    device = _device(args.device)
    jobs, skipped = _upscale_jobs(args.inputs, args.output)
    for path, why in skipped:
        print(f"skipped {path}: {why}", file=sys.stderr)
    sizes, largest = [], 0
    for src, _ in jobs:
        try:
            with Image.open(src) as im:
                px = output_size(im.size[0], args.scale) * output_size(im.size[1], args.scale)
        except Exception:  # noqa: BLE001 - reported when the file is processed
            px = 0
        sizes.append(px)
        largest = max(largest, px)
    _check_output_memory(largest, args.scale)
    model = _load_model(args.checkpoint, device, args.backend, args.self_ensemble)
    _warn_slow_bf16(args.bf16, device)
    tile = args.tile or default_tile(device)
    failed = []
    bar = tqdm(total=sum(sizes) / 1e6, unit="MP", desc="upscale", disable=None, file=sys.stderr, bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} MP [{elapsed}<{remaining}, {rate_fmt}] {postfix}")
    for i, (src, dst) in enumerate(jobs):
        bar.set_postfix_str(f"file {i + 1}/{len(jobs)}")
        try:
            size = upscale_file(src, dst, args.scale, model, tile, args.bf16, progress=lambda px: bar.update(px / 1e6))
            print(f"{src} -> {dst} ({size[0]}x{size[1]})")
        except InputError as e:
            failed.append(str(e))
            print(f"vdsr upscale: error: {e}", file=sys.stderr)
        except OSError as e:  # a write failure: this file is lost, the others go on
            failed.append(f"{dst}: cannot write ({e.strerror or e})")
            print(f"vdsr upscale: error: {failed[-1]}", file=sys.stderr)
    bar.close()
    done = len(jobs) - len(failed)
    print(f"{done} of {len(jobs)} images upscaled x{args.scale:g}" + (f"; {len(failed)} failed" if failed else "") + (f"; {len(skipped)} non-image files skipped" if skipped else ""))
    return 1 if failed else 0


def _check_output_memory(pixels: int, scale: float) -> None:
    """The largest output (8-bit RGBA at most, plus its 8-bit input) must fit the memory here."""
    import psutil

    need = pixels * 4 * (1 + 1 / scale**2)
    avail = psutil.virtual_memory().available
    if need > avail:
        raise InputError(
            f"--scale {scale:g}: the largest output ({pixels / 1e6:,.0f} MP) needs about {need / 2**30:,.1f} GiB, "
            f"more than the {avail / 2**30:.1f} GiB available"
        )


def cmd_compare(args: argparse.Namespace) -> int:
    from .figures import check_compare_image, compare_figure

    device = _device(args.device)
    out = Path(args.output)
    if out.suffix.lower() != ".png":
        raise InputError(f"-o {out}: the figure is a PNG; give a .png file name")
    check_writable(out)
    check_compare_image(Path(args.image), args.scale)
    model = _load_model(args.checkpoint, device, self_ensemble=args.self_ensemble)
    info = compare_figure(Path(args.image), int(args.scale), model, Path(args.output))
    print(f"wrote {args.output}: bicubic {info['bicubic_psnr']:.2f} dB, {info['method']} {info['vdsr_psnr']:.2f} dB (Y, x{args.scale})")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from .checkpoint import save_weights
    from .matlab import load_matconvnet

    out = Path(args.output)
    if out.suffix != ".safetensors":
        raise InputError(f"-o {out}: the output must be a .safetensors file")
    if out.resolve() == Path(args.model).resolve():
        raise InputError(f"-o {out}: would overwrite its input")
    check_writable(out)
    model, meta = load_matconvnet(args.model)
    save_weights(out, model, meta)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {out}: VDSR-{model.depth}, {model.channels} channels, {n:,} parameters (from {args.model})")
    return 0


_ENSEMBLE_HELP = "average VDSR over the 8 flips and rotations of its input (8x the time; a test-time option, not how published numbers are measured)"


def build_parser() -> argparse.ArgumentParser:
    parser = ArgParser(prog="vdsr", description="VDSR super-resolution: evaluate, upscale, compare, import.")
    sub = parser.add_subparsers(dest="command", required=True)

    ev = sub.add_parser(
        "eval",
        help="PSNR/SSIM under the standard protocol (mod-crop, Y, MATLAB bicubic, shave)",
        description="Evaluate bicubic or VDSR on folders of HR images under the standard protocol.",
    )
    ev.add_argument("--data", nargs="+", metavar="DIR", help="dataset folders (default: scikit-image sample photos)")
    ev.add_argument("--scales", nargs="+", type=number(int, 2, 16), default=[2, 3, 4], metavar="S", help="integer scales 2..16 (default 2 3 4)")
    ev.add_argument("--method", choices=["bicubic", "vdsr"], default="bicubic")
    ev.add_argument("--checkpoint", metavar="WEIGHTS", help="VDSR weights: a .safetensors file, or a run or training-checkpoint folder holding model.safetensors; default: the shipped model")
    ev.add_argument("--json", metavar="FILE", help="write {dataset: {scale: {psnr, ssim, images}}} here")
    ev.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    ev.add_argument(
        "--backend",
        choices=["torch", "triton"],
        default="torch",
        help="VDSR forward: PyTorch reference or the fused Triton kernels (the protocol's resize stays float64)",
    )
    ev.add_argument("--bf16", action="store_true",
                    help="run VDSR under bfloat16 autocast (default float32; slow where the hardware only emulates it)")
    ev.add_argument("--self-ensemble", action="store_true", help=_ENSEMBLE_HELP)
    ev.add_argument("--save-images", metavar="DIR", help="write the SR images as colour PNG under DIR/<dataset>/x<s>/")
    ev.add_argument("--skip-bad", action="store_true", help="skip unreadable or too-small images (named and counted)")
    ev.add_argument("--per-image", action="store_true", help="also print every image's PSNR/SSIM")
    ev.add_argument(
        "--quantize-y",
        action="store_true",
        help="round Y to 8 bits before resizing, as Kim et al.'s MATLAB script (gives the commonly quoted SSIMs)",
    )
    ev.set_defaults(func=cmd_eval)

    up = sub.add_parser("upscale", help="upscale colour images of any size with VDSR", description="Upscale images (files or folders) with VDSR: Y through the network, CbCr and alpha bicubic.")
    up.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    up.add_argument("--scale", type=number(float, 1, 16), required=True, help="2, 3, 4 (trained) or any other in [1, 16]")
    up.add_argument("-o", "--output", required=True, metavar="OUT", help="a file for one input, else a folder")
    up.add_argument("--checkpoint", metavar="WEIGHTS", help="VDSR weights: a .safetensors file, or a run or training-checkpoint folder holding model.safetensors; default: the shipped model")
    up.add_argument("--backend", choices=["torch", "triton"], default="torch")
    up.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    up.add_argument("--tile", type=number(int, 16, 65536), help="tile side in output pixels, 16..65536 (default: from the memory available)")
    up.add_argument("--self-ensemble", action="store_true", help=_ENSEMBLE_HELP)
    up.add_argument("--bf16", action="store_true",
                    help="run VDSR under bfloat16 autocast (default float32; slow where the hardware only emulates it)")
    up.set_defaults(func=cmd_upscale)

    cp = sub.add_parser("compare", help="figure: bicubic vs VDSR vs ground truth, with a zoomed crop and PSNR")
    cp.add_argument("image", metavar="IMAGE", help="a high-resolution image (the ground truth)")
    cp.add_argument("--scale", type=number(int, 2, 8), default=3, help="integer scale 2..8 (default 3)")
    cp.add_argument("-o", "--output", required=True, metavar="FIGURE", help="PNG to write")
    cp.add_argument("--checkpoint", metavar="WEIGHTS", help="as for upscale")
    cp.add_argument("--device")
    cp.add_argument("--self-ensemble", action="store_true", help=_ENSEMBLE_HELP)
    cp.set_defaults(func=cmd_compare)

    im = sub.add_parser(
        "import",
        help="convert the authors' MATLAB model (VDSR_Official.mat) to a .safetensors weights file",
        description="Read a MatConvNet VDSR model (.mat, struct model.weight/model.bias) into this project's safetensors format.",
    )
    im.add_argument("model", metavar="MODEL.mat", help="MatConvNet model, MATLAB v5/v7 (scipy.io.loadmat)")
    im.add_argument("-o", "--output", required=True, metavar="OUT.safetensors")
    im.set_defaults(func=cmd_import)
    return parser


def _warning_line(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, or a one-line argument error (already printed)
        return e.code if isinstance(e.code, int) else 2
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
