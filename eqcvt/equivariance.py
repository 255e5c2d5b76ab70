"""Invariance metrics for any model: used by tests, benchmarks and the MLflow artefacts.

- `group_invariance_error`: exact-group check. The group's grid-exact elements (quarter turns
  and, for D_N, the flip x -> -x) permute pixels without interpolation, so an invariant model
  must give the same logits up to float rounding.
- `rotation_logit_std`: the abstract's metric done on a batch. Each image is rotated about its
  centre by 2*pi*k/n_angles, k = 0..n-1: multiples of 90 degrees with `torch.rot90` (exact), other
  angles by bilinear interpolation (`F.grid_sample`, align_corners=False so the rotation centre
  is the image centre, zeros outside the image: corners rotated in from outside are 0, which
  suits lensing images with a dark background). The std over angles (population std, as numpy's
  np.std) of each output is averaged over outputs and images.

Both run the model in eval mode under `torch.no_grad()` and restore its previous mode.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F

from .groups import apply_grid_element, parse_group

_EPS = 1e-12


@contextmanager
def _eval(model: nn.Module) -> Iterator[nn.Module]:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def _default_group(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    name = getattr(config, "group", "C1")
    return "C4" if parse_group(name).name == "C1" else name


def group_invariance_error(model: nn.Module, x: torch.Tensor, group: str | None = None) -> float:
    """Max over the group's grid-exact elements of max|f(gx) - f(x)| / max|f(x)|.

    `group` defaults to `model.config.group`, or "C4" for models without symmetry (C1).
    """
    spec = parse_group(group or _default_group(model))
    with _eval(model):
        ref = model(x)
        scale = ref.abs().max().clamp_min(_EPS)
        worst = 0.0
        for turns, flip in spec.grid_exact_elements():
            if turns == 0 and not flip:
                continue
            out = model(apply_grid_element(x, turns, flip))
            worst = max(worst, ((out - ref).abs().max() / scale).item())
    return worst


def rotate(x: torch.Tensor, angle: float, exact_quarters: bool = True) -> torch.Tensor:
    """Rotate images (B, C, H, W) by `angle` radians about the image centre (see module doc),
    in the sense of `torch.rot90(x, 1, dims=(-2, -1))` (escnn's generator) for angle = pi/2."""
    quarter = angle / (math.pi / 2)
    if exact_quarters and abs(quarter - round(quarter)) < 1e-9:
        return torch.rot90(x, round(quarter) % 4, dims=(-2, -1))
    B, _, H, W = x.shape
    c, s = math.cos(angle), math.sin(angle)
    # Output pixel p samples the input at R(angle)^-1 p in centred pixel units; affine_grid works
    # in normalised units (x_n = 2u/W), hence the aspect factors for non-square images.
    theta = torch.tensor([[c, -s * H / W, 0.0], [s * W / H, c, 0.0]], dtype=x.dtype)
    grid = F.affine_grid(theta.expand(B, 2, 3).to(x.device), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def rotation_logit_std(model: nn.Module, x: torch.Tensor, n_angles: int = 8) -> float:
    """Std of each output over `n_angles` rotations by 2*pi/n_angles, averaged over outputs and
    the images of the batch `x` (B, C, H, W)."""
    if n_angles < 2:
        raise ValueError(f"n_angles must be >= 2, got {n_angles}")
    with _eval(model):
        outs = [model(rotate(x, 2 * math.pi * k / n_angles)) for k in range(n_angles)]
    stacked = torch.stack(outs)  # (n_angles, B, out)
    return stacked.std(dim=0, correction=0).mean().item()


def equivariance_report(model: nn.Module, x: torch.Tensor) -> dict[str, float]:
    """The numbers the pipeline logs to MLflow for a model and a batch of images."""
    return {
        "invariance_error": group_invariance_error(model, x),
        "rotation_logit_std": rotation_logit_std(model, x),
    }
