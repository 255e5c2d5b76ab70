"""Small helpers shared by tests, benchmarks and the pipeline."""

from __future__ import annotations

import torch.nn as nn


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters (escnn's cached filters are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
