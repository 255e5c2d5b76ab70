"""fANOVA importance on trials of known structure: the value that drives the metric ranks
first; trials from another space are left out."""

from __future__ import annotations

import math
import random

import pytest

from pipeline.importance import param_importance, trial_study
from pipeline.search.domains import Branch, Choice, LogUniform, RandInt

PARAMS = {"train.lr": LogUniform(1e-4, 1e-1), "model.embed_dim": Choice((8, 16, 32)),
          "model.group": Choice((Branch("C4", {"model.fields": Choice((1, 2))}), "C8")),
          "model.depth": RandInt(1, 4)}


def _trials(n: int, seed: int = 0):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        flat = {"train.lr": math.exp(rng.uniform(math.log(1e-4), math.log(1e-1))),
                "model.embed_dim": rng.choice([8, 16, 32]), "model.group": rng.choice(["C4", "C8"]),
                "model.depth": rng.randrange(1, 4)}
        if flat["model.group"] == "C4":
            flat["model.fields"] = rng.choice([1, 2])
        # accuracy peaks at lr 3e-3, the rest is noise
        out.append((flat, 0.9 - 0.1 * abs(math.log10(flat["train.lr"]) + 2.5)
                    + 0.005 * rng.random()))
    return out


def test_the_value_that_drives_the_metric_is_most_important():
    imp = param_importance(PARAMS, _trials(30), "max")
    assert list(imp)[0] == "train.lr" and imp["train.lr"] > 0.5
    assert set(imp) == {"train.lr", "model.embed_dim", "model.group", "model.depth"}
    assert sum(imp.values()) == pytest.approx(1.0)


def test_foreign_trials_are_left_out_and_few_trials_give_nothing():
    trials = _trials(6)
    foreign = ({**trials[0][0], "model.embed_dim": 64}, 0.5)  # not a choice of this space
    study = trial_study(PARAMS, [*trials, foreign, (trials[1][0], math.nan)], "max")
    assert len(study.trials) == 6
    assert param_importance(PARAMS, trials[:2], "max") == {}

