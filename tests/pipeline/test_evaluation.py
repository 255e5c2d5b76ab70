"""predict / evaluate / evaluate_model: one implementation of loss and metrics on a split."""

from __future__ import annotations

import pytest
import torch

from pipeline import evaluation
from tests.pipeline.test_engine import _TinyNet, make_split


def test_evaluate_on_a_split():
    model = _TinyNet(classes=3).eval()
    split = make_split(12, classes=3)
    out = evaluation.evaluate(model, split, "multiclass", 5, classes=("a", "b", "c"))
    assert set(out) == {"loss", "acc", "auc_micro", "auc_macro", "auc_a", "auc_b", "auc_c"}
    assert not model.training
    reg = evaluation.evaluate(_TinyNet(targets=1), make_split(6, regression=True), "regression")
    assert set(reg) == {"loss", "mse", "mae"} and reg["loss"] == reg["mse"]
    assert evaluation.predict(model, split.images, 5).shape == (12, 3)


def test_evaluate_model_is_evaluate_with_a_prefix(tmp_path):
    """The artefact evaluation and the per-epoch validation give the same numbers."""
    import eqcvt

    torch.manual_seed(0)
    model = _TinyNet(classes=3).eval()
    split = make_split(12, classes=3)
    plain = evaluation.evaluate(model, split, "multiclass", classes=("a", "b", "c"))
    full = evaluation.evaluate_model(model, split, "multiclass", ("a", "b", "c"), tmp_path,
                                     prefix="test", equivariance_images=0)
    assert {f"test_{k}": v for k, v in plain.items()} == pytest.approx(
        {k: v for k, v in full.items() if k.startswith("test_")})
    assert full["num_params"] == eqcvt.count_params(model)
    assert {"roc.png", "confusion.png", evaluation.EVAL_FILE} <= {
        p.name for p in tmp_path.iterdir()}
