"""Did a run that started from weights beat them? Both evaluated as `vdsr eval` does, side by side.

    python launch/cycle_report.py RUN_DIR --json benchmarks/NAME-<device>.json
        [--data ../shared/data/Set5 ../shared/data/Set14] [--scales 2 3 4] [--ema] [--against WEIGHTS]
    python launch/cycle_report.py --compare A.json B.json [...] -o BOTH.png [--json BOTH.json]

``RUN_DIR`` is a finished run of ``launch/train.py`` that started from ``init_weights`` (a warm
restart, a fine-tuning; e.g. ``--config warm-restart`` or ``--config adam-finetune``). Its
``config.json`` names the weights file and the sha256 it had when the run started; its
``summary.json`` and ``history.json`` give the steps, the time and the validation curve.

Both models (the run's ``model.safetensors``, or with ``--ema`` the moving average of its weights,
``model_ema.safetensors``, and the file it started from) are evaluated with
`vdsr eval`'s code in float32. Prints a table; writes JSON (the schedule, steps, patch-steps,
training seconds, the validation curve, both evaluations, run minus start per cell, whether the
run is better in every cell, and the run minus the best public VDSR-20 of each cell: the
authors' model as measured in ``weights/official-eval.json`` or pytorch-vdsr's, issue 12's
goal) and, beside it as ``.png``, the run's validation PSNR minus its start's, per scale, against
steps (the weights' moving average dashed when the run kept one; the best public model dotted).

Refused with one line naming the file: a run with no init weights (without ``--against``), an
unfinished run (no ``summary.json``), or an init file whose sha256 is no longer the one recorded
(the file was replaced since the run started: the run is compared with what it started from, or
not at all).

``--against WEIGHTS`` sets the run against that file instead of the one it started from: for a
run that was resumed and extended past a model taken from it (``paper-long-cycle-ext`` against
the shipped weights, its own step-237,000 average), or one from scratch against a shipped model.
The record then names the file and its sha256 (``against``, ``against_sha256``); ``eval_start``
and ``run_minus_start`` hold that file's evaluation and the run minus it.

``--compare`` evaluates nothing: it sets records written by this script for runs from the same
start (a pair that differs in one setting, e.g. ``precision-tail`` in bf16 and float32) side by
side. It prints each cell's end per record and each later record minus the first, draws every
record's validation curve (of the weights it evaluated: raw, or the moving average) minus the
start on one figure (``-o``, PNG), and with ``--json`` writes those differences. Records from
different starts (another ``init_sha256``, or for records of ``--against`` another
``against_sha256``) are refused, naming the file.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "launch"))

from results_table import PYTORCH_VDSR  # noqa: E402
from train import lr_at, metric  # noqa: E402
from vdsr.atomic import atomic_path, write_json  # noqa: E402
from vdsr.checkpoint import file_sha256  # noqa: E402
from vdsr.cliargs import ArgParser, number  # noqa: E402
from vdsr.errors import InputError  # noqa: E402
from vdsr.evaluate import check_scales, evaluate, open_dataset, vdsr_method  # noqa: E402
from vdsr.upscale import load_pretrained  # noqa: E402

OFFICIAL = REPO / "weights" / "official-eval.json"
SCHEDULE_KEYS = ("optimizer", "lr", "lr_step_epochs", "lr_gamma", "epochs", "patches_per_epoch", "batch_size",
                 "clip", "clip_theta", "weight_decay", "seed", "bf16")  # fmt: skip


def read_run(run: Path, weights: str = "model.safetensors", against: Path | None = None) -> tuple[dict, dict, dict, Path]:
    """config, summary, history of a finished run, and the weights it is set against: ``against``
    where given, else the ones it started from (then the run must be warm-started); ``weights``:
    the run's file to be compared (``model.safetensors`` or ``model_ema.safetensors``)."""
    for name in ("config.json", "summary.json", "history.json", "model.safetensors"):
        if not (run / name).is_file():
            raise InputError(f"{run / name}: missing (not a finished run of launch/train.py)")
    config = json.loads((run / "config.json").read_text())
    if not (run / weights).is_file():
        raise InputError(f"{run / weights}: missing (the run kept no moving average of its weights: ema_decay {config.get('ema_decay')})")
    summary, history = (json.loads((run / name).read_text()) for name in ("summary.json", "history.json"))
    if against is not None:
        if not against.is_file():
            raise InputError(f"--against {against}: no such weights file")
        return config, summary, history, against
    if not config.get("init_weights"):
        raise InputError(f"{run / 'config.json'}: the run did not start from weights (init_weights is empty)")
    init = Path(config["init_weights"])  # as given: from the working directory, else the repository
    init = REPO / init if not init.is_absolute() and not init.is_file() else init
    if not init.is_file():
        raise InputError(f"{init}: the weights the run started from are missing")
    if file_sha256(init) != config.get("init_sha256"):
        raise InputError(f"{init}: sha256 differs from the one the run recorded at its start (the file was replaced since)")
    return config, summary, history, init


def best_public() -> dict:
    """{dataset: {scale: PSNR}}: the better of the authors' model (measured) and pytorch-vdsr."""
    official = json.loads(OFFICIAL.read_text())
    return {ds: {s: max(official.get(ds, {}).get(s, {}).get("psnr", -1.0), v) for s, v in by.items()}
            for ds, by in PYTORCH_VDSR.items()}  # fmt: skip


def psnr(model, datasets, scales, device) -> dict:
    return metric(evaluate(datasets, scales, vdsr_method(model), "vdsr", device, progress=True).summary(), "psnr")


def diff(a: dict, b: dict) -> dict:
    return {ds: {s: round(v - b[ds][s], 4) for s, v in by.items() if s in b.get(ds, {})} for ds, by in a.items() if ds in b}


def lr_decay_steps(config: dict, steps: int) -> list[int]:
    """The steps at which the run's lr fell (train.py's own schedule, ``train.lr_at``, read at
    every epoch boundary of ``patches_per_epoch // batch_size`` steps); [] for fixed-grid sampling,
    whose epoch length depends on the images."""
    per = config.get("patches_per_epoch", 0) // max(config.get("batch_size", 0), 1)
    if config.get("sampling") != "random" or per < 1 or not config.get("lr_step_epochs"):
        return []
    sched = SimpleNamespace(**{k: config[k] for k in ("lr", "lr_gamma", "lr_step_epochs")})
    return [s for s in range(per, steps, per) if lr_at(sched, s, per) < lr_at(sched, s - 1, per)]


def save_figure(fig, path: Path) -> None:
    """The figure as a PNG at ``path``, written atomically; the figure closed."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def plot_gain(validation: dict, start: dict, goal: dict, batch: int, title: str, path: Path,
              decays: tuple = (), start_name: str = "the start") -> None:  # fmt: skip
    """Validation PSNR minus the start's evaluation, per scale, against steps: the raw weights
    solid, their moving average (``NAME EMA``) dashed, the best public model's margin over the
    start dotted, 0 (the start) black, the lr cuts (``decays``, steps) grey. ``validation`` is
    ``history.json``'s ``val``; the dataset drawn is its first one the start was also evaluated
    on (none in common: an empty figure that says so). ``start_name`` names the start on the y axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    name = next((n for n in validation if n in start), None)
    for i, (s, points) in enumerate(sorted((validation.get(name) or {}).items())):
        if s not in start[name]:
            continue
        colour, base = f"C{i}", start[name][s]
        xs, ys = zip(*points)
        ax.plot(xs, [y - base for y in ys], marker="o", ms=3, color=colour, label=f"x{s}")
        if f"{name} EMA" in validation and s in validation[f"{name} EMA"]:
            xs, ys = zip(*validation[f"{name} EMA"][s])
            ax.plot(xs, [y - base for y in ys], ls="--", color=colour, label=f"x{s}, moving average")
        if s in goal.get(name, {}):
            ax.axhline(goal[name][s] - base, ls=":", color=colour, label=f"x{s}: best public VDSR-20")
    ax.axhline(0.0, color="black", lw=0.8)
    for i, step in enumerate(decays):
        ax.axvline(step, color="grey", lw=0.8, alpha=0.6, label="lr x 0.1" if i == 0 else None)
    ax.set(xlabel=f"step (batch {batch})", ylabel=f"{name or 'validation'} PSNR minus {start_name}'s (dB)", title=title)
    if name is not None:
        ax.legend(fontsize=8, ncol=3, loc="lower right")
    else:
        ax.text(0.5, 0.5, "no validation set in common with the evaluation", ha="center", transform=ax.transAxes)
    save_figure(fig, path)


def baseline(rec: dict) -> tuple[str, str | None]:
    """What a record's run was set against, in words, and that file's sha256: the ``--against``
    file where it had one, else the weights the run started from."""
    if rec.get("against"):
        return f"set against {rec['against']}", rec.get("against_sha256")
    return f"started from {rec.get('init_weights')}", rec.get("init_sha256")


def compare(records: dict[str, dict]) -> dict:
    """Records of this script (``{name: record}``, the first the baseline) for runs from one start:
    each one's end evaluation and, for every record after the first, its end minus the first's,
    per cell. Raises InputError naming the record whose start (``baseline``) differs from the first's."""
    (base_name, base), *rest = records.items()
    base_said, base_sha = baseline(base)
    for name, rec in rest:
        said, sha = baseline(rec)
        if sha != base_sha:
            raise InputError(f"{name}: {said} (sha256 {str(sha)[:12]}), "
                             f"not from {base_name}'s start ({base_said}, sha256 {str(base_sha)[:12]}): not a pair")  # fmt: skip
    return {
        "records": {n: {"weights": r["weights"], "steps": r["steps"], "patch_steps": r["patch_steps"],
                        "schedule": r["schedule"], "eval_run_end": r["eval_run_end"]} for n, r in records.items()},
        "eval_start": base["eval_start"], "init_weights": base["init_weights"], "init_sha256": base["init_sha256"],
        "minus_first": {n: diff(r["eval_run_end"], base["eval_run_end"]) for n, r in rest},
    }  # fmt: skip


def step_label(records: dict[str, dict]) -> str:
    """The x axis of a comparison: "step (batch 64)" where every record has one batch size, else
    each record's, e.g. "step (batch: a 64, b 12)" (a step of one is not a step of the other)."""
    batches = {name: rec["schedule"].get("batch_size") for name, rec in records.items()}
    if len(set(batches.values())) == 1:
        return f"step (batch {next(iter(batches.values()))})"
    return "step (batch: " + ", ".join(f"{name} {b}" for name, b in batches.items()) + ")"


def plot_compare(records: dict[str, dict], path: Path) -> dict:
    """Every record's validation curve (raw or moving average, as the record evaluated) minus the
    start's evaluation, per scale: a colour a scale, a line style a record. Returns what it drew:
    ``{"RECORD xS": [[step, dB minus the start], ...]}``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    first = next(iter(records.values()))  # what every record was set against (compare checked it)
    start = first["eval_start"]
    start_name = Path(first["against"]).name if first.get("against") else "the start"
    styles = ("-", "--", ":", "-.")
    name, drawn = None, {}
    for j, (label, rec) in enumerate(records.items()):
        val = rec["validation"]
        name = next((n for n in val if not n.endswith(" EMA") and n in start), None)
        if name is None:
            continue
        curve = val.get(f"{name} EMA", val[name]) if rec["weights"] == "model_ema.safetensors" else val[name]
        for i, (s, points) in enumerate(sorted(curve.items())):
            if s in start[name]:
                drawn[f"{label} x{s}"] = [[x, round(y - start[name][s], 4)] for x, y in points]
                xs, ys = zip(*drawn[f"{label} x{s}"])
                ax.plot(xs, ys, ls=styles[j % len(styles)], marker="o", ms=3, color=f"C{i}", label=f"x{s}: {label}")
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set(xlabel=step_label(records), ylabel=f"{name or 'validation'} PSNR minus {start_name}'s (dB)",
           title=f"{' vs '.join(records)}: validation minus {start_name}")  # fmt: skip
    if drawn:
        ax.legend(fontsize=8, ncol=2, loc="lower left")
    else:  # no record validated on a set the start was evaluated on
        ax.text(0.5, 0.5, "no validation set in common with the start's evaluation", ha="center", transform=ax.transAxes)
    save_figure(fig, path)
    return drawn


def compare_main(ap, args) -> int:
    if args.run:
        ap.error("--compare reads records, not a run folder: drop the run folder (or --compare)")
    if not args.out:
        ap.error("--compare needs -o OUT.png")
    if len(args.compare) < 2:
        ap.error("--compare needs two records or more")
    ap.check_output(args.out)
    if args.json:
        ap.check_output(args.json)
    records = {}
    try:
        for f in args.compare:
            stem = Path(f).stem
            if stem in records:
                raise InputError(f"{f}: a second record named {stem} (the figure and the differences tell records by file name)")
            try:
                records[stem] = json.loads(Path(f).read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise InputError(f"{f}: cannot be read as a record of cycle_report.py ({e})") from e
            if "eval_run_end" not in records[stem]:
                raise InputError(f"{f}: not a record of cycle_report.py (no eval_run_end)")
        result = compare(records)
    except InputError as e:
        ap.exit(2, f"{ap.prog}: error: {e}\n")
    first = next(iter(records))
    for ds, by in result["eval_start"].items():
        for s, v in by.items():
            ends = "  ".join(f"{n} {r['eval_run_end'][ds][s]:.3f}" for n, r in records.items() if s in r["eval_run_end"].get(ds, {}))
            minus = "  ".join(f"{n} - {first} {d[ds][s]:+.3f}" for n, d in result["minus_first"].items() if s in d.get(ds, {}))
            print(f"{ds} x{s}: start {v:.3f}  {ends}  ({minus})")
    plot_compare(records, Path(args.out))
    if args.json:
        write_json(Path(args.json), {"what": f"{' vs '.join(records)}: runs from one start, side by side", "command":
                   f"python launch/cycle_report.py --compare {' '.join(args.compare)} -o {args.out} --json {args.json}", **result})  # fmt: skip
    print(f"wrote {args.out}" + (f" and {args.json}" if args.json else ""), file=sys.stderr)
    return 0


def main(argv=None) -> int:
    ap = ArgParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", nargs="?", help="the run folder (launch/train.py --output-dir)")
    ap.add_argument("--json", help="where to write the record (and its .png); with --compare, the differences")
    ap.add_argument("--compare", nargs="+", metavar="JSON", help="set earlier records of runs from one start side by side (evaluates nothing)")
    ap.add_argument("-o", "--out", help="with --compare: the PNG to write")
    ap.add_argument("--data", nargs="+", default=[str(REPO.parent / "shared" / "data" / n) for n in ("Set5", "Set14")])
    ap.add_argument("--scales", nargs="+", type=number(int, 2, 16), default=[2, 3, 4])
    ap.add_argument("--ema", action="store_true",
                    help="compare the moving average of the run's weights (model_ema.safetensors; ema_decay > 0) with its start")
    ap.add_argument("--against", metavar="WEIGHTS",
                    help="set the run against this weights file instead of the one it started from (e.g. the shipped model)")
    args = ap.parse_args(argv)
    if args.compare:
        return compare_main(ap, args)
    if not args.run or not args.json:
        ap.error("give a run folder and --json (or --compare RECORDS -o OUT.png)")
    ap.check_output(args.json)
    run = Path(args.run)
    weights = "model_ema.safetensors" if args.ema else "model.safetensors"
    try:
        against = Path(args.against) if args.against else None
        config, summary, history, init = read_run(run, weights, against)
        datasets = [open_dataset(d) for d in args.data]
        scales = check_scales(args.scales)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        end_model, start_model = load_pretrained(run / weights, device), load_pretrained(init, device)
    except InputError as e:
        ap.exit(2, f"{ap.prog}: error: {e}\n")
    end = psnr(end_model, datasets, scales, device)
    start = psnr(start_model, datasets, scales, device)
    gain, goal = diff(end, start), best_public()
    start_name = init.name if against else "the start"  # what the run is set against, in the table and the figure
    better = all(v > 0 for by in gain.values() for v in by.values())
    for ds, by in end.items():
        for s, v in by.items():
            print(f"{ds} x{s}: run {v:.3f}  {start_name} {start[ds][s]:.3f}  ({gain[ds][s]:+.3f})")
    print(f"better in every cell: {'yes' if better else 'no'}")
    json_path = Path(args.json)
    label = json_path.stem.removesuffix("-vs-start")  # the record's name says which run (a run folder is often just "run")
    started = f"started from {config['init_weights']}" if config.get("init_weights") else "from scratch"
    write_json(json_path, {
        "what": f"{label} ({run}): a run {started}; vdsr eval (float32) of its end ({weights}) against {init.name if against else 'its start'}",
        "command": f"python launch/train.py --output-dir {run} ...; python launch/cycle_report.py {run} --json {args.json}"
                   f"{' --ema' * args.ema}{f' --against {args.against}' * bool(against)}",
        "weights": weights,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "init_weights": config.get("init_weights"), "init_sha256": config.get("init_sha256"),
        **({"against": str(against), "against_sha256": file_sha256(against)} if against else {}),
        "schedule": {k: config.get(k) for k in SCHEDULE_KEYS},
        "steps": summary["steps"], "patch_steps": summary["patches_seen"], "stopped_early": summary.get("stopped_early"),
        "training_seconds": summary["seconds"], "patches_per_s": summary["patches_per_s"],
        "validation": history["val"],
        "eval_run_end": end, "eval_start": start, "run_minus_start": gain, "better_in_every_cell": better,
        "best_public": goal, "run_minus_best_public": diff(end, goal),
    })  # fmt: skip
    title = (f"{label}: validation minus {start_name}" if against else
             f"{label} from {Path(config['init_weights']).name}: validation minus the start")  # fmt: skip
    plot_gain(history["val"], start, goal, config.get("batch_size", 0), title, json_path.with_suffix(".png"),
              lr_decay_steps(config, summary["steps"]), start_name)  # fmt: skip
    print(f"wrote {json_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
