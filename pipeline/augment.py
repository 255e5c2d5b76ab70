"""Training-time augmentation of a batch, on the batch's device.

Every random draw comes from the engine's per-epoch `generator` (CPU), so a run is
reproducible whatever the device. "rot90"/"flips" are exact pixel-grid symmetries; "rotate"
is the published recipe's continuous rotation (uniform in [-180, 180] degrees).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .config import AUGMENTS

ROTATE_UPSAMPLE = 3  # the published recipe: upsample 3x, rotate, downsample


def augment_batch(x: torch.Tensor, mode: str, generator: torch.Generator) -> torch.Tensor:
    """x (B, C, H, W) -> the augmented batch of the same shape (x itself for "none")."""
    if mode not in AUGMENTS:
        raise ValueError(f"unknown augment {mode!r}: expected one of {AUGMENTS}")
    if mode == "none":
        return x
    b = x.shape[0]
    if mode == "rotate":
        degrees = torch.rand((b,), generator=generator, dtype=torch.float64) * 360.0 - 180.0
        return rotate(x, degrees)
    out = x
    if mode in ("rot90", "rot90_flips"):
        if x.shape[-1] != x.shape[-2]:
            raise ValueError("rot90 augmentation needs square images")
        turns = torch.randint(0, 4, (b,), generator=generator).to(x.device)
        out = x.clone()
        for k in (1, 2, 3):
            sel = turns == k
            out[sel] = torch.rot90(x[sel], k, dims=(-2, -1))
    if mode in ("flips", "rot90_flips"):
        flip = torch.rand((b,), generator=generator).to(x.device) < 0.5
        out = torch.where(flip.view(-1, *([1] * (x.dim() - 1))), out.flip(-1), out)
    return out


def rotate(
    x: torch.Tensor, degrees: torch.Tensor | float, upsample: int = ROTATE_UPSAMPLE
) -> torch.Tensor:
    """Rotate each image of x (B, C, H, W) about its centre by degrees[i], counter-clockwise
    as displayed (row 0 at the top); zeros fill the corners.

    As the published recipe does it: bilinear upsampling by `upsample`, a bilinear rotation,
    then antialiased bilinear downsampling back to (H, W), so the interpolation blur is a
    third of a pixel. Batched on x's device; the output keeps x's shape and dtype.
    """
    if x.dim() != 4:
        raise ValueError(f"rotate expects (B, C, H, W), got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    if h != w:
        raise ValueError("rotate augmentation needs square images")
    b = x.shape[0]
    angle = torch.as_tensor(degrees, dtype=torch.float64, device="cpu").reshape(-1)
    angle = angle.expand(b) * (math.pi / 180)
    cos, sin, zero = angle.cos(), angle.sin(), torch.zeros(b, dtype=torch.float64)
    # output pixel (u, v) samples the input at R(-angle) (u, v); normalised coords, y down
    theta = torch.stack([torch.stack([cos, -sin, zero], -1),
                         torch.stack([sin, cos, zero], -1)], -2)  # (B, 2, 3)
    theta = theta.to(device=x.device, dtype=x.dtype)
    big = x
    if upsample > 1:
        big = F.interpolate(x, scale_factor=upsample, mode="bilinear", align_corners=False)
    grid = F.affine_grid(theta, list(big.shape), align_corners=False)  # (B, uH, uW, 2)
    turned = F.grid_sample(big, grid, mode="bilinear", padding_mode="zeros",
                           align_corners=False)
    if upsample > 1:
        turned = F.interpolate(turned, size=(h, w), mode="bilinear", align_corners=False,
                               antialias=True)
    return turned
