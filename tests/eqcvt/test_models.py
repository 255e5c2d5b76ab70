"""Every registered model builds and trains; the published models exactly; stem equivariance; the
filter cache."""

import copy

import pytest
import torch
from escnn import nn as enn
from escnn.nn import MaskModule

import eqcvt
from eqcvt.config import ModelConfig
from eqcvt.filter_cache import caching_modules, per_batch_filters
from eqcvt.groups import SUPPORTED_GROUPS, parse_group
from eqcvt.model import EqCvT
from eqcvt.stem import CircularMask, StemFeatures

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


def test_published_parameter_counts_are_exact():
    """The abstract's EqCvT and CvT, counted as the authors' code prints them."""
    seed = eqcvt.create_model("seed_eqcvt")
    assert eqcvt.count_params(seed) == 64_810
    assert eqcvt.count_params(seed.stem) == 200  # 180 conv weights + 20 InnerBatchNorm affine
    conv = next(m for m in seed.stem.modules() if isinstance(m, enn.R2Conv))
    assert eqcvt.count_params(conv) == 180
    assert eqcvt.count_params(eqcvt.create_model("cvt_baseline")) == 463_106


def _shapes(model, size):
    """Output shapes of the stem, the token embedding and the key/value projection."""
    shapes = {}

    def keep(name):
        def hook(module, args, out) -> None:
            shapes.setdefault(name, tuple(out.shape))

        return hook

    handles = [model.stages[0].embed.proj.register_forward_hook(keep("tokens")),
               model.stages[0].blocks[0].attn.kv.depthwise.register_forward_hook(keep("keys"))]
    if model.stem is not None:
        handles.append(model.stem.register_forward_hook(keep("stem")))
    with torch.no_grad():
        model.eval()(torch.rand(1, 1, size, size))
    for h in handles:
        h.remove()
    return shapes


def test_seed_eqcvt_is_the_published_model_layer_by_layer():
    model = eqcvt.create_model("seed_eqcvt")
    cfg, (stage,) = model.config, model.config.stages
    assert (cfg.variant, cfg.group, cfg.field_type, cfg.fields, cfg.kernel_size) == (
        "stem", "C4", "regular", 10, 7,
    )
    assert (stage.embed_dim, stage.depth, stage.heads, stage.head_dim, stage.mlp_ratio) == (
        32, 2, 3, 64, 2.0,
    )
    assert (cfg.in_channels, cfg.img_size, cfg.classes, cfg.dropout) == (1, 129, 2, 0.1)
    layers = [type(m).__name__ for m in model.stem.features.blocks]
    assert layers == ["CircularMask", "R2Conv", "InnerBatchNorm", "ReLU",
                      "PointwiseAvgPoolAntialiased2D", "GroupPooling"]
    conv, pool = model.stem.features.blocks[1], model.stem.features.blocks[4]
    assert (conv.kernel_size, conv.padding, conv.stride, conv.bias) == (7, 1, 1, None)
    assert (pool.kernel_size, pool.stride, pool.padding) == ((5, 5), (1, 1), (0, 0))
    attn = model.stages[0].blocks[0].attn
    assert (attn.q.linear.out_features, attn.kv.linear.out_features) == (192, 384)
    assert attn.attn_dropout == 0.0 and attn.out_drop.p == 0.1
    head = [type(m).__name__ for m in model.head.children()]
    assert head == ["Linear", "BatchNorm1d", "ELU", "Linear"]
    assert (model.head.fc1.in_features, model.head.fc1.out_features) == (32, 64)
    shapes = _shapes(model, 129)
    assert shapes["stem"] == (1, 10, 121, 121)  # 10 invariant channels after group pooling
    assert shapes["tokens"] == (1, 32, 61, 61)  # 3,721 tokens
    assert shapes["keys"][-2:] == (31, 31)  # 961 key tokens


def test_cvt_baseline_is_the_published_model():
    model = eqcvt.create_model("cvt_baseline")
    s1, s2 = model.config.stages
    assert model.stem is None
    assert (s1.embed_dim, s1.patch_size, s1.patch_stride, s1.depth, s1.heads) == (64, 7, 4, 2, 2)
    assert (s2.embed_dim, s2.patch_size, s2.patch_stride, s2.depth, s2.heads) == (128, 3, 2, 1, 3)
    assert all((s.head_dim, s.mlp_ratio, s.kv_stride) == (64, 4.0, 2) for s in (s1, s2))
    assert [type(m).__name__ for m in model.head.children()] == [
        "Linear", "BatchNorm1d", "ELU", "Linear",
    ]
    assert (model.head.fc1.in_features, model.head.fc1.out_features) == (128, 128)
    shapes = _shapes(model, 129)
    assert shapes["tokens"] == (1, 64, 33, 33) and shapes["keys"][-2:] == (17, 17)


@pytest.mark.parametrize("size", [64, 129, 150])
def test_circular_mask_is_escnn_mask_module_at_any_size(size):
    gspace = parse_group("C4").gspace()
    ftype = enn.FieldType(gspace, [gspace.trivial_repr])
    x = enn.GeometricTensor(torch.rand(2, 1, size, size), ftype)
    expected = MaskModule(ftype, size, margin=1)(x).tensor
    torch.testing.assert_close(CircularMask(ftype)(x).tensor, expected, rtol=0, atol=0)
    assert list(CircularMask(ftype).state_dict()) == []  # derived, not a checkpoint entry


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
@pytest.mark.parametrize("published", [False, True], ids=["downsample", "published"])
def test_stem_check_equivariance(group, size, published):
    stem = StemFeatures(
        parse_group(group), 1, [3, 3], "regular", kernel_size=5,
        downsample=not published, mask=published,
    )
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
    assert isinstance(eqcvt.build_model(ModelConfig(variant="cvt", stem_blocks=0)), EqCvT)
    assert type(eqcvt.build_model(ModelConfig(variant="cnn"))).__name__ == "SteerableCNN"
    with pytest.raises(ValueError, match="build_model"):
        EqCvT(ModelConfig(variant="cnn"))


@pytest.mark.parametrize("name", eqcvt.list_models())
def test_a_registered_name_fixes_its_family(name):
    """`variant` once turned e.g. seed_eqcvt into a CvT; now it is a clear error."""
    family = eqcvt.create_model(name).config.variant
    other = "cvt" if family != "cvt" else "stem"
    with pytest.raises(ValueError, match="registered model name fixes its family"):
        eqcvt.create_model(name, variant=other)


# ---------------------------------------------------------------- eval-mode filter cache


SMALL_SEED = dict(name="seed_eqcvt", fields=3, stem_blocks=2, dropout=0.0)


def _small_seed():
    torch.manual_seed(0)
    return eqcvt.create_model(**SMALL_SEED)


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
    assert len(caching_modules(model)) == 2
    calls = _count_expansions(model, monkeypatch)
    with torch.no_grad():
        model(torch.rand(2, 1, 33, 33))
        model(torch.rand(2, 1, 33, 33))
    assert calls == []
    with per_batch_filters(model), torch.no_grad():
        model(torch.rand(2, 1, 33, 33))
    assert len(calls) == 2


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
    target = eqcvt.create_model(**SMALL_SEED).eval()  # other weights, stale cache
    source.train()
    target.load_state_dict(source.state_dict())  # train-mode checkpoint into an eval model
    with torch.no_grad():
        torch.testing.assert_close(target(x), expected, atol=1e-6, rtol=1e-6)
    fresh = eqcvt.create_model(**SMALL_SEED)
    fresh.load_state_dict(source.eval().state_dict())  # eval-mode checkpoint into a train model
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(x), expected, atol=1e-6, rtol=1e-6)


def test_published_seed_stem_is_equivariant_and_its_logits_are_not_invariant():
    """As published: exact C4 equivariance up to group pooling, none promised after it."""
    from escnn.nn import GeometricTensor

    from eqcvt.equivariance import group_invariance_error

    torch.manual_seed(0)
    model = eqcvt.create_model("seed_eqcvt").eval()
    x = torch.rand(2, 1, 129, 129)
    with torch.no_grad():
        maps = model.stem(GeometricTensor(x, model.stem.in_type))
        for k in (1, 2, 3):
            turned = model.stem(GeometricTensor(torch.rot90(x, k, (-2, -1)), model.stem.in_type))
            err = (torch.rot90(maps, k, (-2, -1)) - turned).abs().max() / maps.abs().max()
            assert err < 1e-5, (k, err)
    assert group_invariance_error(model, x) > 1e-4
