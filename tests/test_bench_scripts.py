"""The benchmark scripts run (smoke mode on the CPU) and write what they promise."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent


def random_images(folder: Path, count: int, h: int, w: int, seed: int = 0) -> Path:
    """``count`` random RGB PNGs of ``h x w`` in a new ``folder`` (the benchmarks' toy data)."""
    import numpy as np
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def save_identity(path: Path, depth: int, channels: int) -> None:
    """A VDSR whose last layer is zero (its output is its bicubic input), saved to ``path``."""
    from vdsr.checkpoint import save_weights
    from vdsr.model import VDSR

    m = VDSR(depth=depth, channels=channels)
    with torch.no_grad():
        m.layers[-1].weight.zero_()
        m.layers[-1].bias.zero_()
    save_weights(path, m)


def test_bench_data_runs_every_loader(tmp_path):
    data = random_images(tmp_path / "imgs", 3, 120, 130, seed=0)
    out = tmp_path / "data.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "launch" / "bench_data.py"), "--data", str(data), "--loader", "dali", "torch",
         "device", "--batches", "3", "--rounds", "1", "--batch-size", "8", "--json", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert [r["loader"] for r in rows] == ["dali", "torch", "device"]
    assert all(r["patches_per_s"] > 0 and r["device"] == "cpu" and r["batches"] == 3 for r in rows)
    assert not any(r["host_time_only"] for r in rows)  # on the CPU the device stream computes in line
    proc = subprocess.run([sys.executable, str(REPO / "launch" / "bench_data.py"), "--data", str(data), "--loader", "device",
                           "--chunk", "2", "--batches", "4", "--rounds", "1", "--batch-size", "8", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = json.loads(out.read_text())
    assert (row["chunk"], row["statistic"], row["batches"]) == (2, "mean", 4) and row["patches_per_s"] > 0


def test_bench_precision_trains_both_precisions(tmp_path):
    import torch
    import yaml
    from safetensors.torch import load_file

    tiny = tmp_path / "tiny.yaml"
    tiny.write_text(yaml.safe_dump({
        "data": ["demo"], "scales": [2, 3], "depth": 4, "channels": 8, "batch_size": 8, "sampling": "random",
        "patches_per_epoch": 32, "lr": 0.1, "clip_theta": 1e-4, "loader": "torch", "log_every": 2,
    }))  # fmt: skip
    out = tmp_path / "precision.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "launch" / "bench_precision.py"), "--config", str(tiny), "--epochs", "2",
         "--lr-step-epochs", "1", "--seeds", "0", "--val-data", "demo-val", "--runs", str(tmp_path / "runs"),
         "--json", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["recipe"]["steps"] == 8 and data["seeds"] == [0]
    assert [(c["dataset"], c["scale"]) for c in data["cells"]] == [("demo-val", 2), ("demo-val", 3)]
    for c in data["cells"]:
        assert len(c["bf16"]) == len(c["fp32"]) == 1
        assert c["bf16_minus_fp32_mean"] == round(c["bf16"][0] - c["fp32"][0], 4)
    configs = [json.loads((tmp_path / "runs" / f"{p}-seed0" / "config.json").read_text()) for p in ("bf16", "fp32")]
    assert [c["bf16"] for c in configs] == [True, False] and configs[0]["seed"] == configs[1]["seed"] == 0
    a, b = (load_file(str(tmp_path / "runs" / f"{p}-seed0" / "model.safetensors")) for p in ("bf16", "fp32"))
    assert any(not torch.equal(a[k], b[k]) for k in a)  # two real runs: the precision changed the weights
    assert "bf16 vs float32 training" in proc.stdout


def test_bench_train_bare_step_and_loop(tmp_path):
    out = tmp_path / "train.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "launch" / "bench_train.py"), "--steps", "4", "--depth", "4", "--precisions", "bf16",
         "--log-every", "2", "--loader", "torch", "--batch-sizes", "8", "16", "--profile", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    data = json.loads(out.read_text())
    assert [r["batch"] for r in data["rows"]] == [8, 16] and data["batch_sizes"] == [8, 16]  # a row per batch size
    for row in data["rows"]:
        assert row["backend"] == "torch" and row["precision"] == "bf16" and data["depth"] == 4
        assert row["bare_step_patches_per_s"] > 0 and row["loop_patches_per_s"] > 0
        loop, bare = row["loop_patches_per_s"], row["bare_step_patches_per_s"]
        rounding = 0.05 / bare * (1 + loop / bare) + 5e-4  # the rates are rounded to 0.1, the share to 0.001
        assert abs(row["loop_share_of_bare"] - loop / bare) <= rounding, row  # (bf16 emulated on AVX2: ~5 patches/s)
        assert data["bf16_matmul_tflops"] > 0
        # --profile: the eager step's ops by time (on a GPU its kernels), the convolutions among the longest
        prof = row["profile"]
        assert prof["steps"] == 1 and prof["kernels_per_step"] > 0 and prof["kernel_ms_per_step"] > 0
        assert 0 < sum(t["share"] for t in prof["top"]) <= 1 + 1e-3 and len(prof["top"]) <= 12
        assert any("conv" in t["name"] for t in prof["top"][:5]), prof["top"]
        # a share of an emulated bf16 matmul means nothing: none is given where bf16 is emulated
        share = row["bare_step_share_of_bf16_matmul"]
        assert share is None if data["bf16_emulated"] else 0 < share, (share, data["bf16_emulated"])
    assert "batch   16: bare step" in proc.stdout and "of the bare step" in proc.stdout and "profile: " in proc.stdout
    # which CPU: bf16 rows mean little without knowing whether bfloat16 is native there
    assert data["cpu"]["capability"] == torch.backends.cpu.get_cpu_capability() and data["cpu"]["model"]
    assert data["cpu"]["native_bf16"] is bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()) is not data["bf16_emulated"]
    assert data["cuda_graph"] is False and not any(r["cuda_graph"] for r in data["rows"])
    proc = subprocess.run([sys.executable, str(REPO / "launch" / "bench_train.py"), "--cuda-graph", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 2 and "--cuda-graph needs a GPU" in proc.stderr


def _recipes_result(extra: list[str], finals: dict[str, float]) -> dict:
    arms = {}
    for arm, x2 in finals.items():
        final = {"Set5": {"2": x2, "3": x2 - 3}}
        arms[arm] = {"overrides": [], "summary": {"final_psnr": final, "bicubic_psnr": {"Set5": {"2": 33.0, "3": 30.0}},
                                                 "patches_seen": 640, "seconds": 1.0},
                     "curves": {"Set5": {s: [[320, v - 0.5], [640, v]] for s, v in final["Set5"].items()}}}  # fmt: skip
    return {"base": {"config": "paper", "extra": extra}, "arms": arms}


def test_bench_recipes_compare_sets_files_side_by_side(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_recipes_result([], {"theta1e-4": 35.65, "theta1e-3": 33.6})))
    b.write_text(json.dumps(_recipes_result(["bf16=false"], {"theta1e-4": 35.60})))
    script = str(REPO / "launch" / "bench_recipes.py")
    out = tmp_path / "cmp.png"
    proc = subprocess.run([sys.executable, script, "--compare", str(a), str(b), "--arms", "theta1e-4", "-o", str(out)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and "theta1e-3" not in proc.stdout  # --arms filters
    assert lines[0].startswith("theta1e-4 [as recipe]") and "(" not in lines[0]
    assert lines[1].startswith("theta1e-4 [bf16=false]") and "x2 35.600 (-0.050)" in lines[1], lines[1]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = subprocess.run([sys.executable, script, "--compare", str(b), "--arms", "theta1e-3", "-o", str(tmp_path / "x.png")],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert bad.returncode == 2 and "no arm theta1e-3" in bad.stderr and not (tmp_path / "x.png").exists()


def test_bench_recipes_arms_carry_their_own_schedule(tmp_path, monkeypatch):
    """Each arm's training command: the shared lr step, or the arm's own (adam: the last quarter)."""
    sys.path.insert(0, str(REPO / "launch"))
    import bench_recipes

    commands = {}

    def fake_run(cmd, check):  # stands in for train.py: records the command, writes its outputs
        out = Path(cmd[cmd.index("--output-dir") + 1])
        out.mkdir(parents=True)
        commands[out.name] = cmd
        (out / "summary.json").write_text(json.dumps({"final_psnr": {"Set5": {"2": 35.0}}, "patches_seen": 64, "seconds": 1.0}))
        (out / "history.json").write_text(json.dumps({"val": {"Set5": {"2": [[1, 35.0]]}}}))
        (out / "config.json").write_text(json.dumps({"batch_size": 64}))

    monkeypatch.setattr(bench_recipes.subprocess, "run", fake_run)
    args = bench_recipes.ArgParser().parse_args([])  # only the attributes run_arm reads:
    for key, value in dict(runs=str(tmp_path), config="paper", epochs=20, seed=0, lr_step_epochs=5, val_every=500,
                           checkpoint_every=250, set=[], max_steps=None, val_data=None, data=None).items():  # fmt: skip
        setattr(args, key, value)
    results = {name: bench_recipes.run_arm(name, args) for name in ("theta1e-4", "adam")}
    assert "lr_step_epochs=5" in commands["theta1e-4"] and "optimizer=adam" not in commands["theta1e-4"]
    assert "lr_step_epochs=15" in commands["adam"] and {"optimizer=adam", "lr=0.0001", "clip=none"} <= set(commands["adam"])
    assert results["adam"]["lr_step_epochs"] == 15 and results["adam"]["curves"] == {"Set5": {"2": [[64, 35.0]]}}
    assert bench_recipes.schedules(results) == "5 (adam: 15)"
    assert bench_recipes.schedules({"theta1e-4": results["theta1e-4"]}) == "5"


def test_bench_train_profile_failure_keeps_the_rates(monkeypatch, capsys):
    """A profiler that cannot start (no CUPTI on a device, say) is recorded as an error in the
    row; the run goes on, so a race's rates, and the backend it picks, are not lost to it."""
    sys.path.insert(0, str(REPO / "launch"))
    import argparse

    import bench_train

    def broken(*args, **kwargs):
        raise RuntimeError("CUPTI_ERROR_NOT_INITIALIZED")

    monkeypatch.setattr(bench_train, "step_profile", broken)
    args = argparse.Namespace(profile=3, depth=3, channels=8)
    row = bench_train.profile_row(args, "cpu", "torch", "fp32", 1)
    assert row == {"error": "RuntimeError: CUPTI_ERROR_NOT_INITIALIZED"}
    assert "profile failed: RuntimeError" in capsys.readouterr().out


def test_bench_grad_precision_compares_bf16_and_tf32_gradients(tmp_path):
    """bench_grad_precision: TF32 rounding is to nearest even at 10 bits, and the script reports,
    for a weights file and for 'he', both precisions' gradient errors against float32 (TF32's,
    with 3 more mantissa bits, the smaller) and the batch noise they are set against."""
    sys.path.insert(0, str(REPO / "launch"))
    from bench_grad_precision import round_tf32

    from vdsr.checkpoint import save_weights
    from vdsr.model import VDSR

    x = torch.tensor([1.0, 1 + 2**-11, 1 + 3 * 2**-11, -1 - 2**-11, 1 + 2**-12, 3.14159265])
    assert round_tf32(x).tolist() == [1.0, 1.0, 1 + 2**-9, -1.0, 1.0, 3.140625]
    data = random_images(tmp_path / "imgs", 3, 100, 110, seed=0)
    torch.manual_seed(0)
    save_weights(tmp_path / "toy.safetensors", VDSR(depth=4, channels=8))
    out = tmp_path / "grad.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "launch" / "bench_grad_precision.py"), "--weights", "he", str(tmp_path / "toy.safetensors"),
         "--data", str(data), "--batches", "3", "--batch-size", "4", "--json", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert [r["weights"] for r in report["rows"]][0] == "he-init (seed 0)" and report["batches"] == 3
    toy = report["rows"][1]
    assert toy["sha256"] and len(toy["layer_batch_noise"]) == 4 and toy["batch_noise"] > 0
    for p in ("bf16", "tf32"):
        assert 0 < toy[p]["error"] < 1 and 0 < toy[p]["cosine"] <= 1 and len(toy[p]["layer_error"]) == 4
    assert toy["tf32"]["error"] < toy["bf16"]["error"]
    # bf16 emulated in float32 (RoundedConv, what long runs use): the same error as the CPU's autocast
    proc = subprocess.run(
        [sys.executable, str(REPO / "launch" / "bench_grad_precision.py"), "--weights", str(tmp_path / "toy.safetensors"),
         "--data", str(data), "--batches", "3", "--batch-size", "4", "--bf16", "emulated", "--json", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    emulated = json.loads(out.read_text())
    assert emulated["bf16"] == "emulated" and emulated["rows"][0]["tf32"]["error"] == pytest.approx(toy["tf32"]["error"], rel=1e-2)
    assert 0.5 < emulated["rows"][0]["bf16"]["error"] / toy["bf16"]["error"] < 2


def test_bench_fit_scores_weights_on_the_same_training_patches(tmp_path):
    """bench_fit: the identity network (the last layer zeroed: output = bicubic input) scores the
    bicubic PSNR exactly, every scale has patches, and the edge and downsized variants run."""
    from vdsr.checkpoint import save_weights
    from vdsr.model import VDSR

    data = random_images(tmp_path / "imgs", 3, 150, 170, seed=0)
    torch.manual_seed(0)
    save_weights(tmp_path / "toy.safetensors", VDSR(depth=4, channels=8))
    save_identity(tmp_path / "identity.safetensors", 4, 8)
    out = tmp_path / "fit.json"
    for extra in ([], ["--edge-patches"], ["--downsize", "0.7"]):
        proc = subprocess.run(
            [sys.executable, str(REPO / "launch" / "bench_fit.py"), "--weights", str(tmp_path / "identity.safetensors"),
             str(tmp_path / "toy.safetensors"), "--data", str(data), "--batches", "3", "--batch-size", "8",
             "--json", str(out), *extra],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        report = json.loads(out.read_text())
        identity, toy = (r["scales"] for r in report["rows"])
        assert sum(v["patches"] for v in identity.values()) == 24
        for s in ("2", "3", "4"):
            assert identity[s]["psnr"] == pytest.approx(identity[s]["bicubic"], abs=1e-3)
            assert toy[s]["bicubic"] == identity[s]["bicubic"] and toy[s]["psnr"] != identity[s]["psnr"]
        assert report["edge_patches"] == ("--edge-patches" in extra) and report["downsize"] == (0.7 if "--downsize" in extra else None)


def test_bench_edges_splits_the_protocol_psnr(tmp_path):
    """bench_edges: for the identity network all three PSNRs are the bicubic image's (the
    protocol's one is `vdsr eval`'s bicubic), and the inner one differs from it (other pixels)."""
    from vdsr.evaluate import evaluate, open_dataset

    data = random_images(tmp_path / "set", 2, 96, 108, seed=1)
    save_identity(tmp_path / "identity.safetensors", 3, 4)
    out = tmp_path / "edges.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "launch" / "bench_edges.py"), "--weights", str(tmp_path / "identity.safetensors"),
         "--data", str(data), "--scales", "2", "3", "--band", "12", "--json", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(out.read_text())["rows"][0]["sets"]["set"]
    bicubic = evaluate([open_dataset(data)], [2, 3], progress=False).summary()["set"]
    for s in ("2", "3"):
        assert got[s]["protocol"] == pytest.approx(bicubic[s]["psnr"], abs=1e-3)
        assert got[s]["mirrored"] == pytest.approx(got[s]["protocol"], abs=1e-3)
        assert abs(got[s]["inner"] - got[s]["protocol"]) > 1e-3
