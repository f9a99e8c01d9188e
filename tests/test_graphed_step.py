"""launch/train.py's GraphedStep (``cuda_graph: true``): the training step replayed as one CUDA graph.

On the CPU a stand-in for the capture checks the bookkeeping (warm-up steps, capture, replay, a
new capture at each new lr, static inputs, the eager step for a batch of another shape) against
the eager step, bit for bit: the stand-in runs the body and then puts every parameter and
momentum buffer back, as a real capture (which records the kernels without running them) leaves
them, and a replay runs the body again. On CUDA the real graph is checked against the eager step
(``scripts/gpu_run.sh --cuda-graph`` runs this file before it trains with the graph).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import yaml
from accelerate import Accelerator

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "launch"))
sys.path.insert(0, str(REPO))

import train  # noqa: E402
from vdsr.model import VDSR  # noqa: E402


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Each test makes its own Accelerator (CPU, or CUDA with bf16): none inherits another's."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


class RecordedBody:
    """The CPU stand-in for a captured graph: ``replay()`` runs the body again and writes what it
    returns into the tensor the capture returned (a graph rewrites its output in place)."""

    def __init__(self, body, out):
        self.body, self.out = body, out

    def replay(self):
        self.out.copy_(self.body())


def stand_in_capture(model, optimizer):
    """A ``train.capture_graph`` for the CPU: runs ``body`` once for its output, then restores the
    parameters and the optimiser's buffers in place (a capture records kernels without running
    them: the state is as before), gradients included."""

    def capture(body, stream=None):
        state = [t for t in model.parameters()] + [
            v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)
        ]
        saved = [t.detach().clone() for t in state]
        out = body()
        with torch.no_grad():
            for t, v in zip(state, saved):
                t.copy_(v)
        return RecordedBody(body, out), out

    return capture


def batches(n, batch=8, size=21, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        lr_in = torch.rand(batch, 1, size, size, generator=g)
        out.append((lr_in, lr_in + 0.05 * torch.randn(lr_in.shape, generator=g)))
    return out


def make(device, depth=4, channels=8, bf16=False, seed=0, clip="adjustable"):
    torch.manual_seed(seed)
    net = dict(init="fan_out", bias=False) if clip == "norm" else {}  # pytorch-vdsr's network with its step
    model = VDSR(depth, channels, **net).to(device)
    if clip == "norm":  # pytorch-vdsr's step: the summed loss, the global norm clipped at 0.4
        cfg = train.Config(bf16=bf16, weight_decay=1e-4, clip="norm", clip_theta=0.4, loss="sse_sum")
    else:
        cfg = train.Config(bf16=bf16, weight_decay=1e-4, clip="adjustable", clip_theta=1e-4)
    opt = train.make_optimizer(model, cfg)
    return model, opt, cfg


def lr_of(i):
    return 0.1 if i < 5 else 0.01  # a step decay inside the run: the graph is captured again


@pytest.mark.parametrize("clip", ["adjustable", "norm"])
def test_graphed_step_is_the_eager_step_bit_for_bit_cpu(monkeypatch, clip):
    acc = Accelerator(cpu=True)
    data = batches(9)
    model_e, opt_e, cfg = make("cpu", clip=clip)
    losses_e = [train.train_step(model_e, opt_e, acc, cfg, x, y, lr_of(i), 1).item() for i, (x, y) in enumerate(data)]

    model_g, opt_g, cfg = make("cpu", clip=clip)
    monkeypatch.setattr(train, "capture_graph", stand_in_capture(model_g, opt_g))
    step = train.GraphedStep(model_g, opt_g, acc, cfg, world=1, warmup=2)
    losses_g = [step(x, y, lr_of(i)).item() for i, (x, y) in enumerate(data)]

    assert (step.captures, step.replays) == (2, 7)  # 2 eager warm-up steps; captured at lr 0.1 and at 0.01
    assert losses_g == losses_e
    for pe, pg in zip(model_e.parameters(), model_g.parameters()):
        assert torch.equal(pe, pg)

    # a batch of another shape takes the eager step (on both: still equal), the graph is kept
    odd = batches(1, batch=5, seed=1)[0]
    train.train_step(model_e, opt_e, acc, cfg, *odd, 0.01, 1)
    step(*odd, 0.01)
    assert (step.captures, step.replays) == (2, 7)
    nxt = batches(1, seed=2)[0]
    train.train_step(model_e, opt_e, acc, cfg, *nxt, 0.01, 1)
    step(*nxt, 0.01)
    assert step.replays == 8
    for pe, pg in zip(model_e.parameters(), model_g.parameters()):
        assert torch.equal(pe, pg)
    assert all(torch.all(c.bias == 0) for c in model_g.layers) == (clip == "norm")  # no biases: they stay zero


def test_graphed_step_refused_where_it_cannot_run():
    cfg = train.Config()
    assert "CUDA" in train.graph_unsupported(cfg, torch.device("cpu"), 1)
    assert "one process" in train.graph_unsupported(cfg, torch.device("cuda"), 2)
    assert "SGD" in train.graph_unsupported(train.Config(optimizer="adam"), torch.device("cuda"), 1)
    assert train.graph_unsupported(cfg, torch.device("cuda"), 1) is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="a CUDA graph needs a CUDA device (the CPU test above checks the bookkeeping)")
@pytest.mark.parametrize("backend,clip,precision", [("torch", "adjustable", "bf16"), ("torch", "norm", "bf16"),
                                                   ("triton", "adjustable", "bf16"), ("torch", "adjustable", "tf32")])
def test_cuda_graph_matches_the_eager_step(backend, clip, precision):
    """VDSR-20, batch 64 of 41 x 41, bf16 (or TF32), channels_last: 10 steps (3 eager, then the graph at lr
    0.1 and, captured again, at 0.01) against 10 eager steps from the same weights. cuDNN's
    gradient sums may differ in the last bits between runs, so the bound is relative to how far
    the weights moved: a skipped, doubled or stale step moves them by a large share of that.
    ``norm``: pytorch-vdsr's step (the summed loss, the gradient's global norm clipped at 0.4;
    launch/configs/pytorch-vdsr.yaml), whose norm must be computed on the device, not read back,
    on its network (no biases: frozen at zero, so the graph must leave them there).
    ``tf32``: float32 weights and activations with TF32 convs (``bf16: false, tf32: true``), the
    precision whose gradients are 3x closer to float32's at the shipped weights
    (``launch/bench_grad_precision.py``)."""
    bf16 = precision == "bf16"
    acc = Accelerator(mixed_precision="bf16" if bf16 else "no")  # as train.py makes it: the eager step's autocast
    train.set_tf32(not bf16)
    data = [(x.cuda().contiguous(memory_format=torch.channels_last), y.cuda()) for x, y in batches(10, 64, 41)]
    runs = []
    for graphed in (False, True):
        torch.manual_seed(0)
        net = dict(init="fan_out", bias=False) if clip == "norm" else {}  # pytorch-vdsr's network with its step
        model = VDSR(20, 64, backend=backend, **net).cuda().to(memory_format=torch.channels_last)
        extra = dict(clip="norm", clip_theta=0.4, loss="sse_sum", **net) if clip == "norm" else {}
        cfg = train.Config(bf16=bf16, tf32=not bf16, backend=backend, **extra)
        opt = train.make_optimizer(model, cfg)
        start = [p.detach().clone() for p in model.parameters()]
        step = train.GraphedStep(model, opt, acc, cfg, world=1) if graphed else None
        losses = []
        for i, (x, y) in enumerate(data):
            lr = 0.1 if i < 6 else 0.01
            loss = step(x, y, lr) if graphed else train.train_step(model, opt, acc, cfg, x, y, lr, 1)
            losses.append(loss.item())
        if graphed:  # inference after the replays sees the new weights (triton: no stale packed copy)
            model.eval()
            train.set_tf32(False)  # the reference in float32 proper (3xTF32 in the Triton kernels)
            with torch.no_grad():
                x = data[0][0][:4].float()
                ref = VDSR(20, 64).cuda().eval()
                ref.load_state_dict(model.state_dict())
                err = (model(x) - ref(x)).abs().max().item()
            assert err <= 2e-4, f"inference after the replays is {err:.3g} off the weights the graph left"
        runs.append((start, [p.detach().clone() for p in model.parameters()], losses, step))
    (start, eager, losses_e, _), (_, graph, losses_g, step) = runs
    assert (step.captures, step.replays) == (2, 7)
    if clip == "norm":
        assert all(torch.all(b == 0) for b in graph[1::2])  # parameters(): each layer's weight, then its bias
    moved = torch.sqrt(sum(((e - s).float() ** 2).sum() for e, s in zip(eager, start)))
    apart = torch.sqrt(sum(((e - g).float() ** 2).sum() for e, g in zip(eager, graph)))
    assert apart <= 1e-2 * moved, f"graph vs eager weights {apart:.3g} apart; they moved {moved:.3g}"
    assert losses_g == pytest.approx(losses_e, rel=1e-2)


def test_train_py_with_cuda_graph(tmp_path, caplog):
    """On CUDA: 3 eager steps, then one capture and 5 replays. On the CPU: a warning, the eager step."""
    sys.path.insert(0, str(REPO / "tests"))
    from test_train import TINY  # noqa: E402

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "epochs": 1}))
    with caplog.at_level("WARNING"):
        code = train.main(["--config", str(cfg), "--output-dir", str(tmp_path / "run"), "--cuda-graph"])
    assert code == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 8
    if torch.cuda.is_available():
        assert summary["cuda_graph"] == {"captures": 1, "replays": 5}
    else:
        assert "cuda_graph: needs a CUDA device, not cpu; the eager step runs" in caplog.text
        assert summary["cuda_graph"] is None
