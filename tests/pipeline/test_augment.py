"""Batch augmentation: exact grid symmetries and the published continuous rotations."""

from __future__ import annotations

import pytest
import torch

from pipeline.augment import augment_batch, rotate


def test_augment_ops_are_exact_grid_symmetries():
    x = torch.randn(64, 2, 5, 5)
    g = torch.Generator().manual_seed(0)
    assert augment_batch(x, "none", g) is x
    rot = augment_batch(x, "rot90", g)
    seen = set()
    for xi, yi in zip(x, rot, strict=True):
        ks = [k for k in range(4) if torch.equal(torch.rot90(xi, k, (-2, -1)), yi)]
        assert len(ks) == 1
        seen.add(ks[0])
    assert seen == {0, 1, 2, 3}
    flips = augment_batch(x, "flips", g)
    assert all(torch.equal(yi, xi) or torch.equal(yi, xi.flip(-1))
               for xi, yi in zip(x, flips, strict=True))
    assert any(not torch.equal(yi, xi) for xi, yi in zip(x, flips, strict=True))
    both = augment_batch(x, "rot90_flips", g)
    d4 = set()
    for xi, yi in zip(x, both, strict=True):
        hits = [(k, f) for k in range(4) for f in (False, True)
                if torch.equal(torch.rot90(xi.flip(-1) if f else xi, k, (-2, -1)), yi)]
        assert len(hits) == 1
        d4.add(hits[0])
    assert len(d4) >= 6  # most of the 8 dihedral elements appear in 64 draws
    with pytest.raises(ValueError, match="augment"):
        augment_batch(x, "rot45", g)


def test_rotate_keeps_the_published_shape_and_is_deterministic():
    x = torch.rand(3, 1, 129, 129)
    a = augment_batch(x, "rotate", torch.Generator().manual_seed(5))
    b = augment_batch(x, "rotate", torch.Generator().manual_seed(5))
    c = augment_batch(x, "rotate", torch.Generator().manual_seed(6))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a, x)


def _blob(size, row, col):
    x = torch.zeros(1, 1, size, size)
    x[0, 0, row, col] = 1.0
    return x


def _peak(x):
    i = int(x[0, 0].argmax())
    return divmod(i, x.shape[-1])


@pytest.mark.parametrize(("degrees", "expect"), [
    (0.0, (32, 44)), (90.0, (20, 32)), (-90.0, (44, 32)), (180.0, (32, 20)),
    (30.0, (26, 42)),  # (32 - 12 sin 30, 32 + 12 cos 30) = (26.0, 42.4)
])
def test_rotate_moves_an_off_centre_pixel_counter_clockwise(degrees, expect):
    """A bright pixel 12 px right of the centre of a 65 px image, rotated by a known angle,
    lands where a counter-clockwise rotation (as displayed, row 0 on top) puts it."""
    x = _blob(65, 32, 44)
    out = rotate(x, torch.tensor([degrees]))
    assert out.shape == x.shape
    assert _peak(out) == expect
    assert out.sum() == pytest.approx(1.0, rel=0.05)  # the flux stays (bilinear, 3x upsample)


def test_rotate_per_image_angles_in_one_batch():
    x = torch.cat([_blob(33, 16, 24), _blob(33, 16, 24)])
    out = rotate(x, torch.tensor([90.0, -90.0]))
    assert _peak(out[:1]) == (8, 16) and _peak(out[1:]) == (24, 16)
    with pytest.raises(ValueError, match="square"):
        rotate(torch.zeros(1, 1, 8, 9), torch.tensor([10.0]))
