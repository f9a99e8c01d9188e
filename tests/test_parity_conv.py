"""Parity: the fused Triton conv kernels and VDSR stack against plain PyTorch.

On the CPU these run in the Triton interpreter (TRITON_INTERPRET=1, set by scripts/test.sh and
by conftest.py when no GPU is present), with the GPU's TF32 and bf16 rounding emulated; on a GPU
(scripts/test.sh leaves the interpreter off there) they run the compiled kernels, unchanged.
Output buffers are filled with NaN before each call, so an element a kernel fails to write fails
the test. Eager float32 references run with cuDNN's and cuBLAS's TF32 off (on by default for
cuDNN), so a float32 comparison means float32.
"""

from __future__ import annotations

import pytest
import torch

import vdsr_kernels.conv as kconv
from vdsr_kernels.conv import (
    PARITY_TOLERANCE,
    conv3x3,
    conv3x3_reference,
    conv3x3_wgrad,
    conv3x3_wgrad_partial,
    conv3x3_wgrad_reference,
    pack_dgrad_weight,
    pack_dgrad_weights,
    pack_weight,
    pack_weights,
    reduce_wgrad,
    wgrad_partial_shape,
)
from vdsr_kernels.stack import pack_layers, vdsr_forward
from vdsr.model import VDSR

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# (dtype, precision) -> max relative error (max |got - ref| / max |ref|) against float64
TOLERANCE = PARITY_TOLERANCE
CASES = [(torch.float32, "ieee"), (torch.float32, "tf32"), (torch.bfloat16, "ieee"), (torch.float16, "ieee"), (torch.float32, "tf32x3")]
IDS = ["fp32", "tf32", "bf16", "fp16", "tf32x3"]


@pytest.fixture(autouse=True)
def no_tf32_in_eager():
    """Eager float32 on a GPU means float32 here: cuDNN's TF32 (on by default) and cuBLAS's off."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    return ((got.double() - ref.double()).abs().max() / ref.double().abs().max()).item()


def nan_like(shape, dtype) -> torch.Tensor:
    return torch.full(shape, float("nan"), dtype=dtype, device=DEVICE)


def layer(cin: int, cout: int, scale: float = 1.0):
    torch.manual_seed(cin * 100 + cout)
    conv = torch.nn.Conv2d(cin, cout, 3, padding=1)
    torch.nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
    torch.nn.init.uniform_(conv.bias, -0.1, 0.1)
    return conv.weight.detach().to(DEVICE) * scale, conv.bias.detach().to(DEVICE)


# ragged sizes: pixel counts that are not multiples of the tile, batch > 1
SHAPES = [(2, 7, 9), (3, 5, 13)]


@pytest.mark.parametrize("dtype,precision", CASES, ids=IDS)
@pytest.mark.parametrize("n,h,w", SHAPES)
def test_parity_conv_first(dtype, precision, n, h, w):
    wt, b = layer(1, 64)
    x = torch.rand(n, 1, h, w, device=DEVICE)
    out = nan_like((n, h, w, 64), dtype)
    conv3x3(x.to(dtype), pack_weight(wt, dtype), b, relu=True, out=out, precision=precision)
    assert conv3x3(x, pack_weight(wt, dtype), b).dtype == dtype  # float32 input, hidden in dtype
    ref = conv3x3_reference(x.double(), wt.double(), b.double()).permute(0, 2, 3, 1)
    assert not out.isnan().any()
    assert rel_err(out, ref) <= TOLERANCE[(dtype, precision)]


@pytest.mark.parametrize("dtype,precision", CASES, ids=IDS)
@pytest.mark.parametrize("n,h,w", SHAPES)
@pytest.mark.parametrize("cin,cout", [(64, 64), (24, 40)])
def test_parity_conv_mid(dtype, precision, n, h, w, cin, cout):
    wt, b = layer(cin, cout)
    x = torch.rand(n, h, w, cin, device=DEVICE)
    out = nan_like((n, h, w, cout), dtype)
    conv3x3(x.to(dtype), pack_weight(wt, dtype), b, relu=True, out=out, precision=precision)
    ref = conv3x3_reference(x.permute(0, 3, 1, 2).double(), wt.double(), b.double()).permute(0, 2, 3, 1)
    assert not out.isnan().any()
    assert rel_err(out, ref) <= TOLERANCE[(dtype, precision)]
    assert (out >= 0).all()  # the fused ReLU


@pytest.mark.parametrize("dtype,precision", CASES, ids=IDS)
@pytest.mark.parametrize("n,h,w", SHAPES)
def test_parity_conv_last_residual(dtype, precision, n, h, w):
    wt, b = layer(64, 1)
    hid = torch.rand(n, h, w, 64, device=DEVICE)
    x = torch.rand(n, 1, h, w, device=DEVICE)
    out = nan_like((n, 1, h, w), dtype)
    conv3x3(hid.to(dtype), pack_weight(wt, dtype), b, residual=x.to(dtype), out=out)
    ref = conv3x3_reference(hid.permute(0, 3, 1, 2).double(), wt.double(), b.double(), residual=x.double())
    assert not out.isnan().any()
    assert rel_err(out, ref) <= TOLERANCE[(dtype, precision)]
    # without the residual: the bare conv
    bare = conv3x3(hid.to(dtype), pack_weight(wt, dtype), b)
    assert rel_err(bare, ref - x.double()) <= 2 * TOLERANCE[(dtype, precision)]


def dgrad_reference(g_nchw: torch.Tensor, wt: torch.Tensor, act_nhwc: torch.Tensor) -> torch.Tensor:
    """Float64: the input gradient of ``conv2d(., wt, padding=1)`` for output gradient ``g``,
    zeroed where the saved activation is not > 0 (the ReLU backward below); NHWC."""
    n, _, h, w = g_nchw.shape
    gi = torch.nn.grad.conv2d_input((n, wt.shape[1], h, w), wt.double(), g_nchw.double(), padding=1)
    return gi.permute(0, 2, 3, 1) * (act_nhwc.double() > 0)


@pytest.mark.parametrize("dtype,precision", CASES, ids=IDS)
@pytest.mark.parametrize("cout,cin", [(64, 64), (40, 24), (1, 64)], ids=["mid", "mid-ragged", "from-last"])
def test_parity_conv_dgrad_with_fused_relu_mask(dtype, precision, cout, cin):
    """The training backward's input gradient (``relu_mask``): the same kernels with the weights
    flipped and transposed, the ReLU mask of the layer below in the epilogue, against float64
    autograd. ``from-last``: the last layer's (Cout = 1) output gradient, through the first kernel."""
    n, h, w = SHAPES[0]
    wt, _ = layer(cin, cout)
    g = torch.randn(n, cout, h, w, device=DEVICE)
    act = torch.relu(torch.randn(n, h, w, cin, device=DEVICE)).to(dtype)  # about half of it zero
    g_in = g.to(dtype) if cout == 1 else g.permute(0, 2, 3, 1).contiguous().to(dtype)
    out = nan_like((n, h, w, cin), dtype)
    conv3x3(g_in, pack_dgrad_weight(wt, dtype), None, relu_mask=act, out=out, precision=precision)
    ref = dgrad_reference(g, wt, act)
    assert not out.isnan().any()
    assert ((out != 0) <= (act > 0)).all()  # zero wherever the layer below was not active
    assert rel_err(out, ref) <= TOLERANCE[(dtype, precision)]
    # a mask of the wrong shape or dtype, or no bias without a mask: a clear error
    with pytest.raises(ValueError, match="relu_mask"):
        conv3x3(g_in, pack_dgrad_weight(wt, dtype), None, relu_mask=act[:, :-1].contiguous())
    with pytest.raises(ValueError, match="bias"):
        conv3x3(g_in, pack_dgrad_weight(wt, dtype), None)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("n,h,w,cin,cout,programs", [(2, 7, 9, 64, 64, 64), (3, 5, 13, 24, 40, 64), (2, 13, 17, 16, 16, 2)])
def test_parity_conv_wgrad(dtype, n, h, w, cin, cout, programs, monkeypatch):
    """The weight and bias gradients (the pixels summed in chunks, then the chunks) against
    float64 autograd of the same rounded inputs: the products are exact, the sums float32.
    The last case has two chunks of two tiles (442 pixels in chunks of 256), the last ragged."""
    monkeypatch.setattr(kconv, "WGRAD_PROGRAMS", programs)
    x = torch.relu(torch.randn(n, h, w, cin, device=DEVICE)).to(dtype)
    g = torch.randn(n, h, w, cout, device=DEVICE).to(dtype)
    gw, gb = conv3x3_wgrad(x, g)
    rw, rb = conv3x3_wgrad_reference(x.permute(0, 3, 1, 2).double(), g.permute(0, 3, 1, 2).double())
    assert gw.shape == (cout, cin, 3, 3) and gw.dtype == torch.float32 and gb.shape == (cout,)
    assert rel_err(gw, rw) <= 1e-5 and rel_err(gb, rb) <= 1e-5
    with pytest.raises(ValueError, match="bfloat16 or float16"):
        conv3x3_wgrad(x.float(), g.float())
    with pytest.raises(ValueError, match=">= 16"):
        conv3x3_wgrad(x[..., :8].contiguous(), g)


def test_wgrad_interpreter_version_check(monkeypatch):
    """Triton 3.6's interpreter with NumPy >= 2.4 cannot run the wgrad kernel's runtime loop
    (seen on the CPU with the GPU machines' torch 2.11): the launcher says so in one line, naming
    both versions, instead of the interpreter's "only 0-dimensional arrays" deep in a backward."""
    check = kconv.interpreter_loop_problem
    assert check("3.7.1", "2.4.6") is None and check("3.6.0", "2.3.5") is None and check("3.10.0", "2.4.0") is None
    why = check("3.6.0", "2.4.6")
    assert "triton 3.6" in why and "NumPy 2.4" in why and "triton>=3.7" in why
    monkeypatch.setattr(kconv, "INTERPRET", True)
    monkeypatch.setattr(kconv, "interpreter_loop_problem", lambda: why)
    x = torch.zeros(1, 4, 4, 16, device=DEVICE, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match=r"^conv3x3_wgrad: triton 3\.6's interpreter"):
        conv3x3_wgrad(x, x)


def test_parity_wgrad_partials_of_two_layers_in_one_buffer():
    """The training backward's batching: two layers' chunk partials written into NaN-filled
    slices of one buffer (an element left unwritten would poison its sum), then one
    reduce_wgrad, equal to each layer's own conv3x3_wgrad."""
    torch.manual_seed(3)
    xs = [torch.relu(torch.randn(2, 9, 11, 32, device=DEVICE)).to(torch.bfloat16) for _ in range(2)]
    gs = [torch.randn(2, 9, 11, 32, device=DEVICE).to(torch.bfloat16) for _ in range(2)]
    shape = wgrad_partial_shape(xs[0], 32)
    parts = nan_like((2, *shape), torch.float32)
    bparts = nan_like((2, shape[0], shape[3]), torch.float32)
    for i in range(2):
        conv3x3_wgrad_partial(xs[i], gs[i], parts[i], bparts[i])
    gws, gbs = reduce_wgrad(parts, bparts, 32, 32)
    assert gws.shape == (2, 32, 32, 3, 3) and gbs.shape == (2, 32) and gws.is_contiguous()
    for i in range(2):
        gw, gb = conv3x3_wgrad(xs[i], gs[i])
        assert torch.equal(gws[i], gw) and torch.equal(gbs[i], gb)
    with pytest.raises(ValueError, match="part must be contiguous float32"):
        conv3x3_wgrad_partial(xs[0], gs[0], parts[0, :-1])
    with pytest.raises(ValueError, match="bpart must be contiguous float32"):
        conv3x3_wgrad_partial(xs[0], gs[0], parts[0], bparts[0].double())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_parity_pack_weights_equal_layer_by_layer_packing(dtype):
    """pack_weights and pack_dgrad_weights (all hidden layers in two launches each) give exactly
    what pack_weight and pack_dgrad_weight give layer by layer."""
    ws = [torch.randn(24, 16, 3, 3, device=DEVICE) for _ in range(3)]
    packed = pack_weights(ws, dtype)
    dgrad = pack_dgrad_weights(packed)
    assert packed.shape == (3, 3, 3, 16, 24) and dgrad.shape == (3, 3, 3, 24, 16)
    assert packed.dtype == dgrad.dtype == dtype and packed.is_contiguous() and dgrad.is_contiguous()
    for i, w in enumerate(ws):
        assert torch.equal(packed[i], pack_weight(w, dtype))
        assert torch.equal(dgrad[i], pack_dgrad_weight(w, dtype))
    with pytest.raises(ValueError, match="one shape"):
        pack_weights([ws[0], torch.randn(16, 16, 3, 3, device=DEVICE)])
    with pytest.raises(ValueError, match="L x 3 x 3 x Cin x Cout"):
        pack_dgrad_weights(packed[0])


class _CountLaunches(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the torch ops that launch a kernel (not views, not allocations)."""

    FREE = {"empty", "new_empty", "empty_strided", "new_empty_strided", "detach", "permute", "view", "alias",
            "expand", "as_strided", "_reshape_alias", "t", "transpose", "unsqueeze", "select", "slice", "unbind",
            "_unsafe_view", "set_"}  # fmt: skip

    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ not in self.FREE:
            self.ops.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def test_parity_fused_step_launches_do_not_grow_with_depth(monkeypatch):
    """The training step's host-side torch launches (weight packing, gradient sums) are batched
    over the hidden layers: a bf16 forward + backward at depth 6 and at depth 12 makes the same
    number of them (layer by layer it was 8 more a layer). The Triton kernels are stubbed out:
    only the torch ops around them are counted, the same on any device."""

    class Stub:
        def __getitem__(self, grid):
            return lambda *args, **kwargs: None

    for name in ("_conv_first_kernel", "_conv_mid_kernel", "_conv_last_kernel", "_conv_wgrad_kernel"):
        monkeypatch.setattr(kconv, name, Stub())
    counts = {}
    for depth in (6, 12):
        model = VDSR(depth, 16, backend="triton").to(DEVICE)
        x = torch.rand(2, 1, 6, 7, device=DEVICE)
        with torch.autocast(torch.device(DEVICE).type, dtype=torch.bfloat16), _CountLaunches() as mode:
            model(x).float().sum().backward()
        counts[depth] = mode.ops
        assert all(p.grad is not None for p in model.parameters())
    assert len(counts[12]) == len(counts[6]), counts
    assert len(counts[6]) < 40, counts[6]  # measured 24 (CPU)


def test_parity_wgrad_chunks_cover_every_pixel_once():
    """The chunking: whole tiles of 128, about 64 programs, the last chunk ragged."""
    for m in (1, 127, 128, 129, 64 * 41 * 41, 10**6):
        chunk = kconv._wgrad_chunk(m)
        assert chunk % 128 == 0 and -(-m // chunk) * chunk >= m > (-(-m // chunk) - 1) * chunk
        assert -(-m // chunk) <= 64


def reference_model(depth=20, channels=64) -> VDSR:
    torch.manual_seed(7)
    m = VDSR(depth, channels)
    for conv in m.layers:
        torch.nn.init.uniform_(conv.bias, -0.05, 0.05)
    return m.to(DEVICE)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"])
def test_parity_vdsr20_forward(dtype):
    """The whole VDSR-20 forward (ping-pong stack) against the reference model in float64."""
    model = reference_model()
    x = torch.rand(2, 1, 9, 11, device=DEVICE)
    ref64 = model.double()(x.double())
    model.float()
    out = nan_like((2, 1, 9, 11), torch.float32)  # the image stays float32 whatever the stack dtype
    vdsr_forward(x, pack_layers(model.layers, dtype), out=out)
    assert not out.isnan().any()
    res_err = rel_err(out.double() - x.double(), ref64 - x.double())  # on the residual
    if dtype == torch.float32:
        # compiled, float32 is 3xTF32 on tensor cores, whose float32 accumulation is not IEEE
        # round-to-nearest: measured 6.5e-5 on an H200 (Triton 3.6), 20 layers of the one-layer
        # error in test_parity_float32_precisions_are_what_they_say; the interpreter's is exact
        assert res_err <= (1e-5 if kconv.INTERPRET else 1e-4), res_err
    else:
        # low precision accumulates over 20 layers: no worse than eager autocast in that dtype
        with torch.autocast(DEVICE, dtype=dtype):
            eager = model(x).double() - x.double()
        eager_err = rel_err(eager, ref64 - x.double())
        assert res_err <= max(2 * eager_err, 2e-2), (res_err, eager_err)


def test_parity_backend_switch_and_buffer_reuse():
    model = reference_model(depth=6, channels=16)
    fused = VDSR(6, 16, backend="triton").to(DEVICE)
    fused.load_state_dict(model.state_dict())
    with torch.no_grad():
        for shape in [(1, 1, 8, 10), (3, 1, 5, 7), (1, 1, 8, 10)]:
            x = torch.rand(shape, device=DEVICE)
            assert rel_err(fused(x), model(x)) <= 1e-5
    with pytest.raises(ValueError):
        VDSR(backend="cuda")


def _loss_and_grads(model, x, target, bf16: bool):
    x.grad = None
    model.zero_grad()
    with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=bf16):
        y = model(x)
    loss = 0.5 * ((y.float() - target) ** 2).mean()
    loss.backward()
    return loss.item(), [x.grad.clone()] + [p.grad.clone() for p in model.parameters()]


def test_parity_training_gradients():
    """Gradients of the fused training path (autograd.Function) against the reference: in
    float32 to 1e-4; under bf16 autocast as close to float32 as eager autocast gets."""
    ref = reference_model(depth=5, channels=16)
    fused = VDSR(5, 16, backend="triton").to(DEVICE)
    fused.load_state_dict(ref.state_dict())
    x = torch.rand(3, 1, 7, 9, device=DEVICE, requires_grad=True)
    target = torch.rand(3, 1, 7, 9, device=DEVICE)
    loss32, g32 = _loss_and_grads(ref, x, target, bf16=False)
    loss_f, g_f = _loss_and_grads(fused, x, target, bf16=False)
    assert all(p.grad.dtype == torch.float32 for p in fused.parameters())
    assert abs(loss_f - loss32) <= 1e-5 * abs(loss32)
    for a, b in zip(g_f, g32):
        assert rel_err(a, b) <= 1e-4
    # bf16: per-tensor maxima of a few bf16 roundings are noisy, so compare the error of all
    # parameter gradients together (relative L2) with eager autocast's, both against float32.
    _, g_eager16 = _loss_and_grads(ref, x, target, bf16=True)
    _, g_fused16 = _loss_and_grads(fused, x, target, bf16=True)
    flat = lambda gs: torch.cat([g.flatten() for g in gs[1:]]).double()  # noqa: E731
    exact = flat(g32)
    err_fused = ((flat(g_fused16) - exact).norm() / exact.norm()).item()
    err_eager = ((flat(g_eager16) - exact).norm() / exact.norm()).item()
    assert err_fused <= 1.5 * err_eager + 1e-3, (err_fused, err_eager)  # measured 0.0050 vs 0.0070 (AVX2 CPU)
    for a, b in zip(g_fused16, g32):
        assert rel_err(a, b) <= 5e-2


def test_parity_float32_precisions_are_what_they_say():
    """TF32 really rounds the operands (on a GPU by the tensor core, in the interpreter by the
    emulation), and 3xTF32 gets float32 accuracy back. Measured in the interpreter: TF32 7.4e-4,
    3xTF32 2.0e-7, IEEE 2.2e-7 (64 -> 64 channels); compiled on an H200 (Triton 3.6): TF32
    7.6e-4, 3xTF32 (which "ieee" means there) 4.0e-6, the tensor core's float32 accumulation
    being coarser than IEEE round-to-nearest."""
    wt, b = layer(64, 64)
    x = torch.rand(2, 17, 19, 64, device=DEVICE)
    ref = conv3x3_reference(x.permute(0, 3, 1, 2).double(), wt.double(), b.double()).permute(0, 2, 3, 1)
    err = {p: rel_err(conv3x3(x, pack_weight(wt), b, precision=p), ref) for p in ("ieee", "tf32", "tf32x3")}
    assert 1e-4 < err["tf32"] < 5e-3, err  # 10-bit mantissas: not float32, not worse than TF32
    bound = 1e-6 if kconv.INTERPRET else PARITY_TOLERANCE[(torch.float32, "tf32x3")]
    assert err["tf32x3"] < bound and err["ieee"] < bound, err
    assert 50 * err["tf32x3"] < err["tf32"], err  # float32 accuracy back: far below TF32's
    if DEVICE == "cuda":  # for the record (-s): cuDNN's float32 conv, TF32 off, on the same data
        tf32_was = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = False
        try:
            eager = conv3x3_reference(x.permute(0, 3, 1, 2), wt, b).permute(0, 2, 3, 1)
        finally:
            torch.backends.cudnn.allow_tf32 = tf32_was
        print(f"float32 conv error vs float64: {err}, cuDNN (TF32 off) {rel_err(eager, ref):.2e}")
    with pytest.raises(ValueError, match="precision"):
        conv3x3(x, pack_weight(wt), b, precision="fp64")


def test_parity_compiled_float32_never_uses_the_ieee_dot(monkeypatch):
    """The scalar-FMA IEEE dot is only ever interpreted: compiled, "ieee" means 3xTF32."""
    monkeypatch.setattr(kconv, "INTERPRET", False)
    assert kconv.mid_meta(64, 64, True, torch.float32, "ieee")["PRECISION"] == "tf32x3"
    assert kconv.mid_meta(64, 64, True, torch.float32, "tf32")["PRECISION"] == "tf32"
    assert kconv.mid_meta(64, 64, True, torch.bfloat16, "tf32")["PRECISION"] == "ieee"  # exact bf16 products
    for dt, p in PARITY_TOLERANCE:
        for cfg in kconv.mid_configs(dt, kconv.mid_meta(64, 64, True, dt, p)["PRECISION"]):
            assert cfg.kwargs["BLOCK_M"] in (64, 128, 256) and cfg.num_stages >= 2  # a pipelined K loop
    monkeypatch.setattr(kconv, "INTERPRET", True)
    assert kconv.mid_meta(64, 64, True, torch.float32, "ieee")["PRECISION"] == "ieee"  # cheap in numpy


def test_parity_train_step_triton_matches_torch():
    """train.py's step (forward, SSE loss, backward, adjustable clipping, SGD with momentum and
    weight decay) with the Triton backend against the torch one from the same weights: float32,
    four steps at lr 0.01, the losses and the weight updates agree.

    The weights are float32, so two updates that differ in the last bits of a gradient can round
    to weights an ulp or two apart, and an ulp of the first layer's largest weight (1.27 here) is
    1.3e-4 of its update (9e-4 after four steps): a bound on the update alone (2e-4, until
    2026-12-04) leaves under two ulps, and an H200 failed it at 6.3e-4, about five ulps. So each weight may differ by 2e-4 of its layer's largest update plus
    8 ulps of itself. Measured on the CPU: at most 0.24 of that bound (2 ulps, in the first layer);
    torch against torch with the target 0.2% off (xb + 0.0501 for xb + 0.05), 10 to 345 times it."""
    import sys
    from pathlib import Path

    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "launch"))
    import train

    ref = reference_model(depth=4, channels=16)
    x = torch.rand(4, 2, 1, 9, 11, device=DEVICE)
    runs = []
    for backend in ("torch", "triton"):
        AcceleratorState._reset_state(reset_partial_state=True)
        acc = Accelerator(mixed_precision="no", cpu=DEVICE == "cpu")
        cfg = train.Config(backend=backend, bf16=False)
        model = VDSR(4, 16, backend=backend).to(DEVICE)
        model.load_state_dict(ref.state_dict())
        opt = train.make_optimizer(model, cfg)
        losses = [train.train_step(model, opt, acc, cfg, xb, xb + 0.05, 0.01, 1).item() for xb in x]
        runs.append((losses, [p.detach().clone() for p in model.parameters()]))
    AcceleratorState._reset_state(reset_partial_state=True)
    (loss_t, w_t), (loss_f, w_f) = runs
    assert loss_f == pytest.approx(loss_t, rel=1e-5)
    moved = [rel_err(a - b, a) for a, b in zip(w_t, ref.parameters())]
    assert max(moved) > 1e-3  # the steps did move the weights
    excess = {}  # per parameter: its largest difference over what the bound allows (<= 1 passes)
    for a, b, (name, p) in zip(w_f, w_t, ref.named_parameters()):
        ulp = torch.nextafter(b.abs(), torch.full_like(b, float("inf"))) - b.abs()
        allowed = 2e-4 * (b - p.detach()).abs().max() + 8 * ulp
        excess[name] = ((a - b).abs() / allowed).max().item()
    worst = max(excess, key=excess.get)
    assert excess[worst] <= 1, f"{worst} is {excess[worst]:.3g} x the bound; all: " + ", ".join(
        f"{n} {e:.2g}" for n, e in excess.items())
