"""CvT blocks (Wu et al. 2021, "CvT: Introducing Convolutions to Vision Transformers").

A stage = convolutional token embedding + `depth` transformer blocks whose queries, keys and
values come from depthwise-convolutional projections of the token map (keys/values strided by
`kv_stride`, which shrinks attention cost by kv_stride**2). No position embedding: the
convolutions carry position. Tokens are (B, T, C) with T = H * W, row-major. The layers have the
parameters of the published cvt.py (a 1x1 conv on the map is a Linear on the tokens; its channel
LayerNorm is nn.LayerNorm on the tokens; the depthwise and pointwise projections have no bias).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import StageConfig

PROJ_KERNEL = 3  # depthwise kernel of the q/k/v projections (CvT's default)


def to_tokens(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).transpose(1, 2)  # (B, C, H, W) -> (B, H*W, C)


def to_map(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    B, T, C = x.shape
    return x.transpose(1, 2).reshape(B, C, *hw)  # (B, T, C) -> (B, C, H, W)


class ConvEmbedding(nn.Module):
    """Overlapping strided convolution from a feature map to tokens, then LayerNorm."""

    def __init__(self, in_channels: int, dim: int, patch_size: int, stride: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, patch_size, stride, padding=patch_size // 2)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.proj(x)  # (B, dim, H', W')
        hw = (x.shape[2], x.shape[3])
        return self.norm(to_tokens(x)), hw  # (B, T, dim)


class ConvProjection(nn.Module):
    """CvT's projection: depthwise conv + BatchNorm on the token map, then a linear map."""

    def __init__(self, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(
            dim, dim, PROJ_KERNEL, stride, padding=PROJ_KERNEL // 2, groups=dim, bias=False
        )
        self.norm = nn.BatchNorm2d(dim)
        self.linear = nn.Linear(dim, out_dim, bias=False)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        x = self.norm(self.depthwise(to_map(x, hw)))  # (B, C, H/s, W/s)
        return self.linear(to_tokens(x))  # (B, T/s^2, out_dim)


class ConvAttention(nn.Module):
    """Multi-head attention with convolutional projections; k and v share one strided conv.

    `dropout` drops the output; with `attention_dropout` also the attention weights (the
    published CvT, lucidrains' cvt.py, drops only the output).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        head_dim: int,
        kv_stride: int,
        dropout: float,
        attention_dropout: bool = True,
    ) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        inner = heads * head_dim
        self.q = ConvProjection(dim, inner, stride=1)
        self.kv = ConvProjection(dim, 2 * inner, stride=kv_stride)
        self.out = nn.Linear(inner, dim)
        self.attn_dropout = dropout if attention_dropout else 0.0
        self.out_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        B, T, _ = x.shape
        h, d = self.heads, self.head_dim
        q = self.q(x, hw).view(B, T, h, d).transpose(1, 2)  # (B, h, T, d)
        k, v = self.kv(x, hw).chunk(2, dim=-1)  # (B, T', h*d) each
        k = k.reshape(B, -1, h, d).transpose(1, 2)  # (B, h, T', d)
        v = v.reshape(B, -1, h, d).transpose(1, 2)  # (B, h, T', d)
        p = self.attn_dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p)  # (B, h, T, d)
        y = y.transpose(1, 2).reshape(B, T, h * d)  # (B, T, h*d)
        return self.out_drop(self.out(y))  # (B, T, dim)


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, cfg: StageConfig, dropout: float, attention_dropout: bool = True) -> None:
        super().__init__()
        dim = cfg.embed_dim
        head_dim = cfg.head_dim or dim // cfg.heads
        self.ln1 = nn.LayerNorm(dim)
        self.attn = ConvAttention(
            dim, cfg.heads, head_dim, cfg.kv_stride, dropout, attention_dropout
        )
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, max(1, round(dim * cfg.mlp_ratio)), dropout)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), hw)  # (B, T, dim)
        return x + self.mlp(self.ln2(x))  # (B, T, dim)


class CvTStage(nn.Module):
    """Token embedding + blocks; feature map (B, C_in, H, W) in, (B, dim, H', W') out."""

    def __init__(
        self,
        in_channels: int,
        cfg: StageConfig,
        dropout: float = 0.0,
        attention_dropout: bool = True,
    ) -> None:
        super().__init__()
        self.embed = ConvEmbedding(in_channels, cfg.embed_dim, cfg.patch_size, cfg.patch_stride)
        self.blocks = nn.ModuleList(
            Block(cfg, dropout, attention_dropout) for _ in range(cfg.depth)
        )
        self.out_channels = cfg.embed_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, hw = self.embed(x)  # (B, T, dim)
        for block in self.blocks:
            x = block(x, hw)
        return to_map(x, hw)  # (B, dim, H', W')
