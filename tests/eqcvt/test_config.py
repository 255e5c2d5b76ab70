"""ModelConfig validation, overrides and the errors users see for bad values."""

import dataclasses

import pytest

import eqcvt
from eqcvt.config import STAGE_KNOBS, ModelConfig, StageConfig, apply_overrides
from eqcvt.fields import field_type


def test_defaults_are_valid_and_frozen():
    cfg = ModelConfig()
    assert cfg.task == "classification" and cfg.out_features == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.group = "C8"  # type: ignore[misc]


def test_regression_head():
    cfg = ModelConfig(targets=1)
    assert cfg.task == "regression" and cfg.out_features == 1


@pytest.mark.parametrize("group", ["C3", "D16", "SO2", "", "c", 4, None])
def test_bad_group_is_a_clear_error(group):
    with pytest.raises(ValueError, match="unknown symmetry group"):
        ModelConfig(group=group)


@pytest.mark.parametrize("fields", [0, -3, 2.5, True, "10"])
def test_bad_field_count_is_a_clear_error(fields):
    with pytest.raises(ValueError, match="fields must be a positive integer"):
        ModelConfig(fields=fields)


def test_bad_field_count_through_create_model():
    with pytest.raises(ValueError, match="fields"):
        eqcvt.create_model("seed_eqcvt", fields=0)
    with pytest.raises(ValueError, match="field count"):
        field_type(ModelConfig().group_spec.gspace(), 0, "regular")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"variant": "vit"}, "unknown variant"),
        ({"field_type": "irrep"}, "unknown field_type"),
        ({"kernel_size": 6}, "must be odd"),
        ({"variant": "stem", "stem_blocks": 0}, "stem_blocks >= 1"),
        ({"dropout": 1.0}, "dropout"),
        ({"classes": 1}, "classes >= 2"),
        ({"stages": ()}, "at least one CvT stage"),
        ({"head_style": "softmax"}, "unknown head_style"),
        ({"input_mask": 1}, "input_mask must be True or False"),
        ({"variant": "steerable", "input_mask": True}, "knobs of the 'stem' and 'cnn'"),
        ({"variant": "cvt", "stem_downsample": False}, "knobs of the 'stem' and 'cnn'"),
    ],
)
def test_bad_values_name_the_problem(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**kwargs)


def test_stage_validation():
    with pytest.raises(ValueError, match="not divisible by heads"):
        StageConfig(embed_dim=30, heads=4)
    assert StageConfig(embed_dim=32, heads=3, head_dim=64).heads == 3  # the published EqCvT
    with pytest.raises(ValueError, match="head_dim"):
        StageConfig(head_dim=-1)


def test_apply_overrides_fields_and_stage_knobs():
    base = ModelConfig(stages=(StageConfig(embed_dim=32), StageConfig(embed_dim=64)))
    cfg = apply_overrides(base, group="d4", depth=3, heads=2, head_dim=16)
    assert cfg.group_spec.name == "D4"
    assert all(s.depth == 3 and s.heads == 2 and s.head_dim == 16 for s in cfg.stages)
    assert [s.embed_dim for s in cfg.stages] == [32, 64]
    assert set(STAGE_KNOBS) >= {"embed_dim", "depth", "heads", "mlp_ratio", "kv_stride"}


def test_unknown_override_names_the_key():
    with pytest.raises(TypeError, match="widht"):
        apply_overrides(ModelConfig(), widht=3)
    with pytest.raises(TypeError, match="widht"):
        eqcvt.create_model("seed_eqcvt", widht=3)


def test_the_family_is_not_an_override():
    with pytest.raises(ValueError, match="cannot be overridden"):
        apply_overrides(ModelConfig(), variant="cvt")
    with pytest.raises(TypeError) as err:
        apply_overrides(ModelConfig(), widht=3)
    assert "'variant'" not in str(err.value)  # not listed among the valid overrides


def test_unknown_model_lists_registered():
    with pytest.raises(ValueError, match="seed_eqcvt"):
        eqcvt.create_model("nope")


def test_model_carries_its_config():
    model = eqcvt.create_model("seed_eqcvt", classes=3)
    assert isinstance(model.config, ModelConfig) and model.config.classes == 3
