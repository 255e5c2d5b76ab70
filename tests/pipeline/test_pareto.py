"""Pareto fronts, their 2-D hypervolume and the Pareto set `final --pareto` retrains."""

from __future__ import annotations

import math

import pytest

from pipeline.pareto import (
    front_2d,
    hypervolume_2d,
    pareto_indices,
    pareto_trials,
    search_objectives,
)


def test_front_keeps_only_undominated_points():
    #          cost  acc
    points = [(100, 0.60), (200, 0.70), (150, 0.55), (300, 0.70), (400, 0.90), (50, math.nan)]
    assert pareto_indices(points, ("min", "max")) == [0, 1, 4]
    assert pareto_indices([(1, 1), (1, 1)], ("min", "max")) == [0, 1]  # ties both kept


def test_hypervolume_is_the_dominated_area():
    # two points, reference (10, 0): [2,10]x[0,0.5] + [6,10]x[0.5,0.8] = 4 + 1.2
    assert hypervolume_2d([(2, 0.5), (6, 0.8)], (10, 0.0), "max") == pytest.approx(5.2)
    # minimised metric: loss 0.2 at cost 4, reference (10, 1.0): 6 x 0.8
    assert hypervolume_2d([(4, 0.2)], (10, 1.0), "min") == pytest.approx(4.8)
    # a dominated point adds nothing
    assert hypervolume_2d([(2, 0.5), (6, 0.8), (7, 0.6)], (10, 0.0), "max") == \
        pytest.approx(5.2)


def test_front_2d_reference_and_order():
    front = front_2d([400, 100, 200, 150], [0.9, 0.6, 0.7, 0.55], "max")
    assert front.indices == [1, 2, 0]  # sorted by cost
    assert front.reference == (pytest.approx(440.0), 0.55)
    expected = (440 - 100) * 0.05 + (440 - 200) * 0.1 + (440 - 400) * 0.2
    assert front.hypervolume == pytest.approx(expected)


def _run(tid, acc, params, flops=1.0):
    return {"run_id": tid, "tags": {"tune.trial_id": tid},
            "metrics": {"best_val_acc": acc, "val_acc": acc, "num_params": params,
                        "flops": flops}}


def test_pareto_set_of_a_search():
    runs = [_run("a", 0.9, 5000), _run("b", 0.8, 1000), _run("c", 0.7, 3000),
            _run("d", 0.95, 9000)]
    one = search_objectives({"search.metric": "val_acc", "search.mode": "max"})
    assert [r["run_id"] for r in pareto_trials(runs, one)] == ["d", "a", "b"]
    two = search_objectives({"search.objectives": '[["val_acc", "max"], ["flops", "min"]]'})
    assert two == [("val_acc", "max"), ("flops", "min")]
    runs[2]["metrics"]["flops"] = 0.5  # c is now the cheapest in FLOPs
    assert [r["run_id"] for r in pareto_trials(runs, two)] == ["d", "c"]
