"""Centred grids: strided layers whose sampling keeps the rotation centre of the pixel grid.

A rotation by 90 degrees (torch.rot90) or a flip (torch.flip) maps a square pixel grid onto
itself about its centre. A stride-s layer keeps that symmetry iff its sampling points are
symmetric about the centre, i.e. (n + 2P - k) % s == 0 for input size n, kernel k, padding P on
both sides; we take the smallest such P >= (k-1)//2 (for s = 2 and odd n: P = (k-1)//2,
129 -> 65 -> 33). When no P exists (s even and n - k odd, e.g. an even map entering a 3x3/2
conv), the map is first moved to the dual grid by a 2x2 stride-1 average pool (n -> n-1): its
kernel is symmetric under all grid rotations and flips, so it commutes with them exactly, and its
output pixels sit on the pixel corners of the input, which include the rotation centre of an even
grid (64 -> 63, 150 -> 149). Stride-1 layers with symmetric padding are centred on any grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from escnn import nn as enn
from escnn.nn import FieldType, GeometricTensor


def centred_padding(n: int, kernel: int, stride: int) -> int:
    """Smallest symmetric padding >= (kernel-1)//2 whose stride-`stride` samples are centred."""
    p = (kernel - 1) // 2
    if stride == 1:
        return p
    for extra in range(stride):
        if (n + 2 * (p + extra) - kernel) % stride == 0:
            return p + extra
    raise ValueError(f"no centred padding for size {n}, kernel {kernel}, stride {stride}")


def needs_dual_grid(n: int, kernel: int, stride: int) -> bool:
    """True when a stride-`stride` layer cannot be centred on an n-grid (fix: 2x2/1 avg pool)."""
    return stride % 2 == 0 and (n - kernel) % 2 == 1


def centred_size(n: int, kernel: int, stride: int) -> int:
    n = n - 1 if needs_dual_grid(n, kernel, stride) else n
    return (n + 2 * centred_padding(n, kernel, stride) - kernel) // stride + 1


def centre_for_stride(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """Pad (and if needed move to the dual grid) so a padding-0 strided layer stays centred."""
    h, w = x.shape[-2:]
    if needs_dual_grid(h, kernel, stride) or needs_dual_grid(w, kernel, stride):
        kh, kw = (
            int(needs_dual_grid(h, kernel, stride)) + 1,
            int(needs_dual_grid(w, kernel, stride)) + 1,
        )
        x = F.avg_pool2d(x, (kh, kw), stride=1)
        h, w = x.shape[-2:]
    ph, pw = centred_padding(h, kernel, stride), centred_padding(w, kernel, stride)
    return F.pad(x, (pw, pw, ph, ph)) if ph or pw else x


def centred_avg_pool(x: torch.Tensor, kernel: int = 3, stride: int = 2) -> torch.Tensor:
    """Anti-aliasing average pool that keeps the rotation centre (acts on each channel alike)."""
    return F.avg_pool2d(centre_for_stride(x, kernel, stride), kernel, stride)


def spatial_out(shape: tuple, channels: int, fn) -> tuple:
    return (shape[0], channels, *(fn(n) for n in shape[2:]))


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


class CentredR2Conv(enn.EquivariantModule):
    """escnn R2Conv whose strided sampling stays centred on any input size (see module doc)."""

    def __init__(
        self,
        in_type: FieldType,
        out_type: FieldType,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.in_type, self.out_type = in_type, out_type
        self.kernel_size, self.stride = kernel_size, stride
        # stride 1: symmetric "same" padding is always centred, let conv2d do it without a copy
        pad = (kernel_size - 1) // 2 if stride == 1 else 0
        self.conv = enn.R2Conv(
            in_type, out_type, kernel_size, padding=pad, stride=stride, groups=groups, bias=bias
        )

    def forward(self, x: GeometricTensor) -> GeometricTensor:
        if self.stride == 1:
            return self.conv(x)
        t = centre_for_stride(x.tensor, self.kernel_size, self.stride)
        return self.conv(GeometricTensor(t, self.in_type))

    def evaluate_output_shape(self, input_shape: tuple) -> tuple:
        k, s = self.kernel_size, self.stride
        if s == 1:
            return spatial_out(
                input_shape, self.out_type.size, lambda n: n + 2 * ((k - 1) // 2) - k + 1
            )
        return spatial_out(input_shape, self.out_type.size, lambda n: centred_size(n, k, s))
