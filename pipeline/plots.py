"""PNG plots for MLflow artefacts and reports (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import math
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


def pareto_png(costs: Sequence[float], values: Sequence[float], front: Sequence[int],
               xlabel: str, ylabel: str, path: str | Path,
               reference: tuple[float, float] | None = None) -> Path:
    """Every trial, the Pareto front as a step line and the hypervolume's reference point."""
    fig, ax = plt.subplots(figsize=(4.8, 3.6), dpi=100)
    ax.scatter(costs, values, s=14, color="0.6", label="trials")
    fx, fy = [costs[i] for i in front], [values[i] for i in front]
    edge = [reference[0]] if reference is not None and fx else []  # the last step's width
    ax.step(fx + edge, fy + fy[-1:] * len(edge), where="post", color="C3", lw=1.2)
    ax.scatter(fx, fy, s=22, color="C3", label="Pareto front")
    if reference is not None:
        ax.scatter([reference[0]], [reference[1]], marker="x", color="k", label="reference")
    ax.set_xscale("log")
    ax.set(xlabel=xlabel, ylabel=ylabel)
    ax.legend(fontsize=7)
    return _save(fig, path)


def parallel_png(rows: Sequence[Mapping[str, Any]], keys: Sequence[str],
                 values: Sequence[float], metric: str, path: str | Path) -> Path:
    """Parallel coordinates: one line per trial through its sampled values (each axis scaled
    to [0, 1]; categories at even steps), coloured by the metric."""
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(keys) + 2), 3.8), dpi=100)
    cols = []
    for k in keys:
        raw = [r.get(k) for r in rows]
        nums = [v for v in raw if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(nums) == len(raw) and len(set(nums)) > 1:
            lo, hi = min(nums), max(nums)
            log = lo > 0 and hi / lo > 20
            if log:
                cols.append([float(np.log(v / lo) / np.log(hi / lo)) for v in raw])
            else:
                cols.append([(v - lo) / (hi - lo) for v in raw])
        else:
            cats = sorted({str(v) for v in raw})
            cols.append([cats.index(str(v)) / max(1, len(cats) - 1) for v in raw])
    vals = np.asarray(values, dtype=float)
    finite = vals[np.isfinite(vals)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    cmap = plt.get_cmap("viridis")
    for i in np.argsort(vals):
        c = cmap((vals[i] - lo) / (hi - lo)) if math.isfinite(vals[i]) and hi > lo else "0.7"
        ax.plot(range(len(keys)), [col[i] for col in cols], color=c, lw=1.0, alpha=0.8)
    ax.set_xticks(range(len(keys)), [k.split(".", 1)[-1] for k in keys], rotation=30,
                  ha="right", fontsize=8)
    ax.set_yticks([0, 1], ["low", "high"])
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(lo, hi))
    fig.colorbar(sm, ax=ax, label=metric)
    return _save(fig, path)
