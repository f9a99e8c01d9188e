"""Did a run that started from weights beat them? Both evaluated as `vdsr eval` does, side by side.

    python launch/cycle_report.py RUN_DIR --json benchmarks/NAME-<device>.json
        [--data ../shared/data/Set5 ../shared/data/Set14] [--scales 2 3 4]

``RUN_DIR`` is a finished run of ``launch/train.py`` that started from ``init_weights`` (a warm
restart, a fine-tuning; e.g. ``--config warm-restart`` or ``--config adam-finetune``). Its
``config.json`` names the weights file and the sha256 it had when the run started; its
``summary.json`` and ``history.json`` give the steps, the time and the validation curve.

Both models (the run's ``model.safetensors`` and the file it started from) are evaluated with
`vdsr eval`'s code in float32. Prints a table; writes JSON (the schedule, steps, patch-steps,
training seconds, the validation curve, both evaluations, run minus start per cell, whether the
run is better in every cell, and the run minus the best public VDSR-20 of each cell: the
authors' model as measured in ``weights/official-eval.json`` or pytorch-vdsr's, issue 12's
goal) and copies the run's ``curves.png`` beside it.

Refused with one line naming the file: a run with no init weights, an unfinished run (no
``summary.json``), or an init file whose sha256 is no longer the one recorded (the file was
replaced since the run started: the run is compared with what it started from, or not at all).
"""

from __future__ import annotations

import json
import platform
import shutil
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "launch"))

from results_table import PYTORCH_VDSR  # noqa: E402
from train import metric  # noqa: E402
from vdsr.atomic import atomic_path, write_json  # noqa: E402
from vdsr.checkpoint import file_sha256  # noqa: E402
from vdsr.cliargs import ArgParser, number  # noqa: E402
from vdsr.errors import InputError  # noqa: E402
from vdsr.evaluate import check_scales, evaluate, open_dataset, vdsr_method  # noqa: E402
from vdsr.upscale import load_pretrained  # noqa: E402

OFFICIAL = REPO / "weights" / "official-eval.json"
SCHEDULE_KEYS = ("optimizer", "lr", "lr_step_epochs", "lr_gamma", "epochs", "patches_per_epoch", "batch_size",
                 "clip", "clip_theta", "weight_decay", "seed", "bf16")  # fmt: skip


def read_run(run: Path) -> tuple[dict, dict, dict, Path]:
    """config, summary, history of a finished warm-started run, and the weights it started from."""
    for name in ("config.json", "summary.json", "history.json", "model.safetensors"):
        if not (run / name).is_file():
            raise InputError(f"{run / name}: missing (not a finished run of launch/train.py)")
    config = json.loads((run / "config.json").read_text())
    if not config.get("init_weights"):
        raise InputError(f"{run / 'config.json'}: the run did not start from weights (init_weights is empty)")
    init = Path(config["init_weights"])  # as given: from the working directory, else the repository
    init = REPO / init if not init.is_absolute() and not init.is_file() else init
    if not init.is_file():
        raise InputError(f"{init}: the weights the run started from are missing")
    if file_sha256(init) != config.get("init_sha256"):
        raise InputError(f"{init}: sha256 differs from the one the run recorded at its start (the file was replaced since)")
    return config, json.loads((run / "summary.json").read_text()), json.loads((run / "history.json").read_text()), init


def best_public() -> dict:
    """{dataset: {scale: PSNR}}: the better of the authors' model (measured) and pytorch-vdsr."""
    official = json.loads(OFFICIAL.read_text())
    return {ds: {s: max(official.get(ds, {}).get(s, {}).get("psnr", -1.0), v) for s, v in by.items()}
            for ds, by in PYTORCH_VDSR.items()}  # fmt: skip


def psnr(model, datasets, scales, device) -> dict:
    return metric(evaluate(datasets, scales, vdsr_method(model), "vdsr", device, progress=True).summary(), "psnr")


def diff(a: dict, b: dict) -> dict:
    return {ds: {s: round(v - b[ds][s], 4) for s, v in by.items() if s in b.get(ds, {})} for ds, by in a.items() if ds in b}


def main(argv=None) -> int:
    ap = ArgParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="the run folder (launch/train.py --output-dir)")
    ap.add_argument("--json", required=True, help="where to write the record (and its .png)")
    ap.add_argument("--data", nargs="+", default=[str(REPO.parent / "shared" / "data" / n) for n in ("Set5", "Set14")])
    ap.add_argument("--scales", nargs="+", type=number(int, 2, 16), default=[2, 3, 4])
    args = ap.parse_args(argv)
    ap.check_output(args.json)
    run = Path(args.run)
    try:
        config, summary, history, init = read_run(run)
        datasets = [open_dataset(d) for d in args.data]
        scales = check_scales(args.scales)
    except InputError as e:
        ap.exit(2, f"{ap.prog}: error: {e}\n")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    end = psnr(load_pretrained(run, device), datasets, scales, device)
    start = psnr(load_pretrained(init, device), datasets, scales, device)
    gain, goal = diff(end, start), best_public()
    better = all(v > 0 for by in gain.values() for v in by.values())
    for ds, by in end.items():
        for s, v in by.items():
            print(f"{ds} x{s}: run {v:.3f}  start {start[ds][s]:.3f}  ({gain[ds][s]:+.3f})")
    print(f"better in every cell: {'yes' if better else 'no'}")
    json_path = Path(args.json)
    write_json(json_path, {
        "what": f"{run.name}: a run started from {config['init_weights']}; vdsr eval (float32) of its end against its start",
        "command": f"python launch/train.py --output-dir {run} ...; python launch/cycle_report.py {run} --json {args.json}",
        "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "init_weights": config["init_weights"], "init_sha256": config["init_sha256"],
        "schedule": {k: config.get(k) for k in SCHEDULE_KEYS},
        "steps": summary["steps"], "patch_steps": summary["patches_seen"],
        "training_seconds": summary["seconds"], "patches_per_s": summary["patches_per_s"],
        "validation": history["val"],
        "eval_run_end": end, "eval_start": start, "run_minus_start": gain, "better_in_every_cell": better,
        "best_public": goal, "run_minus_best_public": diff(end, goal),
    })  # fmt: skip
    if (run / "curves.png").is_file():
        with atomic_path(json_path.with_suffix(".png"), suffix=".png") as tmp:
            shutil.copyfile(run / "curves.png", tmp)
    print(f"wrote {json_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
