"""bf16: true / false / auto, and the probe of native bfloat16 it rests on."""

import pytest
import torch

from vdsr import precision
from vdsr.errors import InputError


def test_the_cpu_probe_is_pytorchs_onednn_check():
    assert precision.native_bf16("cpu") is bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert precision.native_bf16("cuda") is (torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    assert precision.native_bf16("meta") is False


@pytest.mark.parametrize("native", [True, False])
def test_auto_follows_the_hardware_and_says_so(monkeypatch, native):
    monkeypatch.setattr(precision, "native_bf16", lambda device: native)
    monkeypatch.setattr(precision, "cpu_capability", lambda: "AVX2")
    use, line = precision.resolve_bf16("auto", "cpu")
    assert use is native
    assert line.startswith("bf16: auto -> " + ("bfloat16" if native else "float32")), line
    if not native:
        assert "AVX2" in line and "no native bfloat16" in line


@pytest.mark.parametrize("native", [True, False])
def test_explicit_settings_are_kept_with_a_warning_only_where_emulated(monkeypatch, native):
    monkeypatch.setattr(precision, "native_bf16", lambda device: native)
    assert precision.resolve_bf16(False, "cpu") == (False, None)
    use, line = precision.resolve_bf16(True, "cpu")
    assert use is True
    assert (line is None) is native
    if not native:
        assert "emulated" in line and "float32" in line


@pytest.mark.parametrize("bad", ["yes", 1, 0, None, "Auto "])
def test_other_settings_are_refused(bad):
    with pytest.raises(InputError, match="expected true, false or auto"):
        precision.resolve_bf16(bad, "cpu")
