"""Predict and evaluate: the one place where outputs, loss and metrics on a split are computed.

The training loop's per-epoch validation (`evaluate`), the end-of-trial artefacts of a search
and final training's test split (`evaluate_model`, `evaluate_checkpoint`) all go through
`predict` + `split_metrics`, so every report gives the same numbers the same way.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import metrics
from .device import exact_fp32

EVAL_FILE = "evaluation.json"


def task_kind(task: str) -> str:
    """Data task ("binary", "multiclass", "regression") -> "classification" | "regression"."""
    return "regression" if task == "regression" else "classification"


def model_device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def predict(
    model: nn.Module, images: torch.Tensor, batch_size: int = 256, device: Any = None
) -> torch.Tensor:
    """Raw outputs (N, out) as CPU float32, in eval mode (escnn filters expanded once), in
    full fp32 whatever precision the model trained in (`exact_fp32`: no autocast, no TF32)."""
    device = torch.device(device) if device is not None else model_device(model)
    was_training = model.training
    model.eval()  # outside inference_mode: escnn caches its expanded filters here
    outs = []
    try:
        with torch.inference_mode(), exact_fp32():
            for i in range(0, len(images), batch_size):
                batch = images[i : i + batch_size].to(device, non_blocking=True).float()
                outs.append(model(batch).float().cpu())
    finally:
        if was_training:
            model.train()
    if not outs:
        return torch.empty(0, 0)
    return torch.cat(outs)


def split_metrics(
    outputs: torch.Tensor, split: Any, task: str, classes: Sequence[str] | None = None
) -> dict[str, float]:
    """Metrics of outputs on one split, keys without prefix: loss, acc, auc_micro, auc_macro,
    auc_<class> (classification) or loss, mse, mae (regression)."""
    if task_kind(task) == "regression":
        res = metrics.regression_metrics(outputs, split.targets.float().cpu())
        return {"loss": float(res["mse"]), **{k: float(v) for k, v in res.items()}}
    labels = split.labels.long().cpu()
    loss = float(F.cross_entropy(outputs, labels).item()) if len(labels) else float("nan")
    names = list(classes) if classes is not None else None
    res = metrics.classification_metrics(outputs, labels, names)
    return {"loss": loss, **{k: float(v) for k, v in res.items()}}


def evaluate(
    model: nn.Module,
    split: Any,
    task: str,
    batch_size: int = 256,
    *,
    classes: Sequence[str] | None = None,
    device: Any = None,
) -> dict[str, float]:
    """`split_metrics` of the model's outputs on `split` (the engine's per-epoch validation)."""
    return split_metrics(predict(model, split.images, batch_size, device), split, task, classes)


def evaluate_model(
    model: nn.Module,
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
    import eqcvt
    from eqcvt.equivariance import equivariance_report

    out = predict(model, split.images, batch_size, device)
    res = split_metrics(out, split, task, classes)
    result = {f"{prefix}_{k}": v for k, v in res.items()}
    n_eq = min(equivariance_images, len(split.images))
    if n_eq:
        x = split.images[:n_eq].to(model_device(model)).float()
        with exact_fp32():
            report = equivariance_report(model, x)
        result.update({k: float(v) for k, v in report.items()})
    result["num_params"] = float(eqcvt.count_params(model))
    if out_dir is not None:
        from . import plots

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        if task_kind(task) == "regression":
            plots.residual_png(out, split.targets, out_dir / "residuals.png", name="log10_m_a")
        else:
            labels = split.labels.long().cpu()
            plots.roc_png(out, labels, list(classes), out_dir / "roc.png")
            plots.confusion_png(out, labels, list(classes), out_dir / "confusion.png")
        (out_dir / EVAL_FILE).write_text(json.dumps(result, indent=1))
    return result


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
    from .checkpoints import load_model

    model = load_model(checkpoint_dir, device=device)
    return evaluate_model(model, split, task, classes, out_dir, prefix=prefix, device=device)
