"""The escnn + scikit-learn shim: groups whose kernel basis needs an SVD must build."""

import pytest
import sklearn  # noqa: F401  (the failure only shows with scikit-learn installed)
import torch
from escnn import gspaces, nn

import eqcvt  # noqa: F401  (applies the shim)
from eqcvt._compat import patch_escnn_randomized_svd


@pytest.mark.parametrize(
    "gspace", [gspaces.rot2dOnR2(8), gspaces.flipRot2dOnR2(4)], ids=["C8", "D4"]
)
def test_regular_conv_builds_and_runs(gspace):
    ftype = nn.FieldType(gspace, 2 * [gspace.regular_repr])
    conv = nn.R2Conv(ftype, ftype, kernel_size=5, padding=2)
    x = nn.GeometricTensor(torch.randn(1, ftype.size, 9, 9), ftype)
    assert conv(x).tensor.shape == (1, ftype.size, 9, 9)


def test_patch_is_idempotent():
    assert patch_escnn_randomized_svd() is False
