"""vdsr.model.VDSR: structure, init, dtypes and layouts, checkpoints."""

from __future__ import annotations

import math

import pytest
import torch

from vdsr.checkpoint import load_weights, read_metadata, save_weights
from vdsr.errors import InputError
from vdsr.model import VDSR


def test_structure_and_parameter_count():
    m = VDSR()
    assert len(m.layers) == 20
    assert m.layers[0].in_channels == 1 and m.layers[-1].out_channels == 1
    assert sum(p.numel() for p in m.parameters()) == (9 * 64 + 64) + 18 * (9 * 64 * 64 + 64) + (9 * 64 + 1)
    assert len(VDSR(depth=25).layers) == 25
    with pytest.raises(ValueError):
        VDSR(depth=1)


def test_he_init_and_zero_bias():
    torch.manual_seed(0)
    m = VDSR()
    for conv in m.layers:
        assert torch.all(conv.bias == 0)
    w = torch.cat([c.weight.flatten() for c in m.layers[1:-1]])
    assert w.std().item() == pytest.approx(math.sqrt(2 / (9 * 64)), rel=0.01)
    assert m.layers[0].weight.std().item() == pytest.approx(math.sqrt(2 / 9), rel=0.25)


def test_pytorch_vdsr_init_over_the_fan_out_and_frozen_zero_biases():
    """init="fan_out": std sqrt(2 / (9 Cout)), pytorch-vdsr's (the first layer 8x smaller than the
    paper's, the last 8x larger); bias=False: the biases stay zero through a training step."""
    torch.manual_seed(0)
    m = VDSR(init="fan_out", bias=False)
    w = torch.cat([c.weight.flatten() for c in m.layers[1:-1]])
    assert w.std().item() == pytest.approx(math.sqrt(2 / (9 * 64)), rel=0.01)
    assert m.layers[0].weight.std().item() == pytest.approx(math.sqrt(2 / (9 * 64)), rel=0.25)
    assert m.layers[-1].weight.std().item() == pytest.approx(math.sqrt(2 / 9), rel=0.25)
    assert not any(c.bias.requires_grad for c in m.layers) and all(c.weight.requires_grad for c in m.layers)
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x = torch.rand(2, 1, 12, 12)
    (m(x) - x).pow(2).sum().backward()
    before = m.layers[1].weight.detach().clone()
    opt.step()
    assert all(torch.all(c.bias == 0) for c in m.layers)
    assert not torch.equal(before, m.layers[1].weight)
    assert all(torch.all(c.bias == 0) for c in VDSR(4, 8, init="fan_out").layers)  # zero at the start either way
    assert all(c.bias.requires_grad for c in VDSR(4, 8).layers)  # and trainable by default
    with pytest.raises(ValueError, match="init must be one of"):
        VDSR(init="xavier")


def test_residual_learning():
    m = VDSR(depth=5, channels=8)
    torch.nn.init.zeros_(m.layers[-1].weight)
    x = torch.rand(2, 1, 11, 13)
    assert torch.equal(m(x), x)  # the last conv is zero: output = input
    with pytest.raises(ValueError):
        m(torch.rand(1, 3, 8, 8))


def test_bf16_and_channels_last_match_fp32():
    torch.manual_seed(0)
    m = VDSR(depth=6, channels=16)
    x = torch.rand(2, 1, 17, 19)
    ref = m(x)
    cl = m.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    assert torch.allclose(cl, ref, atol=1e-5)
    bf = m.to(torch.bfloat16)(x.bfloat16())
    assert bf.dtype == torch.bfloat16
    assert (bf.float() - ref).abs().max().item() < 0.05


def test_checkpoint_round_trip(tmp_path):
    m = VDSR(depth=4, channels=8)
    path = tmp_path / "w.safetensors"
    save_weights(path, m, {"scales": "2,3,4"})
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]  # no temp file left
    meta = read_metadata(path)
    assert meta["format"] == "vdsr" and meta["depth"] == "4" and meta["scales"] == "2,3,4"
    loaded = load_weights(path)
    x = torch.rand(1, 1, 9, 9)
    assert torch.equal(loaded(x), m(x))
    assert (loaded.depth, loaded.channels) == (4, 8)


def test_checkpoint_bad_files(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"this is not safetensors")
    with pytest.raises(InputError, match="bad.safetensors: not a safetensors"):
        load_weights(bad)
    with pytest.raises(InputError, match="no such checkpoint"):
        load_weights(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(2)}, str(other))
    with pytest.raises(InputError, match="not VDSR weights"):
        load_weights(other)


def test_save_failure_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "w.safetensors"
    save_weights(path, VDSR(depth=3, channels=4))
    before = path.read_bytes()
    import vdsr.checkpoint as ck

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ck, "save_file", boom)
    with pytest.raises(OSError):
        save_weights(path, VDSR(depth=3, channels=4))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]
