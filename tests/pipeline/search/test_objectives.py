"""Several objectives and cost constraints in a search-space file: parsed into the spec,
the one-objective form kept, bad files rejected naming the file and the key."""

from __future__ import annotations

import pytest

from pipeline.search import SearchSpaceError, parse_search_space
from pipeline.search.spec import Bound, Objective

PARAMS = {"data.source": "simulate", "data.task": "binary",
          "train.lr": {"loguniform": [1e-3, 1e-2]}}
MO = [{"metric": "val_acc", "mode": "max"}, {"metric": "num_params", "mode": "min"}]


def parse(doc: dict, source: str = "mo.yaml"):
    return parse_search_space({"max_epochs": 2, "params": PARAMS, **doc}, source=source)


def test_objectives_parse_and_the_first_is_metric_and_mode():
    spec = parse({"searcher": "optuna", "objectives": MO,
                  "constraints": {"num_params": {"max": 100000}, "flops": {"max": "2.0e8"}}})
    assert spec.all_objectives == (Objective("val_acc", "max"), Objective("num_params", "min"))
    assert (spec.metric, spec.mode) == ("val_acc", "max")  # ASHA and checkpoints use it
    assert spec.multi_objective
    assert spec.constraints == {"num_params": Bound(None, 100000.0),
                                "flops": Bound(None, 2.0e8)}
    assert spec.constraints["flops"].violated_by(2.1e8)
    assert not spec.constraints["flops"].violated_by(2.0e8)


def test_metric_and_mode_stay_the_one_objective_form():
    spec = parse({"searcher": "optuna", "metric": "val_loss", "mode": "min"})
    assert spec.all_objectives == (Objective("val_loss", "min"),)
    assert not spec.multi_objective and spec.objectives == ()


@pytest.mark.parametrize(("doc", "key", "message"), [
    ({"searcher": "hyperopt", "objectives": MO}, "objectives", "need searcher optuna"),
    ({"searcher": "optuna", "objectives": MO, "metric": "val_acc"}, "metric", "not both"),
    ({"searcher": "optuna", "objectives": []}, "objectives", "non-empty list"),
    ({"searcher": "optuna", "objectives": [{"metric": "val_acc"}]}, "objectives[0]",
     "expected {metric"),
    ({"searcher": "optuna", "objectives": [{"metric": "val_acc", "mode": "up"}]},
     "objectives[0].mode", "min, max"),
    ({"searcher": "optuna", "objectives": [{"metric": "num_params", "mode": "min"}]},
     "objectives[0].metric", "only be a later objective"),
    ({"searcher": "optuna", "objectives": [MO[0], {"metric": "num_params", "mode": "max"}]},
     "objectives[1].mode", "its mode is min"),
    ({"searcher": "optuna", "objectives": [MO[0], {"metric": "val_accc", "mode": "max"}]},
     "objectives[1].metric", "unknown metric"),
    ({"searcher": "optuna", "objectives": [MO[0], MO[0]]}, "objectives[1].metric", "twice"),
    ({"searcher": "optuna", "constraints": {"latency": {"max": 3}}}, "constraints.latency",
     "unknown constraint"),
    ({"searcher": "optuna", "constraints": {"flops": {"below": 3}}}, "constraints.flops",
     "expected {max"),
    ({"searcher": "optuna", "constraints": {"flops": {"max": -1}}}, "constraints.flops.max",
     "> 0"),
    ({"searcher": "optuna", "constraints": {"flops": {"min": 5, "max": 1}}},
     "constraints.flops", "above max"),
    ({"searcher": "random", "constraints": {"flops": {"max": 1e9}},
      "params": {**PARAMS, "train.augment": {"grid": ["none", "rot90"]}}},
     "train.augment", "no constraints"),
    ({"searcher": "optuna", "params": {**PARAMS, "train.augment": {"grid": ["none"]}}},
     "train.augment", "Optuna cannot grid"),
])
def test_bad_objectives_and_constraints_name_file_and_key(doc, key, message):
    with pytest.raises(SearchSpaceError) as info:
        parse(doc)
    assert info.value.source == "mo.yaml" and info.value.key == key, str(info.value)
    assert message in str(info.value)


def test_constraints_need_a_searcher():
    doc = {"scheduler": "pbt", "metric": "val_loss", "mode": "min",
           "hyperparam_mutations": {"train.lr": {"loguniform": [1e-4, 1e-2]}},
           "params": {"train.scheduler": "constant"}, "constraints": {"flops": {"max": 1e9}}}
    with pytest.raises(SearchSpaceError, match="constraints: constraints need a searcher"):
        parse_search_space({"max_epochs": 2, **doc}, source="mo.yaml")
