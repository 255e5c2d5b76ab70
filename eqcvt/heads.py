"""Classifier/regressor heads on pooled features (B, C) -> (B, out_features).

`head_style` "mlp" is the project's head; "bn_elu" is the head of the published EqCvT and CvT
(Linear -> BatchNorm1d -> ELU -> Linear, no dropout). BatchNorm1d needs more than one image per
batch in train mode.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .config import ModelConfig


class MLPHead(nn.Module):
    """LayerNorm -> hidden layer (GELU, dropout) -> classes or regression targets."""

    def __init__(self, dim: int, hidden: int, out_features: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(self.act(self.fc1(self.norm(x)))))  # (B, out_features)


class BatchNormHead(nn.Module):
    """Linear -> BatchNorm1d -> ELU -> Linear, as the published models end."""

    def __init__(self, dim: int, hidden: int, out_features: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.norm = nn.BatchNorm1d(hidden)
        self.act = nn.ELU()
        self.fc2 = nn.Linear(hidden, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.norm(self.fc1(x))))  # (B, out_features)


def build_head(cfg: ModelConfig, dim: int) -> nn.Module:
    """The head `cfg.head_style` names, from `dim` pooled features to `cfg.out_features`."""
    if cfg.head_style == "bn_elu":
        return BatchNormHead(dim, cfg.head_hidden, cfg.out_features)
    return MLPHead(dim, cfg.head_hidden, cfg.out_features, cfg.dropout)
