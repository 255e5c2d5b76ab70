"""Registered variants: each is a base ModelConfig plus the caller's overrides.

Overrides are ModelConfig fields or stage knobs (`config.STAGE_KNOBS`, applied to every stage),
e.g. `create_model("eqcvt_stem", group="D4", fields=6, depth=3, classes=3)`.
"""

from __future__ import annotations

import torch.nn as nn

from .config import ModelConfig, StageConfig, apply_overrides
from .model import build_model
from .registry import register_model

# The abstract's EqCvT on 1x129x129 binary images: C4, 10 regular fields, 7x7 kernels, one CvT
# stage of dim 32, depth 2, MLP ratio 2, a 64-unit head. Three stem blocks and two attention
# heads of width 64 (the usual CvT head width) give 62,802 parameters (reported: 64,810).
SEED = ModelConfig(
    variant="stem",
    group="C4",
    field_type="regular",
    fields=10,
    kernel_size=7,
    stem_blocks=3,
    stages=(StageConfig(embed_dim=32, depth=2, heads=2, head_dim=64, mlp_ratio=2.0),),
    head_hidden=64,
    dropout=0.1,
    img_size=129,
    classes=2,
)

# The generic stem variant the search starts from: the seed's shape on C8.
STEM = apply_overrides(SEED, group="C8")

# The abstract's comparison: a plain two-stage CvT, 472,898 parameters (reported: about 463k).
CVT = ModelConfig(
    variant="cvt",
    group="C1",
    stem_blocks=0,
    stages=(
        StageConfig(
            embed_dim=64,
            depth=1,
            heads=1,
            head_dim=64,
            mlp_ratio=4.0,
            kv_stride=2,
            patch_size=7,
            patch_stride=4,
        ),
        StageConfig(
            embed_dim=128,
            depth=2,
            heads=2,
            head_dim=64,
            mlp_ratio=3.0,
            kv_stride=2,
            patch_size=3,
            patch_stride=2,
        ),
    ),
    head_hidden=64,
    dropout=0.1,
    img_size=129,
    classes=2,
)

# A C8 steerable CNN of the DeepLense kind: 6 blocks of 5x5 convs on 8, 8, 16, 16, 32, 32 regular
# fields, group pooling, MLP head (177,210 parameters).
CNN = ModelConfig(
    variant="cnn",
    group="C8",
    fields=8,
    kernel_size=5,
    stem_blocks=6,
    head_hidden=64,
    dropout=0.1,
    img_size=129,
    classes=2,
)


@register_model
def seed_eqcvt(**overrides) -> nn.Module:
    return build_model(apply_overrides(SEED, **overrides))


@register_model
def eqcvt_stem(**overrides) -> nn.Module:
    return build_model(apply_overrides(STEM, **overrides))


@register_model
def cvt_baseline(**overrides) -> nn.Module:
    return build_model(apply_overrides(CVT, **overrides))


@register_model
def steerable_cnn(**overrides) -> nn.Module:
    return build_model(apply_overrides(CNN, **overrides))
