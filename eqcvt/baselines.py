"""Family "cnn": a steerable CNN baseline (the plain CvT baseline is EqCvT's family "cvt").

SteerableCNN follows the equivariant CNNs used on DeepLense data (escnn/e2cnn examples): blocks of
R2Conv -> InnerBatchNorm -> ReLU -> anti-aliased pooling on regular fields whose count doubles
every second block, group pooling, global average pooling, then a head. Invariant to the group's
grid-exact elements on odd-sized inputs (all layers after group pooling act per image).
"""

from __future__ import annotations

import torch
from escnn.nn import GeometricTensor

from .config import ModelConfig
from .filter_cache import CachedFilters, install_filter_cache
from .heads import build_head
from .stem import SteerableStem


def cnn_widths(fields: int, blocks: int) -> list[int]:
    """Field counts per block: fields, fields, 2*fields, 2*fields, 4*fields, ..."""
    return [fields * 2 ** (i // 2) for i in range(blocks)]


class SteerableCNN(CachedFilters):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.variant != "cnn":
            raise ValueError(f"SteerableCNN builds the family 'cnn', got {cfg.variant!r}")
        self.config = cfg
        self.features = SteerableStem(
            cfg.group_spec,
            cfg.in_channels,
            cnn_widths(cfg.fields, cfg.stem_blocks),
            cfg.field_type,
            cfg.kernel_size,
            downsample=cfg.stem_downsample,
            mask=cfg.input_mask,
        )
        self.head = build_head(cfg, self.features.out_channels)
        install_filter_cache(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(GeometricTensor(x, self.features.in_type))  # (B, F, H', W') invariant
        return self.head(x.mean(dim=(2, 3)))  # (B, out_features)
