"""scripts/gpu_run.sh --dry-run: the prepared GPU run, every part at toy size on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def check_bench_kernels_smoke(folder: Path, log: str) -> None:
    """What ``launch/bench_kernels.py --smoke`` (the dry run's bench_kernels part) promises:
    the variants, every Triton speedup naming the eager row it is divided by, the resize's error."""
    assert "not performance figures" in log
    data = json.loads((folder / "kernels-smoke-cpu-interpreter.json").read_text())
    assert data["smoke"] is True
    variants = {r["variant"] for r in data["forward"]}
    assert {"triton fp32 (ieee)", "triton bf16", "eager bf16 autocast channels_last",
            "eager bf16 weights cast ahead channels_last"} <= variants  # fmt: skip
    for r in data["forward"]:
        if r["variant"].startswith("triton"):
            assert r["baseline"] in variants and r["baseline"].startswith("eager"), r
            assert abs(r["speedup"] - next(b["ms"] for b in data["forward"] if b["variant"] == r["baseline"]) / r["ms"]) < 1e-9
    assert all(r["max_abs_err_vs_matlab"] <= 1e-5 for r in data["resize"] if r["variant"] == "triton degrade")
    assert (folder / "kernels-smoke-cpu-interpreter.md").read_text().startswith("# Kernel benchmark")


def test_gpu_run_dry_run_runs_every_part(shared_data, tmp_path):
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_run.sh"), "--dry-run", "--out", str(out), "--data", str(shared_data),
                           "--anneal", "--deadline", "1500", "--train-set", "ema_decay=0.9 seed=5", "--cuda-graph"],
                          capture_output=True, text=True, timeout=1200, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    summary = (out / "summary.txt").read_text().splitlines()
    parts = [line.split()[0] for line in summary]
    assert parts == ["install", "graph_check", "parity", "bench_kernels", "bench_train", "train", "eval", "eval_ema"]  # eval_ema: ema_decay
    assert all(line.split()[1] == "ok" for line in summary), summary
    check_bench_kernels_smoke(out / "benchmarks", (out / "logs" / "bench_kernels.log").read_text())
    assert json.loads((out / "benchmarks" / "train-dry-run.json").read_text())["rows"]
    assert (out / "run" / "model.safetensors").is_file()
    assert "Set5" in json.loads((out / "run" / "eval.json").read_text())
    assert any((out / "run" / "checkpoints").glob("step-*"))
    # --anneal: the recipe's decay was refitted into the train minutes (paper-x80: 80 epochs, decay every 20)
    config = json.loads((out / "run" / "config.json").read_text())
    assert "plan_anneal: steps 0 to" in proc.stdout + proc.stderr
    # --cuda-graph: the dry run's bench has no graphed row (a CPU), so the plan took the eager rate
    assert "no rate of the step as train runs it; the eager one" in proc.stdout + proc.stderr
    assert config["lr_step_epochs"] < config["epochs"] < 2 * config["lr_step_epochs"], config
    assert (config["epochs"], config["lr_step_epochs"]) != (80, 20)
    assert (config["ema_decay"], config["seed"]) == (0.9, 5)  # --train-set reached the run
    assert (out / "run" / "model_ema.safetensors").is_file()


def test_gpu_run_train_only_packs_for_the_device_tool(shared_data, tmp_path):
    """--train-only: install, train, eval (and eval_ema of the weight average), no parity or
    benchmarks; --anneal takes --rate; --pack DIR: the output less its checkpoints as
    gpu_run.tgz, the last checkpoint as checkpoint.tgz (what a device call brings back);
    --cuda-graph: the graph_check part, then train.py with cuda_graph=true (which, on the CPU,
    says it cannot and runs the eager step)."""
    import tarfile

    out, pack = tmp_path / "out", tmp_path / "pack"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_run.sh"), "--dry-run", "--out", str(out), "--data", str(shared_data),
                           "--train-only", "--anneal", "--rate", "50", "--deadline", "1500", "--train-set", "ema_decay=0.9",
                           "--pack", str(pack), "--cuda-graph"], capture_output=True, text=True, timeout=1200, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    summary = (out / "summary.txt").read_text().splitlines()
    parts = ("install", "graph_check", "train", "eval", "eval_ema", "pack")
    assert [line.split()[:2] for line in summary] == [[p, "ok"] for p in parts]
    assert not (out / "benchmarks" / "train-dry-run.json").exists()  # no bench without --quick-bench
    assert json.loads((out / "run" / "config.json").read_text())["cuda_graph"] is True
    assert "cuda_graph: needs a CUDA device, not cpu" in (out / "logs" / "train.log").read_text()
    assert "plan_anneal: steps 0 to" in proc.stdout + proc.stderr  # the plan came from --rate
    assert "Set5" in json.loads((out / "run" / "eval-ema.json").read_text())
    with tarfile.open(pack / "gpu_run.tgz") as t:
        names = t.getnames()
    assert "./run/model.safetensors" in names and "./run/eval-ema.json" in names and "./logs/train.log" in names
    assert not [n for n in names if "checkpoints" in n]
    with tarfile.open(pack / "checkpoint.tgz") as t:
        names = t.getnames()
    last = sorted(d.name for d in (out / "run" / "checkpoints").glob("step-*"))[-1]
    assert f"{last}/model.safetensors" in names and f"{last}/ema.safetensors" in names


def test_gpu_run_two_calls_of_a_warm_start_recipe(shared_data, tmp_path):
    """The plan for a loan (benchmarks/README.md): a first call of paper-long-cycle2 (a recipe
    that starts from weights) with ``--backend auto`` (the graph check, the Triton step's check,
    then the race of the two steps), then a second that resumes the first's last checkpoint with the graph and the
    Triton step asked for directly (the plan's fallback), and a third as the plan's second: float32 with TF32, the
    graph checked in that precision first. In the dry run the toy model leaves the recipe's weights out."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    gpu_run = ["bash", str(REPO / "scripts" / "gpu_run.sh"), "--dry-run", "--data", str(shared_data), "--train-only",
               "--recipe", "paper-long-cycle2"]  # fmt: skip
    first = tmp_path / "g"
    proc = subprocess.run([*gpu_run, "--out", str(first), "--pack", str(tmp_path / "p1"), "--cuda-graph", "--deadline", "1500",
                           "--backend", "auto"], capture_output=True, text=True, timeout=1200, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    summary = [line.split()[:2] for line in (first / "summary.txt").read_text().splitlines()]
    parts = ("install", "graph_check", "triton_check", "race", "backend", "train", "eval", "eval_ema", "pack")
    assert [p for p, _ in summary] == list(parts) and all(s == "ok" for p, s in summary if p != "backend"), summary
    race = json.loads((first / "benchmarks" / "race-dry-run.json").read_text())
    rates = {r["backend"]: r["bare_step_patches_per_s"] for r in race["rows"]}
    assert set(rates) == {"torch", "triton"} and race["loop"] is None  # the bare steps only
    # where each step's time goes (--profile): the Triton step's autograd Function is in its profile
    names = {r["backend"]: [t["name"] for t in r["profile"]["top"]] for r in race["rows"]}
    assert race["profile_steps"] == 1 and "FusedVDSRFunction" in names["triton"], names
    picked = dict(summary)["backend"]
    assert picked == ("triton" if rates["triton"] > 1.02 * rates["torch"] else "torch")
    config = json.loads((first / "run" / "config.json").read_text())
    assert (config["init_weights"], config["seed"], config["lr_step_epochs"], config["cuda_graph"]) == (None, 7, 100, True)
    assert config["backend"] == picked
    last = sorted((first / "run" / "checkpoints").glob("step-*"))[-1]
    second = tmp_path / "g2"
    proc = subprocess.run([*gpu_run, "--out", str(second), "--pack", str(tmp_path / "p2"), "--train-minutes", "1",
                           # (batch 1, no validation: on the CPU the Triton step runs in the interpreter, ~5 s a step)
                           "--train-set", "cuda_graph=true batch_size=1 val_data=[]", "--resume", str(last), "--backend", "triton"],
                          capture_output=True, text=True, timeout=1200, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    parts = [line.split()[:2] for line in (second / "summary.txt").read_text().splitlines()]
    assert parts == [["install", "ok"], ["backend", "triton"]] + [[p, "ok"] for p in ("train", "eval", "eval_ema", "pack")]
    assert json.loads((second / "run" / "config.json").read_text())["backend"] == "triton"
    assert "VDSR_AUTOTUNE=first" in (second / "logs" / "train.log").read_text()  # the kernels' first configs
    step = json.loads((last / "train_state.json").read_text())["step"]
    assert f"resumed from {last} (step {step})" in (second / "logs" / "train.log").read_text()
    assert json.loads((second / "run" / "summary.json").read_text())["steps"] == step + 6  # it went on
    assert (tmp_path / "p2" / "checkpoint.tgz").is_file()
    # the plan's second call: the lr 0.001 phase in float32 with TF32 (cuDNN), its graph checked in TF32
    last = sorted((second / "run" / "checkpoints").glob("step-*"))[-1]
    third = tmp_path / "g3"
    proc = subprocess.run([*gpu_run, "--out", str(third), "--pack", str(tmp_path / "p3"), "--train-minutes", "1", "--cuda-graph",
                           "--train-set", "bf16=false tf32=true batch_size=1 val_data=[]", "--resume", str(last), "--backend", "torch"],
                          capture_output=True, text=True, timeout=1200, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    parts = [line.split()[:2] for line in (third / "summary.txt").read_text().splitlines()]
    assert parts == [[p, "ok"] for p in ("install", "graph_check", "train", "eval", "eval_ema", "pack")], parts
    assert '-k not triton and not bf16' in (third / "logs" / "graph_check.log").read_text()  # the TF32 case, not bf16's
    config = json.loads((third / "run" / "config.json").read_text())
    assert (config["backend"], config["bf16"], config["tf32"], config["cuda_graph"]) == ("torch", False, True, True)


def test_gpu_run_quick_bench_measures_the_rate_for_the_plan(shared_data, tmp_path):
    """--train-only --quick-bench: bench_train and bench_data (the device stream, 1 and 8 batches
    at a time) before training, and --anneal plans with the rate bench_train measured."""
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_run.sh"), "--dry-run", "--out", str(out), "--data", str(shared_data),
                           "--train-only", "--quick-bench", "--anneal", "--deadline", "1500"],
                          capture_output=True, text=True, timeout=1200, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    parts = [line.split()[:2] for line in (out / "summary.txt").read_text().splitlines()]
    assert parts == [[p, "ok"] for p in ("install", "bench_train", "bench_data_1", "bench_data_8", "train", "eval")]
    rate = json.loads((out / "benchmarks" / "train-dry-run.json").read_text())["rows"][0]["loop_patches_per_s"]
    assert f"fit at {rate:.0f} patches/s" in proc.stdout + proc.stderr  # the plan took the measured rate
    for chunk in (1, 8):
        assert json.loads((out / "benchmarks" / f"data-device-chunk{chunk}-dry-run.json").read_text())["chunk"] == chunk


def test_gpu_run_refuses_bad_arguments(tmp_path):
    (tmp_path / "f").write_text("a file, not a folder")  # --pack under it cannot be made
    for args, message in [(["--bogus"], "unknown argument"), (["--dry-run", "--data", str(tmp_path)], "no such folder"),
                          (["--dry-run", "--train-minutes", "-1"], "--train-minutes"),
                          (["--dry-run", "--deadline", "5m"], "--deadline"),
                          (["--dry-run", "--resume", str(tmp_path / "none")], "no such checkpoint folder"),
                          (["--dry-run", "--train-only", "--anneal"], "--rate"),
                          (["--dry-run", "--quick-bench"], "--quick-bench goes with --train-only"),
                          (["--dry-run", "--rate", "fast"], "--rate fast"),
                          (["--dry-run", "--backend", "cudnn"], "--backend cudnn"),
                          (["--dry-run", "--pack", str(tmp_path / "f" / "sub")], "cannot write there")]:  # fmt: skip
        proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_run.sh"), *args, "--out", str(tmp_path / "o")],
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, (args, proc.stderr)


def test_gpu_run_needs_set5_and_goes_on_without_set14(tmp_path):
    """The data folder must hold T91, BSD200 and Set5; Set14 may stay behind (pack_gpu_data.py
    --sets), and then the eval is on Set5 alone, said once. (--train-minutes -1 stops the run
    just after the data check.)"""
    for name in ("T91", "BSD200"):
        (tmp_path / "data" / name).mkdir(parents=True)
    cmd = ["bash", str(REPO / "scripts" / "gpu_run.sh"), "--dry-run", "--data", str(tmp_path / "data"),
           "--train-minutes", "-1", "--out", str(tmp_path / "o")]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "Set5: no such folder" in proc.stderr, proc.stderr
    (tmp_path / "data" / "Set5").mkdir()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert "Set14: not here; eval on Set5 only" in proc.stderr, proc.stderr
    assert proc.returncode == 2 and "--train-minutes" in proc.stderr, proc.stderr  # past the data check


def test_plan_anneal_fits_the_decay_into_the_budget():
    import sys

    sys.path.insert(0, str(REPO / "scripts"))
    from plan_anneal import main, plan

    # resumed at step 20,100 (1,000 steps an epoch), 30,900 new steps: ends at 51,000, decays at 43,000
    assert plan(20100, 1000, 30900, 0.25) == (51, 43)
    assert plan(0, 4, 100, 0.25) == (25, 19)  # a fresh run
    assert plan(20100, 1000, 500, 0.25) is None  # not one epoch boundary inside the budget
    assert plan(20100, 1000, 1000, 0.25) is None  # to step 21,000: no whole epoch left to decay in
    assert plan(20100, 1000, 1900, 0.25) == (22, 21)  # the one whole epoch at the decayed lr
    assert main(["--config", "paper", "--rate", "10", "--seconds", "1"]) == 1
    assert main(["--config", "paper", "--rate", "100", "--seconds", "60", "--set", "nonsense"]) == 2
    assert main(["--config", "seed", "--rate", "100", "--seconds", "600"]) == 2  # a fixed grid: refused


def test_gpu_run_deadline_too_short_skips_training_with_a_summary(shared_data, tmp_path):
    """--deadline that leaves no time to train: the earlier parts run (here, with --train-only,
    the install), training and eval are reported SKIPPED in the summary, and the exit status is
    1 (a dry run with a 1 s deadline)."""
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_run.sh"), "--dry-run", "--out", str(out), "--data", str(shared_data),
                           "--train-only", "--deadline", "1"], capture_output=True, text=True, timeout=1200, env=env)  # fmt: skip
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-2000:]
    summary = (out / "summary.txt").read_text().splitlines()
    assert [line.split()[:2] for line in summary] == [["install", "ok"], ["train", "SKIPPED"], ["eval", "SKIPPED"]], summary
    assert not (out / "run").exists()


def test_pick_backend_takes_triton_only_where_it_wins_by_the_margin(tmp_path):
    """scripts/pick_backend.py (gpu_run --backend auto): the graphed bf16 batch-64 rows when
    training is graphed, the eager ones when not; triton only if > 2% faster; no torch row: exit 1."""
    import sys

    sys.path.insert(0, str(REPO / "scripts"))
    from pick_backend import main, pick_backend

    def row(backend, graph, rate, batch=64, precision="bf16"):
        return {"backend": backend, "precision": precision, "batch": batch, "cuda_graph": graph, "bare_step_patches_per_s": rate}

    rows = [row("torch", False, 9000), row("triton", False, 8100), row("torch", True, 18800), row("triton", True, 25000),
            row("triton", True, 99999, batch=256), row("triton", True, 99999, precision="tf32")]  # fmt: skip
    assert pick_backend(rows, graph=True) == ("triton", {"torch": 18800, "triton": 25000})
    assert pick_backend(rows, graph=False)[0] == "torch"  # eager: the Triton step is slower
    assert pick_backend([row("torch", True, 18800), row("triton", True, 19000)], graph=True)[0] == "torch"  # +1%: not enough
    assert pick_backend([row("torch", True, 18800)], graph=True)[0] == "torch"  # no Triton row
    f = tmp_path / "race.json"
    f.write_text(json.dumps({"rows": rows}))
    assert main([str(f), "--graph"]) == 0
    f.write_text(json.dumps({"rows": [row("triton", True, 25000)]}))
    assert main([str(f), "--graph"]) == 1
