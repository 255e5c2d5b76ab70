"""Every registered model: a base ModelConfig per name, plus the caller's overrides.

A registered name means one architecture family (`ModelConfig.variant`, which no override can
change). Overrides are ModelConfig fields or stage knobs (`config.STAGE_KNOBS`, applied to every
stage), e.g. `create_model("eqcvt_stem", group="D4", fields=6, depth=3, classes=3)`.
Parameter counts below are trainable parameters on 1x129x129 input with 2 classes.
"""

from __future__ import annotations

import torch.nn as nn

from .baselines import SteerableCNN
from .config import ModelConfig, StageConfig, apply_overrides
from .model import EqCvT
from .registry import register_model
from .steerable import SteerableEqCvT

FAMILIES: dict[str, type[nn.Module]] = {
    "stem": EqCvT,
    "cvt": EqCvT,
    "cnn": SteerableCNN,
    "steerable": SteerableEqCvT,
}


def build_model(cfg: ModelConfig) -> nn.Module:
    """The model of `cfg`'s family, built from `cfg`."""
    return FAMILIES[cfg.variant](cfg)  # ModelConfig has already rejected unknown families


# The published EqCvT (the abstract's author's cvt.py EqCvT, notebook test2_e2c_vit): C4, circular
# input mask, one R2Conv 7x7 (padding 1) to 10 regular fields, InnerBatchNorm, ReLU, a stride-1
# anti-aliased blur, group pooling (10 x 121 x 121); one CvT stage of dim 32 (61 x 61 tokens),
# depth 2, 3 heads of width 64, MLP ratio 2, key/value stride 2 (961 keys), dropout 0.1 on the
# attention and MLP outputs; head Linear(32, 64), BatchNorm1d, ELU, Linear. 64,810 parameters,
# 200 of them in the equivariant stem.
SEED = ModelConfig(
    variant="stem",
    group="C4",
    field_type="regular",
    fields=10,
    kernel_size=7,
    stem_blocks=1,
    stem_downsample=False,
    input_mask=True,
    stages=(StageConfig(embed_dim=32, depth=2, heads=3, head_dim=64, mlp_ratio=2.0),),
    head_hidden=64,
    head_style="bn_elu",
    dropout=0.1,
    attention_dropout=False,
    img_size=129,
    classes=2,
)

# The family the search starts from: C8, three downsampling stem blocks of 10 regular fields,
# one CvT stage of dim 32, depth 2, 2 heads of width 64; LayerNorm/GELU head. 77,202 parameters.
STEM = ModelConfig(
    variant="stem",
    group="C8",
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

# The published CvT (cvt.py CvT, notebook test2): stage 1 Conv2d(1, 64, 7, stride 4) and 2 blocks
# of 2 heads; stage 2 Conv2d(64, 128, 3, stride 2) and 1 block of 3 heads; heads of width 64, MLP
# ratio 4, key/value stride 2, dropout 0.1 on outputs; head Linear(128, 128), BatchNorm1d, ELU,
# Linear. 463,106 parameters.
CVT = ModelConfig(
    variant="cvt",
    group="C1",
    stem_blocks=0,
    stages=(
        StageConfig(
            embed_dim=64, depth=2, heads=2, head_dim=64, mlp_ratio=4.0, kv_stride=2,
            patch_size=7, patch_stride=4,
        ),
        StageConfig(
            embed_dim=128, depth=1, heads=3, head_dim=64, mlp_ratio=4.0, kv_stride=2,
            patch_size=3, patch_stride=2,
        ),
    ),
    head_hidden=128,
    head_style="bn_elu",
    dropout=0.1,
    attention_dropout=False,
    img_size=129,
    classes=2,
)

# A C8 steerable CNN of the DeepLense kind: 6 blocks of 5x5 convs on 8, 8, 16, 16, 32, 32 regular
# fields, group pooling, MLP head. 177,210 parameters.
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

# Equivariant end to end: stem of 8 regular C4 fields (5x5), stages of 8 and 16 fields, invariant
# attention scores. 18,338 parameters.
STEERABLE = ModelConfig(
    variant="steerable",
    group="C4",
    field_type="regular",
    fields=8,  # stem fields (32 channels for C4)
    kernel_size=5,
    stem_blocks=1,
    stages=(
        StageConfig(embed_dim=32, depth=1, heads=2, mlp_ratio=2.0, kv_stride=2),
        StageConfig(embed_dim=64, depth=1, heads=2, mlp_ratio=2.0, kv_stride=2),
    ),
    head_hidden=64,
    dropout=0.0,
    in_channels=1,
    img_size=129,
    classes=2,
)


@register_model
def seed_eqcvt(**overrides) -> nn.Module:
    """The published EqCvT, exactly (64,810 parameters)."""
    return build_model(apply_overrides(SEED, **overrides))


@register_model
def eqcvt_stem(**overrides) -> nn.Module:
    """Steerable stem -> group pooling -> plain CvT; every knob searchable."""
    return build_model(apply_overrides(STEM, **overrides))


@register_model
def cvt_baseline(**overrides) -> nn.Module:
    """The published CvT comparison, exactly (463,106 parameters)."""
    return build_model(apply_overrides(CVT, **overrides))


@register_model
def steerable_cnn(**overrides) -> nn.Module:
    return build_model(apply_overrides(CNN, **overrides))


@register_model
def eqcvt_steerable(**overrides) -> nn.Module:
    """C4-equivariant CvT with invariant logits: stem 8 regular fields, stages of 8 and 16."""
    return build_model(apply_overrides(STEERABLE, **overrides))
