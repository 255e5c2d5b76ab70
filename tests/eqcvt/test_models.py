"""Every registered model builds and trains; preset sizes; stem equivariance; the filter cache."""

import copy

import pytest
import torch
from escnn import nn as enn

import eqcvt
from eqcvt.config import ModelConfig
from eqcvt.filter_cache import caching_modules, per_batch_filters
from eqcvt.groups import SUPPORTED_GROUPS, parse_group
from eqcvt.model import EqCvT, build_model
from eqcvt.stem import StemFeatures

torch.set_num_threads(2)

HEADS = {"binary": {"classes": 2}, "multiclass": {"classes": 3}, "regression": {"targets": 1}}
# Each size and each head once: (64, binary), (129, regression), (150, multiclass).
CASES = [
    (64, "binary"),
    (129, "regression"),
    pytest.param(150, "multiclass", marks=pytest.mark.slow),
]


def _forward_backward(model, size, batch=2):
    x = torch.rand(batch, model.config.in_channels, size, size)
    out = model(x)
    out.square().mean().backward()
    return out


@pytest.mark.parametrize("size, head", CASES)
@pytest.mark.parametrize("name", eqcvt.list_models())
def test_every_model_trains(name, size, head):
    torch.manual_seed(0)
    model = eqcvt.create_model(name, img_size=size, **HEADS[head])
    model.train()
    out = _forward_backward(model, size)
    assert out.shape == (2, model.config.out_features)
    assert torch.isfinite(out).all()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert eqcvt.count_params(model) > 0


def test_seed_parameter_count():
    n = eqcvt.count_params(eqcvt.create_model("seed_eqcvt"))
    assert abs(n - 64_810) <= 0.10 * 64_810, n


def test_cvt_baseline_parameter_count():
    n = eqcvt.count_params(eqcvt.create_model("cvt_baseline"))
    assert abs(n - 463_000) <= 0.10 * 463_000, n


def test_seed_matches_the_abstract():
    cfg = eqcvt.create_model("seed_eqcvt").config
    (stage,) = cfg.stages
    assert (cfg.variant, cfg.group, cfg.field_type, cfg.fields, cfg.kernel_size) == (
        "stem",
        "C4",
        "regular",
        10,
        7,
    )
    assert (stage.embed_dim, stage.depth, stage.mlp_ratio, cfg.head_hidden) == (32, 2, 2.0, 64)
    assert (cfg.in_channels, cfg.img_size, cfg.classes) == (1, 129, 2)


@pytest.mark.parametrize("group", SUPPORTED_GROUPS)
def test_stem_variant_builds_for_every_group(group):
    model = eqcvt.create_model(
        "eqcvt_stem",
        group=group,
        fields=2,
        kernel_size=5,
        stem_blocks=1,
        embed_dim=8,
        heads=1,
        head_dim=0,
    )
    assert _forward_backward(model, 33).shape == (2, 2)


@pytest.mark.parametrize("group", ["C1", "C8", "D4"])
def test_trivial_fields_for_ablations(group):
    model = eqcvt.create_model("eqcvt_stem", group=group, field_type="trivial", fields=4)
    assert model.stem.out_channels == 4
    assert torch.isfinite(_forward_backward(model, 33)).all()


@pytest.mark.parametrize("group, size", [("C4", 33), ("C8", 32), ("D4", 33), ("D1", 34)])
def test_stem_check_equivariance(group, size):
    stem = StemFeatures(parse_group(group), 1, [3, 3], "regular", kernel_size=5)
    stem.eval()  # fixed BatchNorm statistics; the check is then exact up to float rounding
    errors = stem.check_equivariance(size=size)
    assert len(errors) == len(parse_group(group).grid_exact_elements())
    assert max(err for _, err in errors) < 1e-5


def test_escnn_check_equivariance_on_stem_layers():
    """escnn's generic check (it asserts internally) on the pointwise layers of the stem.

    Called through the base class: InnerBatchNorm overrides it with a no-op, and R2Conv's own
    check needs scikit-image and a downloaded test image (the convolutions are covered by
    StemFeatures.check_equivariance above)."""
    stem = StemFeatures(parse_group("C4"), 1, [2], "regular", kernel_size=5)
    checked = 0
    for layer in stem.blocks:
        if type(layer).__name__ in ("InnerBatchNorm", "ReLU", "GroupPooling"):
            layer.eval()
            errors = enn.EquivariantModule.check_equivariance(layer)
            assert max(err for _, err in errors) < 1e-6
            checked += 1
    assert checked == 3


def test_build_model_dispatch_and_errors():
    assert isinstance(build_model(ModelConfig(variant="cvt", stem_blocks=0)), EqCvT)
    assert type(build_model(ModelConfig(variant="cnn"))).__name__ == "SteerableCNN"
    with pytest.raises(ValueError, match="build_model"):
        EqCvT(ModelConfig(variant="cnn"))


# ---------------------------------------------------------------- eval-mode filter cache


def _small_seed():
    torch.manual_seed(0)
    return eqcvt.create_model("seed_eqcvt", fields=3, dropout=0.0)


def _count_expansions(model, monkeypatch):
    calls = []
    for m in caching_modules(model):
        original = m.expand_parameters

        def counted(original=original):
            calls.append(1)
            return original()

        monkeypatch.setattr(m, "expand_parameters", counted)
    return calls


def test_eval_does_not_expand_filters_per_batch(monkeypatch):
    model = _small_seed().eval()
    assert len(caching_modules(model)) == 3
    calls = _count_expansions(model, monkeypatch)
    with torch.no_grad():
        model(torch.rand(2, 1, 33, 33))
        model(torch.rand(2, 1, 33, 33))
    assert calls == []
    with per_batch_filters(model), torch.no_grad():
        model(torch.rand(2, 1, 33, 33))
    assert len(calls) == 3


def test_cached_eval_equals_train_mode_output():
    model = _small_seed()
    x = torch.rand(4, 1, 33, 33)
    model.train()
    _forward_backward(model, 33)  # move BatchNorm running statistics away from their init
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.eval()
    with torch.no_grad():
        cached = model(x)
        with per_batch_filters(model):
            rebuilt = model(x)
        # train mode (filters expanded from the weights on each forward) with BatchNorm frozen
        model.train()
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()
        train_mode = model(x)
    torch.testing.assert_close(cached, rebuilt, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cached, train_mode, atol=1e-5, rtol=1e-5)


def test_train_restores_and_eval_is_detached():
    model = _small_seed().eval()
    conv = caching_modules(model)[0]
    assert conv.filter.grad_fn is None and not conv.filter.requires_grad
    copy.deepcopy(model)  # non-leaf cached filters would make this fail
    model.train()
    assert conv.training and "filter" not in conv._buffers


def test_checkpoints_do_not_depend_on_mode():
    source = _small_seed()
    train_keys = set(source.train().state_dict())
    eval_keys = set(source.eval().state_dict())
    assert train_keys == eval_keys
    assert not any(k.endswith(("expanded_bias", ".matrix")) for k in eval_keys)

    x = torch.rand(2, 1, 33, 33)
    with torch.no_grad():
        expected = source(x)
    target = eqcvt.create_model("seed_eqcvt", fields=3, dropout=0.0).eval()  # stale cache
    source.train()
    target.load_state_dict(source.state_dict())  # train-mode checkpoint into an eval model
    with torch.no_grad():
        torch.testing.assert_close(target(x), expected, atol=1e-6, rtol=1e-6)
    fresh = eqcvt.create_model("seed_eqcvt", fields=3, dropout=0.0)
    fresh.load_state_dict(source.eval().state_dict())  # eval-mode checkpoint into a train model
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(x), expected, atol=1e-6, rtol=1e-6)
