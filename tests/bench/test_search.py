"""bench/search.py's bookkeeping: which trial a search would hand over at a given budget, and
the re-trained comparison of those picks over searcher seeds."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import search as bench_search  # noqa: E402


def _run(leaders: list[tuple[int, str]], curve: list[tuple[int, float]]) -> dict:
    return {"leaders": leaders, "curve": curve,
            "configs": {t: {"train.lr": i} for i, (_, t) in enumerate(leaders)}}


def test_the_pick_is_the_trial_holding_the_best_at_that_budget():
    run = _run([(1, "a"), (3, "b"), (7, "c")],
               [(1, 0.6), (2, 0.6), (3, 0.8), (4, 0.8), (5, 0.8), (6, 0.8), (7, 0.9)])
    assert bench_search._pick(run, 0) is None
    assert [bench_search._pick(run, e) for e in (1, 2, 3, 6, 7, 9)] == ["a", "a", "b", "b",
                                                                        "c", "c"]
    record = bench_search._pick_record(run, 6)
    assert record == {"trial": "b", "config": {"train.lr": 1}, "val_acc": 0.8}


def _row(half: float | None, equal: float | None) -> dict:
    return {"asha_at_half_minus_random": half, "asha_at_equal_minus_random": equal}


def test_reseed_summary_counts_a_missing_pick_as_below_random():
    rows = [_row(0.01, 0.02), _row(-0.02, 0.0), _row(None, 0.01), None]
    out = bench_search._reseed_summary(rows)
    half, equal = out["asha_at_half"], out["asha_at_equal"]
    assert half["n"] == equal["n"] == 3  # an interrupted seed (None) is left out
    assert half["median_minus_random"] == pytest.approx(-0.02)  # of 0.01, -0.02, -inf
    assert half["seeds_at_least_random"] == 1
    assert half["mean_minus_random"] == pytest.approx(-0.005)  # the finite gaps
    assert equal["median_minus_random"] == pytest.approx(0.01)
    assert equal["seeds_at_least_random"] == 3
    assert equal["std"] == pytest.approx(0.01)
    assert out["goal_median_asha_at_half_at_least_random"] is False
    assert bench_search._reseed_summary([None]) is None
    never = bench_search._reseed_summary([_row(None, None)] * 2)["asha_at_half"]
    assert never["median_minus_random"] is None and never["mean_minus_random"] is None
    assert never["seeds_at_least_random"] == 0
