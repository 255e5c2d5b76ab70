"""Evaluation metrics on plain arrays; every function returns Python floats/lists.

ROC AUC is the Mann-Whitney rank statistic (ties get average ranks), so no scikit-learn call
sits in the training loop. AUC is NaN when only one class is present.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _np(x: Any, dtype=np.float64) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def softmax(logits: Any) -> np.ndarray:
    z = _np(logits)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def accuracy(logits: Any, labels: Any) -> float:
    """Fraction of rows whose argmax equals the label (logits or probabilities)."""
    pred = _np(logits).argmax(axis=1)
    y = _np(labels, np.int64)
    return float((pred == y).mean()) if len(y) else float("nan")


def _average_ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    # start index of each run of equal values, and its length
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    lengths = np.diff(np.r_[starts, len(xs)])
    avg = starts + (lengths + 1) / 2.0  # 1-based average rank of the run
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(avg, lengths)
    return ranks


def roc_auc(scores: Any, positive: Any) -> float:
    """Area under the ROC curve of `scores` for the boolean/0-1 `positive` labels."""
    s = _np(scores).ravel()
    y = _np(positive, bool).ravel()
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(scores: Any, positive: Any) -> tuple[list[float], list[float], list[float]]:
    """(fpr, tpr, thresholds) at every distinct score, starting at (0, 0) with threshold +inf."""
    s = _np(scores).ravel()
    y = _np(positive, bool).ravel()
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_run = np.r_[np.flatnonzero(s[1:] != s[:-1]), len(s) - 1] if len(s) else np.array([])
    last_of_run = last_of_run.astype(int)
    tps = np.cumsum(y)[last_of_run]
    fps = (last_of_run + 1) - tps
    n_pos, n_neg = max(int(y.sum()), 1), max(len(y) - int(y.sum()), 1)
    fpr = np.r_[0.0, fps / n_neg]
    tpr = np.r_[0.0, tps / n_pos]
    thresholds = np.r_[np.inf, s[last_of_run]]
    return fpr.tolist(), tpr.tolist(), thresholds.tolist()


def per_class_auc(probs: Any, labels: Any) -> list[float]:
    """One-vs-rest AUC for every column of `probs` (N, K)."""
    p = _np(probs)
    y = _np(labels, np.int64)
    return [roc_auc(p[:, k], y == k) for k in range(p.shape[1])]


def micro_auc(probs: Any, labels: Any) -> float:
    """AUC of all (image, class) pairs pooled: one-hot labels against probabilities."""
    p = _np(probs)
    y = _np(labels, np.int64)
    onehot = np.zeros_like(p, dtype=bool)
    onehot[np.arange(len(y)), y] = True
    return roc_auc(p.ravel(), onehot.ravel())


def confusion_matrix(preds: Any, labels: Any, num_classes: int) -> list[list[int]]:
    """counts[true][predicted]; `preds` are class indices or (N, K) scores."""
    p = _np(preds)
    p = p.argmax(axis=1) if p.ndim == 2 else p
    p = p.astype(np.int64)
    y = _np(labels, np.int64)
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (y, p), 1)
    return counts.tolist()


def mse(pred: Any, target: Any) -> float:
    d = _np(pred) - _np(target)
    return float(np.mean(d**2)) if d.size else float("nan")


def mae(pred: Any, target: Any) -> float:
    d = _np(pred) - _np(target)
    return float(np.mean(np.abs(d))) if d.size else float("nan")


def classification_metrics(
    logits: Any, labels: Any, classes: Sequence[str] | None = None
) -> dict[str, float]:
    """acc, auc_micro, auc_macro (mean of defined per-class AUCs) and auc_<class>."""
    probs = softmax(logits)
    names = list(classes) if classes is not None else [str(k) for k in range(probs.shape[1])]
    if len(names) != probs.shape[1]:
        raise ValueError(f"{len(names)} class names for {probs.shape[1]} outputs")
    per_class = per_class_auc(probs, labels)
    defined = [a for a in per_class if not np.isnan(a)]
    out = {
        "acc": accuracy(probs, labels),
        "auc_micro": micro_auc(probs, labels),
        "auc_macro": float(np.mean(defined)) if defined else float("nan"),
    }
    out.update({f"auc_{name}": auc for name, auc in zip(names, per_class, strict=True)})
    return out


def regression_metrics(pred: Any, target: Any) -> dict[str, float]:
    return {"mse": mse(pred, target), "mae": mae(pred, target)}
