"""EqCvT(cfg): steerable stem -> CvT stages -> head; `build_model(cfg)` picks the class by variant.

Variants: "stem" (the seed: escnn stem, group pooling, plain CvT), "cvt" (the same CvT without the
stem: the baseline), "cnn" (`baselines.SteerableCNN`), "steerable" (`steerable.SteerableEqCvT`,
equivariant end to end). Every model maps (B, in_channels, H, W) floats to (B, classes) logits or
(B, targets) regression outputs, has `.config`, and accepts any input size (no position
embedding; the head averages over positions).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from escnn.nn import GeometricTensor

from .config import ModelConfig
from .cvt import CvTStage
from .filter_cache import CachedFilters, install_filter_cache
from .stem import SteerableStem


class Head(nn.Module):
    """Pooled features (B, C) -> LayerNorm -> hidden layer -> classes or regression targets."""

    def __init__(self, dim: int, hidden: int, out_features: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(self.act(self.fc1(self.norm(x)))))  # (B, out_features)


class EqCvT(CachedFilters):
    """Variant "stem": invariant steerable features feed a plain CvT. Variant "cvt": no stem.

    The stem is equivariant, but the CvT after group pooling is not, so the logits of the "stem"
    variant change under rotations (the fully invariant model is variant "steerable").
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.variant not in ("stem", "cvt"):
            raise ValueError(
                f"EqCvT builds variants 'stem' and 'cvt', got {cfg.variant!r}; "
                "use eqcvt.model.build_model(cfg) for 'cnn' and 'steerable'"
            )
        self.config = cfg
        channels = cfg.in_channels
        self.stem: SteerableStem | None = None
        if cfg.variant == "stem":
            widths = [cfg.fields] * cfg.stem_blocks
            self.stem = SteerableStem(
                cfg.group_spec, cfg.in_channels, widths, cfg.field_type, cfg.kernel_size
            )
            channels = self.stem.out_channels
        stages = []
        for stage_cfg in cfg.stages:
            stages.append(CvTStage(channels, stage_cfg, cfg.dropout))
            channels = stage_cfg.embed_dim
        self.stages = nn.ModuleList(stages)
        self.head = Head(channels, cfg.head_hidden, cfg.out_features, cfg.dropout)
        install_filter_cache(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stem is not None:
            x = self.stem(GeometricTensor(x, self.stem.in_type))  # (B, fields, H/2^n, W/2^n)
        for stage in self.stages:
            x = stage(x)  # (B, dim, H', W')
        return self.head(x.mean(dim=(2, 3)))  # (B, out_features)


def build_model(cfg: ModelConfig) -> nn.Module:
    """The model class for `cfg.variant`, built from `cfg`."""
    if cfg.variant in ("stem", "cvt"):
        return EqCvT(cfg)
    if cfg.variant == "cnn":
        from .baselines import SteerableCNN

        return SteerableCNN(cfg)
    if cfg.variant == "steerable":
        from .steerable import SteerableEqCvT

        return SteerableEqCvT(cfg)
    raise ValueError(f"unknown variant {cfg.variant!r}")  # ModelConfig already rejects these
