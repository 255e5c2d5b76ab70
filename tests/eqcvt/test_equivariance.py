"""Invariance metrics on toy models with known answers, and on the registered models."""

import math

import pytest
import torch
import torch.nn as nn

import eqcvt
from eqcvt.config import ModelConfig
from eqcvt.equivariance import (
    equivariance_report,
    group_invariance_error,
    rotate,
    rotation_logit_std,
)

torch.set_num_threads(2)


class Pixel(nn.Module):
    """Reads fixed pixels: changes under every rotation and flip."""

    config = ModelConfig(variant="cvt", group="C1", stem_blocks=0)

    def forward(self, x):
        return torch.stack([x[:, 0, 0, 1], x[:, 0, 1, 0]], dim=1)


class Radial(nn.Module):
    """Weights pixels by distance to the centre: invariant to rotations about it (and flips)."""

    def __init__(self, group="D4"):
        super().__init__()
        self.config = ModelConfig(group=group)

    def forward(self, x):
        H, W = x.shape[-2:]
        yy, xx = torch.meshgrid(
            torch.arange(H) - (H - 1) / 2, torch.arange(W) - (W - 1) / 2, indexing="ij"
        )
        w = torch.exp(-(xx**2 + yy**2) / 8.0)
        return torch.stack([(x * w).sum(dim=(1, 2, 3)), (x * w * w).sum(dim=(1, 2, 3))], dim=1)


@pytest.mark.parametrize("size", [(9, 9), (8, 8), (6, 10)])
def test_bilinear_rotation_agrees_with_rot90(size):
    x = torch.rand(2, 1, *size)
    for k in (1, 2, 3):
        exact = torch.rot90(x, k, dims=(-2, -1))
        if size[0] != size[1] and k % 2:
            continue  # a quarter turn changes the shape of a non-square image
        bilinear = rotate(x, k * math.pi / 2, exact_quarters=False)
        torch.testing.assert_close(bilinear, exact, atol=1e-5, rtol=0)


def test_rotation_about_the_centre_keeps_a_centred_disc():
    yy, xx = torch.meshgrid(torch.arange(33) - 16.0, torch.arange(33) - 16.0, indexing="ij")
    disc = torch.exp(-(xx**2 + yy**2) / 20.0)[None, None]
    torch.testing.assert_close(rotate(disc, math.pi / 4), disc, atol=2e-2, rtol=0)


@pytest.mark.parametrize("size", [9, 10])
def test_invariance_error_on_toy_models(size):
    x = torch.rand(3, 1, size, size)
    assert group_invariance_error(Radial("D4"), x) < 1e-6
    assert group_invariance_error(Pixel(), x) > 1e-2  # C1 model: measured on C4
    assert group_invariance_error(Pixel(), x, group="C1") == 0.0


def test_rotation_logit_std_on_toy_models():
    yy, xx = torch.meshgrid(torch.arange(33) - 16.0, torch.arange(33) - 16.0, indexing="ij")
    blobs = torch.stack([torch.exp(-(xx**2 + yy**2) / s) for s in (10.0, 20.0)])[:, None]
    scale = Radial()(blobs).abs().mean().item()
    assert rotation_logit_std(Radial(), blobs) < 1e-2 * scale  # bilinear interpolation only
    assert rotation_logit_std(Pixel(), torch.rand(3, 1, 33, 33)) > 1e-2
    with pytest.raises(ValueError, match="n_angles"):
        rotation_logit_std(Radial(), blobs, n_angles=1)


@pytest.mark.parametrize("group, size", [("C8", 33), ("D4", 64), ("C4", 150)])
def test_steerable_cnn_is_invariant_on_the_grid(group, size):
    torch.manual_seed(0)
    model = eqcvt.create_model("steerable_cnn", group=group, fields=2, stem_blocks=3)
    x = torch.rand(2, 1, size, size)
    assert group_invariance_error(model, x) < 1e-4
    model.train()  # train mode with dropout off: BatchNorm batch statistics are invariant too
    model.apply(lambda m: m.eval() if isinstance(m, nn.Dropout) else None)
    with torch.no_grad():
        ref = model(x)
        turned = model(torch.rot90(x, 1, dims=(-2, -1)))
    assert ((turned - ref).abs().max() / ref.abs().max()).item() < 1e-4


def test_report_keys_and_mode_restored():
    model = eqcvt.create_model("seed_eqcvt", fields=2)
    model.train()
    report = equivariance_report(model, torch.rand(2, 1, 33, 33))
    assert set(report) == {"invariance_error", "rotation_logit_std"}
    assert all(isinstance(v, float) and math.isfinite(v) for v in report.values())
    assert model.training
    # The seed's CvT after group pooling is not rotation invariant (as the abstract reports).
    assert report["invariance_error"] > 1e-4
