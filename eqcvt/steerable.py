"""Family "steerable": a CvT that is equivariant end to end, so its logits are invariant.

Every layer maps feature fields of one escnn FieldType to another:
  stem:   stem_blocks x (R2Conv kxk -> InnerBatchNorm -> ReLU), then a centred 3x3/2 average pool
  stage:  token embedding (strided R2Conv -> FieldLayerNorm), then `depth` blocks of
          x + InvariantAttention(FieldLayerNorm(x));  x + EquivariantMLP(FieldLayerNorm(x))
  end:    FieldLayerNorm -> group pooling (max over each regular field) -> spatial mean -> MLP head
Attention scores contract q and k over all channels of a head; a group element permutes the
channels of each regular field (orthogonally) and moves the tokens, so a score only moves with its
token pair and the softmax weights are invariant scalars. Values stay equivariant fields; heads are
split by whole fields so the permutations stay inside a head. There is no absolute position
embedding (it would break invariance): the conv projections carry the positional information.

Strided layers keep the rotation centre on the pixel grid (eqcvt/centred.py), so the logits are
invariant to the grid-exact elements on any input size.

escnn conventions (checked in tests): rotation by k quarter turns = torch.rot90(x, k, (-2, -1));
the flip of flipRot2dOnR2(N) = torch.flip(x, (-1,)); element (flip, k) = rot90(flip(x), k).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from escnn import nn as enn
from escnn.nn import FieldType, GeometricTensor

from .centred import CentredR2Conv, centred_avg_pool, centred_size, spatial_out
from .config import ModelConfig, StageConfig
from .fields import field_size, field_type, group_pool
from .filter_cache import CachedFilters, install_filter_cache
from .heads import BatchNormHead

# ----------------------------------------------------------------------------- modules


class FieldLayerNorm(enn.EquivariantModule):
    """Per-token LayerNorm over all channels, with one scale and shift per field.

    Mean and variance over a token's channels are invariant to permutations of the channels, and
    a per-field affine map commutes with the permutation inside each regular field. No batch
    statistics, so train and eval behave alike.
    """

    def __init__(self, ftype: FieldType, eps: float = 1e-5) -> None:
        super().__init__()
        self.in_type = self.out_type = ftype
        self.field_size = field_size(ftype)
        self.eps = eps
        self.weight = torch.nn.Parameter(torch.ones(len(ftype)))
        self.bias = torch.nn.Parameter(torch.zeros(len(ftype)))

    def forward(self, x: GeometricTensor) -> GeometricTensor:
        t = x.tensor
        mean = t.mean(dim=1, keepdim=True)
        var = t.var(dim=1, keepdim=True, unbiased=False)
        t = (t - mean) * torch.rsqrt(var + self.eps)
        w = self.weight.repeat_interleave(self.field_size)[None, :, None, None]
        b = self.bias.repeat_interleave(self.field_size)[None, :, None, None]
        return GeometricTensor(t * w + b, self.out_type)

    def evaluate_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape


class SteerableProjection(enn.EquivariantModule):
    """CvT conv projection: field-wise kxk R2Conv (stride s) -> InnerBatchNorm -> 1x1 R2Conv.

    InnerBatchNorm shares statistics over the group channels of each field, so it is
    equivariant in train mode too.
    """

    def __init__(
        self,
        ftype: FieldType,
        kernel_size: int = 3,
        stride: int = 1,
        out_type: FieldType | None = None,
    ) -> None:
        super().__init__()
        self.in_type, self.out_type = ftype, out_type or ftype
        self.depthwise = CentredR2Conv(
            ftype, ftype, kernel_size, stride, groups=len(ftype), bias=False
        )
        self.norm = enn.InnerBatchNorm(ftype)
        self.pointwise = enn.R2Conv(ftype, self.out_type, 1, bias=False)

    def forward(self, x: GeometricTensor) -> GeometricTensor:
        return self.pointwise(self.norm(self.depthwise(x)))

    def evaluate_output_shape(self, input_shape: tuple) -> tuple:
        b, _, h, w = self.depthwise.evaluate_output_shape(input_shape)
        return (b, self.out_type.size, h, w)


class InvariantAttention(enn.EquivariantModule):
    """Multi-head attention with invariant scores and equivariant values; heads split by fields.

    score(i, j) = <q_i, k_j> / sqrt(d) over the channels of a head: a group element moves tokens
    and permutes channels within fields, which leaves every inner product unchanged.
    `attn_type` (default: `ftype`) is the q/k/v width, split into `heads` equal sets of fields.
    """

    def __init__(
        self,
        ftype: FieldType,
        heads: int = 1,
        kernel_size: int = 3,
        kv_stride: int = 1,
        attn_drop: float = 0.0,
        attn_type: FieldType | None = None,
    ) -> None:
        super().__init__()
        attn_type = attn_type or ftype
        if len(attn_type) % heads:
            raise ValueError(f"{len(attn_type)} fields cannot be split into {heads} heads")
        self.in_type = self.out_type = ftype
        self.heads, self.attn_drop = heads, attn_drop
        self.q = SteerableProjection(ftype, kernel_size, 1, attn_type)
        self.k = SteerableProjection(ftype, kernel_size, kv_stride, attn_type)
        self.v = SteerableProjection(ftype, kernel_size, kv_stride, attn_type)
        self.proj = enn.R2Conv(attn_type, ftype, 1)

    def _tokens(self, t: torch.Tensor) -> torch.Tensor:
        b, c, h, w = t.shape
        # whole fields are contiguous channels, so a contiguous channel split is a field split
        return t.reshape(b, self.heads, c // self.heads, h * w).transpose(-1, -2)  # (B, h, T, d)

    def forward(self, x: GeometricTensor) -> GeometricTensor:
        q = self.q(x).tensor
        b, c, h, w = q.shape
        k, v = self._tokens(self.k(x).tensor), self._tokens(self.v(x).tensor)
        drop = self.attn_drop if self.training else 0.0
        out = F.scaled_dot_product_attention(self._tokens(q), k, v, dropout_p=drop)  # (B, h, T, d)
        out = out.transpose(-1, -2).reshape(b, c, h, w)
        return self.proj(GeometricTensor(out, self.proj.in_type))

    def evaluate_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape


class EquivariantMLP(enn.EquivariantModule):
    """1x1 R2Conv -> pointwise GELU -> 1x1 R2Conv on regular (or trivial) fields.

    A pointwise nonlinearity commutes with the channel permutations of regular fields.
    """

    def __init__(self, ftype: FieldType, hidden_fields: int, kind: str) -> None:
        super().__init__()
        self.in_type = self.out_type = ftype
        hidden = field_type(ftype.gspace, hidden_fields, kind)
        self.fc1 = enn.R2Conv(ftype, hidden, 1)
        self.fc2 = enn.R2Conv(hidden, ftype, 1)

    def forward(self, x: GeometricTensor) -> GeometricTensor:
        h = self.fc1(x)
        return self.fc2(GeometricTensor(F.gelu(h.tensor), h.type))

    def evaluate_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape


class SteerableBlock(enn.EquivariantModule):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, ftype: FieldType, stage: StageConfig, kind: str, attn_drop: float) -> None:
        super().__init__()
        self.in_type = self.out_type = ftype
        self.norm1 = FieldLayerNorm(ftype)
        attn_type = field_type(ftype.gspace, attention_fields(stage, len(ftype), ftype), kind)
        self.attn = InvariantAttention(ftype, stage.heads, 3, stage.kv_stride, attn_drop, attn_type)
        self.norm2 = FieldLayerNorm(ftype)
        self.mlp = EquivariantMLP(ftype, max(1, round(len(ftype) * stage.mlp_ratio)), kind)

    def forward(self, x: GeometricTensor) -> GeometricTensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))

    def evaluate_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape


class TokenEmbedding(enn.EquivariantModule):
    """CvT convolutional token embedding: centred strided R2Conv -> FieldLayerNorm."""

    def __init__(self, in_type: FieldType, out_type: FieldType, stage: StageConfig) -> None:
        super().__init__()
        self.in_type, self.out_type = in_type, out_type
        self.conv = CentredR2Conv(in_type, out_type, stage.patch_size, stage.patch_stride)
        self.norm = FieldLayerNorm(out_type)

    def forward(self, x: GeometricTensor) -> GeometricTensor:
        return self.norm(self.conv(x))

    def evaluate_output_shape(self, input_shape: tuple) -> tuple:
        return self.conv.evaluate_output_shape(input_shape)


class FieldStem(enn.EquivariantModule):
    """stem_blocks x (R2Conv -> InnerBatchNorm -> ReLU) at full resolution, then a centred 3x3/2
    average pool (anti-aliased downsampling before the tokens)."""

    def __init__(self, in_type: FieldType, out_type: FieldType, blocks: int, kernel: int) -> None:
        super().__init__()
        self.in_type, self.out_type = in_type, out_type
        layers, t = [], in_type
        for _ in range(blocks):
            layers += [
                enn.R2Conv(t, out_type, kernel, padding=kernel // 2, bias=False),
                enn.InnerBatchNorm(out_type),
                enn.ReLU(out_type, inplace=True),
            ]
            t = out_type
        self.body = enn.SequentialModule(*layers)

    def forward(self, x: GeometricTensor) -> GeometricTensor:
        t = centred_avg_pool(self.body(x).tensor)
        return GeometricTensor(t, self.out_type)

    def evaluate_output_shape(self, input_shape: tuple) -> tuple:
        return spatial_out(input_shape, self.out_type.size, lambda n: centred_size(n, 3, 2))


def attention_fields(stage: StageConfig, fields: int, ftype: FieldType) -> int:
    """q/k/v fields: the stage's fields, or heads x (head_dim as whole fields) when head_dim > 0."""
    if not stage.head_dim:
        return fields
    return stage.heads * max(1, round(stage.head_dim / field_size(ftype)))


def stage_fields(stage: StageConfig, size: int) -> int:
    """Fields of a stage: embed_dim is read as a channel budget, rounded to whole fields per head
    (at least one field per head), so a larger group keeps the width comparable. `size` is the
    number of channels per field."""
    per_head = max(1, round(stage.embed_dim / (stage.heads * size)))
    return stage.heads * per_head


# ----------------------------------------------------------------------------- the model


class SteerableEqCvT(CachedFilters):
    """Fully equivariant CvT with invariant logits; (B, in_channels, H, W) -> (B, out_features)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.variant != "steerable":
            raise ValueError(f"SteerableEqCvT needs variant='steerable', got {cfg.variant!r}")
        self.config = cfg
        gspace = cfg.group_spec.gspace()
        kind = cfg.field_type
        size = gspace.fibergroup.order() if kind == "regular" else 1
        self.field_size = size

        self.in_type = FieldType(gspace, cfg.in_channels * [gspace.trivial_repr])
        t = self.in_type
        if cfg.stem_blocks:
            t_out = field_type(gspace, cfg.fields, kind)
            self.stem = FieldStem(t, t_out, cfg.stem_blocks, cfg.kernel_size)
            t = t_out
        else:
            self.stem = enn.IdentityModule(t)
        stages = []
        attn_drop = cfg.dropout if cfg.attention_dropout else 0.0
        for stage in cfg.stages:
            out = field_type(gspace, stage_fields(stage, size), kind)
            blocks = [TokenEmbedding(t, out, stage)]
            blocks += [SteerableBlock(out, stage, kind, attn_drop) for _ in range(stage.depth)]
            stages.append(enn.SequentialModule(*blocks))
            t = out
        self.stages = torch.nn.ModuleList(stages)
        self.norm = FieldLayerNorm(t)
        if cfg.head_style == "bn_elu":
            self.head: torch.nn.Module = BatchNormHead(len(t), cfg.head_hidden, cfg.out_features)
        else:  # "mlp" without its LayerNorm: self.norm comes before the group pooling
            self.head = torch.nn.Sequential(
                torch.nn.Linear(len(t), cfg.head_hidden),
                torch.nn.GELU(),
                torch.nn.Dropout(cfg.dropout),
                torch.nn.Linear(cfg.head_hidden, cfg.out_features),
            )
        # eval() expands every R2Conv filter once (no autograd) and reuses it; checkpoints hold
        # parameters only, and loading into an eval-mode model re-expands the cache
        install_filter_cache(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Invariant per-field features (B, fields) before the head."""
        g = self.stem(GeometricTensor(x, self.in_type))
        for stage in self.stages:
            g = stage(g)
        t = group_pool(self.norm(g).tensor, self.field_size)  # (B, F, H, W)
        return t.mean(dim=(-2, -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))
