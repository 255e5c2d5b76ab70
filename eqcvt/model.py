"""EqCvT(cfg): steerable stem -> CvT stages -> head, for the families "stem" and "cvt".

Family "stem" (the seed: escnn stem, group pooling, plain CvT); family "cvt" (the same CvT without
the stem: the baseline). The other families live in baselines.py ("cnn") and steerable.py
("steerable"); `eqcvt.build_model(cfg)` picks the class. Every model maps (B, in_channels, H, W)
floats to (B, classes) logits or (B, targets) regression outputs, has `.config`, and accepts any
input size (no position embedding; the head averages over positions).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from escnn.nn import GeometricTensor

from .config import ModelConfig
from .cvt import CvTStage
from .filter_cache import CachedFilters, install_filter_cache
from .heads import build_head
from .stem import SteerableStem


class EqCvT(CachedFilters):
    """Family "stem": invariant steerable features feed a plain CvT. Family "cvt": no stem.

    The stem is equivariant, but the CvT after group pooling is not, so the logits of the "stem"
    family change under rotations (the fully invariant model is the "steerable" family).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.variant not in ("stem", "cvt"):
            raise ValueError(
                f"EqCvT builds the families 'stem' and 'cvt', got {cfg.variant!r}; "
                "use eqcvt.build_model(cfg) for 'cnn' and 'steerable'"
            )
        self.config = cfg
        channels = cfg.in_channels
        self.stem: SteerableStem | None = None
        if cfg.variant == "stem":
            self.stem = SteerableStem(
                cfg.group_spec,
                cfg.in_channels,
                [cfg.fields] * cfg.stem_blocks,
                cfg.field_type,
                cfg.kernel_size,
                downsample=cfg.stem_downsample,
                mask=cfg.input_mask,
            )
            channels = self.stem.out_channels
        stages = []
        for stage_cfg in cfg.stages:
            stages.append(CvTStage(channels, stage_cfg, cfg.dropout, cfg.attention_dropout))
            channels = stage_cfg.embed_dim
        self.stages = nn.ModuleList(stages)
        self.head = build_head(cfg, channels)
        install_filter_cache(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stem is not None:
            x = self.stem(GeometricTensor(x, self.stem.in_type))  # (B, fields, H', W')
        for stage in self.stages:
            x = stage(x)  # (B, dim, H', W')
        return self.head(x.mean(dim=(2, 3)))  # (B, out_features)
