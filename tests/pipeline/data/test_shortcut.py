"""The ring-size shortcut: a radial-profile-only classifier on the default and faithful lens.

The DeepLense lens (fixed Einstein radius, substructure mass added on top) lets the 16-bin
azimuthally averaged profile alone separate the classes; the default presets (lens mass drawn
per image, substructure mass taken out of the main lens) leave it near chance for no_sub vs
cdm. What remains for the axion vortex is a real radial signature (a line mass through the
centre) plus the lens-mass spread. Figures (1,500 images per class) in README, "Data".
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.data.shortcut import holdout_accuracy, profile_accuracy, radial_profiles

N_PER_CLASS = 300  # 64x64 Model II images: about a second on one core


def test_radial_profiles_are_ring_means():
    img = np.zeros((1, 1, 8, 8))
    img[0, 0, 3:5, 3:5] = 1.0  # the four centre pixels, radius 0.71 px of 4
    prof = radial_profiles(img, n_bins=4)
    assert prof.shape == (1, 4) and prof[0, 0] == 1.0 and (prof[0, 1:] == 0).all()
    ramp = np.broadcast_to(np.arange(8.0), (3, 8, 8))  # the same image three times
    assert np.allclose(radial_profiles(ramp, n_bins=4), radial_profiles(ramp, 4)[:1])


def test_holdout_accuracy_finds_a_separable_feature_and_not_noise():
    rng = np.random.default_rng(0)
    y = np.arange(400) % 2
    x = rng.normal(size=(400, 16))
    assert 0.4 < holdout_accuracy(x, y) < 0.6
    x[:, 3] += 3.0 * y
    assert holdout_accuracy(x, y) > 0.9


@pytest.fixture(scope="module")
def default_lens():
    return profile_accuracy("model_ii", N_PER_CLASS, seed=0)


@pytest.fixture(scope="module")
def deeplense_lens():
    return profile_accuracy("model_ii_deeplense", N_PER_CLASS, seed=0)


def test_faithful_lens_keeps_the_shortcut(deeplense_lens):
    """The measurement can fail: on the DeepLense lens the ring size gives the class away."""
    assert deeplense_lens[("no_sub", "cdm")] > 0.88
    assert deeplense_lens[("no_sub", "axion")] > 0.93


def test_default_lens_has_no_shortcut(default_lens, deeplense_lens):
    assert default_lens[("no_sub", "cdm")] < 0.65  # near chance (0.58 on 1,500 per class)
    # the axion vortex keeps a real radial signature, far below the faithful lens's
    assert default_lens[("no_sub", "axion")] < 0.7
    assert default_lens[("cdm", "axion")] < 0.72
    for pair, acc in default_lens.items():
        assert acc < deeplense_lens[pair] - 0.15, pair
