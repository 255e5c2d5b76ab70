"""pipeline.device: precision resolved in one place, and the fp32 context of evaluation."""

from __future__ import annotations

import pytest
import torch

from pipeline import device as dev

CPU = torch.device("cpu")


def test_precision_auto_is_fp32_on_cpu_and_names_round_trip():
    assert dev.resolve_precision("auto", CPU) is None
    assert dev.resolve_precision("fp32", CPU) is None
    assert dev.resolve_precision("bf16", CPU) is torch.bfloat16
    assert [dev.precision_name(dev.resolve_precision(p, CPU)) for p in ("fp32", "bf16")] == [
        "fp32", "bf16"]


def test_fp16_on_cpu_is_refused_clearly():
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        dev.resolve_precision("fp16", CPU)
    with pytest.raises(ValueError, match="must be one of"):
        dev.resolve_precision("fp8", CPU)


def _set_flags(matmul: bool, cudnn: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = matmul
    torch.backends.cudnn.allow_tf32 = cudnn


def _flags() -> tuple[bool, bool]:
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


def test_exact_fp32_turns_tf32_off_and_restores_it():
    before = _flags()
    try:
        _set_flags(True, True)
        with dev.exact_fp32():
            assert _flags() == (False, False)
        assert _flags() == (True, True)
        with pytest.raises(KeyError), dev.exact_fp32():
            raise KeyError("restored on errors too")
        assert _flags() == (True, True)
    finally:
        _set_flags(*before)


def test_exact_fp32_overrides_an_outer_autocast():
    layer = torch.nn.Linear(4, 3)
    x = torch.randn(2, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer(x).dtype == torch.bfloat16
        with dev.exact_fp32():
            assert layer(x).dtype == torch.float32


def test_step_settings_compile_wraps_the_same_parameters():
    from pipeline.config import TrainConfig

    model = torch.nn.Linear(4, 2)
    plain = dev.step_settings(model, TrainConfig(precision="bf16"), CPU)
    assert plain.forward is model and plain.dtype is torch.bfloat16 and plain.scaler is None
    compiled = dev.step_settings(model, TrainConfig(compile=True), CPU)
    assert compiled.forward is not model and compiled.dtype is None
    assert compiled.forward._orig_mod is model  # shares parameters: checkpoints unchanged
