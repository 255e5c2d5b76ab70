"""Optimiser, lr schedule and in-place optimiser overrides."""

from __future__ import annotations

import pytest
import torch

from pipeline import optim
from tests.pipeline.test_engine import _TinyNet, cfg_of


def test_apply_optimizer_overrides_keeps_the_schedule_factor():
    model = _TinyNet()
    cfg = cfg_of(**{"train.optimizer": "sgd", "train.epochs": 4})
    opt = optim.build_optimizer(model, cfg.train)
    sched = optim.build_scheduler(opt, cfg.train, steps_per_epoch=2)
    for _ in range(3):
        opt.step()
        sched.step()
    factor = optim.lr_factor(3, cfg.train, 2)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-2 * factor)
    optim.apply_optimizer_overrides(opt, sched, lr=1.0, weight_decay=0.5, momentum=0.5)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([factor, factor])
    assert [g["momentum"] for g in opt.param_groups] == [0.5, 0.5]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.5, 0.0]  # biases/norms: none
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(optim.lr_factor(4, cfg.train, 2))


def test_adam_is_plain_adam_with_l2_decay():
    """"adam" is torch.optim.Adam: decay enters the gradient (L2), unlike AdamW's decoupled
    decay, so one step from a zero gradient moves a decaying weight by the full lr."""
    cfg = cfg_of(**{"train.optimizer": "adam", "train.weight_decay": 0.1,
                    "train.momentum": 0.8})
    model = _TinyNet()
    opt = optim.build_optimizer(model, cfg.train)
    assert type(opt) is torch.optim.Adam
    assert {g["betas"] for g in opt.param_groups} == {(0.8, 0.999)}
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    w = model.body[-1].weight
    before = w.detach().clone()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    # Adam's first step is lr * sign(grad); here grad = weight_decay * w
    assert torch.allclose(w.detach(), before - 1e-2 * torch.sign(before), atol=1e-5)
    adamw = optim.build_optimizer(_TinyNet(), cfg.train.__class__(optimizer="adamw"))
    assert type(adamw) is torch.optim.AdamW
