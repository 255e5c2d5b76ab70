"""Optimiser and learning-rate schedule of a run, in-place overrides (PBT, resume), and the
optimiser step itself (autocast forward, fp32 loss, scaled backward for fp16)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import TrainConfig
from .device import StepSettings, autocast


def build_optimizer(model: nn.Module, tc: TrainConfig) -> torch.optim.Optimizer:
    """AdamW (decoupled decay), Adam (decay as an L2 term in the gradient, as the published
    recipe uses) or SGD; biases and normalisation parameters get no weight decay."""
    no_decay_ids = {
        id(p)
        for m in model.modules()
        if isinstance(m, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm))
        for p in m.parameters(recurse=False)
    }
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if name.endswith("bias") or id(p) in no_decay_ids else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": tc.weight_decay, "apply_decay": True},
        {"params": no_decay, "weight_decay": 0.0, "apply_decay": False},
    ]
    groups = [g for g in groups if g["params"]]
    if tc.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=tc.lr, momentum=tc.momentum)
    if tc.optimizer == "adam":
        return torch.optim.Adam(groups, lr=tc.lr, betas=(tc.momentum, 0.999))
    return torch.optim.AdamW(groups, lr=tc.lr, betas=(tc.momentum, 0.999))


def lr_factor(step: int, tc: TrainConfig, steps_per_epoch: int) -> float:
    """Multiplier of the base lr at optimiser step `step` (0-based): linear warm-up, then
    cosine to 0 at train.epochs (clamped there) or constant."""
    warm = tc.warmup_epochs * steps_per_epoch
    if step < warm:
        return (step + 1) / warm
    if tc.scheduler == "constant":
        return 1.0
    total = tc.epochs * steps_per_epoch
    progress = min(1.0, (step - warm) / max(1, total - warm))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, tc: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Stepped once per optimiser step."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, tc, steps_per_epoch)
    )


def apply_optimizer_overrides(
    optimizer: torch.optim.Optimizer,
    scheduler: Any = None,
    *,
    lr: float | None = None,
    weight_decay: float | None = None,
    momentum: float | None = None,
) -> None:
    """Set optimiser values in place, e.g. PBT's mutated values after loading a donor.

    `lr` is the base lr: with a LambdaLR the current lr becomes lr * the current schedule
    factor. `weight_decay` only touches groups that decay; `momentum` is SGD's momentum or
    Adam/AdamW's beta1.
    """
    for i, group in enumerate(optimizer.param_groups):
        if lr is not None:
            if scheduler is not None and hasattr(scheduler, "base_lrs"):
                lambdas = getattr(scheduler, "lr_lambdas", None)
                if lambdas is not None:
                    factor = lambdas[i](scheduler.last_epoch)
                else:
                    base = scheduler.base_lrs[i]
                    factor = group["lr"] / base if base else 1.0
                scheduler.base_lrs[i] = lr
                group["initial_lr"] = lr
                group["lr"] = lr * factor
            else:
                group["lr"] = lr
        if weight_decay is not None and group.get("apply_decay", True):
            group["weight_decay"] = weight_decay
        if momentum is not None:
            if "betas" in group:
                group["betas"] = (momentum, group["betas"][1])
            elif "momentum" in group:
                group["momentum"] = momentum
    if lr is not None and scheduler is not None and hasattr(scheduler, "_last_lr"):
        scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]


def optimizer_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    step: StepSettings,
    images: torch.Tensor,
    labels: torch.Tensor,
    targets: torch.Tensor,
    *,
    task: str,
    label_smoothing: float = 0.0,
    grad_clip: float = 0.0,
) -> torch.Tensor:
    """Forward (autocast), fp32 loss, backward and one optimiser step; returns the loss.
    bench/gpu.py times this same function."""
    with autocast(images.device, step.dtype):
        out = step.forward(images)
    out = out.float()  # the loss in fp32 whatever the autocast dtype
    if task == "regression":
        loss = F.mse_loss(out, targets.float())
    else:
        loss = F.cross_entropy(out, labels.long(), label_smoothing=label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    if step.scaler is not None:  # fp16: scale the loss, unscale before clipping
        step.scaler.scale(loss).backward()
        step.scaler.unscale_(optimizer)
        if grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        step.scaler.step(optimizer)
        step.scaler.update()
    else:
        loss.backward()
        if grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
    return loss
