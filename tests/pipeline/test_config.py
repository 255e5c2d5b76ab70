"""RunConfig: flat dotted dicts in and out, coercion, validation, one source of defaults."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pipeline.config import (
    DataConfig,
    ModelSection,
    RunConfig,
    TrainConfig,
    coerce_value,
    flat_keys,
    parse_value,
)


def test_defaults_round_trip():
    cfg = RunConfig()
    flat = cfg.to_flat()
    assert flat["model.name"] == "eqcvt_stem"
    assert flat["model.group"] is None  # None = the preset's value
    assert flat["train.lr"] == TrainConfig().lr
    assert RunConfig.from_flat(flat) == cfg
    assert RunConfig.from_flat({}) == cfg
    assert set(flat) == set(flat_keys())


def test_from_flat_sets_values_and_coerces_types():
    cfg = RunConfig.from_flat(
        {
            "model.name": "seed_eqcvt",
            "model.group": "D4",
            "model.fields": 6.0,  # quniform gives floats
            "model.dropout": 0,  # int for a float field
            "train.lr": np.float64(3e-4),
            "train.batch_size": np.int64(16),
            "data.on_the_fly": True,
        }
    )
    assert cfg.model.fields == 6 and isinstance(cfg.model.fields, int)
    assert cfg.model.dropout == 0.0 and isinstance(cfg.model.dropout, float)
    assert cfg.train.lr == 3e-4 and type(cfg.train.lr) is float
    assert cfg.train.batch_size == 16 and type(cfg.train.batch_size) is int
    assert cfg.data.on_the_fly is True
    assert cfg.model.overrides() == {"group": "D4", "fields": 6, "dropout": 0.0}


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("model.fields", 4.5),
        ("model.fields", "4"),
        ("train.batch_size", True),
        ("data.on_the_fly", 1),
        ("train.optimizer", 3),
        ("train.lr", None),
        ("model.name", {"model.name": "eqcvt_stem"}),
    ],
)
def test_wrong_types_name_the_key(key, value):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        RunConfig.from_flat({key: value})


@pytest.mark.parametrize("key", ["model.colour", "train.learning_rate", "optim.lr", "lr"])
def test_unknown_keys_are_errors_naming_them(key):
    with pytest.raises(ValueError, match=f"unknown config key '{key}'"):
        RunConfig.from_flat({key: 1})


@pytest.mark.parametrize(
    ("flat", "message"),
    [
        ({"train.lr": 0.0}, "train.lr"),
        ({"train.augment": "rot45"}, "train.augment"),
        ({"train.optimizer": "lamb"}, "train.optimizer"),
        ({"train.device": "tpu"}, "train.device"),
        ({"train.momentum": 1.0}, "train.momentum"),
        ({"train.epochs": 0}, "train.epochs"),
        ({"model.group": "C3"}, "C3"),
        ({"model.kernel_size": 4}, "model.kernel_size"),
        ({"model.embed_dim": 30, "model.heads": 4}, "divisible"),
        ({"data.task": "segmentation"}, "data.task"),
        ({"data.source": "shards"}, "data.path"),
        ({"data.n_val": 0}, "data.n_val"),
    ],
)
def test_validation(flat, message):
    with pytest.raises(ValueError, match=message):
        RunConfig.from_flat(flat)


def test_cuda_index_device_and_with_updates():
    cfg = RunConfig.from_flat({"train.device": "cuda:1"})
    longer = cfg.with_updates({"train.epochs": 50})
    assert longer.train.epochs == 50 and longer.train.device == "cuda:1"
    assert cfg.train.epochs == TrainConfig().epochs
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.epochs = 3  # type: ignore[misc]


def test_data_config_matches_the_contract():
    expected = {
        "source": "simulate", "path": "", "preset": "model_ii", "task": "binary",
        "n_train": 256, "n_val": 128, "n_test": 128, "seed": 0, "on_the_fly": False,
        "img_size": 0, "randomize_einstein_radius": None, "mass_conserving": None,
        "randomize_orientation": None,
    }
    assert dataclasses.asdict(DataConfig()) == expected


def test_model_section_overrides_are_model_config_fields_or_stage_knobs():
    from eqcvt.config import STAGE_KNOBS, ModelConfig, apply_overrides

    names = {f.name for f in dataclasses.fields(ModelSection)} - {"name"}
    model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
    assert names <= model_fields | set(STAGE_KNOBS)
    assert set(STAGE_KNOBS) <= names  # every stage knob is searchable
    # the data decides these, never the search; the registered name decides the family
    assert not names & {"in_channels", "img_size", "classes", "targets", "stages", "variant"}
    section = ModelSection(group="C8", fields=3, embed_dim=16, heads=2, depth=1, head_dim=8)
    cfg = apply_overrides(ModelConfig(), **section.overrides())
    assert cfg.group == "C8" and cfg.stages[0].embed_dim == 16 and cfg.stages[0].head_dim == 8


def test_model_variant_is_removed_with_a_clear_error():
    """model.variant once made a registered model build another family (seed_eqcvt as a CvT)."""
    with pytest.raises(ValueError, match="'model.variant' was removed: a registered model name"):
        RunConfig.from_flat({"model.name": "seed_eqcvt", "model.variant": "cvt"})
    assert "model.variant" not in flat_keys()
    # older runs recorded the unset override as None: their saved configs still load
    assert RunConfig.from_flat({"model.variant": None}) == RunConfig()


def test_coerce_value_direct():
    assert coerce_value("model.group", None) is None
    assert coerce_value("train.seed", 3.0) == 3
    with pytest.raises(ValueError, match="unknown config key"):
        coerce_value("train.nope", 1)


def test_parse_value_round_trips_every_key_through_text():
    """MLflow stores params as str(value): every default comes back as itself."""
    for key, value in RunConfig(
        model=ModelSection(group="C8", dropout=0.1, fields=2), train=TrainConfig(lr=3e-4)
    ).to_flat().items():
        assert parse_value(key, str(value)) == value, key
        assert parse_value(key, value) == value, key


@pytest.mark.parametrize("text, typed", [("1e-3", 1e-3), ("0.5", 0.5), (" 2 ", 2.0)])
def test_parse_value_same_from_text_and_typed(text, typed):
    """--set text, a YAML string (YAML 1.1 reads 1e-3 as one) and a YAML number agree."""
    assert parse_value("train.lr", text) == parse_value("train.lr", typed) == float(typed)


def test_parse_value_types_by_key():
    assert parse_value("data.n_train", "64") == 64 and parse_value("data.n_train", "1e3") == 1000
    assert parse_value("data.on_the_fly", "true") is True
    assert parse_value("data.on_the_fly", "False") is False
    assert parse_value("model.fields", "None") is None
    assert parse_value("model.group", "C8") == "C8"
    assert parse_value("model.group", "None") is None
    with pytest.raises(ValueError, match="data.n_train"):
        parse_value("data.n_train", "many")
    with pytest.raises(ValueError, match="data.n_train"):
        parse_value("data.n_train", "1.5")
    with pytest.raises(ValueError, match="data.on_the_fly"):
        parse_value("data.on_the_fly", "maybe")
    with pytest.raises(ValueError, match="train.lr"):
        parse_value("train.lr", "None")  # not optional
