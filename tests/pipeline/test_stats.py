"""Spread over seeds: sample std, t-interval, n."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.stats import aggregate, best_index, spread


def test_spread_is_sample_std_with_t_interval():
    s = spread([0.9, 0.8, 1.0])
    assert s.n == 3 and s.mean == pytest.approx(0.9)
    assert s.std == pytest.approx(np.std([0.9, 0.8, 1.0], ddof=1))  # 0.1, not ddof=0's 0.0816
    # t(0.975, 2) = 4.3027
    assert s.half_width == pytest.approx(4.302653 * 0.1 / math.sqrt(3), rel=1e-5)
    assert s.text() == "0.9 ± 0.1 (n=3)"


def test_spread_drops_nan_and_handles_one_value():
    s = spread([0.5, math.nan])
    assert s.n == 1 and s.mean == 0.5 and math.isnan(s.std) and s.text() == "0.5 (n=1)"
    assert spread([]).n == 0


def test_aggregate_and_best_index():
    agg = aggregate([{"acc": 0.5, "mse": 1.0}, {"acc": 0.7}])
    assert agg["acc_mean"] == pytest.approx(0.6) and agg["acc_n"] == 2
    assert agg["mse_n"] == 1 and math.isnan(agg["mse_std"])
    assert best_index([0.1, math.nan, 0.3, 0.3], "max") == 2
    assert best_index([0.1, 0.05], "min") == 1
    assert best_index([math.nan], "max") is None
