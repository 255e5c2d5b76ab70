"""Steerable stem: escnn conv blocks then group pooling. GeometricTensor in, plain Tensor out.

Each block is R2Conv -> InnerBatchNorm -> ReLU -> anti-aliased average pooling, on fields of one
planar group, in one of two forms:
- downsample=True (the search families): size-preserving convs and a stride-2 pool. Odd kernels
  with centred padding and a symmetric Gaussian filter keep the rotation centre of odd-sized
  inputs on a pixel (129 -> 65 -> 33). An even-sized map (64, 150) has its centre on a pixel
  corner, where no stride-2 sampling is symmetric; `CentreOnPixel` first moves it to the dual
  grid (n -> n-1), so even inputs stay exact too.
- downsample=False (the published EqCvT): the conv pads by 1 only and the blur has stride 1 and
  no padding (129 -> 125 -> 121 for a 7x7 conv). Stride 1 everywhere: exact on any size.
An optional circular input mask (escnn's MaskModule, margin 1%) comes first, as published.
Group pooling (max over each field's channels) then yields invariant feature maps.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from escnn import nn as enn
from escnn.nn.modules.masking_module import build_mask

from .centred import CentreOnPixel
from .fields import field_type
from .groups import GroupSpec

POOL_SIGMA = 0.66  # Gaussian blur of the anti-aliased pooling: a 5x5 filter (escnn's examples)
POOL_STRIDE = 2
PUBLISHED_PADDING = 1  # the published EqCvT's R2Conv(kernel_size=7, padding=1)
MASK_MARGIN = 1.0  # percent of the radius, as the published MaskModule(in_type, 129, margin=1)


class CircularMask(enn.EquivariantModule):
    """escnn's MaskModule for any square size: the same `build_mask`, made once per size.

    MaskModule fixes the size when built and stores the mask as a parameter; here it is a
    derived value, kept out of checkpoints, so one model takes 64, 129 or 150 px.
    """

    def __init__(self, in_type: enn.FieldType, margin: float = MASK_MARGIN) -> None:
        super().__init__()
        self.in_type = self.out_type = in_type
        self.margin = margin
        self._masks: dict[tuple, torch.Tensor] = {}

    def mask(self, size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        key = (size, device, dtype)
        if key not in self._masks:
            self._masks[key] = build_mask(size, margin=self.margin).to(device, dtype)
        return self._masks[key]  # (1, 1, size, size)

    def forward(self, x: enn.GeometricTensor) -> enn.GeometricTensor:
        h, w = x.tensor.shape[-2:]
        if h != w:
            raise ValueError(f"the circular input mask needs square images, got {h}x{w}")
        t = x.tensor * self.mask(h, x.tensor.device, x.tensor.dtype)
        return enn.GeometricTensor(t, self.out_type)

    def evaluate_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return input_shape


class StemFeatures(enn.EquivariantModule):
    """The equivariant part of the stem: [mask], conv blocks on fields, then group pooling."""

    def __init__(
        self,
        spec: GroupSpec,
        in_channels: int,
        widths: Sequence[int],
        kind: str = "regular",
        kernel_size: int = 7,
        downsample: bool = True,
        mask: bool = False,
    ) -> None:
        super().__init__()
        if not widths:
            raise ValueError("the steerable stem needs at least one block")
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (centred filters), got {kernel_size}")
        self.spec = spec
        gspace = spec.gspace()
        self.in_type = enn.FieldType(gspace, in_channels * [gspace.trivial_repr])
        layers: list[enn.EquivariantModule] = [CircularMask(self.in_type)] if mask else []
        ftype = self.in_type
        padding = kernel_size // 2 if downsample else PUBLISHED_PADDING
        for width in widths:
            out_type = field_type(gspace, width, kind)
            layers += [
                enn.R2Conv(ftype, out_type, kernel_size, padding=padding, bias=False),
                enn.InnerBatchNorm(out_type),
                enn.ReLU(out_type, inplace=True),
            ]
            if downsample:
                layers += [
                    CentreOnPixel(out_type),
                    enn.PointwiseAvgPoolAntialiased(
                        out_type, sigma=POOL_SIGMA, stride=POOL_STRIDE
                    ),
                ]
            else:  # escnn pads by default; e2cnn, which the published code used, did not
                layers.append(
                    enn.PointwiseAvgPoolAntialiased(out_type, sigma=POOL_SIGMA, stride=1, padding=0)
                )
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
    returns the invariant maps as a plain tensor (B, widths[-1], H', W')."""

    def __init__(
        self,
        spec: GroupSpec,
        in_channels: int,
        widths: Sequence[int],
        kind: str = "regular",
        kernel_size: int = 7,
        downsample: bool = True,
        mask: bool = False,
    ) -> None:
        super().__init__()
        self.features = StemFeatures(
            spec, in_channels, widths, kind, kernel_size, downsample, mask
        )
        self.in_type = self.features.in_type
        self.out_channels = self.features.out_type.size

    def forward(self, x: enn.GeometricTensor) -> torch.Tensor:
        return self.features(x).tensor  # (B, out_channels, H', W')
