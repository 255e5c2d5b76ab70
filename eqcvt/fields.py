"""escnn field types by name, and group pooling on plain tensors: one helper for every model."""

from __future__ import annotations

import torch
from escnn.nn import FieldType

from .config import FIELD_TYPES


def field_type(gspace, n_fields: int, kind: str) -> FieldType:
    """`n_fields` copies of the regular (|G| channels each) or trivial (1 channel) field."""
    if not isinstance(n_fields, int) or isinstance(n_fields, bool) or n_fields < 1:
        raise ValueError(
            f"a steerable layer needs a positive integer field count, got {n_fields!r}"
        )
    if kind not in FIELD_TYPES:
        raise ValueError(f"unknown field_type {kind!r}: expected one of {FIELD_TYPES}")
    rep = gspace.regular_repr if kind == "regular" else gspace.trivial_repr
    return FieldType(gspace, n_fields * [rep])


def field_size(ftype: FieldType) -> int:
    """Channels per field of a field type whose fields all have one size."""
    sizes = {r.size for r in ftype.representations}
    if len(sizes) != 1:
        raise ValueError(f"expected fields of one size, got sizes {sorted(sizes)}")
    return sizes.pop()


def group_pool(x: torch.Tensor, size: int) -> torch.Tensor:
    """Max over the group channels of each field: (B, F*|G|, H, W) -> (B, F, H, W), invariant."""
    if size == 1:
        return x
    b, c, h, w = x.shape
    return x.reshape(b, c // size, size, h, w).amax(dim=2)
