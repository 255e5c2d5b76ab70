"""The study report's plots (matplotlib, Agg): ROC per dataset, accuracy against parameters
with the Pareto front, accuracy against k for the new class."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from ..plots import _save, plt


def roc_plot(curves: Mapping[str, Sequence[dict]], title: str, path: Path) -> Path:
    """curves: model -> one {"fpr", "tpr", "auc"} per seed; seeds share their model's colour."""
    fig, ax = plt.subplots(figsize=(5, 4.5), dpi=100)
    for i, (model, per_seed) in enumerate(sorted(curves.items())):
        colour = f"C{i % 10}"
        aucs = [c["auc"] for c in per_seed]
        for j, c in enumerate(per_seed):
            ax.plot(c["fpr"], c["tpr"], color=colour, lw=1.1, alpha=0.8,
                    label=f"{model} (AUC {sum(aucs) / len(aucs):.3f}, n={len(aucs)})"
                    if j == 0 else None)
    ax.plot([0, 1], [0, 1], color="0.8", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1),
           ylim=(0, 1.01), title=title)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated (fewer or equal parameters and higher accuracy)."""
    front = []
    for i, (p, a) in enumerate(points):
        if not any((q <= p and b >= a) and (q < p or b > a) for q, b in points):
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def pareto_plot(points: Mapping[str, tuple[float, float, float]], title: str, ylabel: str,
                path: Path, higher_is_better: bool = True) -> Path:
    """points: model -> (params, mean, std); the front is drawn as a line."""
    names = sorted(points)
    xy = [(points[n][0], points[n][1]) for n in names]
    sign = 1.0 if higher_is_better else -1.0
    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    for n in names:
        p, m, s = points[n]
        ax.errorbar([p], [m], yerr=[0 if s != s else s], fmt="o", capsize=3, label=n)
    front = pareto_front([(p, sign * a) for p, a in xy])
    ax.plot([xy[i][0] for i in front], [xy[i][1] for i in front], "k--", lw=1,
            label="Pareto front")
    ax.set_xscale("log")
    ax.set(xlabel="trainable parameters", ylabel=ylabel, title=title)
    ax.legend(fontsize=7)
    return _save(fig, path)


def k_plot(series: Mapping[str, Sequence[tuple[int, float]]], title: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    for name, pts in sorted(series.items()):
        pts = sorted(pts)
        ax.plot([k for k, _ in pts], [a for _, a in pts], "o-", label=name)
    ax.set_xscale("log")
    ax.set(xlabel="labelled images per class (k)", ylabel="test accuracy, all classes",
           title=title)
    ax.legend(fontsize=7)
    return _save(fig, path)
