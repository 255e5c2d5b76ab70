"""Evaluate a trained checkpoint on one split: metrics, plots and equivariance numbers.

Shared by the end-of-trial artefacts of a search and by final training (test split), so both
report the same numbers the same way.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from . import metrics as M

EVAL_FILE = "evaluation.json"


def evaluate_model(
    model: torch.nn.Module,
    split: Any,
    task: str,
    classes: Sequence[str],
    out_dir: str | Path | None = None,
    *,
    prefix: str = "val",
    equivariance_images: int = 16,
    batch_size: int = 256,
    device: Any = None,
) -> dict[str, float]:
    """Metrics `<prefix>_*`, `invariance_error`, `rotation_logit_std`, `num_params`; with
    `out_dir`, also roc.png + confusion.png (classification) or residuals.png (regression)
    and evaluation.json."""
    from eqcvt.equivariance import equivariance_report

    from .engine import predict, task_kind

    out = predict(model, split.images, batch_size, device)
    kind = task_kind(task)
    if kind == "regression":
        target = split.targets.float().cpu()
        res = M.regression_metrics(out, target)
        res = {"loss": res["mse"], **res}
    else:
        labels = split.labels.long().cpu()
        loss = float(F.cross_entropy(out, labels).item()) if len(labels) else float("nan")
        res = {"loss": loss, **M.classification_metrics(out, labels, list(classes))}
    metrics = {f"{prefix}_{k}": float(v) for k, v in res.items()}
    n_eq = min(equivariance_images, len(split.images))
    if n_eq:
        dev = next(model.parameters()).device
        x = split.images[:n_eq].to(dev).float()
        metrics.update({k: float(v) for k, v in equivariance_report(model, x).items()})
    metrics["num_params"] = float(sum(p.numel() for p in model.parameters() if p.requires_grad))
    if out_dir is not None:
        from . import plots

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        if kind == "regression":
            plots.residual_png(out, split.targets, out_dir / "residuals.png", name="log10_m_a")
        else:
            labels = split.labels.long().cpu()
            plots.roc_png(out, labels, list(classes), out_dir / "roc.png")
            plots.confusion_png(out, labels, list(classes), out_dir / "confusion.png")
        (out_dir / EVAL_FILE).write_text(json.dumps(metrics, indent=1))
    return metrics


def evaluate_checkpoint(
    checkpoint_dir: str | Path,
    split: Any,
    task: str,
    classes: Sequence[str],
    out_dir: str | Path | None = None,
    *,
    prefix: str = "val",
    device: Any = "cpu",
) -> dict[str, float]:
    """Load an engine checkpoint (no data needed to rebuild it) and evaluate it."""
    from .engine import load_model

    model = load_model(checkpoint_dir, device=device)
    return evaluate_model(model, split, task, classes, out_dir, prefix=prefix, device=device)
