"""Frozen dataclasses: the single source of truth for architecture values."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .groups import parse_group

VARIANTS: tuple[str, ...] = ("stem", "steerable", "cvt", "cnn")
FIELD_TYPES: tuple[str, ...] = ("regular", "trivial")
# "mlp": LayerNorm -> Linear -> GELU -> Dropout -> Linear; "bn_elu": Linear -> BatchNorm1d -> ELU
# -> Linear, the head of the published EqCvT and CvT (the authors' cvt.py).
HEAD_STYLES: tuple[str, ...] = ("mlp", "bn_elu")
# Fields a registered model fixes: its name means one architecture family.
FIXED_BY_NAME: tuple[str, ...] = ("variant",)
# Knobs that apply to every CvT stage at once, so a search samples scalars, not per-stage lists.
STAGE_KNOBS: tuple[str, ...] = ("embed_dim", "depth", "heads", "mlp_ratio", "kv_stride", "head_dim")


@dataclass(frozen=True)
class StageConfig:
    """One CvT stage: a convolutional token embedding followed by `depth` transformer blocks."""

    embed_dim: int = 32
    depth: int = 2
    heads: int = 1
    mlp_ratio: float = 2.0
    kv_stride: int = 2  # stride of the key/value convolutional projection
    patch_size: int = 3  # token-embedding convolution kernel
    patch_stride: int = 2  # token-embedding convolution stride
    head_dim: int = 0  # width of one attention head; 0 = embed_dim // heads (plain CvT)

    def __post_init__(self) -> None:
        for name in ("embed_dim", "depth", "heads", "kv_stride", "patch_size", "patch_stride"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"stage {name} must be >= 1, got {getattr(self, name)!r}")
        if self.head_dim < 0:
            raise ValueError(f"stage head_dim must be >= 0, got {self.head_dim!r}")
        if not self.head_dim and self.embed_dim % self.heads:
            raise ValueError(
                f"stage embed_dim={self.embed_dim} is not divisible by heads={self.heads} "
                "(set head_dim to size the heads on their own)"
            )
        if self.mlp_ratio <= 0:
            raise ValueError(f"stage mlp_ratio must be > 0, got {self.mlp_ratio!r}")


@dataclass(frozen=True)
class ModelConfig:
    """Everything that defines an architecture; presets are `dataclasses.replace` of this.

    `variant` is the family: "stem" (steerable stem -> group pooling -> plain CvT, the seed
    architecture), "steerable" (equivariant end to end, invariant logits), "cvt" (plain CvT
    baseline), "cnn" (steerable CNN baseline). Each registered model fixes it (FIXED_BY_NAME).
    The head is a classifier when `targets == 0`, else a regressor with `targets` outputs.

    Stem knobs ("stem" and "cnn"): `stem_downsample` True gives size-preserving convs and a
    stride-2 anti-aliased pool per block (129 -> 65 -> 33); False gives the published block, a
    7x7 conv with padding 1 and a stride-1 blur without padding (129 -> 125 -> 121).
    `input_mask` multiplies the input by escnn's circular mask (margin 1%), as published.
    `attention_dropout` also drops attention weights (the published CvT drops only outputs).
    """

    variant: str = "stem"
    group: str = "C4"
    field_type: str = "regular"
    fields: int = 10  # fields per steerable layer (regular fields have |G| channels each)
    kernel_size: int = 7
    stem_blocks: int = 1
    stem_downsample: bool = True
    input_mask: bool = False
    stages: tuple[StageConfig, ...] = field(default_factory=lambda: (StageConfig(),))
    head_hidden: int = 64
    head_style: str = "mlp"
    dropout: float = 0.0
    attention_dropout: bool = True
    in_channels: int = 1
    img_size: int = 129
    classes: int = 2
    targets: int = 0

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}: expected one of {VARIANTS}")
        parse_group(self.group)  # raises a clear error on a bad name
        if self.field_type not in FIELD_TYPES:
            raise ValueError(
                f"unknown field_type {self.field_type!r}: expected one of {FIELD_TYPES}"
            )
        if self.head_style not in HEAD_STYLES:
            raise ValueError(
                f"unknown head_style {self.head_style!r}: expected one of {HEAD_STYLES}"
            )
        for name in ("stem_downsample", "input_mask", "attention_dropout"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        for name in ("fields", "kernel_size", "in_channels", "img_size", "head_hidden"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.variant not in ("stem", "cnn") and (self.input_mask or not self.stem_downsample):
            raise ValueError(
                f"input_mask and stem_downsample are knobs of the 'stem' and 'cnn' families, "
                f"not of {self.variant!r}"
            )
        if self.stem_blocks < 0:
            raise ValueError(f"stem_blocks must be >= 0, got {self.stem_blocks!r}")
        if self.variant in ("stem", "cnn") and self.stem_blocks < 1:
            raise ValueError(f"variant {self.variant!r} needs stem_blocks >= 1, got 0")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (centred filters), got {self.kernel_size}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not self.stages:
            raise ValueError("at least one CvT stage is required")
        if self.targets < 0 or (self.targets == 0 and self.classes < 2):
            raise ValueError(
                f"head needs classes >= 2 (classification) or targets >= 1 (regression), "
                f"got classes={self.classes}, targets={self.targets}"
            )

    @property
    def task(self) -> str:
        return "regression" if self.targets else "classification"

    @property
    def out_features(self) -> int:
        return self.targets or self.classes

    @property
    def group_spec(self):
        return parse_group(self.group)


def apply_overrides(base: ModelConfig, **overrides) -> ModelConfig:
    """`dataclasses.replace`, plus the stage knobs in STAGE_KNOBS applied to every stage.

    Unknown keys are a TypeError naming the key; a FIXED_BY_NAME key (the family) is a
    ValueError: another family is another registered model.
    """
    fixed = sorted(set(overrides) & set(FIXED_BY_NAME))
    if fixed:
        raise ValueError(
            f"{', '.join(fixed)} cannot be overridden: a registered model name fixes its family "
            f"({base.variant!r} here); pick the model by name instead (eqcvt.list_models())"
        )
    names = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = set(overrides) - names - set(STAGE_KNOBS)
    if unknown:
        raise TypeError(
            f"unknown model override(s) {sorted(unknown)}; "
            f"valid: {sorted((names - set(FIXED_BY_NAME)) | set(STAGE_KNOBS))}"
        )
    stage_kw = {k: overrides.pop(k) for k in STAGE_KNOBS if k in overrides}
    cfg = dataclasses.replace(base, **overrides)
    if stage_kw:
        cfg = dataclasses.replace(
            cfg, stages=tuple(dataclasses.replace(s, **stage_kw) for s in cfg.stages)
        )
    return cfg
