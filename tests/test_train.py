"""launch/train.py: DDP on two CPU ranks, clipping, learning, resume, faults."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "launch"))

import train  # noqa: E402

train_accelerator = train.Accelerator  # the real one, for tests that wrap it

TINY = {
    "data": ["demo"],
    "val_data": [],
    "scales": [2, 3, 4],
    "depth": 4,
    "channels": 8,
    "batch_size": 8,
    "sampling": "random",
    "patches_per_epoch": 64,
    "epochs": 4,
    "lr": 0.1,
    "lr_step_epochs": 2,
    "weight_decay": 1e-4,
    "clip": "adjustable",
    "clip_theta": 1e-4,
    "loader": "torch",
    "log_every": 2,
    "val_every": 1000,
    "checkpoint_every": 3,
    "seed": 0,
}


@pytest.fixture
def tiny(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def run_main(argv: list[str]) -> int:
    """train.main() in this process, with Accelerate's singleton state reset around it."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    try:
        return train.main(argv)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)


def test_clipping_bounds_every_element():
    from accelerate import Accelerator

    model = torch.nn.Linear(50, 50)
    (model(torch.randn(4, 50)) * 1e6).sum().backward()  # huge gradients
    cfg = train.Config(clip="adjustable", clip_theta=0.01)
    lr = 0.05
    train.clip_gradients(Accelerator(cpu=True), model, cfg, lr)
    bound = cfg.clip_theta / lr
    grads = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert grads.abs().max().item() <= bound * (1 + 1e-6)
    assert (grads.abs() > 0.99 * bound).float().mean() > 0.5  # it did clip
    before = [p.detach().clone() for p in model.parameters()]
    torch.optim.SGD(model.parameters(), lr=lr).step()  # plain SGD: no element moves more than theta
    step = max((p.detach() - b).abs().max().item() for p, b in zip(model.parameters(), before))
    assert step <= cfg.clip_theta * (1 + 1e-5)
    assert train.lr_at(train.Config(lr=0.1, lr_step_epochs=20, lr_gamma=0.1), 20 * 38, 38) == pytest.approx(0.01)
    train.clip_gradients(Accelerator(cpu=True), model, cfg, 1e-42)  # a vanishing lr: no overflow, no clamp
    train.clip_gradients(Accelerator(cpu=True), model, cfg, 0.0)  # lr 0 (a valid recipe value): no division by zero


def test_adam_is_caffes_adam_with_l2_weight_decay():
    """optimizer=adam: betas 0.9 / 0.999, eps 1e-8, weight decay added to the gradient (Caffe's
    Regularize), so the first step moves every element by lr * sign(g + wd * w)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(20, 20)
    cfg = train.Config(optimizer="adam", lr=1e-3, weight_decay=0.1)
    opt = train.make_optimizer(model, cfg)
    assert isinstance(opt, torch.optim.Adam)
    assert opt.defaults["betas"] == (0.9, 0.999) and opt.defaults["eps"] == 1e-8 and opt.defaults["weight_decay"] == 0.1
    model(torch.randn(8, 20)).pow(2).sum().backward()
    before = [p.detach().clone() for p in model.parameters()]
    expected = [w - 1e-3 * (p.grad + 0.1 * w) / ((p.grad + 0.1 * w).abs() + 1e-8) for w, p in zip(before, model.parameters())]
    opt.step()
    for p, e in zip(model.parameters(), expected):
        torch.testing.assert_close(p.detach(), e, rtol=0, atol=1e-7)
    sgd = train.make_optimizer(model, train.Config())
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.9


def test_loss_falls_and_outputs(tiny, tmp_path):
    out = tmp_path / "run"
    code = run_main(["--config", str(tiny), "--output-dir", str(out), "--max-steps", "30", "--val-data", "demo-val",
                     "--set", "patches_per_epoch=512", "checkpoint_every=100", "val_every=0"])  # fmt: skip
    assert code == 0
    history = json.loads((out / "history.json").read_text())
    (val,) = history["val"].values()  # val_every 0: validated once, at the end
    assert {s: [step for step, _ in v] for s, v in val.items()} == {"2": [30], "3": [30], "4": [30]}
    losses = [v for _, v in history["loss"]]
    assert len(losses) == 15
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3, losses
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 1 and summary["steps"] == 30 and summary["patches_seen"] == 240
    assert summary["patches_per_s"] > 0
    assert summary["final_psnr"] == {"demo-val": {s: v[-1][1] for s, v in val.items()}}  # the last validation
    assert set(summary["final_ssim"]["demo-val"]) == {"2", "3", "4"}
    for name in ("model.safetensors", "config.json", "curves.png"):
        assert (out / name).is_file()
    assert (out / "checkpoints" / "latest").read_text().strip() == "step-0000030"
    assert any((out / "tensorboard").rglob("events.out.tfevents.*"))


@pytest.fixture
def deterministic():
    """Bit-for-bit resume is a property of deterministic kernels: always so on the CPU; on CUDA
    cuDNN's default conv backward is not (atomics), so there its deterministic algorithms."""
    if not torch.cuda.is_available():
        yield
        return
    saved = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark, torch.are_deterministic_algorithms_enabled()
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    torch.use_deterministic_algorithms(True, warn_only=True)
    yield
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[:2]
    torch.use_deterministic_algorithms(saved[2])


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_resume_reproduces_uninterrupted_run(tiny, tmp_path, deterministic, optimizer):
    """Bit for bit, whichever optimiser: its state (SGD's momentum, Adam's moments and step
    count) travels in the checkpoint."""
    from safetensors.torch import load_file

    straight, split = tmp_path / "straight", tmp_path / "split"
    opt = ["--optimizer", "adam", "--lr", "0.001", "--clip", "none"] if optimizer == "adam" else []
    assert run_main(["--config", str(tiny), "--output-dir", str(straight), "--max-steps", "10", *opt]) == 0
    assert run_main(["--config", str(tiny), "--output-dir", str(split), "--max-steps", "5", *opt]) == 0  # stops mid-epoch
    assert run_main(["--config", str(tiny), "--output-dir", str(split), "--max-steps", "10", "--resume", *opt]) == 0
    assert json.loads((split / "config.json").read_text())["optimizer"] == optimizer
    other = ["--optimizer", "sgd"] if optimizer == "adam" else ["--optimizer", "adam", "--clip", "none"]
    with pytest.raises(train.InputError, match=f"a run with optimizer {optimizer}; this recipe says"):
        run_main(["--config", str(tiny), "--output-dir", str(split), "--max-steps", "12", "--resume", *other])
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(split / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a), max((a[k] - b[k]).abs().max().item() for k in a)
    assert json.loads((split / "summary.json").read_text())["patches_seen"] == 80


def test_max_minutes_counts_this_process_only(tiny, tmp_path):
    """max_minutes is this process's budget: a run resumed from a checkpoint with hours behind it
    still trains (it once stopped at its first read point: the budget counted the earlier hours,
    found in a GPU call that resumed a CPU run), and max_minutes = 0 stops at the first read point."""
    out = tmp_path / "run"
    assert run_main(["--config", str(tiny), "--output-dir", str(out), "--max-steps", "4"]) == 0
    state_file = max((out / "checkpoints").glob("step-*")) / "train_state.json"
    state = json.loads(state_file.read_text())
    state["seconds"] = 5 * 3600.0  # five hours of earlier training
    state_file.write_text(json.dumps(state))
    assert run_main(["--config", str(tiny), "--output-dir", str(out), "--max-steps", "10", "--resume",
                     "--set", "max_minutes=5"]) == 0  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 10 and summary["stopped_early"] is None, summary
    assert summary["seconds"] >= 5 * 3600  # the run's total time still counts the earlier hours (rounded to 0.1 s)
    assert run_main(["--config", str(tiny), "--output-dir", str(out), "--max-steps", "20", "--resume",
                     "--set", "max_minutes=0"]) == 0  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 12 and summary["stopped_early"] == "max_minutes at step 12 of 20", summary
    assert run_main(["--config", str(tiny), "--output-dir", str(out), "--max-steps", "14", "--resume"]) == 0
    summary = json.loads((out / "summary.json").read_text())  # resumed from that early stop, run to its end
    assert summary["steps"] == 14 and summary["stopped_early"] is None, summary


def test_ema_is_the_moving_average_and_resumes_exactly(tiny, tmp_path, deterministic):
    """ema_decay: the average obeys ema = d * ema + (1 - d) * w, travels in the checkpoint (a
    split run ends on the same average as a straight one, bit for bit), is validated beside the
    weights and written as model_ema.safetensors."""
    from safetensors.torch import load_file

    ema, w = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    expect = [0.9 * a.detach() + 0.1 * b.detach() for a, b in zip(ema.parameters(), w.parameters())]
    train.ema_update(ema, w, 0.9)
    assert all(torch.allclose(a, e) for a, e in zip(ema.parameters(), expect))

    val = tmp_path / "val"
    val.mkdir()
    from PIL import Image

    Image.fromarray((torch.rand(48, 48, 3) * 255).byte().numpy()).save(val / "a.png")
    args = ["--config", str(tiny), "--val-data", str(val), "--scales", "2", "--set", "ema_decay=0.5"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert run_main([*args, "--output-dir", str(straight), "--max-steps", "10"]) == 0
    assert run_main([*args, "--output-dir", str(split), "--max-steps", "5"]) == 0
    assert (max((split / "checkpoints").glob("step-*")) / "ema.safetensors").is_file()
    assert run_main([*args, "--output-dir", str(split), "--max-steps", "10", "--resume"]) == 0
    a, b = load_file(str(straight / "model_ema.safetensors")), load_file(str(split / "model_ema.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    raw = load_file(str(straight / "model.safetensors"))
    assert any(not torch.equal(a[k], raw[k]) for k in a)  # an average, not a copy of the weights
    psnr = json.loads((straight / "summary.json").read_text())["final_psnr"]
    assert set(psnr) == {"val", "val EMA"} and psnr["val EMA"]["2"] != psnr["val"]["2"], psnr
    with pytest.raises(train.InputError, match=r"ema_decay = 1; expected a number in \[0, 1\)"):
        run_main(["--config", str(tiny), "--output-dir", str(tmp_path / "bad"), "--set", "ema_decay=1"])


def test_init_weights_starts_from_the_file(tiny, tmp_path):
    """init_weights: the run starts from the file's tensors (at lr 0 it ends on them, bit for bit),
    records the file's sha256, and a resumed run takes its checkpoint instead."""
    import hashlib

    from safetensors.torch import load_file

    from vdsr.checkpoint import save_weights
    from vdsr.model import VDSR

    torch.manual_seed(123)  # not the recipe's seed: weights the run could not draw itself
    init = tmp_path / "init.safetensors"
    save_weights(init, VDSR(depth=4, channels=8))
    out = tmp_path / "warm"
    assert run_main(["--config", str(tiny), "--output-dir", str(out), "--max-steps", "2", "--init-weights", str(init),
                     "--lr", "0"]) == 0  # fmt: skip
    a, b = load_file(str(init)), load_file(str(out / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    sha = hashlib.sha256(init.read_bytes()).hexdigest()
    assert json.loads((out / "config.json").read_text())["init_sha256"] == sha
    assert json.loads((out / "summary.json").read_text())["init_sha256"] == sha
    cold = tmp_path / "cold"  # the same run without it ends elsewhere: the test can fail
    assert run_main(["--config", str(tiny), "--output-dir", str(cold), "--max-steps", "2", "--lr", "0"]) == 0
    c = load_file(str(cold / "model.safetensors"))
    assert not torch.equal(a["layers.0.weight"], c["layers.0.weight"])
    # training moves away from it, and --resume continues from the checkpoint, not from the file:
    # it neither reads nor needs the file (here gone), and keeps the sha256 recorded at the start
    moved, straight = tmp_path / "moved", tmp_path / "straight"
    assert run_main(["--config", str(tiny), "--output-dir", str(moved), "--max-steps", "3", "--init-weights", str(init)]) == 0
    assert run_main(["--config", str(tiny), "--output-dir", str(straight), "--max-steps", "4", "--init-weights", str(init)]) == 0
    init.unlink()
    assert run_main(["--config", str(tiny), "--output-dir", str(moved), "--max-steps", "4", "--init-weights", str(init),
                     "--resume"]) == 0  # fmt: skip
    m, s = load_file(str(moved / "model.safetensors")), load_file(str(straight / "model.safetensors"))
    assert all(torch.equal(m[k], s[k]) for k in m) and not torch.equal(m["layers.0.weight"], a["layers.0.weight"])
    assert json.loads((moved / "config.json").read_text())["init_sha256"] == sha
    assert json.loads((moved / "summary.json").read_text())["init_sha256"] == sha


def test_cycle_report_marks_the_lr_cuts_of_a_step_schedule():
    """The grey lines of the report's figure: every lr_step_epochs epochs, before the run's end."""
    import cycle_report

    cfg = {"sampling": "random", "lr_step_epochs": 28, "patches_per_epoch": 64000, "batch_size": 64,
           "lr": 0.01, "lr_gamma": 0.1}  # fmt: skip
    assert cycle_report.lr_decay_steps(cfg, 62000) == [28000, 56000]
    assert cycle_report.lr_decay_steps(cfg, 56000) == [28000]  # a cut at the last step is not drawn
    assert cycle_report.lr_decay_steps({**cfg, "sampling": "fixed"}, 62000) == []
    assert cycle_report.lr_decay_steps({**cfg, "lr_step_epochs": 0}, 62000) == []
    assert cycle_report.lr_decay_steps({**cfg, "lr_gamma": 1.0}, 62000) == []  # a constant lr has no cuts


def test_cycle_report_figure_without_a_dataset_in_common(tmp_path):
    """Validation on Set5, evaluation on Set14 only: the figure is still written (and says so)."""
    import cycle_report

    png = tmp_path / "r.png"
    cycle_report.plot_gain({"Set5": {"2": [[100, 30.0]]}}, {"Set14": {"2": 29.0}}, {}, 64, "t", png, [50])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cycle_report_sets_a_pair_of_records_side_by_side(tmp_path, capsys):
    """--compare: each later record's end minus the first's per cell, one figure of both curves
    (the moving average where the record evaluated it), and a refusal naming the record that
    started from other weights."""
    import cycle_report

    def record(end, sha="abc", weights="model_ema.safetensors", val=None):
        val = val or {"Set5": {"2": [[100, 30.0], [200, 30.5]]}, "Set5 EMA": {"2": [[100, 30.1], [200, 30.2]]}}
        return {"init_weights": "w.safetensors", "init_sha256": sha, "weights": weights, "steps": 200,
                "patch_steps": 12800, "schedule": {"batch_size": 64, "bf16": True}, "validation": val,
                "eval_start": {"Set5": {"2": 30.0, "3": 28.0}}, "eval_run_end": end}  # fmt: skip

    a, b, c = tmp_path / "fp32.json", tmp_path / "bf16.json", tmp_path / "other.json"
    a.write_text(json.dumps(record({"Set5": {"2": 30.25, "3": 28.5}})))
    b.write_text(json.dumps(record({"Set5": {"2": 30.2, "3": 28.75}}, weights="model.safetensors")))
    c.write_text(json.dumps(record({"Set5": {"2": 31.0, "3": 29.0}}, sha="def")))
    png, out = tmp_path / "pair.png", tmp_path / "pair.json"
    assert cycle_report.main(["--compare", str(a), str(b), "-o", str(png), "--json", str(out)]) == 0
    got = json.loads(out.read_text())
    assert got["minus_first"] == {"bf16": {"Set5": {"2": -0.05, "3": 0.25}}}
    assert got["records"]["fp32"]["eval_run_end"]["Set5"]["2"] == 30.25 and got["eval_start"]["Set5"]["3"] == 28.0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Set5 x3: start 28.000  fp32 28.500  bf16 28.750  (bf16 - fp32 +0.250)" in capsys.readouterr().out
    # the curve drawn is the one the record evaluated: the first's moving average, the second's raw weights
    drawn = cycle_report.plot_compare({"fp32": json.loads(a.read_text()), "bf16": json.loads(b.read_text())}, tmp_path / "x.png")
    assert drawn == {"fp32 x2": [[100, 0.1], [200, 0.2]], "bf16 x2": [[100, 0.0], [200, 0.5]]}
    recs = {"fp32": json.loads(a.read_text()), "p96": {**json.loads(b.read_text()), "schedule": {"batch_size": 12}}}
    assert cycle_report.step_label({"fp32": recs["fp32"]}) == "step (batch 64)"
    assert cycle_report.step_label(recs) == "step (batch: fp32 64, p96 12)"  # not one batch size: each record's
    with pytest.raises(SystemExit) as e:
        cycle_report.main(["--compare", str(a), str(c), "-o", str(tmp_path / "no.png")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "other: started from w.safetensors (sha256 def)" in err and "not a pair" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "no.png").exists()
    (tmp_path / "again").mkdir()
    (tmp_path / "again" / "fp32.json").write_text(a.read_text())
    with pytest.raises(SystemExit):
        cycle_report.main(["--compare", str(a), str(tmp_path / "again" / "fp32.json"), "-o", str(tmp_path / "no.png")])
    assert "a second record named fp32" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cycle_report.main([str(tmp_path), "--compare", str(a), str(b), "-o", str(tmp_path / "no.png")])
    assert "--compare reads records, not a run folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cycle_report.main(["--compare", str(a), str(b)])  # no -o
    assert "--compare needs -o OUT.png" in capsys.readouterr().err


def test_cycle_report_compares_a_warm_started_run_with_its_start(tiny, tmp_path, capsys):
    """launch/cycle_report.py: both models evaluated as `vdsr eval` does, their difference per
    cell, the verdict; refuses a run whose start file changed, or one that had no start file."""
    import shutil

    import cycle_report

    from vdsr.checkpoint import save_weights
    from vdsr.demo import demo_files
    from vdsr.evaluate import evaluate, open_dataset, vdsr_method
    from vdsr.model import VDSR
    from vdsr.upscale import load_pretrained

    torch.manual_seed(7)
    init = tmp_path / "init.safetensors"
    save_weights(init, VDSR(depth=4, channels=8))
    run = tmp_path / "warm"
    assert run_main(["--config", str(tiny), "--output-dir", str(run), "--max-steps", "3", "--init-weights", str(init)]) == 0
    val = tmp_path / "val"
    val.mkdir()
    shutil.copy(demo_files(("chelsea.png",))[0], val / "chelsea.png")
    record = tmp_path / "report.json"
    assert cycle_report.main([str(run), "--json", str(record), "--data", str(val), "--scales", "2", "3"]) == 0
    got = json.loads(record.read_text())
    direct = evaluate([open_dataset(val)], [2, 3], vdsr_method(load_pretrained(init)), "vdsr").summary()
    assert got["eval_start"] == {"val": {s: r["psnr"] for s, r in direct["val"].items()}}
    assert got["eval_run_end"]["val"] != got["eval_start"]["val"]  # three steps moved it
    gain = got["run_minus_start"]["val"]
    assert gain == {s: round(got["eval_run_end"]["val"][s] - got["eval_start"]["val"][s], 4) for s in ("2", "3")}
    assert got["better_in_every_cell"] == all(v > 0 for v in gain.values())
    assert got["steps"] == 3 and got["schedule"]["optimizer"] == "sgd" and got["init_weights"] == str(init)
    assert got["best_public"]["Set5"]["2"] == 37.57 and got["run_minus_best_public"] == {}  # no Set5 here
    assert record.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert got["weights"] == "model.safetensors" and got["stopped_early"] is None
    capsys.readouterr()
    with pytest.raises(SystemExit):  # --ema of a run that kept no moving average
        cycle_report.main([str(run), "--json", str(tmp_path / "x.json"), "--data", str(val), "--ema"])
    assert "model_ema.safetensors: missing (the run kept no moving average" in capsys.readouterr().err
    averaged = tmp_path / "averaged"
    argv = ["--config", str(tiny), "--output-dir", str(averaged), "--max-steps", "3", "--init-weights", str(init), "--set", "ema_decay=0.5"]
    assert run_main(argv) == 0
    ema_record = tmp_path / "ema.json"
    assert cycle_report.main([str(averaged), "--json", str(ema_record), "--data", str(val), "--scales", "2", "--ema"]) == 0
    got = json.loads(ema_record.read_text())
    direct = evaluate([open_dataset(val)], [2], vdsr_method(load_pretrained(averaged / "model_ema.safetensors")), "vdsr").summary()
    assert got["weights"] == "model_ema.safetensors" and got["command"].endswith(" --ema")
    assert got["eval_run_end"] == {"val": {s: r["psnr"] for s, r in direct["val"].items()}}
    raw = evaluate([open_dataset(val)], [2], vdsr_method(load_pretrained(averaged)), "vdsr").summary()
    assert got["eval_run_end"]["val"]["2"] != raw["val"]["2"]["psnr"]  # the average, not the raw weights
    capsys.readouterr()
    save_weights(init, VDSR(depth=4, channels=8))  # the start file replaced since: refused
    with pytest.raises(SystemExit):
        cycle_report.main([str(run), "--json", str(tmp_path / "x.json"), "--data", str(val)])
    assert "sha256 differs from the one the run recorded" in capsys.readouterr().err
    cold = tmp_path / "cold"
    assert run_main(["--config", str(tiny), "--output-dir", str(cold), "--max-steps", "1"]) == 0
    with pytest.raises(SystemExit):
        cycle_report.main([str(cold), "--json", str(tmp_path / "x.json"), "--data", str(val)])
    assert "did not start from weights" in capsys.readouterr().err and not (tmp_path / "x.json").exists()


def test_cycle_report_sets_a_run_against_other_weights(tiny, tmp_path, capsys, monkeypatch):
    """--against WEIGHTS: the run set against that file, not the one it started from (a run
    resumed past a model taken from it, or one from scratch); the record names the file and its
    sha256; --compare refuses to pair it with a record set against its start; a missing file is
    refused in one line."""
    import shutil

    import cycle_report

    from vdsr.checkpoint import file_sha256, save_weights
    from vdsr.demo import demo_files
    from vdsr.evaluate import evaluate, open_dataset, vdsr_method
    from vdsr.model import VDSR
    from vdsr.upscale import load_pretrained

    torch.manual_seed(8)
    init, other = tmp_path / "init.safetensors", tmp_path / "shipped.safetensors"
    save_weights(init, VDSR(depth=4, channels=8))
    save_weights(other, VDSR(depth=4, channels=8))
    val = tmp_path / "val"
    val.mkdir()
    shutil.copy(demo_files(("chelsea.png",))[0], val / "chelsea.png")
    warm = tmp_path / "warm"
    assert run_main(["--config", str(tiny), "--output-dir", str(warm), "--max-steps", "2", "--init-weights", str(init)]) == 0
    own, vs_other = tmp_path / "own.json", tmp_path / "other.json"
    assert cycle_report.main([str(warm), "--json", str(own), "--data", str(val), "--scales", "2"]) == 0
    assert cycle_report.main([str(warm), "--json", str(vs_other), "--data", str(val), "--scales", "2", "--against", str(other)]) == 0
    got, mine = json.loads(vs_other.read_text()), json.loads(own.read_text())
    direct = evaluate([open_dataset(val)], [2], vdsr_method(load_pretrained(other)), "vdsr").summary()
    assert got["eval_start"] == {"val": {"2": direct["val"]["2"]["psnr"]}} != mine["eval_start"]
    assert got["eval_run_end"] == mine["eval_run_end"]  # the same run end, set against another file
    assert got["run_minus_start"]["val"]["2"] == round(got["eval_run_end"]["val"]["2"] - got["eval_start"]["val"]["2"], 4)
    assert got["against"] == str(other) and got["against_sha256"] == file_sha256(other) and "against_sha256" not in mine
    assert got["init_weights"] == str(init) and got["command"].endswith(f" --against {other}")
    assert f"run {got['eval_run_end']['val']['2']:.3f}  shipped.safetensors " in capsys.readouterr().out
    figures = []  # the figure's y axis names the file it is set against
    monkeypatch.setattr(cycle_report, "save_figure", lambda fig, path: figures.append(fig.axes[0].get_ylabel()))
    cycle_report.plot_gain({"val": {"2": [[1, 30.0]]}}, {"val": {"2": 29.0}}, {}, 64, "t", tmp_path / "y.png", (), "shipped.safetensors")
    assert figures == ["val PSNR minus shipped.safetensors's (dB)"]
    monkeypatch.undo()  # figures are written again
    with pytest.raises(SystemExit):  # one set against its start, one against another file: not a pair
        cycle_report.main(["--compare", str(own), str(vs_other), "-o", str(tmp_path / "no.png")])
    assert "set against " in capsys.readouterr().err and not (tmp_path / "no.png").exists()
    cold = tmp_path / "cold"  # from scratch: no start of its own, but it can be set against a model
    assert run_main(["--config", str(tiny), "--output-dir", str(cold), "--max-steps", "1"]) == 0
    assert cycle_report.main([str(cold), "--json", str(tmp_path / "cold.json"), "--data", str(val), "--scales", "2", "--against", str(other)]) == 0
    assert json.loads((tmp_path / "cold.json").read_text())["init_weights"] is None
    pair = tmp_path / "pair.png"  # two runs from different starts, both set against one file: a pair
    save, labels = cycle_report.save_figure, []
    monkeypatch.setattr(cycle_report, "save_figure", lambda fig, path: (labels.append(fig.axes[0].get_ylabel()), save(fig, path)))
    assert cycle_report.main(["--compare", str(vs_other), str(tmp_path / "cold.json"), "-o", str(pair)]) == 0 and pair.is_file()
    assert labels and labels[0].endswith(f"minus {other.name}'s (dB)")  # the file both were set against, not "the start"
    monkeypatch.undo()
    capsys.readouterr()
    with pytest.raises(SystemExit):
        cycle_report.main([str(warm), "--json", str(tmp_path / "x.json"), "--data", str(val), "--against", str(tmp_path / "gone.safetensors")])
    assert f"--against {tmp_path / 'gone.safetensors'}: no such weights file" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_every_option_named_as_a_recipe_key_overrides_it(tiny):
    """The command line reaches the recipe for every option whose name is a recipe key."""
    keys = set(vars(train.parse_args(["--config", str(tiny)]))) & set(train.Config.__dataclass_fields__)
    assert {"init_weights", "lr", "max_steps", "data", "output_dir", "channels_last", "tf32", "seed"} <= keys
    argv = ["--config", str(tiny), "--init-weights", "w.safetensors", "--lr", "0.5", "--max-steps", "7",
            "--data", "x", "y", "--output-dir", "o", "--no-channels-last", "--tf32", "--seed", "3"]  # fmt: skip
    cfg = train.load_config(train.parse_args(argv))
    assert (cfg.init_weights, cfg.lr, cfg.max_steps, cfg.data, cfg.output_dir) == ("w.safetensors", 0.5, 7, ["x", "y"], "o")
    assert (cfg.channels_last, cfg.tf32, cfg.seed) == (False, True, 3)


def test_init_weights_errors_name_the_file(tiny, tmp_path):
    from vdsr.checkpoint import save_weights
    from vdsr.model import VDSR

    with pytest.raises(train.InputError, match=r"init_weights: .*nope\.safetensors: no such file"):
        run_main(["--config", str(tiny), "--output-dir", str(tmp_path / "a"), "--init-weights", str(tmp_path / "nope.safetensors")])
    deep = tmp_path / "deep.safetensors"
    save_weights(deep, VDSR(depth=6, channels=8))
    with pytest.raises(train.InputError, match=r"deep\.safetensors: VDSR-6 with 8 channels; the recipe builds VDSR-4 with 8"):
        run_main(["--config", str(tiny), "--output-dir", str(tmp_path / "b"), "--init-weights", str(deep)])
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not weights")
    with pytest.raises(train.InputError, match=r"junk\.safetensors: not a safetensors weights file"):
        run_main(["--config", str(tiny), "--output-dir", str(tmp_path / "c"), "--init-weights", str(junk)])


def test_nan_stops_and_last_good_checkpoint_loads(tiny, tmp_path):
    from vdsr.checkpoint import load_weights

    out = tmp_path / "nan"
    code = run_main(["--config", str(tiny), "--output-dir", str(out), "--set", "inject_nan_at=7"])
    assert code == 1
    latest = out / "checkpoints" / (out / "checkpoints" / "latest").read_text().strip()
    assert latest.name == "step-0000006"
    assert json.loads((latest / "train_state.json").read_text())["step"] == 6
    model = load_weights(latest / "model.safetensors")
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert not (out / "model.safetensors").exists()  # no final model from a failed run


class _Payload:
    """Unpickled by a general unpickler, this would call ``open(path, "w")``: the file appearing
    is the proof that a load ran code."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_resume_reads_the_pickled_state_as_plain_data_only(tiny, tmp_path):
    """optimizer.bin and random_states_0.pkl (Accelerate's torch.save files) are read by torch's
    weights_only unpickler: a real checkpoint's pass; one holding a callable is refused with the
    file named and the callable never runs (Accelerate alone would skip a refused RNG file
    quietly and resume on fresh random states); one cut short, or missing, is named too."""
    out = tmp_path / "run"
    assert run_main(["--config", str(tiny), "--output-dir", str(out), "--max-steps", "3"]) == 0
    ckpt = out / "checkpoints" / "step-0000003"
    train.check_pickled_state(ckpt, 0)  # what train.py and Accelerate wrote: plain data
    marker = tmp_path / "code-ran"
    good = {name: (ckpt / name).read_bytes() for name in ("random_states_0.pkl", "optimizer.bin")}
    for name in good:
        torch.save({"state": _Payload(marker)}, ckpt / name)
        with pytest.raises(train.InputError) as refused:
            run_main(["--config", str(tiny), "--output-dir", str(out), "--max-steps", "6", "--resume"])
        assert re.fullmatch(rf"--resume \S*{re.escape(name)}: refused by the plain-data \(weights_only\) loader: "
                            r"Unsupported global: GLOBAL \S*open was not an allowed global by default",
                            str(refused.value)), str(refused.value)  # fmt: skip
        assert not marker.exists(), f"unpickling {name} ran its payload"
        (ckpt / name).write_bytes(good[name])
    (ckpt / "optimizer.bin").write_bytes(b"PK\x03\x04 cut short")  # not a whole torch.save file
    with pytest.raises(train.InputError, match=r"optimizer\.bin: refused by the plain-data \(weights_only\) loader: \S"):
        train.check_pickled_state(ckpt, 0)
    (ckpt / "optimizer.bin").write_bytes(good["optimizer.bin"])
    (ckpt / "random_states_0.pkl").unlink()
    with pytest.raises(train.InputError, match=r"random_states_0\.pkl: missing"):
        train.check_pickled_state(ckpt, 0)


def test_world_size_mismatch_is_refused(tiny, tmp_path, monkeypatch):
    with pytest.raises(SystemExit, match="--world-size 2 but 1"):
        run_main(["--config", str(tiny), "--output-dir", str(tmp_path / "w"), "--world-size", "2"])
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")  # what `accelerate launch --cpu --num_processes 2` leaves
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(SystemExit, match="only one started"):
        run_main(["--config", str(tiny), "--output-dir", str(tmp_path / "w2")])


def test_bad_config_is_a_clear_error(tmp_path):
    with pytest.raises(train.InputError, match="no such recipe"):
        run_main(["--config", "nonesuch"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: 0.1\nlearning_rate: 3\n")
    with pytest.raises(train.InputError, match="unknown keys"):
        run_main(["--config", str(bad)])
    for item, message in [
        ("val_every=-1", "val_every = -1; expected an integer >= 0"),
        ("batch_size=0", "batch_size = 0; expected an integer >= 1"),
        ("epochs=ten", "epochs = 'ten'; expected an integer"),
        ("clip=max", "clip = 'max'; expected one of adjustable, norm, none"),
        ("optimizer=rmsprop", "optimizer = 'rmsprop'; expected one of sgd, adam"),
        ("lr=-0.1", "lr = -0.1; expected a number >= 0"),
        ("bf16=maybe", "bf16 = 'maybe'; expected true, false or auto"),
        ("cuda_graph=1", "cuda_graph = 1; expected true or false"),
        ("loader_chunk=0", "loader_chunk = 0; expected an integer >= 1"),
        ("patch_size=4", "patch_size = 4; expected an integer >= 8"),
        ("scales=[2,1]", "scale 1 is not supported"),
        ("init=xavier", "init = 'xavier'; expected one of fan_in, fan_out"),
        ("bias=none", "bias = 'none'; expected true or false"),
    ]:
        with pytest.raises(train.InputError, match=re.escape(message)):
            run_main(["--config", "demo", "--set", item])


def test_sigterm_checkpoints_then_exits(tiny, tmp_path):
    out = tmp_path / "term"
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "launch" / "train.py"), "--config", str(tiny), "--output-dir", str(out),
         "--set", "epochs=1000", "lr_step_epochs=1000", "checkpoint_every=100000"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    deadline = time.time() + 120
    while not (out / "config.json").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(3)  # some steps
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, output[-2000:]
    latest = out / "checkpoints" / (out / "checkpoints" / "latest").read_text().strip()
    step = json.loads((latest / "train_state.json").read_text())["step"]
    assert step >= 1 and "SIGTERM" in output


def test_kill_9_loses_only_the_steps_since_the_last_checkpoint(tiny, tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "launch" / "train.py"), "--config", str(tiny), "--output-dir", str(out),
         "--set", "epochs=1000", "lr_step_epochs=1000", "checkpoint_every=2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.time() + 120
    while len(list((out / "checkpoints").glob("step-*"))) < 2 and time.time() < deadline:
        time.sleep(0.1)
    proc.kill()  # SIGKILL: no handler runs, possibly in the middle of writing a checkpoint
    proc.wait(timeout=60)
    ckpts = train.Checkpoints(out, keep=2)
    last = ckpts.latest()
    assert last is not None, list((out / "checkpoints").iterdir())
    step = json.loads((last / "train_state.json").read_text())["step"]
    # a torn write (the temporary folder) and a pointer to a removed folder never hide a whole checkpoint
    (out / "checkpoints" / ".tmp-step-9999999").mkdir(exist_ok=True)
    (out / "checkpoints" / "latest").write_text("step-9999998\n")
    assert ckpts.latest() == last
    with pytest.raises(train.InputError, match="already holds a run"):  # a fresh run never overwrites it
        run_main(["--config", str(tiny), "--output-dir", str(out)])
    assert run_main(["--config", str(tiny), "--output-dir", str(out), "--max-steps", str(step + 2), "--resume",
                     "--set", "epochs=1000", "lr_step_epochs=1000", "checkpoint_every=2"]) == 0  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == step + 2 and summary["patches_seen"] == (step + 2) * 8


def test_two_cpu_ranks_ddp(tiny, tmp_path):
    """Two real gloo ranks: the same parameters afterwards, different patches seen."""
    out = tmp_path / "ddp"
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--main_process_port", "29517", str(REPO / "launch" / "train.py"), "--config", str(tiny),
           "--output-dir", str(out), "--world-size", "2", "--max-steps", "4", "--set", "debug_ranks=true",
           "val_data=[demo-val]", "val_every=3", "log_every=2"]  # fmt: skip  (validation at a step that is not a log step)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0, r1 = (json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["params"] == r1["params"]
    assert r0["patches"] != r1["patches"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and "demo-val" in summary["final_psnr"]
    history = json.loads((out / "history.json").read_text())
    assert [s for s, _ in history["val"]["demo-val"]["2"]] == [3, 4]  # rank 0 validated, rank 1 waited


def test_sse_sum_loss_is_the_batch_sum_times_world():
    out, hr = torch.rand(4, 1, 5, 5), torch.rand(4, 1, 5, 5)
    sq = ((out - hr) ** 2).flatten(1).sum(1)
    assert torch.allclose(train.sse_loss(out, hr), 0.5 * sq.mean())
    assert torch.allclose(train.sse_loss(out, hr, "sse_sum"), sq.sum())  # pytorch-vdsr's MSELoss(size_average=False)
    assert torch.allclose(train.sse_loss(out, hr, "sse_sum", world=2), 2 * sq.sum())


def test_pytorch_vdsr_step_and_downsizing_train(tiny, tmp_path):
    """loss=sse_sum + clip=norm 0.4 + downsize [0.7, 0.5] runs, and the downsized copies are in the store."""
    out = tmp_path / "run"
    argv = ["--config", str(tiny), "--output-dir", str(out), "--max-steps", "4",
            "--set", "loss=sse_sum", "clip=norm", "clip_theta=0.4", "downsize=[0.7, 0.5]"]  # fmt: skip
    assert run_main(argv) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["loss"] == "sse_sum" and cfg["downsize"] == [0.7, 0.5] and cfg["clip"] == "norm"
    for bad in (["downsize=[1.5]"], ["downsize=0.5"], ["loss=l1"]):
        with pytest.raises(train.InputError, match=bad[0].split("=")[0]):
            run_main(["--config", str(tiny), "--output-dir", str(tmp_path / "bad"), "--set", *bad])


def test_pytorch_vdsr_network_trains_without_biases(tiny, tmp_path):
    """bias=false init=fan_out (pytorch-vdsr's network): the run trains every weight and no bias, a
    resumed run keeps them frozen, and a warm start from weights with biases is refused."""
    from vdsr.checkpoint import load_weights, save_weights
    from vdsr.model import VDSR

    out = tmp_path / "run"
    argv = ["--config", str(tiny), "--output-dir", str(out), "--max-steps", "3",
            "--set", "bias=false", "init=fan_out", "loss=sse_sum", "clip=norm", "clip_theta=0.4"]  # fmt: skip
    assert run_main(argv) == 0
    assert run_main([*argv[:5], "6", *argv[6:], "--resume"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["bias"] is False and cfg["init"] == "fan_out"
    trained = load_weights(out / "model.safetensors")
    assert all(torch.all(c.bias == 0) for c in trained.layers)
    biased = tmp_path / "biased.safetensors"
    m = VDSR(TINY["depth"], TINY["channels"])
    with torch.no_grad():
        m.layers[2].bias.fill_(0.01)
    save_weights(biased, m)
    with pytest.raises(train.InputError, match=r"biased\.safetensors: layer 2 has non-zero biases.*bias: false"):
        run_main(["--config", str(tiny), "--output-dir", str(tmp_path / "warm"), "--init-weights", str(biased),
                  "--set", "bias=false"])  # fmt: skip
    save_weights(biased, trained)  # no biases: a warm start without them is fine, and trains the weights only
    assert run_main(["--config", str(tiny), "--output-dir", str(tmp_path / "warm2"), "--init-weights", str(biased),
                     "--max-steps", "2", "--set", "bias=false"]) == 0  # fmt: skip
    warm = load_weights(tmp_path / "warm2" / "model.safetensors")
    assert all(torch.all(c.bias == 0) for c in warm.layers)
    assert all(not torch.equal(a.weight, b.weight) for a, b in zip(warm.layers, trained.layers))


def test_patch_size_sets_the_patches_and_their_crops(tiny, tmp_path, monkeypatch):
    """patch_size=64: the sampler, the crops (a patch plus its margins) and the batches the step
    sees are all 64 x 64, and config.json records it."""
    seen = []
    real = train.make_loader

    def recording(store, sampler, *args, **kwargs):
        seen.append((sampler.patch, sampler.crop, min(min(hw) for hw in store.sizes)))
        loader = real(store, sampler, *args, **kwargs)
        epoch = loader.epoch

        def shapes(e):
            for lr, hr, scale in epoch(e):
                seen.append((tuple(lr.shape), tuple(hr.shape)))
                yield lr, hr, scale

        loader.epoch = shapes
        return loader

    monkeypatch.setattr(train, "make_loader", recording)
    out = tmp_path / "run"
    assert run_main(["--config", str(tiny), "--output-dir", str(out), "--max-steps", "2", "--set", "patch_size=64"]) == 0
    assert json.loads((out / "config.json").read_text())["patch_size"] == 64
    patch, crop, smallest = seen[0]
    assert patch == 64 and crop == train.crop_size([2, 3, 4], 64) == 108 and smallest >= crop
    assert seen[1:3] == [((8, 1, 64, 64), (8, 1, 64, 64))] * 2


def test_edge_patches_pad_the_store_and_reach_the_edges(tiny, tmp_path, monkeypatch):
    """edge_patches=true (with the downsized copies): every image, copies included, carries the
    mirrored border the sampler is told, some patches touch an image edge, config.json records it."""
    seen = []
    real = train.make_loader

    def recording(store, sampler, *args, **kwargs):
        seen.append((store, sampler))
        return real(store, sampler, *args, **kwargs)

    monkeypatch.setattr(train, "make_loader", recording)
    out = tmp_path / "run"
    argv = ["--config", str(tiny), "--output-dir", str(out), "--max-steps", "2",
            "--set", "edge_patches=true", "downsize=[0.7]"]  # fmt: skip
    assert run_main(argv) == 0
    assert json.loads((out / "config.json").read_text())["edge_patches"] is True
    store, sampler = seen[0]
    pad = train.edge_pad([2, 3, 4])
    assert store.pad == sampler.pad == pad == 36
    assert any("@0.7" in p.stem for p in store.paths)
    assert all((h - 2 * pad) % 12 == 0 and (w - 2 * pad) % 12 == 0 for h, w in store.sizes)
    many = train.PatchSampler(store.sizes, [2, 3, 4], 64, "random", 64 * 100, pad=sampler.pad)
    yx = np.concatenate([np.stack([d.y, d.x], 1) for d in many.epoch(0)]) - pad
    assert yx.min() == 0  # patches at the top or left edge of their image (the plain sampler: never)
    with pytest.raises(train.InputError, match="edge_patches"):
        run_main(["--config", str(tiny), "--output-dir", str(tmp_path / "bad"), "--set", "edge_patches=3"])


def test_add_downsized_copies():
    import numpy as np

    from vdsr.data import ImageStore, add_downsized

    rng = np.random.default_rng(0)
    store = ImageStore([rng.random((100, 120), dtype=np.float32), rng.random((60, 200), dtype=np.float32)],
                       [Path("a.png"), Path("b.png")])  # fmt: skip
    add_downsized(store, [0.7, 0.5], min_side=40)
    shapes = [im.shape for im in store.images]
    # 0.5 x 60 = 30 < 40: that copy is left out
    assert shapes == [(100, 120), (60, 200), (70, 84), (42, 140), (50, 60)]
    assert [p.name for p in store.paths[2:]] == ["a@0.7.png", "b@0.7.png", "a@0.5.png"]
    assert all(0 <= im.min() and im.max() <= 1 and im.dtype == np.float32 for im in store.images)


SYNC_METHODS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "cpu", "numpy")


def record_syncs(monkeypatch, calls: list, only_from: str | None = None) -> None:
    """Record every host read of a tensor (``.item()``, ``.tolist()``, ``bool()``, ...), by name;
    with ``only_from``, only the calls made from that file."""
    for name in SYNC_METHODS:
        orig = getattr(torch.Tensor, name)

        def spy(self, *a, _name=name, _orig=orig, **k):
            caller = sys._getframe(1).f_code.co_filename
            if only_from is None or caller.endswith(only_from):
                calls.append((_name, sys._getframe(1).f_lineno))
            return _orig(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, spy)


@pytest.mark.parametrize("clip", ["adjustable", "norm"])
def test_train_step_never_reads_a_device_value(monkeypatch, clip):
    """The step (forward, loss, backward, clipping, SGD) reads no tensor back to the host: on a
    GPU nothing in it synchronises. (On a GPU: torch.cuda.set_sync_debug_mode counts the same.)"""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from vdsr.model import VDSR

    AcceleratorState._reset_state(reset_partial_state=True)
    try:
        acc = Accelerator(cpu=True, mixed_precision="bf16")
        model = VDSR(4, 8).to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        model, opt = acc.prepare(model, opt)
        cfg = train.Config(depth=4, channels=8, clip=clip, clip_theta=1e-3 if clip == "adjustable" else 0.4)
        lr_in = torch.rand(4, 1, 41, 41).contiguous(memory_format=torch.channels_last)
        hr = lr_in + 0.05 * torch.randn_like(lr_in)
        before = [p.detach().clone() for p in model.parameters()]
        calls: list = []
        record_syncs(monkeypatch, calls)
        losses = [train.train_step(model, opt, acc, cfg, lr_in, hr, 0.1, 1) for _ in range(3)]
        monkeypatch.undo()
        assert calls == [], calls
        assert all(l.dim() == 0 and torch.isfinite(l) for l in losses)
        assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))  # it did train
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)


def test_the_loop_reads_back_only_at_log_points(tiny, tmp_path, monkeypatch):
    """12 steps, log_every 4, no checkpoint or validation in between: train.py reads device
    values back 3 times (one .tolist() per read point), never per step."""
    calls: list = []
    record_syncs(monkeypatch, calls, only_from=str(REPO / "launch" / "train.py"))
    argv = ["--config", str(tiny), "--output-dir", str(tmp_path / "r"), "--max-steps", "12",
            "--set", "log_every=4", "checkpoint_every=1000"]  # fmt: skip
    assert run_main(argv) == 0
    monkeypatch.undo()
    assert [name for name, _ in calls] == ["tolist"] * 3, calls
    history = json.loads((tmp_path / "r" / "history.json").read_text())
    assert [s for s, _ in history["loss"]] == [4, 8, 12]


def test_a_non_finite_loss_stops_within_log_every_and_no_checkpoint_after_it(tiny, tmp_path, caplog):
    """The NaN at step 7 (of 1-based steps) is read back at step 8 (log_every 4); the checkpoint
    of step 6 (checkpoint_every 3) stays the last one: nothing was saved after the NaN."""
    from vdsr.checkpoint import load_weights

    out = tmp_path / "nan"
    argv = ["--config", str(tiny), "--output-dir", str(out),
            "--set", "log_every=4", "checkpoint_every=3", "inject_nan_at=6", "val_data=[demo-val]", "val_every=4"]  # fmt: skip
    with caplog.at_level("ERROR", logger="vdsr.train"):
        assert run_main(argv) == 1
    assert "non-finite loss in steps 7 to 8" in caplog.text
    # the validation at step 4 left its curve behind although the run never reached its end
    history = json.loads((out / "history.json").read_text())
    assert [s for s, _ in history["val"]["demo-val"]["2"]] == [4]
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ckpts = train.Checkpoints(out, keep=2)
    assert [p.name for p in ckpts.whole()] == ["step-0000003", "step-0000006"]
    model = load_weights(ckpts.latest() / "model.safetensors")
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("native", [True, False])
def test_bf16_auto_follows_the_hardware_and_explicit_bf16_warns_where_emulated(tiny, tmp_path, monkeypatch, caplog, native):
    """``bf16: auto`` (the default) runs bfloat16 autocast only where the device computes in it:
    config.json records what ran, and the log says why. ``--bf16`` is kept, with a warning on a
    device that only emulates it (55 s a VDSR-20 step on an AVX2 CPU, against 3.9 s in float32)."""
    from vdsr import precision

    monkeypatch.setattr(precision, "native_bf16", lambda device: native)
    made = []
    monkeypatch.setattr(train, "Accelerator", lambda **kw: made.append(kw["mixed_precision"]) or train_accelerator(**kw))
    with caplog.at_level("INFO", logger="vdsr.train"):
        assert run_main(["--config", str(tiny), "--output-dir", str(tmp_path / "auto"), "--max-steps", "2"]) == 0
        assert run_main(["--config", str(tiny), "--output-dir", str(tmp_path / "on"), "--max-steps", "2", "--bf16"]) == 0
    assert made == ["bf16" if native else "no", "bf16"]
    assert json.loads((tmp_path / "auto" / "config.json").read_text())["bf16"] is native
    assert json.loads((tmp_path / "on" / "config.json").read_text())["bf16"] is True
    assert ("bf16: auto -> bfloat16" if native else "bf16: auto -> float32") in caplog.text
    warned = [r for r in caplog.records if r.levelname == "WARNING" and "emulated" in r.getMessage()]
    assert len(warned) == (0 if native else 1), caplog.text


@pytest.mark.parametrize("recipe", sorted(p.stem for p in (REPO / "launch" / "configs").glob("*.yaml") if p.stem != "multinode"))
def test_every_shipped_recipe_loads(recipe):
    """Every recipe in launch/configs passes the start-up checks of its keys."""
    cfg = train.load_config(train.parse_args(["--config", recipe]))
    batch = {"pytorch-vdsr": 128, "pytorch-vdsr-cut": 128, "patch96-tail": 12}.get(recipe, 64)
    assert cfg.depth == 20 and cfg.batch_size == batch and cfg.scales == [2, 3, 4]
    assert cfg.patch_size == (96 if recipe == "patch96-tail" else 41)
    if recipe == "patch96-tail":  # as many pixels a step as 64 patches of 41 x 41, within 3%
        assert abs(cfg.batch_size * cfg.patch_size**2 / (64 * 41**2) - 1) < 0.03
    steps = cfg.epochs * (cfg.patches_per_epoch // cfg.batch_size if cfg.sampling == "random" else 1)
    assert steps > 0


def test_the_cut_side_run_is_pytorch_vdsr_one_lr_stage_on():
    """pytorch-vdsr-cut.yaml is a near-copy of pytorch-vdsr.yaml kept for its resumable checkpoint:
    it must stay that recipe with lr one cut on (lr x lr_gamma) and no other key changed, so that
    what it measures is the cut alone."""
    main, cut = (train.load_config(train.parse_args(["--config", r])) for r in ("pytorch-vdsr", "pytorch-vdsr-cut"))
    assert cut.lr == pytest.approx(main.lr * main.lr_gamma) and cut.lr < main.lr
    a, b = vars(main), vars(cut)
    assert {k for k in a if k not in ("lr", "output_dir") and a[k] != b[k]} == set()  # output_dir: named for the config


def test_idle_cores_are_named_with_the_launcher_flag_that_uses_them(monkeypatch):
    """`accelerate launch` without --num_cpu_threads_per_process sets OMP_NUM_THREADS=1: a lone
    CPU process then trains on one core of many (measured: the demo at 8.4 s a step on 1 of 2
    cores). train.py says so in one line; ranks that use every core, or a GPU, get none."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cpu = torch.device("cpu")
    line = train.idle_cores_warning(cpu, local_world=1, threads=1, cores=2)
    assert "1 thread(s) in each of 1 process(es) here, of 2 cores (OMP_NUM_THREADS=1)" in line
    assert "--num_cpu_threads_per_process 2" in line
    assert "--num_cpu_threads_per_process 4" in train.idle_cores_warning(cpu, local_world=2, threads=1, cores=8)
    assert train.idle_cores_warning(cpu, local_world=2, threads=1, cores=2) is None  # two ranks, two cores
    assert train.idle_cores_warning(cpu, local_world=1, threads=2, cores=2) is None
    assert train.idle_cores_warning(torch.device("cuda", 0), local_world=1, threads=1, cores=16) is None


def test_demo_launch_uses_every_core():
    demo = (REPO / "scripts" / "demo.sh").read_text()
    assert '--num_cpu_threads_per_process "$(nproc)"' in demo and "--num_processes 1" in demo
