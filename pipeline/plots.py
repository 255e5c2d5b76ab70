"""PNG plots for MLflow artefacts and reports (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from . import metrics  # noqa: E402


def roc_png(logits: Any, labels: Any, classes: Sequence[str], path: str | Path) -> Path:
    """One-vs-rest ROC curve per class plus the micro-average."""
    probs = metrics.softmax(logits)
    y = np.asarray(labels, dtype=np.int64)
    fig, ax = plt.subplots(figsize=(4.5, 4.2), dpi=100)
    for k, name in enumerate(classes):
        if 0 < int((y == k).sum()) < len(y):
            fpr, tpr, _ = metrics.roc_curve(probs[:, k], y == k)
            ax.plot(fpr, tpr, lw=1.2, label=f"{name} (AUC {metrics.roc_auc(probs[:, k], y == k):.3f})")
    onehot = np.zeros_like(probs, dtype=bool)
    onehot[np.arange(len(y)), y] = True
    fpr, tpr, _ = metrics.roc_curve(probs.ravel(), onehot.ravel())
    ax.plot(fpr, tpr, "k--", lw=1.0, label=f"micro (AUC {metrics.micro_auc(probs, y):.3f})")
    ax.plot([0, 1], [0, 1], color="0.8", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def confusion_png(logits: Any, labels: Any, classes: Sequence[str], path: str | Path) -> Path:
    counts = np.asarray(metrics.confusion_matrix(logits, labels, len(classes)))
    fig, ax = plt.subplots(figsize=(1.2 * len(classes) + 2.2, 1.1 * len(classes) + 1.8), dpi=100)
    ax.imshow(counts, cmap="Blues")
    for (i, j), c in np.ndenumerate(counts):
        ax.text(j, i, str(c), ha="center", va="center",
                color="white" if c > counts.max() / 2 else "black", fontsize=9)
    ax.set_xticks(range(len(classes)), classes, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true")
    return _save(fig, path)


def residual_png(pred: Any, target: Any, path: str | Path, name: str = "target") -> Path:
    """Predicted vs true and the residuals, first regression target."""
    p = np.asarray(pred, dtype=np.float64).reshape(len(pred), -1)[:, 0]
    t = np.asarray(target, dtype=np.float64).reshape(len(target), -1)[:, 0]
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3.6), dpi=100)
    a.scatter(t, p, s=6, alpha=0.6)
    lo, hi = float(np.nanmin(t)), float(np.nanmax(t))
    a.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    a.set(xlabel=f"true {name}", ylabel=f"predicted {name}")
    b.scatter(t, p - t, s=6, alpha=0.6)
    b.axhline(0, color="k", lw=0.8)
    b.set(xlabel=f"true {name}", ylabel="residual")
    return _save(fig, path)


def bar_png(values: Mapping[str, float], errors: Mapping[str, float] | None, ylabel: str,
            path: str | Path) -> Path:
    """A bar per model (report: test metric of the final runs with its spread)."""
    names = list(values)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(names) + 2), 3.4), dpi=100)
    err = [errors.get(n, 0.0) for n in names] if errors else None
    ax.bar(range(len(names)), [values[n] for n in names], yerr=err, capsize=3, color="C0")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    return _save(fig, path)


def curves_png(curves: Mapping[str, Sequence[tuple[int, float]]], ylabel: str,
               path: str | Path) -> Path:
    """One line per trial: metric against epoch (report)."""
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    for name, points in curves.items():
        if points:
            xs, ys = zip(*sorted(points), strict=True)
            ax.plot(xs, ys, marker="o", ms=2, lw=1, label=name)
    ax.set(xlabel="epoch", ylabel=ylabel)
    if 0 < len(curves) <= 12:
        ax.legend(fontsize=6)
    return _save(fig, path)


def scatter_png(xs: Sequence[float], ys: Sequence[float], xlabel: str, ylabel: str,
                path: str | Path, log_x: bool = False) -> Path:
    fig, ax = plt.subplots(figsize=(4.5, 3.6), dpi=100)
    ax.scatter(xs, ys, s=14)
    if log_x:
        ax.set_xscale("log")
    ax.set(xlabel=xlabel, ylabel=ylabel)
    return _save(fig, path)


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
