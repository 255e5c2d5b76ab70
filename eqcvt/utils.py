"""Small helpers shared by tests, benchmarks and the pipeline."""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters (escnn's cached filters are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class _GlobalOnly:
    """A stand-in for FlopCounterMode's ModuleTracker: every count goes to "Global" alone."""

    parents = frozenset({"Global"})

    def __enter__(self) -> _GlobalOnly:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class FlopCount(FlopCounterMode):
    """torch's FlopCounterMode counting the total only, without its per-module breakdown.

    The breakdown's module hooks resolve every module's name on every call, through a dynamo
    guard: about 0.4 s per forward of an EqCvT on a CPU core, nearly half of a search's
    preflight. The totals are FlopCounterMode's own (same registry, same decompositions).
    """

    def __init__(self) -> None:
        super().__init__(display=False)
        self.mod_tracker = _GlobalOnly()

    @property
    def total(self) -> float:
        return float(self.get_total_flops())


def forward_flops(model: nn.Module, x: torch.Tensor) -> float:
    """FLOPs of one forward of `x` in eval mode, without gradients (escnn expands its filters
    when switched to eval mode, so the expansion is not counted); the mode is restored."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCount() as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.total
