"""Metrics against scikit-learn's reference implementations (test-only dependency)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from pipeline import metrics


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_roc_auc_matches_sklearn_with_ties(rng):
    y = rng.integers(0, 2, 200)
    scores = np.round(rng.random(200) + 0.3 * y, 1)  # rounding makes many ties
    assert metrics.roc_auc(scores, y) == pytest.approx(skm.roc_auc_score(y, scores), abs=1e-12)
    assert metrics.roc_auc([0.1, 0.9], [0, 1]) == 1.0
    assert metrics.roc_auc([0.5, 0.5], [0, 1]) == 0.5


def test_roc_auc_is_nan_with_one_class():
    assert math.isnan(metrics.roc_auc([0.1, 0.2], [1, 1]))


def test_per_class_and_micro_auc_match_sklearn(rng):
    logits = torch.randn(120, 3)
    labels = torch.randint(0, 3, (120,))
    probs = metrics.softmax(logits)
    onehot = np.eye(3)[labels.numpy()]
    expected = [skm.roc_auc_score(onehot[:, k], probs[:, k]) for k in range(3)]
    assert metrics.per_class_auc(probs, labels) == pytest.approx(expected, abs=1e-12)
    assert metrics.micro_auc(probs, labels) == pytest.approx(
        skm.roc_auc_score(onehot, probs, average="micro"), abs=1e-12
    )


def test_roc_curve_matches_sklearn(rng):
    y = rng.integers(0, 2, 50)
    s = np.round(rng.random(50), 1)
    fpr, tpr, thr = metrics.roc_curve(s, y)
    sk_fpr, sk_tpr, _ = skm.roc_curve(y, s, drop_intermediate=False)
    assert fpr == pytest.approx(sk_fpr.tolist())
    assert tpr == pytest.approx(sk_tpr.tolist())
    assert thr[0] == math.inf and fpr[-1] == tpr[-1] == 1.0
    trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy 2 renamed it
    assert trapezoid(tpr, fpr) == pytest.approx(metrics.roc_auc(s, y))


def test_accuracy_and_confusion_matrix():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0]])
    labels = torch.tensor([0, 1, 2, 2])
    assert metrics.accuracy(logits, labels) == 0.75
    cm = metrics.confusion_matrix(logits, labels, 3)
    assert cm == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    assert cm == skm.confusion_matrix(labels, logits.argmax(1), labels=[0, 1, 2]).tolist()
    assert metrics.confusion_matrix([0, 1], [1, 1], 2) == [[0, 0], [1, 1]]


def test_classification_metrics_keys_are_plain_floats():
    out = metrics.classification_metrics(torch.randn(10, 2), torch.arange(10) % 2, ("no_sub", "sub"))
    assert set(out) == {"acc", "auc_micro", "auc_macro", "auc_no_sub", "auc_sub"}
    assert all(type(v) is float for v in out.values())
    # binary: both one-vs-rest AUCs are the same number
    assert out["auc_no_sub"] == pytest.approx(out["auc_sub"])
    with pytest.raises(ValueError, match="class names"):
        metrics.classification_metrics(torch.randn(4, 3), torch.zeros(4, dtype=torch.long), ("a",))


def test_regression_metrics():
    pred = torch.tensor([[1.0], [2.0], [4.0]])
    target = torch.tensor([[1.0], [3.0], [2.0]])
    out = metrics.regression_metrics(pred, target)
    assert out == {"mse": pytest.approx(5 / 3), "mae": pytest.approx(1.0)}
    assert type(out["mse"]) is float
