"""Group names, grid-exact elements, and the torch ops that match escnn's group action."""

import pytest
import torch
from escnn import nn as enn

from eqcvt.groups import SUPPORTED_GROUPS, apply_grid_element, parse_group


@pytest.mark.parametrize("name, canonical", [("C4", "C4"), ("c8", "C8"), (" D04 ", "D4")])
def test_parse_group_canonicalises(name, canonical):
    assert parse_group(name).name == canonical


@pytest.mark.parametrize("name", ["C3", "D0", "O2", "C4x", "", None, 8])
def test_bad_group_names(name):
    with pytest.raises(ValueError, match="expected one of C1, C2, C4"):
        parse_group(name)


@pytest.mark.parametrize(
    "name, n_elements",
    [("C1", 1), ("C2", 2), ("C4", 4), ("C8", 4), ("C16", 4), ("D1", 2), ("D2", 4), ("D4", 8)],
)
def test_grid_exact_elements(name, n_elements):
    spec = parse_group(name)
    elements = spec.grid_exact_elements()
    assert len(elements) == n_elements and (0, False) in elements
    assert spec.size == spec.order * (2 if spec.flips else 1)


@pytest.mark.parametrize("name", SUPPORTED_GROUPS)
def test_torch_ops_match_escnn_action(name):
    """Which torch.flip dim is escnn's flip (axis 0), and which way rot90 turns."""
    spec = parse_group(name)
    gspace = spec.gspace()
    ftype = enn.FieldType(gspace, [gspace.trivial_repr])
    x = torch.randn(1, 1, 7, 7)
    for turns, flip in spec.grid_exact_elements():
        expected = enn.GeometricTensor(x, ftype).transform(spec.escnn_element(turns, flip)).tensor
        assert torch.equal(apply_grid_element(x, turns, flip), expected), (name, turns, flip)


def test_flip_is_column_reversal():
    x = torch.arange(6.0).reshape(1, 1, 2, 3)
    assert torch.equal(apply_grid_element(x, 0, True), torch.flip(x, dims=[-1]))
