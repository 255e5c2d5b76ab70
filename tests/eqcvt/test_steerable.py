"""Family "steerable": exact invariance of the logits and equivariance of every custom block."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from escnn.nn import FieldType, GeometricTensor

import eqcvt
from eqcvt.centred import CentredR2Conv, centre_for_stride, centred_padding
from eqcvt.config import StageConfig
from eqcvt.fields import field_type
from eqcvt.filter_cache import per_batch_filters
from eqcvt.groups import parse_group
from eqcvt.presets import STEERABLE, eqcvt_steerable
from eqcvt.steerable import (
    EquivariantMLP,
    FieldLayerNorm,
    FieldStem,
    InvariantAttention,
    SteerableBlock,
    SteerableEqCvT,
    SteerableProjection,
    TokenEmbedding,
    stage_fields,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one thread is fastest, and far faster on a shared, loaded machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TINY_STAGE = StageConfig(embed_dim=8, depth=1, heads=2, mlp_ratio=1.0, kv_stride=2)


def tiny(group: str, **overrides) -> SteerableEqCvT:
    kw = dict(group=group, fields=2, kernel_size=3, stages=(TINY_STAGE,), head_hidden=8)
    return eqcvt_steerable(**{**kw, **overrides})


def act(x: torch.Tensor, turns: int, flip: bool) -> torch.Tensor:
    """Grid action of escnn's element (flip, turns): rot90(flip(x, -1), turns)."""
    return torch.rot90(torch.flip(x, (-1,)) if flip else x, turns, (-2, -1))


def invariance_error(model: torch.nn.Module, x: torch.Tensor, group: str) -> float:
    with torch.no_grad():
        y = model(x)
        errors = [
            ((model(act(x, k, f)) - y).abs().max() / y.abs().max()).item()
            for k, f in parse_group(group).grid_exact_elements()
        ]
    return max(errors)


def escnn_element(gspace, turns: int, flip: bool):
    g = gspace.fibergroup
    n = gspace.rotations_order if hasattr(gspace, "rotations_order") else g.order()
    rot = turns * n // 4
    if gspace.flips_order == 1:  # dihedral (D1's fibre group is a cyclic group of order 2)
        return g.element((int(flip), rot)) if n > 1 else g.element(int(flip))
    return g.element(rot)


def grid_equivariance_error(module, size: int, group: str, batch: int = 2) -> float:
    """max |f(g x) - g f(x)| / max |f(x)| over the grid-exact elements, via escnn's transform."""
    x = GeometricTensor(torch.randn(batch, module.in_type.size, size, size), module.in_type)
    gspace = module.in_type.gspace
    with torch.no_grad():
        y = module(x)
        errors = []
        for k, f in parse_group(group).grid_exact_elements():
            el = escnn_element(gspace, k, f)
            diff = module(x.transform(el)).tensor - y.transform(el).tensor
            errors.append((diff.abs().max() / y.tensor.abs().max()).item())
    return max(errors)


# ----------------------------------------------------------------------------- conventions


@pytest.mark.parametrize("group", ["C4", "D1", "D2", "D4"])
def test_escnn_grid_action_matches_torch(group):
    """escnn's (flip, k) acts on the grid as rot90(flip(x, -1), k): the equivariance metrics rely
    on it."""
    gspace = parse_group(group).gspace()
    ftype = FieldType(gspace, [gspace.trivial_repr])
    x = torch.randn(1, 1, 5, 5)
    for k, f in parse_group(group).grid_exact_elements():
        moved = ftype(x).transform(escnn_element(gspace, k, f)).tensor
        torch.testing.assert_close(moved, act(x, k, f), rtol=0, atol=0)


@pytest.mark.parametrize("size", [7, 8, 9, 10, 11, 12, 13])
@pytest.mark.parametrize(("kernel", "stride"), [(1, 1), (3, 1), (3, 2), (5, 2), (3, 3), (1, 2)])
def test_centred_strided_sampling_commutes_with_grid_symmetries(size, kernel, stride):
    x = torch.randn(1, 2, size, size)
    weight = torch.randn(1, 2, kernel, kernel)
    weight = sum(act(weight, k, f) for k in range(4) for f in (False, True))  # D4-symmetric

    def layer(t):
        return F.conv2d(centre_for_stride(t, kernel, stride), weight, stride=stride)

    y = layer(x)
    for k, f in parse_group("D4").grid_exact_elements():
        torch.testing.assert_close(layer(act(x, k, f)), act(y, k, f), rtol=1e-5, atol=1e-5)


def test_centred_sizes_keep_the_centre_pixel():
    assert centred_padding(129, 3, 2) == 1
    sizes = [129]
    for _ in range(3):
        sizes.append(centre_for_stride(torch.zeros(1, 1, sizes[-1], sizes[-1]), 3, 2).shape[-1])
        sizes[-1] = (sizes[-1] - 3) // 2 + 1
    assert sizes == [129, 65, 33, 17]


# ----------------------------------------------------------------------------- the model


@pytest.mark.parametrize("group", ["C4", "C8", "D4", "D1", "D2"])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_logits_are_invariant(group, mode):
    torch.manual_seed(0)
    model = tiny(group).train(mode == "train")
    x = torch.randn(2, 1, 33, 33)
    assert invariance_error(model, x, group) < 1e-4


@pytest.mark.parametrize("size", [64, 34])
def test_even_inputs_stay_invariant(size):
    torch.manual_seed(0)
    model = eqcvt_steerable(img_size=size) if size == 64 else tiny("D4", img_size=size)
    x = torch.randn(2, 1, size, size)
    group = model.config.group
    for mode in (True, False):
        assert invariance_error(model.train(mode), x, group) < 1e-4


def test_dropout_keeps_eval_invariance():
    torch.manual_seed(0)
    model = tiny("C4", dropout=0.3).eval()
    assert invariance_error(model, torch.randn(2, 1, 33, 33), "C4") < 1e-4


def test_head_dim_widens_attention_and_stays_invariant():
    torch.manual_seed(0)
    model = tiny("C4", head_dim=12)  # 3 regular C4 fields per head, 2 heads
    attn = model.stages[0][1].attn
    assert len(attn.q.out_type) == 6 and len(attn.in_type) == 2
    x = torch.randn(2, 1, 33, 33)
    assert invariance_error(model, x, "C4") < 1e-4
    assert invariance_error(model.eval(), x, "C4") < 1e-4


def test_library_metrics_see_an_invariant_model():
    from eqcvt.equivariance import equivariance_report, group_invariance_error

    torch.manual_seed(0)
    model = tiny("D4")
    x = torch.randn(2, 1, 17, 17)
    assert group_invariance_error(model, x) < 1e-4
    report = equivariance_report(model, x)
    assert report["invariance_error"] < 1e-4 and report["rotation_logit_std"] >= 0


def test_trivial_fields_and_c16_are_invariant():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 33, 33)
    assert invariance_error(tiny("C4", field_type="trivial"), x, "C4") < 1e-4
    assert invariance_error(tiny("C16"), x, "C16") < 1e-4
    assert invariance_error(tiny("C4", stem_blocks=0), x, "C4") < 1e-4  # tokens from pixels


def test_forward_backward_no_nan():
    torch.manual_seed(0)
    model = tiny("D2", in_channels=2, classes=3, dropout=0.1)
    out = model(torch.randn(2, 2, 33, 33))
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    out.logsumexp(-1).sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_regression_head():
    model = tiny("C4", targets=1)
    out = model(torch.randn(2, 1, 33, 33))
    assert out.shape == (2, 1)
    assert model.config.task == "regression"


def test_default_preset_shapes_and_registry():
    model = eqcvt.create_model("eqcvt_steerable")
    assert isinstance(model, SteerableEqCvT) and model.config == STEERABLE
    assert model.config.group == "C4" and model.config.variant == "steerable"
    with torch.no_grad():
        for size in (64, 129, 150):
            assert model(torch.randn(1, 1, size, size)).shape == (1, 2)


def test_wrong_variant_is_a_clear_error():
    with pytest.raises(ValueError, match="variant='steerable'"):
        SteerableEqCvT(STEERABLE.__class__(variant="stem"))


def test_stage_fields_are_whole_fields_per_head():
    assert stage_fields(StageConfig(embed_dim=32, heads=2), 4) == 8
    assert stage_fields(StageConfig(embed_dim=32, heads=4), 16) == 4  # at least one per head
    assert stage_fields(StageConfig(embed_dim=32, heads=2), 1) == 32


def test_eval_reuses_cached_filters(monkeypatch):
    from escnn.nn import R2Conv

    torch.manual_seed(0)
    model = tiny("C4").eval()
    x = torch.randn(2, 1, 33, 33)
    calls = []
    original = R2Conv.expand_parameters
    monkeypatch.setattr(R2Conv, "expand_parameters", lambda self: calls.append(1) or original(self))
    with torch.no_grad():
        cached = model(x)
        assert not calls  # no expansion per batch in eval mode
        with per_batch_filters(model):
            fresh = model(x)
        assert calls
    torch.testing.assert_close(cached, fresh, rtol=1e-5, atol=1e-6)


def test_checkpoints_hold_parameters_only_and_reload_in_eval():
    torch.manual_seed(0)
    source = tiny("C4").eval()
    target = tiny("C4").eval()  # different weights, cache already built
    state = source.state_dict()
    assert not any(k.endswith((".filter", ".expanded_bias")) for k in state)
    target.load_state_dict(state)
    x = torch.randn(2, 1, 33, 33)
    with torch.no_grad():
        torch.testing.assert_close(target(x), source(x))
    copy.deepcopy(target)  # eval-mode caches carry no autograd history


# ----------------------------------------------------------------------------- custom modules


def _modules(group: str, kind: str = "regular"):
    gspace = parse_group(group).gspace()
    ftype = field_type(gspace, 2, kind)
    trivial = FieldType(gspace, [gspace.trivial_repr])
    return {
        "centred_conv_s2": CentredR2Conv(ftype, ftype, 3, stride=2),
        "layer_norm": FieldLayerNorm(ftype),
        "projection_s2": SteerableProjection(ftype, 3, stride=2),
        "attention": InvariantAttention(ftype, heads=2, kv_stride=2),
        "attention_wide": InvariantAttention(
            ftype, heads=2, kv_stride=2, attn_type=field_type(gspace, 4, kind)
        ),
        "mlp": EquivariantMLP(ftype, 3, kind),
        "block": SteerableBlock(ftype, TINY_STAGE, kind, attn_drop=0.0),
        "embedding": TokenEmbedding(trivial, ftype, TINY_STAGE),
        "stem": FieldStem(trivial, ftype, blocks=1, kernel=3),
    }


@pytest.mark.parametrize("group", ["C4", "D4"])
def test_escnn_check_equivariance_on_custom_modules(group):
    """escnn's own check samples random group elements; all of C4/D4 are exact on the grid."""
    torch.manual_seed(0)
    for name, module in _modules(group).items():
        for training in (True, False):
            module.train(training)
            errors = module.check_equivariance(atol=1e-5, rtol=1e-4)
            assert max(err for _, err in errors) < 1e-5, name


@pytest.mark.parametrize(
    ("group", "kind"), [("C8", "regular"), ("D2", "regular"), ("C4", "trivial")]
)
@pytest.mark.parametrize("size", [9, 10])
def test_custom_modules_are_equivariant_on_grid_elements(group, kind, size):
    torch.manual_seed(0)
    for name, module in _modules(group, kind).items():
        for training in (True, False):
            module.train(training)
            assert grid_equivariance_error(module, size, group) < 1e-5, name


def test_evaluate_output_shape_matches_forward():
    for name, module in _modules("C4").items():
        for size in (9, 10, 33):
            x = GeometricTensor(torch.randn(1, module.in_type.size, size, size), module.in_type)
            with torch.no_grad():
                shape = tuple(module(x).shape)
            assert module.evaluate_output_shape(tuple(x.shape)) == shape, (name, size)
