"""Spread over seeds, one way for `final` and the study: mean, sample std (ddof=1), a 95%
t-interval and n. NaN values (a metric a seed could not compute) are left out and n says so."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Spread:
    """Summary of one metric over seeds; std and the interval are NaN for n < 2."""

    mean: float
    std: float
    low: float
    high: float
    n: int

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def text(self, digits: int = 4) -> str:
        """"0.9712 ± 0.0041 (n=3)"; a single seed shows no spread."""
        if self.n == 0:
            return "-"
        if self.n == 1:
            return f"{self.mean:.{digits}g} (n=1)"
        return f"{self.mean:.{digits}g} ± {self.std:.2g} (n={self.n})"


def spread(values: Iterable[float], confidence: float = CONFIDENCE) -> Spread:
    """Mean, sample std (ddof=1) and the two-sided t-interval of the mean."""
    from scipy import stats as st

    x = np.asarray([float(v) for v in values], dtype=np.float64)
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return Spread(math.nan, math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if n == 1:
        return Spread(mean, math.nan, math.nan, math.nan, 1)
    std = float(x.std(ddof=1))
    half = float(st.t.ppf(0.5 + confidence / 2, df=n - 1)) * std / math.sqrt(n)
    return Spread(mean, std, mean - half, mean + half, n)


def aggregate(per_seed: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """{key: value} per seed -> {key_mean, key_std, key_ci_low, key_ci_high, key_n}."""
    keys: list[str] = []
    for m in per_seed:
        keys.extend(k for k in m if k not in keys)
    out: dict[str, float] = {}
    for key in keys:
        s = spread(m.get(key, math.nan) for m in per_seed)
        out.update({f"{key}_mean": s.mean, f"{key}_std": s.std, f"{key}_ci_low": s.low,
                    f"{key}_ci_high": s.high, f"{key}_n": float(s.n)})
    return out


def best_index(values: Sequence[float], mode: str) -> int | None:
    """Index of the best finite value ("max" or "min"); ties go to the first; None if none."""
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
    finite = [(v, i) for i, v in enumerate(values) if v is not None and math.isfinite(v)]
    if not finite:
        return None
    sign = -1.0 if mode == "max" else 1.0
    return min(finite, key=lambda vi: (sign * vi[0], vi[1]))[1]
