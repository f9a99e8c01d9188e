"""Train VDSR. One script for one CPU, two CPU ranks, eight GPUs or several nodes:

    python launch/train.py                                   # the demo recipe, one process
    accelerate launch launch/train.py --config seed          # whatever `accelerate config` says
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 launch/train.py  # 2 CPU ranks (gloo)
    accelerate launch --multi_gpu --num_processes 8 launch/train.py --config paper       # 8 GPUs

Recipes live in ``launch/configs/*.yaml`` (``--config NAME|FILE``); any key can be overridden
on the command line (``--epochs 2``, ``--data DIR DIR``, ``--set key=value``).
``--init-weights FILE.safetensors`` starts from trained weights (fine-tuning, warm restarts).
``bf16: auto`` (every recipe) trains under bfloat16 autocast where the hardware computes in it
(GPUs, AVX512/AMX CPUs) and in float32 elsewhere, where bf16 is emulated and 11x slower
(``vdsr/precision.py``); ``--bf16`` / ``--no-bf16`` force either.

The step: loss = 1/2 ||y - x - f(x)||^2 summed over the pixels of a patch and averaged over the
patches of the batch (Caffe's EuclideanLoss, which the paper's code used); SGD with momentum
and weight decay; the paper's adjustable gradient clipping: every gradient element clipped to
[-theta/lr, theta/lr], so that no element of a plain SGD step exceeds theta whatever the
learning rate (``--clip norm`` clips the global L2 norm to theta instead). ``--optimizer adam``
takes caffe-vdsr's Adam step instead (its recipes set lr 1e-4 and no clipping). Under DDP the loss
is the local mean and the gradients are averaged over the ranks: the global batch is
``batch_size`` split evenly over them.

Outputs (``--output-dir``): ``checkpoints/step-*/`` (``accelerator.save_state``, written to a
temporary folder and renamed, so a crash never leaves a torn checkpoint; ``--resume`` takes the
newest whole one, and a fresh run refuses a folder that holds one), TensorBoard logs,
``config.json`` (at the start), ``history.json`` and ``curves.png`` (at every validation, so a long
run shows its curve while it goes on, and at the end), and at the end ``model.safetensors`` and
``summary.json``. ``ema_decay: d`` (e.g. 0.999) also keeps an exponential moving average of the
weights, updated every step, saved in each checkpoint (``ema.safetensors``), validated beside
them (``Set5 EMA`` in the history and curves) and written at the end as ``model_ema.safetensors``.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import math
import os
import shutil
import signal
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import yaml
from accelerate import Accelerator, PartialState
from accelerate.utils import parse_flag_from_env, set_seed
from tqdm import tqdm

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from vdsr.atomic import atomic_path, write_json  # noqa: E402
from vdsr.checkpoint import file_sha256, load_weights, save_weights  # noqa: E402
from vdsr.cliargs import ArgParser, number  # noqa: E402
from vdsr.data import PatchSampler, add_downsized, crop_size, edge_pad, load_store, make_loader, pad_edges  # noqa: E402
from vdsr.demo import DEMO_TRAIN, DEMO_VAL, demo_files  # noqa: E402
from vdsr.errors import InputError  # noqa: E402
from vdsr.evaluate import Dataset, check_scales, evaluate, open_dataset, vdsr_method  # noqa: E402
from vdsr.model import VDSR  # noqa: E402
from vdsr.precision import check_bf16_setting, resolve_bf16  # noqa: E402

log = logging.getLogger("vdsr.train")
CONFIGS = REPO / "launch" / "configs"


# ----------------------------------------------------------------------------- configuration
@dataclass
class Config:
    data: list = field(default_factory=lambda: ["demo"])
    val_data: list = field(default_factory=lambda: ["demo-val"])
    scales: list = field(default_factory=lambda: [2, 3, 4])
    depth: int = 20
    channels: int = 64
    init: str = "fan_in"  # He normal over the fan-in (the paper's), or "fan_out" (pytorch-vdsr's)
    bias: bool = True  # false: every bias frozen at zero (pytorch-vdsr's convs have none)
    batch_size: int = 64  # global, over all ranks
    patch_size: int = 41  # HR/LR patch side (the paper's 41 = the receptive field); larger: fewer zero-padded borders
    sampling: str = "random"  # or "fixed"
    patches_per_epoch: int = 3200  # random mode
    fixed_count: int | None = None  # fixed mode: a seeded subset of the grid
    epochs: int = 80
    max_steps: int | None = None  # stop early (the schedule still follows epochs)
    init_weights: str | None = None  # start from these weights (.safetensors): fine-tuning, warm restarts
    optimizer: str = "sgd"  # or "adam" (betas 0.9 / 0.999, eps 1e-8; `momentum` is SGD's only)
    lr: float = 0.1
    lr_step_epochs: int = 20
    lr_gamma: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    clip: str = "adjustable"  # or "norm" or "none"
    clip_theta: float = 1e-4
    loss: str = "sse_mean"  # 1/2 SSE per patch, batch mean; or "sse_sum": SSE summed over the batch
    rotate: bool = False
    downsize: list = field(default_factory=list)  # extra copies of the images shrunk by these factors
    edge_patches: bool = False  # patches may touch the image edges (exact whole-image LR there), as test pixels do
    bf16: bool | str = "auto"  # bfloat16 autocast: true, false, or auto (where the hardware has it; float32 elsewhere)
    tf32: bool = False  # float32 math (bf16 off) may use TF32: cuDNN, cuBLAS and the Triton kernels
    channels_last: bool = True
    cuda_graph: bool = False  # one CUDA GPU: the whole step as one CUDA graph (GraphedStep); elsewhere ignored
    backend: str = "torch"  # or "triton"
    loader: str = "auto"  # or "dali" / "torch" / "device" (the store on the GPU; auto picks it there without DALI)
    loader_workers: int = 2
    loader_chunk: int = 1  # the device stream: batches built together (the same batches; less host work a batch)
    log_every: int = 10
    val_every: int = 500  # 0: only at the end
    checkpoint_every: int = 100
    checkpoint_minutes: float | None = None  # also checkpoint when this much time passed since the last
    max_minutes: float | None = None  # stop (and write the model) after this much training time in this process
    keep_checkpoints: int = 2
    ema_decay: float = 0.0  # > 0 (e.g. 0.999): also keep an exponential moving average of the weights
    seed: int = 0
    output_dir: str = "runs/demo"
    inject_nan_at: int | None = None  # testing: make the loss NaN at this step
    debug_ranks: bool = False  # testing: each rank writes rank<r>.json (parameter and patch digests)

    def __post_init__(self):
        """Types and ranges, so a typo fails at start-up with one line and not mid-run."""
        choices = {"sampling": ("random", "fixed"), "clip": ("adjustable", "norm", "none"),
                   "backend": ("torch", "triton"), "loader": ("auto", "dali", "torch", "device"),
                   "loss": ("sse_mean", "sse_sum"), "optimizer": ("sgd", "adam"), "init": VDSR.INITS}  # fmt: skip
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise InputError(f"config: {key} = {getattr(self, key)!r}; expected one of {', '.join(allowed)}")
        minimum = {"depth": 3, "channels": 1, "batch_size": 1, "patch_size": 8, "patches_per_epoch": 1, "epochs": 1,
                   "lr_step_epochs": 1, "loader_workers": 0, "loader_chunk": 1, "log_every": 1, "val_every": 0,
                   "checkpoint_every": 1, "keep_checkpoints": 1, "seed": 0, "max_steps": 1,
                   "fixed_count": 1, "inject_nan_at": 1}  # fmt: skip
        for key, low in minimum.items():
            v = getattr(self, key)
            if v is None and key in ("max_steps", "fixed_count", "inject_nan_at"):
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise InputError(f"config: {key} = {v!r}; expected an integer >= {low}")
        if isinstance(self.ema_decay, bool) or not isinstance(self.ema_decay, (int, float)) or not 0 <= self.ema_decay < 1:
            raise InputError(f"config: ema_decay = {self.ema_decay!r}; expected a number in [0, 1) (0: off)")
        for key in ("lr", "lr_gamma", "momentum", "weight_decay", "clip_theta", "checkpoint_minutes", "max_minutes"):
            v = getattr(self, key)
            if v is None and key in ("checkpoint_minutes", "max_minutes"):
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
                raise InputError(f"config: {key} = {v!r}; expected a number >= 0")
        try:
            check_bf16_setting(self.bf16)
        except InputError as e:
            raise InputError(f"config: {e}") from None
        for key in ("bias", "rotate", "edge_patches", "tf32", "channels_last", "cuda_graph", "debug_ranks"):
            if not isinstance(getattr(self, key), bool):
                raise InputError(f"config: {key} = {getattr(self, key)!r}; expected true or false")
        for key in ("data", "val_data"):
            v = getattr(self, key)
            if isinstance(v, str):
                v = [v]
            if v is None or not isinstance(v, list) or not all(isinstance(e, (str, int, float)) for e in v):
                raise InputError(f"config: {key} = {v!r}; expected a list of folders")
            setattr(self, key, [str(e) for e in v])
        if not self.data:
            raise InputError("config: data is empty; expected one or more training folders (or demo)")
        if self.init_weights is not None and (not isinstance(self.init_weights, str) or not self.init_weights.strip()):
            raise InputError(f"config: init_weights = {self.init_weights!r}; expected a .safetensors file")
        if isinstance(self.output_dir, (int, float)) and not isinstance(self.output_dir, bool):
            self.output_dir = str(self.output_dir)  # `--set output_dir=5` is the folder "5"
        if not isinstance(self.output_dir, str) or not self.output_dir.strip():
            raise InputError(f"config: output_dir = {self.output_dir!r}; expected a folder path")
        self.scales = check_scales([self.scales] if isinstance(self.scales, int) else self.scales)
        if not isinstance(self.downsize, list) or not all(
            isinstance(f, (int, float)) and not isinstance(f, bool) and 0 < f < 1 for f in self.downsize
        ):
            raise InputError(f"config: downsize = {self.downsize!r}; expected a list of factors in (0, 1), e.g. [0.7, 0.5]")


def load_config(args: argparse.Namespace) -> Config:
    """The recipe file, then the command-line overrides."""
    path = Path(args.config)
    if not path.suffix:
        path = CONFIGS / f"{args.config}.yaml"
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in CONFIGS.glob("*.yaml")))
        raise InputError(f"--config {args.config}: no such recipe (have: {names}) or file")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise InputError(f"{path}: not a YAML recipe ({' '.join(str(e).split())[:160]})") from None
    if not isinstance(values, dict):
        raise InputError(f"{path}: not a YAML recipe (expected key: value lines)")
    unknown = set(values) - set(Config.__dataclass_fields__)
    if unknown:
        raise InputError(f"{path}: unknown keys {sorted(unknown)}")
    if "output_dir" not in values:
        values["output_dir"] = f"runs/{path.stem}"
    for key in Config.__dataclass_fields__:  # every option that is named as a recipe key overrides it
        v = getattr(args, key, None)
        if v is not None:
            values[key] = v
    for item in args.set or []:
        key, eq, raw = item.partition("=")
        if not eq:
            raise InputError(f"--set {item}: expected KEY=VALUE")
        if key not in Config.__dataclass_fields__:
            raise InputError(f"--set {item}: unknown key {key!r}")
        try:
            values[key] = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise InputError(f"--set {item}: not a YAML value ({' '.join(str(e).split())[:120]})") from None
    return Config(**values)


def parse_args(argv=None) -> argparse.Namespace:
    ap = ArgParser(prog="train.py", description="Train VDSR (Accelerate: 1 CPU, CPU ranks, GPUs, nodes).")
    ap.add_argument("--config", default="demo", help="recipe name (launch/configs/NAME.yaml) or YAML file")
    ap.add_argument("--data", nargs="+", metavar="DIR", help="training folders ('demo': the sample photos)")
    ap.add_argument("--val-data", dest="val_data", nargs="+", metavar="DIR", help="validation folders")
    ap.add_argument("--scales", nargs="+", type=number(int, 2, 16))
    ap.add_argument("--epochs", type=number(int, 1))
    ap.add_argument("--max-steps", dest="max_steps", type=number(int, 1))
    ap.add_argument("--output-dir", dest="output_dir")
    ap.add_argument(
        "--resume", nargs="?", const="latest", metavar="CHECKPOINT",
        help="continue from the latest checkpoint in --output-dir, or from the checkpoint folder given",
    )  # fmt: skip
    ap.add_argument("--init-weights", dest="init_weights", metavar="FILE.safetensors",
                    help="start from these weights (a fresh optimiser at step 0; --resume takes precedence)")
    ap.add_argument("--backend", choices=["torch", "triton"])
    ap.add_argument("--loader", choices=["auto", "dali", "torch", "device"])
    ap.add_argument("--seed", type=number(int, 0))
    ap.add_argument("--depth", type=number(int, 3, 1000))
    ap.add_argument("--batch-size", dest="batch_size", type=number(int, 1))
    ap.add_argument("--optimizer", choices=["sgd", "adam"])
    ap.add_argument("--lr", type=number(float, 0))
    ap.add_argument("--clip", choices=["adjustable", "norm", "none"])
    ap.add_argument("--clip-theta", dest="clip_theta", type=number(float, 0))
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                    help="bfloat16 autocast (default: the recipe's bf16, auto: where the hardware has it)")
    ap.add_argument("--tf32", action=argparse.BooleanOptionalAction, default=None, help="float32 math may use TF32 (with --no-bf16)")
    ap.add_argument("--channels-last", dest="channels_last", action=argparse.BooleanOptionalAction, default=None)
    ap.add_argument("--cuda-graph", dest="cuda_graph", action=argparse.BooleanOptionalAction, default=None,
                    help="replay the whole step as one CUDA graph (one GPU, SGD; elsewhere the eager step runs)")
    ap.add_argument("--world-size", type=number(int, 1), help="fail unless exactly this many processes run")
    ap.add_argument("--set", nargs="+", action="extend", metavar="KEY=VALUE", help="override any recipe key (repeatable)")
    return ap.parse_args(argv)


# ----------------------------------------------------------------------------- pieces
def lr_at(cfg: Config, step: int, steps_per_epoch: int) -> float:
    """Step decay: lr * gamma ** (epoch // lr_step_epochs)."""
    epoch = step // steps_per_epoch
    return cfg.lr * cfg.lr_gamma ** (epoch // cfg.lr_step_epochs)


def clip_gradients(accelerator: Accelerator, model: torch.nn.Module, cfg: Config, lr: float) -> None:
    """The paper's adjustable clipping (each element to [-theta/lr, theta/lr]), or L2-norm clipping."""
    if cfg.clip == "adjustable":
        bound = cfg.clip_theta / lr if lr > 0 else float("inf")  # lr 0: the step is zero anyway
        if bound < 1e30:  # past float32's range the clamp cannot bind (and would overflow)
            accelerator.clip_grad_value_(model.parameters(), bound)
    elif cfg.clip == "norm":
        accelerator.clip_grad_norm_(model.parameters(), cfg.clip_theta)


def make_optimizer(model: torch.nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """SGD with momentum (the paper's), or Adam (caffe-vdsr's released Adam model: betas 0.9 /
    0.999, eps 1e-8); both with L2 weight decay added to the gradient, as Caffe's solvers do."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def sse_loss(out: torch.Tensor, hr: torch.Tensor, kind: str = "sse_mean", world: int = 1) -> torch.Tensor:
    """The training loss in float32.

    ``sse_mean``: 1/2 ||y - (x + f(x))||^2 summed over each patch's pixels, averaged over the
    batch (Caffe's EuclideanLoss). ``sse_sum``: ||y - (x + f(x))||^2 summed over the pixels and
    the patches (pytorch-vdsr's ``MSELoss(size_average=False)``); times ``world``, so that the
    gradients DDP averages over the ranks are those of the sum over the global batch."""
    sq = (out.float() - hr).pow(2).flatten(1).sum(1)
    return 0.5 * sq.mean() if kind == "sse_mean" else sq.sum() * world


def resolve_folders(entries: list, demo_names: tuple) -> list:
    """Training entries: folders, image files, or 'demo' (the scikit-image sample photos)."""
    out = []
    for e in entries:
        out += demo_files(demo_names) if e in ("demo", "demo-val") else [e]
    return out


# recipe keys that name input folders (or files): each entry must exist at start-up
FOLDER_KEYS = {"data": ("demo",), "val_data": ("demo-val",)}


def check_paths(cfg: Config, warm_start: bool = True) -> None:
    """Every folder a recipe names exists (and its ``init_weights`` file, where a fresh run will
    read it), and the output folder can be written: before any work.

    Raises:
        InputError: naming the key and the path."""
    from vdsr.cliargs import check_writable

    for key, builtin in FOLDER_KEYS.items():
        for entry in getattr(cfg, key):
            if entry not in builtin and not Path(entry).exists():
                raise InputError(f"config: {key}: {entry}: no such folder")
    if warm_start and cfg.init_weights is not None and not Path(cfg.init_weights).is_file():
        raise InputError(f"config: init_weights: {cfg.init_weights}: no such file")
    try:
        check_writable(cfg.output_dir, folder=True)
    except InputError as e:
        raise InputError(f"config: output_dir: {e}") from None


def init_from(model: VDSR, path: str) -> str:
    """Copy a weights file's tensors into ``model`` (same depth and width); returns the file's sha256.

    Raises:
        InputError: naming the file, when it is not VDSR weights, its shape is not the recipe's, or
            the recipe has no biases (``bias: false``) and the file's are not zero."""
    src = load_weights(path)
    if (src.depth, src.channels) != (model.depth, model.channels):
        raise InputError(
            f"config: init_weights: {path}: VDSR-{src.depth} with {src.channels} channels; "
            f"the recipe builds VDSR-{model.depth} with {model.channels}"
        )
    frozen = [i for i, conv in enumerate(model.layers) if not conv.bias.requires_grad]
    if nonzero := [i for i in frozen if src.layers[i].bias.detach().abs().max() > 0]:
        raise InputError(
            f"config: init_weights: {path}: layer {nonzero[0]} has non-zero biases, and the recipe "
            "trains without biases (bias: false)"
        )
    model.load_state_dict(src.state_dict())
    return file_sha256(path)


def validation_sets(entries: list) -> list[Dataset]:
    return [Dataset("demo-val", demo_files(DEMO_VAL)) if e == "demo-val" else open_dataset(e) for e in entries]


def check_world_size(accelerator: Accelerator, expected: int | None) -> None:
    """Fail loudly when the run has another number of processes than was launched."""
    n = accelerator.num_processes
    if expected is not None and n != expected:
        raise SystemExit(f"train.py: --world-size {expected} but {n} process(es) are running")
    if n == 1 and "MASTER_ADDR" in os.environ and "WORLD_SIZE" not in os.environ:
        raise SystemExit(
            "train.py: launched for several processes but only one started (`accelerate launch --cpu "
            "--num_processes N` starts ONE process). For N CPU ranks: ACCELERATE_USE_CPU=1 accelerate "
            "launch --multi_gpu --num_processes N launch/train.py"
        )


def idle_cores_warning(device: torch.device, local_world: int, threads: int, cores: int) -> str | None:
    """One line when the CPU ranks of this machine compute on fewer threads than it has cores:
    ``accelerate launch`` sets ``OMP_NUM_THREADS=1`` unless given ``--num_cpu_threads_per_process``
    (or ``--cpu``), so a lone CPU process trains on one core of many. None when all are used."""
    if device.type != "cpu" or threads * local_world >= cores:
        return None
    return (f"torch computes on {threads} thread(s) in each of {local_world} process(es) here, of {cores} cores "
            f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}): `accelerate launch "
            f"--num_cpu_threads_per_process {max(cores // local_world, 1)}` uses them all")  # fmt: skip


class Checkpoints:
    """``accelerator.save_state`` into ``checkpoints/step-XXXXXXX``, atomically, keeping the last few."""

    def __init__(self, root: Path, keep: int):
        self.root, self.keep = root / "checkpoints", keep

    def whole(self) -> list[Path]:
        """The complete checkpoints, oldest first. A folder gets its ``step-*`` name only when
        complete, so this holds after a kill at any moment (even before ``latest`` is updated)."""
        return sorted(p for p in self.root.glob("step-*") if (p / "train_state.json").is_file())

    def latest(self) -> Path | None:
        """The newest whole checkpoint (``latest``, the file, names it for people)."""
        whole = self.whole()
        return whole[-1] if whole else None

    def save(self, accelerator: Accelerator, state: dict, ema: torch.nn.Module | None = None) -> Path:
        """The state (and ``ema.safetensors``, the averaged weights, when ``ema``) as one folder."""
        name = f"step-{state['step']:07d}"
        tmp, final = self.root / f".tmp-{name}", self.root / name
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))  # model (safetensors), optimizer, RNG states
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            if ema is not None:
                save_weights(tmp / "ema.safetensors", ema)
            write_json(tmp / "train_state.json", state)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)  # the checkpoint appears whole or not at all
            with atomic_path(self.root / "latest") as t:
                t.write_text(name + "\n")
            for p in self.whole()[: -self.keep]:
                shutil.rmtree(p, ignore_errors=True)
        accelerator.wait_for_everyone()
        return final


def plot_curves(history: dict, bicubic: dict, path: Path) -> None:
    """Loss against step, and validation PSNR per scale against the bicubic line."""
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    if history["loss"]:
        steps, losses = (np.asarray(v, dtype=np.float64) for v in zip(*history["loss"]))
        ax1.plot(steps, losses, lw=0.6, alpha=0.35, color="C0", label="mean over each log window")
        k = max(3, len(losses) // 25)  # a running mean over about 4% of the run (3 points at least)
        if len(losses) >= 2 * k:
            smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
            ax1.plot(steps[k - 1 :], smooth, lw=1.5, color="C0", label=f"running mean of {k}")
        # the first steps' loss is orders of magnitude above the rest: scale the axis to the run
        # after its first tenth (the early points run off the top)
        rest = losses[len(losses) // 10 :]
        if len(rest) and np.isfinite(rest).all():
            ax1.set_ylim(0.95 * rest.min(), 1.05 * np.percentile(rest, 99))
        ax1.legend(fontsize=8)
    ax1.set(xlabel="step", ylabel="training loss", title="training loss (early steps above the axis)")
    for name, by_scale in sorted(history["val"].items()):
        for s, points in sorted(by_scale.items()):
            xs, ys = zip(*points)
            line = ax2.plot(xs, ys, marker="o", ms=3, label=f"{name} x{s}")[0]
            if name in bicubic and s in bicubic[name]:
                ax2.axhline(bicubic[name][s], color=line.get_color(), ls="--", lw=0.8)
    ax2.set(xlabel="step", ylabel="PSNR (dB)", title="validation PSNR (dashed: bicubic)")
    if history["loss"]:
        ax2.set_xlim(ax1.get_xlim())  # both panels on the run's steps (a run's first validation may come late)
    if history["val"]:
        ax2.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def write_curves(out: Path, history: dict, bicubic: dict) -> None:
    """``history.json`` and ``curves.png`` in the run folder (at every validation and at the end)."""
    write_json(out / "history.json", history)
    plot_curves(history, bicubic, out / "curves.png")


def set_tf32(on: bool) -> None:
    """Whether float32 math may use TF32: cuDNN, cuBLAS, and the Triton kernels (via torch's
    float32 matmul precision)."""
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = on
    torch.set_float32_matmul_precision("high" if on else "highest")


def validate(model, datasets, scales, device, tf32: bool = False) -> dict:
    """{dataset: {scale: {psnr, ssim, images}}} with the evaluation code of `vdsr eval` (float32
    forward, TF32 off whatever the training uses)."""
    model.eval()
    set_tf32(False)
    try:
        report = evaluate(datasets, scales, vdsr_method(model), "vdsr", device, progress=False)
    finally:
        set_tf32(tf32)
        model.train()
    return report.summary()


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """``ema = decay * ema + (1 - decay) * model``, parameter by parameter, on the device (no host
    synchronisation: ``torch.optim.swa_utils.AveragedModel`` reads its step counter back)."""
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1.0 - decay)


def validate_all(model, ema, datasets, scales, device, tf32: bool = False) -> dict:
    """:func:`validate` of the weights and, when ``ema`` is kept, of their average too, under the
    dataset's name + " EMA" (so history, curves and summaries carry both)."""
    report = validate(model, datasets, scales, device, tf32)
    if ema is not None:
        report.update({f"{name} EMA": v for name, v in validate(ema, datasets, scales, device, tf32).items()})
    return report


def train_step(model, optimizer, accelerator: Accelerator, cfg: Config, lr_in, hr, lr: float, world: int,
               autocast=None) -> torch.Tensor:  # fmt: skip
    """One SGD step on a batch; returns the loss as a device tensor (detached).

    No host synchronisation: nothing here reads a device value (no ``.item()``, ``bool()``,
    ``.tolist()`` or ``.cpu()`` on a tensor), so on a GPU the host queues the next step while
    this one runs. The loop reads the losses, the non-finite check and the SIGTERM flag back
    together every ``log_every`` steps (tested: ``tests/test_train.py``). ``autocast``: the
    context the forward runs in (default ``accelerator.autocast()``)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    with autocast if autocast is not None else accelerator.autocast():
        output = model(lr_in)
    loss = sse_loss(output, hr, cfg.loss, world)
    accelerator.backward(loss)
    if accelerator.sync_gradients:
        clip_gradients(accelerator, model, cfg, lr)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def capture_graph(body, stream=None):
    """``body()`` captured as a CUDA graph on ``stream`` (the warm-up's: per-stream library state is
    then made before the capture, not during it): its kernels are recorded, not run. Returns the
    graph and what ``body`` returned (tensors in the graph's memory, which every ``graph.replay()``
    rewrites)."""
    graph = torch.cuda.CUDAGraph()
    # thread_local: a loader's pin-memory thread may query CUDA events meanwhile (as torch.compile's
    # graphs, which capture a backward too, do); the kernels go to the capturing stream whichever
    # thread (autograd's for the backward) launches them
    with torch.cuda.graph(graph, stream=stream, capture_error_mode="thread_local"):
        out = body()
    return graph, out


def graph_unsupported(cfg: Config, device: torch.device, world: int) -> str | None:
    """Why :class:`GraphedStep` cannot run here (None: it can)."""
    if device.type != "cuda":
        return f"needs a CUDA device, not {device.type}"
    if world > 1:
        return f"one process only (DDP's all-reduce is not captured here), not {world}"
    if cfg.optimizer != "sgd":
        return f"SGD only ({cfg.optimizer} keeps its step count on the host)"
    return None


class GraphedStep:
    """:func:`train_step` replayed as one CUDA graph (``cuda_graph: true``, one CUDA process).

    At batch 64 of 41 x 41 the eager step used 8% of an H200's bf16 matmul rate: most likely the
    host, launching a few hundred small kernels one by one (an eager step issues some 800 aten
    calls), is the limit; a graph launches them all at once. Same kernels, same order, same
    arithmetic.

    * The first ``warmup`` calls run the eager step on a side stream (cuDNN's and Triton's
      choices, the momentum buffers; as capture wants), on real batches: they are training steps.
    * The next call captures the step and replays it; each later call copies its batch into the
      graph's static inputs and replays. The returned loss is the graph's own tensor: read it (or
      add it up) before the next call.
    * The learning rate, and with it the clipping bound theta / lr, is part of the graph: a new lr
      captures it again (the step decay does it two or three times a run).
    * A batch of another shape (the samplers make none) runs the eager step.
    """

    def __init__(self, model, optimizer, accelerator: Accelerator, cfg: Config, world: int, warmup: int = 3):
        self.step_args = (model, optimizer, accelerator, cfg)
        self.world, self.warmup, self.calls = world, warmup, 0
        self.device = next(model.parameters()).device
        self.graph = self.lr = self.static = self.loss = None
        self.captures = self.replays = 0
        self.side = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None

    def autocast(self):
        """The forward's autocast, its cast cache off (a cached cast would not be re-run by a replay);
        bfloat16 exactly when the eager step's ``accelerator.autocast()`` is."""
        bf16 = self.step_args[2].mixed_precision == "bf16"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16, cache_enabled=False)

    def eager(self, lr_in, hr, lr: float) -> torch.Tensor:
        return train_step(*self.step_args, lr_in, hr, lr, self.world, autocast=self.autocast())

    def __call__(self, lr_in: torch.Tensor, hr: torch.Tensor, lr: float) -> torch.Tensor:
        if self.static is None:
            self.static = (torch.empty_like(lr_in), torch.empty_like(hr))  # memory formats kept
        if lr_in.shape != self.static[0].shape or hr.shape != self.static[1].shape:
            return self.eager(lr_in, hr, lr)
        self.static[0].copy_(lr_in)
        self.static[1].copy_(hr)
        if self.calls < self.warmup:
            self.calls += 1
            if self.side is None:
                return self.eager(*self.static, lr)
            self.side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(self.side):
                loss = self.eager(*self.static, lr)
            torch.cuda.current_stream(self.device).wait_stream(self.side)
            return loss
        if self.graph is None or lr != self.lr:
            self.graph = None  # its memory back before the next capture
            self.step_args[1].zero_grad(set_to_none=True)  # backward then writes the gradients, not adds
            self.graph, self.loss = capture_graph(lambda: self.eager(*self.static, lr), self.side)
            self.lr = lr
            self.captures += 1
        self.graph.replay()
        self.replays += 1
        model = self.step_args[0]
        if getattr(model, "_packed_cache", None) is not None:  # VDSR(backend="triton")'s inference packing:
            model._packed_cache = None  # a replay changes the weights without bumping their version counters
        return self.loss


def metric(summary: dict, key: str) -> dict:
    """{dataset: {scale: value}} of one metric ("psnr" or "ssim") from an evaluation summary."""
    return {name: {s: r[key] for s, r in by.items()} for name, by in summary.items()}


# ----------------------------------------------------------------------------- training
def check_pickled_state(folder: Path, process_index: int) -> None:
    """Refuse a checkpoint whose non-safetensors files would need more than plain data.

    Accelerate writes the optimizer (``optimizer.bin``) and the RNG states
    (``random_states_N.pkl``) with ``torch.save``, a pickle. Both are read here, as Accelerate
    reads them, only by torch's ``weights_only`` unpickler: tensors, numpy arrays, numbers and
    containers; it never imports or calls anything else. Accelerate raises on a refused
    optimizer file but skips a refused RNG file quietly (a resume that would not continue the
    same random stream); here either one is a one-line error naming the file.
    """
    from accelerate.utils import load as load_plain  # torch.load(weights_only=True), numpy allowed

    for name in ("optimizer.bin", f"random_states_{process_index}.pkl"):
        path = folder / name
        if not path.is_file():
            raise InputError(f"--resume {path}: missing (the checkpoint is not whole)")
        try:
            load_plain(path, map_location="cpu")
        except Exception as e:  # torch's message is a page; its one line that says why, first sentence
            lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
            tag = "WeightsUnpickler error:"
            why = next((line.split(tag, 1)[1].strip() for line in lines if tag in line), lines[0])
            why = why.split(". ")[0].rstrip(".")
            raise InputError(f"--resume {path}: refused by the plain-data (weights_only) loader: {why}") from None


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = load_config(args)
    out = Path(cfg.output_dir)
    ckpts = Checkpoints(out, cfg.keep_checkpoints)
    resume_from = None  # the checkpoint this run continues; None: a fresh start
    if args.resume:
        resume_from = ckpts.latest() if args.resume == "latest" else Path(args.resume)
        if resume_from is not None and not (resume_from / "train_state.json").is_file():
            raise InputError(f"--resume {resume_from}: not a checkpoint folder (no train_state.json)")
    elif (used := ckpts.latest()) is not None:
        raise InputError(
            f"--output-dir {out}: already holds a run (checkpoint {used.name}); "
            "--resume continues it, or pick another --output-dir"
        )
    check_paths(cfg, warm_start=resume_from is None)  # a resumed run does not read init_weights
    # bf16 (true / false / auto) on this process's device, known before the Accelerator is made
    # (the process state it will share, on the CPU as `accelerate launch --cpu` asks)
    process = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    bf16_setting = cfg.bf16
    cfg.bf16, bf16_line = resolve_bf16(bf16_setting, process.device)
    accelerator = Accelerator(
        mixed_precision="bf16" if cfg.bf16 else "no", log_with="tensorboard", project_dir=str(out)
    )
    set_tf32(cfg.tf32)
    logging.basicConfig(
        level=logging.INFO if accelerator.is_main_process else logging.WARNING, format="%(message)s"
    )
    if bf16_line:
        (log.info if bf16_setting == "auto" else log.warning)(bf16_line)  # auto: what it chose; true: emulated
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # not 4 lines per checkpoint
    warnings.formatwarning = lambda message, *a, **k: f"warning: {message}\n"
    check_world_size(accelerator, args.world_size)
    rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    if line := idle_cores_warning(device, local_world, torch.get_num_threads(), cores):
        log.warning(line)
    if cfg.batch_size % world:
        raise SystemExit(f"train.py: batch_size {cfg.batch_size} does not split over {world} ranks")
    set_seed(cfg.seed)  # the same initial weights on every rank

    # data: every image decoded once; this rank's shard of the draws
    crop = crop_size(cfg.scales, cfg.patch_size)  # a patch, its margins, on every scale's grid
    store = load_store(resolve_folders(cfg.data, DEMO_TRAIN), crop)
    if cfg.downsize:
        add_downsized(store, cfg.downsize, crop)
    if cfg.edge_patches:  # a mirrored border, so that patches reach the edges (vdsr/data/patches.py)
        pad_edges(store, edge_pad(cfg.scales, cfg.patch_size), math.lcm(*cfg.scales))
    sampler = PatchSampler(
        store.sizes, cfg.scales, cfg.batch_size // world, cfg.sampling, cfg.patches_per_epoch,
        cfg.fixed_count, cfg.rotate, cfg.seed, rank, world, cfg.patch_size, store.pad,
    )  # fmt: skip
    loader = make_loader(store, sampler, cfg.loader, device, cfg.loader_workers, cfg.loader_chunk)
    steps_per_epoch = len(sampler)
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    val_sets = validation_sets(cfg.val_data) if accelerator.is_main_process else []
    log.info(
        "world %d, %s; %s; %d steps an epoch of %d patches per rank; %d steps",
        world, device, store.summary(), steps_per_epoch, sampler.batch_size, total_steps,
    )  # fmt: skip
    if sampler.mode == "fixed":
        log.info("fixed grid: %d patches, %d used", sampler.grid_count, len(sampler.grid))

    # model and optimiser
    model = VDSR(cfg.depth, cfg.channels, backend=cfg.backend, init=cfg.init, bias=cfg.bias)
    # a warm start (a resumed run has its checkpoint, and the sha256 recorded when it started)
    init_sha256 = init_from(model, cfg.init_weights) if cfg.init_weights and resume_from is None else None
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, cfg)
    model, optimizer = accelerator.prepare(model, optimizer)
    # the plain module, without Accelerate's autocast wrapper: validation and the saved model run
    # in float32, as `vdsr eval` does (the step below opens its own autocast context)
    raw_model = accelerator.unwrap_model(model, keep_fp32_wrapper=False)

    # state, resume
    state = {"step": 0, "patches_seen": 0, "seconds": 0.0, "history": {"loss": [], "val": {}, "time": []},
             "init_sha256": init_sha256, "optimizer": cfg.optimizer}  # fmt: skip
    if args.resume and resume_from is None:
        log.info("--resume: no checkpoint in %s, starting fresh", ckpts.root)
    elif resume_from is not None:
        saved = json.loads((resume_from / "train_state.json").read_text())
        if saved.get("optimizer", "sgd") != cfg.optimizer:  # its state would not load into this optimiser
            raise InputError(f"--resume {resume_from}: a run with optimizer {saved.get('optimizer', 'sgd')}; "
                             f"this recipe says {cfg.optimizer} (--init-weights starts a new run from its weights)")  # fmt: skip
        check_pickled_state(resume_from, accelerator.process_index)  # before Accelerate unpickles it
        accelerator.load_state(str(resume_from))
        state = saved
        state.pop("stopped_early", None)  # how the earlier process ended; this one says its own
        log.info("resumed from %s (step %d)", resume_from, state["step"])
    init_sha256 = state.get("init_sha256")  # of the file the run started from, whatever it holds now
    ema = None  # the weights' moving average (ema_decay > 0): validated beside them, saved as model_ema
    if cfg.ema_decay > 0 and accelerator.is_main_process:  # only the main process validates and saves it
        ema = copy.deepcopy(raw_model).requires_grad_(False)
        if resume_from is not None and (resume_from / "ema.safetensors").is_file():
            ema.load_state_dict(load_weights(resume_from / "ema.safetensors").state_dict())
        elif resume_from is not None:
            log.info("ema_decay: %s holds no ema.safetensors; the average starts from its weights", resume_from)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "config.json", {**asdict(cfg), "world_size": world, "init_sha256": init_sha256})
    accelerator.init_trackers("tensorboard")

    step_fn = lambda lr_in, hr, lr: train_step(model, optimizer, accelerator, cfg, lr_in, hr, lr, world)  # noqa: E731
    if cfg.cuda_graph:
        why_not = graph_unsupported(cfg, device, world)
        if why_not:
            log.warning("cuda_graph: %s; the eager step runs", why_not)
        else:
            step_fn = GraphedStep(model, optimizer, accelerator, cfg, world)
            log.info("cuda_graph: the step is captured as one CUDA graph (after %d eager steps)", step_fn.warmup)

    stop = {"sigterm": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__("sigterm", True))

    bicubic = {}
    if accelerator.is_main_process and val_sets:
        bicubic = metric(evaluate(val_sets, cfg.scales, None, "bicubic", "cpu", progress=False).summary(), "psnr")
        log.info("bicubic on validation: %s", bicubic)

    step = state["step"]
    bar = tqdm(total=total_steps, initial=step, disable=not accelerator.is_main_process, unit="step", dynamic_ncols=True)
    t_last, t0 = time.perf_counter(), time.perf_counter() - state["seconds"]
    t_ckpt = t_run = t_last  # t_run: this process's start (max_minutes); t0 counts the resumed run's time too
    patch_digest = hashlib.sha256()
    last_val = (None, {})  # (step, summary) of the latest validation: the final one is not run twice
    # read back only at read points (every log_every steps, and before a validation or a
    # checkpoint): the summed loss, the count of non-finite losses, and the SIGTERM flag
    loss_sum, n_bad, n_window = torch.zeros((), device=device), torch.zeros((), device=device), 0
    has_val = bool(cfg.val_data)
    model.train()
    exit_code = 0
    while step < total_steps:
        epoch, skip = divmod(step, steps_per_epoch)
        for i, (lr_in, hr, _) in enumerate(loader.epoch(epoch)):
            if i < skip:
                continue  # resuming mid-epoch: the same draws, already trained on
            if cfg.debug_ranks:
                patch_digest.update(hr.cpu().numpy().tobytes())  # testing only (a host sync)
            if cfg.channels_last:
                lr_in = lr_in.contiguous(memory_format=torch.channels_last)
            if cfg.inject_nan_at is not None and step == cfg.inject_nan_at:
                hr = hr * float("nan")  # testing: a non-finite loss at this step
            lr = lr_at(cfg, step, steps_per_epoch)
            loss = step_fn(lr_in, hr, lr)
            if ema is not None:
                ema_update(ema, raw_model, cfg.ema_decay)
            loss_sum += loss
            n_bad += ~torch.isfinite(loss)
            step += 1
            n_window += 1
            state["patches_seen"] += cfg.batch_size
            bar.update(1)
            # the same decision on every rank (only the main process validates, but all of them
            # take part in the read point's all-reduce)
            val_due = has_val and ((cfg.val_every and step % cfg.val_every == 0) or step == total_steps)
            ckpt_due = step % cfg.checkpoint_every == 0 or step == total_steps
            if not (step % cfg.log_every == 0 or step == total_steps or val_due or ckpt_due):
                continue

            # ---- a read point: the one host synchronisation of the last n_window steps
            clock = time.perf_counter()
            host = [float(stop["sigterm"]),
                    float(cfg.checkpoint_minutes is not None and clock - t_ckpt >= 60 * cfg.checkpoint_minutes),
                    float(cfg.max_minutes is not None and clock - t_run >= 60 * cfg.max_minutes)]  # fmt: skip
            flags = torch.cat([torch.stack([loss_sum, n_bad]), torch.tensor(host, device=device)])
            total_loss, bad, term, ckpt_time, out_of_time = accelerator.reduce(flags, "sum").tolist()  # all ranks alike
            if bad > 0:
                last = ckpts.latest()
                log.error("non-finite loss in steps %d to %d: stopping. Last good checkpoint: %s",
                          step - n_window + 1, step, last or "none")  # fmt: skip
                exit_code = 1
                break
            mean = total_loss / (n_window * world)
            now = time.perf_counter()
            rate = n_window * cfg.batch_size / (now - t_last)
            t_last = now
            loss_sum.zero_(), n_bad.zero_()
            n_window = 0
            state["history"]["loss"].append((step, mean))
            state["history"].setdefault("time", []).append((step, round(now - t0, 3)))  # training seconds at this step
            accelerator.log({"loss": mean, "lr": lr, "patches_per_s": rate}, step=step)
            bar.set_postfix(loss=f"{mean:.4g}", lr=f"{lr:.0e}", patches_s=f"{rate:.0f}")

            if out_of_time > 0 and step < total_steps:  # max_minutes: end here as if this were the last step
                log.warning("max_minutes = %g reached at step %d of %d: stopping, writing the model",
                            cfg.max_minutes, step, total_steps)  # fmt: skip
                state["stopped_early"] = f"max_minutes at step {step} of {total_steps}"
                total_steps = step
                val_due, ckpt_due = has_val, True

            # ---- validation (the main process), checkpoints
            if val_due and val_sets:
                last_val = (step, validate_all(raw_model, ema, val_sets, cfg.scales, device, cfg.tf32))
                psnr = metric(last_val[1], "psnr")
                for name, by in psnr.items():
                    for s, v in by.items():
                        state["history"]["val"].setdefault(name, {}).setdefault(s, []).append((step, v))
                        accelerator.log({f"psnr/{name}/x{s}": v}, step=step)
                log.info("step %d: validation PSNR %s", step, psnr)
                write_curves(out, state["history"], bicubic)  # readable while a long run goes on
                t_last = time.perf_counter()  # validation time is not training throughput
            state["step"], state["seconds"] = step, time.perf_counter() - t0
            if ckpt_due or term > 0 or ckpt_time > 0:
                ckpts.save(accelerator, state, ema)
                t_last = t_ckpt = time.perf_counter()
            if term > 0:
                log.warning("SIGTERM: checkpoint saved at step %d; continue with --resume", step)
                exit_code = 143
                break
            if step >= total_steps:
                break
        if exit_code:
            break
    bar.close()
    if cfg.debug_ranks:
        params = hashlib.sha256(b"".join(p.detach().cpu().float().numpy().tobytes() for p in raw_model.parameters()))
        write_json(out / f"rank{rank}.json", {"params": params.hexdigest(), "patches": patch_digest.hexdigest()})
    if exit_code:
        accelerator.end_training()
        return exit_code

    # ---- the results
    if accelerator.is_main_process:
        seconds = time.perf_counter() - t0
        meta = {"scales": ",".join(map(str, cfg.scales)), "steps": str(step), "recipe": Path(args.config).stem}
        save_weights(out / "model.safetensors", raw_model, meta)
        if ema is not None:
            save_weights(out / "model_ema.safetensors", ema, {**meta, "ema_decay": str(cfg.ema_decay)})
        final = last_val[1] if last_val[0] == step else {}
        if val_sets and not final:  # e.g. resumed from the last step
            final = validate_all(raw_model, ema, val_sets, cfg.scales, device, cfg.tf32)
        summary = {
            "world_size": world,
            "steps": step,
            "patches_seen": state["patches_seen"],
            "seconds": round(seconds, 1),
            "patches_per_s": round(state["patches_seen"] / seconds, 1) if seconds > 0 else None,
            "stopped_early": state.get("stopped_early"),
            "cuda_graph": {"captures": step_fn.captures, "replays": step_fn.replays} if isinstance(step_fn, GraphedStep) else None,
            "init_weights": cfg.init_weights,
            "init_sha256": init_sha256,
            "final_psnr": metric(final, "psnr"),
            "final_ssim": metric(final, "ssim"),
            "bicubic_psnr": bicubic,
        }
        write_json(out / "summary.json", summary)
        if last_val[0] != step:  # else written by the validation at this step
            write_curves(out, state["history"], bicubic)
        log.info("done: %s", json.dumps(summary))
    accelerator.wait_for_everyone()
    accelerator.end_training()  # closes the trackers and the process group: last
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except InputError as e:
        print(f"train.py: error: {e}", file=sys.stderr)
        sys.exit(2)
