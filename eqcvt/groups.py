"""Symmetry groups by name: "C4", "D8", "C1" ... -> escnn gspace. One parser, one error message."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

SUPPORTED_GROUPS: tuple[str, ...] = ("C1", "C2", "C4", "C8", "C16", "D1", "D2", "D4", "D8")
_PATTERN = re.compile(r"^([CD])(\d+)$")


@dataclass(frozen=True)
class GroupSpec:
    """A planar point group: cyclic C_N (rotations) or dihedral D_N (rotations and a flip)."""

    name: str
    kind: str  # "C" or "D"
    order: int  # N, the number of rotations

    @property
    def flips(self) -> bool:
        return self.kind == "D"

    @property
    def size(self) -> int:
        """Number of group elements (N for C_N, 2N for D_N)."""
        return self.order * (2 if self.flips else 1)

    def grid_exact_elements(self) -> list[tuple[int, bool]]:
        """Elements that map the pixel grid to itself: (quarter turns k, flip).

        Rotations by multiples of 90 degrees belong to the group only when 90 degrees is a
        multiple of 360/N, i.e. N divisible by 4 (or a half turn for N divisible by 2). The flip
        of D_N is the reflection x -> -x (escnn's flip axis 0), exact on any grid.
        """
        step = 4 // _gcd(self.order, 4)  # quarter turns per group rotation on the grid
        turns = list(range(0, 4, step))
        flips = (False, True) if self.flips else (False,)
        return [(k, f) for f in flips for k in turns]

    def gspace(self):
        return _gspace(self.kind, self.order)

    def escnn_element(self, turns: int, flip: bool):
        """The escnn group element for (quarter turns, flip) from `grid_exact_elements()`."""
        group = self.gspace().fibergroup
        rotation = turns * self.order // 4
        if self.kind == "C":
            return group.element(rotation)
        if self.order == 1:  # escnn builds D1 as the cyclic group {identity, flip}
            return group.element(int(flip))
        return group.element((int(flip), rotation))


def apply_grid_element(x, turns: int, flip: bool):
    """Act on images (..., H, W) exactly as escnn's GeometricTensor.transform does on scalar fields.

    escnn's flip (flipRot2dOnR2, axis 0) is x -> -x, i.e. `torch.flip(x, dims=[-1])` (reverse
    the columns); one rotation step of pi/2 is `torch.rot90(x, 1, dims=(-2, -1))`; the element
    (flip, k) applies the flip first. Checked against escnn in tests/eqcvt/test_groups.py.
    """
    import torch

    if flip:
        x = torch.flip(x, dims=[-1])
    return torch.rot90(x, turns % 4, dims=(-2, -1)) if turns % 4 else x


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


@cache
def _gspace(kind: str, order: int):
    from escnn import gspaces

    return gspaces.rot2dOnR2(order) if kind == "C" else gspaces.flipRot2dOnR2(order)


def parse_group(name: str) -> GroupSpec:
    """Parse "C4"/"D8"/... ; anything else is a ValueError that lists the supported names."""
    match = _PATTERN.match(str(name).strip().upper()) if isinstance(name, str) else None
    canonical = f"{match.group(1)}{int(match.group(2))}" if match else None
    if canonical not in SUPPORTED_GROUPS:
        raise ValueError(
            f"unknown symmetry group {name!r}: expected one of {', '.join(SUPPORTED_GROUPS)}"
        )
    return GroupSpec(name=canonical, kind=canonical[0], order=int(canonical[1:]))
