"""Steerable stem: escnn conv blocks then group pooling. GeometricTensor in, plain Tensor out.

Each block is R2Conv -> InnerBatchNorm -> ReLU -> anti-aliased average pooling (stride 2), all on
fields of one planar group. Odd kernels with centred padding and a symmetric Gaussian pooling
filter keep the rotation centre of odd-sized inputs on a pixel (129 -> 65 -> 33 -> 17), so on such
grids the stem is exactly equivariant to the group's grid-exact elements (quarter turns, flips).
Group pooling (max over each field's channels) then yields invariant feature maps.
An even-sized map (64, 150) has its rotation centre on a pixel corner, where no stride-2 sampling
is symmetric; `CentreOnPixel` first moves it to the dual grid with a 2x2 stride-1 average (n -> n-1,
a kernel symmetric under every grid rotation and flip), so even inputs stay exact too.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from escnn import nn as enn

from .groups import GroupSpec

POOL_SIGMA = 0.66  # Gaussian blur of the anti-aliased pooling: a 5x5 filter (escnn's examples)
POOL_STRIDE = 2


def field_type(spec: GroupSpec, fields: int, kind: str) -> enn.FieldType:
    """`fields` copies of the group's regular (|G| channels each) or trivial (1 channel) field."""
    if not isinstance(fields, int) or isinstance(fields, bool) or fields < 1:
        raise ValueError(f"a steerable layer needs a positive integer field count, got {fields!r}")
    gspace = spec.gspace()
    if kind == "regular":
        rep = gspace.regular_repr
    elif kind == "trivial":
        rep = gspace.trivial_repr
    else:
        raise ValueError(f"unknown field_type {kind!r}: expected 'regular' or 'trivial'")
    return enn.FieldType(gspace, fields * [rep])


class CentreOnPixel(enn.EquivariantModule):
    """2x2 stride-1 average along each even-sized axis (n -> n-1); identity on odd axes."""

    def __init__(self, in_type: enn.FieldType) -> None:
        super().__init__()
        self.in_type = self.out_type = in_type

    def forward(self, x: enn.GeometricTensor) -> enn.GeometricTensor:
        h, w = x.tensor.shape[-2:]
        kernel = (2 - h % 2, 2 - w % 2)
        if kernel == (1, 1):
            return x
        return enn.GeometricTensor(F.avg_pool2d(x.tensor, kernel, stride=1), self.out_type)

    def evaluate_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        b, c, h, w = input_shape
        return b, c, h - 1 + h % 2, w - 1 + w % 2


class StemFeatures(enn.EquivariantModule):
    """The equivariant part of the stem: conv blocks on fields, then group pooling."""

    def __init__(
        self,
        spec: GroupSpec,
        in_channels: int,
        widths: Sequence[int],
        kind: str = "regular",
        kernel_size: int = 7,
    ) -> None:
        super().__init__()
        if not widths:
            raise ValueError("the steerable stem needs at least one block")
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (centred filters), got {kernel_size}")
        self.spec = spec
        gspace = spec.gspace()
        self.in_type = enn.FieldType(gspace, in_channels * [gspace.trivial_repr])
        layers: list[enn.EquivariantModule] = []
        ftype = self.in_type
        for width in widths:
            out_type = field_type(spec, width, kind)
            layers += [
                enn.R2Conv(ftype, out_type, kernel_size, padding=kernel_size // 2, bias=False),
                enn.InnerBatchNorm(out_type),
                enn.ReLU(out_type, inplace=True),
                CentreOnPixel(out_type),
                enn.PointwiseAvgPoolAntialiased(out_type, sigma=POOL_SIGMA, stride=POOL_STRIDE),
            ]
            ftype = out_type
        layers.append(enn.GroupPooling(ftype))
        self.blocks = enn.SequentialModule(*layers)
        self.out_type = self.blocks.out_type

    def forward(self, x: enn.GeometricTensor) -> enn.GeometricTensor:
        return self.blocks(x)

    def evaluate_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return self.blocks.evaluate_output_shape(input_shape)

    def check_equivariance(
        self, atol: float = 1e-4, rtol: float = 1e-4, size: int = 33
    ) -> list[tuple[object, float]]:
        """escnn's check, restricted to the elements that map the pixel grid onto itself.

        The default check samples arbitrary rotations on a 10x10 input; an odd `size` keeps the
        rotation centre on a pixel through the stride-2 pooling, where equivariance is exact.
        """
        x = enn.GeometricTensor(torch.randn(3, self.in_type.size, size, size), self.in_type)
        errors = []
        with torch.no_grad():
            y = self(x)
            for turns, flip in self.spec.grid_exact_elements():
                el = self.spec.escnn_element(turns, flip)
                out1 = y.transform(el).tensor
                out2 = self(x.transform(el)).tensor
                err = (out1 - out2).abs()
                if not torch.allclose(out1, out2, atol=atol, rtol=rtol):
                    raise AssertionError(
                        f"stem not equivariant under {el}: max error {err.max().item():.3g}"
                    )
                errors.append((el, err.mean().item()))
        return errors


class SteerableStem(torch.nn.Module):
    """Steerable conv blocks + group pooling; `forward` takes a GeometricTensor on `in_type` and
    returns the invariant maps as a plain tensor (B, widths[-1], H / 2**n, W / 2**n)."""

    def __init__(
        self,
        spec: GroupSpec,
        in_channels: int,
        widths: Sequence[int],
        kind: str = "regular",
        kernel_size: int = 7,
    ) -> None:
        super().__init__()
        self.features = StemFeatures(spec, in_channels, widths, kind, kernel_size)
        self.in_type = self.features.in_type
        self.out_channels = self.features.out_type.size

    def forward(self, x: enn.GeometricTensor) -> torch.Tensor:
        return self.features(x).tensor  # (B, out_channels, H', W')
