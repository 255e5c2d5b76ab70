"""Train/val/test split helpers shared by the shard writer, the importer and the bundle.

Splits are fixed at write time from a seed, stratified per class, so two runs with the same
seed see the same images in the same split whatever machine they run on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

SPLITS: tuple[str, ...] = ("train", "val", "test")
DEFAULT_FRACTIONS: tuple[float, float, float] = (0.8, 0.1, 0.1)


@dataclass(frozen=True)
class Split:
    """One split as the training engine consumes it.

    images (N, C, H, W) float32, labels (N,) int64, targets (N, T) float32 (T may be 0).
    """

    images: torch.Tensor
    labels: torch.Tensor
    targets: torch.Tensor

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.images.ndim != 4:
            raise ValueError(f"Split.images must be (N, C, H, W), got {tuple(self.images.shape)}")
        if self.labels.shape != (n,):
            raise ValueError(f"Split.labels must be ({n},), got {tuple(self.labels.shape)}")
        if self.targets.ndim != 2 or self.targets.shape[0] != n:
            raise ValueError(f"Split.targets must be ({n}, T), got {tuple(self.targets.shape)}")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def to(self, device: str | torch.device) -> Split:
        return Split(self.images.to(device), self.labels.to(device), self.targets.to(device))

    def pin_memory(self) -> Split:
        """The split in page-locked host memory (needs CUDA), for asynchronous copies."""
        return Split(self.images.pin_memory(), self.labels.pin_memory(),
                     self.targets.pin_memory())


def parse_fractions(text: str | Sequence[float]) -> tuple[float, float, float]:
    """'0.8,0.1,0.1' -> (0.8, 0.1, 0.1); must be three non-negative values summing to 1."""
    if isinstance(text, str):
        try:
            values = tuple(float(v) for v in text.split(","))
        except ValueError:
            raise ValueError(
                f"split fractions must be numbers like 0.8,0.1,0.1, got {text!r}"
            ) from None
    else:
        values = tuple(float(v) for v in text)
    if len(values) != 3:
        raise ValueError(
            f"need three split fractions (train,val,test), got {len(values)}: {text!r}"
        )
    if any(not np.isfinite(v) or v < 0 for v in values):
        raise ValueError(f"split fractions must be finite and >= 0, got {values}")
    if abs(sum(values) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must sum to 1, got {values} (sum {sum(values):g})")
    return values  # type: ignore[return-value]


def _share(n: int, fraction: float) -> int:
    """Round half up, and at least one image for a split with a non-zero fraction."""
    k = int(np.floor(n * fraction + 0.5))
    return max(k, 1) if fraction > 0 and n > 0 else k


def assign_splits(labels: np.ndarray, fractions: Sequence[float], seed: int) -> np.ndarray:
    """Split code (index into SPLITS) per row: stratified per class, deterministic in the seed.

    Each class is permuted with its own generator (seed, class) and cut by the fractions, with
    val/test counts rounded (at least one image each when their fraction is > 0 and the class
    has room) and train taking the rest, so class balance carries into each split.
    """
    fr = parse_fractions(fractions)
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    labels = np.asarray(labels)
    codes = np.zeros(labels.shape[0], dtype=np.int8)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(c)]))
        idx = idx[rng.permutation(idx.size)]
        n_val, n_test = _share(idx.size, fr[1]), _share(idx.size, fr[2])
        budget = idx.size - (1 if fr[0] > 0 else 0)  # train keeps at least one image
        n_test = min(n_test, budget)
        n_val = min(n_val, budget - n_test)
        codes[idx[idx.size - n_val - n_test : idx.size - n_test]] = 1
        codes[idx[idx.size - n_test :]] = 2
    return codes


def stream_seed(seed: int, name: str) -> int:
    """A 31-bit seed for one named stream (train/val/test), so splits never share images."""
    digest = hashlib.sha256(f"eqcvt-data:{int(seed)}:{name}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF
