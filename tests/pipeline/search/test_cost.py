"""Costs counted before training: the parameter count the engine reports, FLOPs that grow
with the model, one build per architecture, and the Optuna labelling of a space."""

from __future__ import annotations

import optuna
import pytest

import eqcvt
from pipeline.config import RunConfig
from pipeline.search.cost import CostMeter, config_cost, violations
from pipeline.search.domains import Branch, Choice, LogUniform, QUniform, RandInt
from pipeline.search.optuna_space import key_of, labelled, suggest
from pipeline.search.preflight import shape_bundle
from pipeline.search.spec import Bound

TINY = {"data.source": "simulate", "data.task": "binary", "data.img_size": 32,
        "model.name": "eqcvt_stem", "model.group": "C4", "model.fields": 1,
        "model.embed_dim": 8, "model.depth": 1, "model.heads": 1, "model.head_hidden": 8,
        "model.kernel_size": 3, "model.stem_blocks": 1}


def test_cost_counts_the_engine_model_and_grows_with_width():
    from pipeline.engine import build_model

    cfg = RunConfig.from_flat(TINY)
    bundle = shape_bundle(cfg.data, "x.yaml", ())
    small = config_cost(cfg, bundle)
    assert small.num_params == eqcvt.count_params(build_model(cfg, bundle))
    wide = config_cost(cfg.with_updates({"model.embed_dim": 32}), bundle)
    assert wide.num_params > small.num_params and wide.flops > small.flops > 0


def test_meter_builds_each_architecture_once_and_violations_name_the_cost():
    meter = CostMeter()
    a = meter.measure(TINY)
    assert meter.measure({**TINY, "train.lr": 0.5}) == a  # optimiser values: same model
    assert meter.models_built == 1
    b = meter.measure({**TINY, "model.embed_dim": 16})
    assert meter.models_built == 2
    bound = {"num_params": Bound(max=(a.num_params + b.num_params) / 2)}
    assert violations(bound, a) == {}
    assert violations(bound, b) == {"num_params": b.num_params}


PARAMS = {
    "train.lr": LogUniform(1e-4, 1e-2),
    "model.depth": RandInt(1, 4),
    "model.dropout": QUniform(0.0, 0.3, 0.1),
    "model.group": Choice((Branch("C4", {"model.fields": Choice((1, 2))}),
                           Branch("C8", {"model.fields": Choice((3, 4))}), "C1")),
    "model.name": "eqcvt_stem",
}


@pytest.mark.parametrize("seed", range(5))
def test_define_by_run_and_labelling_agree(seed):
    """What the Optuna searcher samples, labelled back from the flat config, is the same
    Optuna trial: warm starts and importance rebuild trials this way."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    trial = study.ask()
    flat = suggest(trial, PARAMS)
    assert flat["model.name"] == "eqcvt_stem" and 1 <= flat["model.depth"] <= 3
    assert {key_of(k) for k in trial.params} <= set(flat)
    values, dists = labelled(PARAMS, flat)
    assert values == trial.params and dists == trial.distributions
    if flat["model.group"] == "C8":
        assert flat["model.fields"] in (3, 4)
        assert "model.fields@model.group=C8" in values


def test_labelling_refuses_values_outside_the_domains():
    flat = {"train.lr": 0.5, "model.depth": 2, "model.dropout": 0.1, "model.group": "C1"}
    with pytest.raises(ValueError, match="train.lr"):
        labelled(PARAMS, flat)
    with pytest.raises(ValueError, match="not one of"):
        labelled(PARAMS, {**flat, "train.lr": 1e-3, "model.group": "D4"})
