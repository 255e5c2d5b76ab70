"""eqcvt.utils: the FLOP count is torch's FlopCounterMode total, without its module breakdown."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import eqcvt

SMALL = {"embed_dim": 8, "depth": 1, "heads": 1, "head_hidden": 8, "img_size": 32}


def _reference(model: torch.nn.Module, x: torch.Tensor) -> int:
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


def test_a_linear_layer_counts_two_flops_per_multiply_add():
    with eqcvt.FlopCount() as counter:
        torch.nn.Linear(5, 3)(torch.randn(4, 5))
    assert counter.total == 2 * 4 * 5 * 3


@pytest.mark.parametrize("name", ["cvt_baseline", "seed_eqcvt", "eqcvt_steerable"])
def test_totals_match_flop_counter_mode_on_registered_models(name):
    model = eqcvt.create_model(name, **SMALL)
    x = torch.randn(2, model.config.in_channels, 32, 32)
    want = _reference(model, x)
    model.train()
    assert want > 0 and eqcvt.forward_flops(model, x) == want
    assert model.training  # the mode it came in, restored


def test_forward_flops_restores_the_mode_on_errors():
    model = eqcvt.create_model("cvt_baseline", **SMALL)
    with pytest.raises(RuntimeError):
        eqcvt.forward_flops(model, torch.randn(2, 7, 32, 32))  # wrong channel count
    assert model.training
