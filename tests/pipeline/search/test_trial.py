"""The trial boundary: a Tune config, flat or HyperOpt-nested, becomes one RunConfig."""

from __future__ import annotations

import pytest

from pipeline.search import trial_config


def test_trial_config_flattens_nested_choices_and_types_values():
    cfg = trial_config({"model.group": {"model.group": "C8", "model.fields": 2.0},
                        "train.lr": 1e-3, "train.epochs": 3})
    assert (cfg.model.group, cfg.model.fields, cfg.train.lr, cfg.train.epochs) == (
        "C8", 2, 1e-3, 3)
    assert isinstance(cfg.model.fields, int)


def test_trial_config_names_a_bad_key():
    with pytest.raises(ValueError, match="train.nope"):
        trial_config({"train.nope": 1})
