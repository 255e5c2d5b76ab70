"""One study cell (model, dataset, seed): train, select on validation, read test once, then
generalisation and new-class numbers. Plain Python (no Ray, no MLflow): the Ray trainable in
`pipeline.tune.study` calls `run_cell` and the driver logs what it returns."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import metrics as classification_metrics
from ..config import RunConfig
from ..search.cost import model_cost
from . import protocol

ROC_FILE = "roc.json"
CONFUSION_FILE = "confusion.json"
AT = ":"  # test_acc:model_iii; MLflow metric names may not contain "@"
HEADLINE = ("acc", "auc_micro", "auc_macro", "mse", "mae")


def open_test_only(data_flat: Mapping[str, Any], device: str = "cpu") -> Any:
    """The val/test splits of a dataset without simulating its training images."""
    cfg = RunConfig.from_flat(dict(data_flat)).data
    if cfg.source == "simulate":
        cfg = dataclasses.replace(cfg, on_the_fly=True)
    return protocol.open_for_seed(cfg, 0, device)


def compatible(a: Any, b: Any) -> bool:
    """One model can be tested on both: same image shape, task and classes."""
    return (a.image_shape == b.image_shape and a.task == b.task
            and tuple(a.classes) == tuple(b.classes))


def _roc_points(logits: torch.Tensor, labels: torch.Tensor, n: int = 200) -> dict[str, Any]:
    probs = classification_metrics.softmax(logits)
    y = labels.numpy()
    onehot = np.zeros_like(probs, dtype=bool)
    onehot[np.arange(len(y)), y] = True
    scores, pos = (probs[:, 1], y == 1) if probs.shape[1] == 2 else (probs.ravel(), onehot.ravel())
    fpr, tpr, _ = classification_metrics.roc_curve(scores, pos)
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(n, len(fpr))).round().astype(int))
    return {"fpr": [fpr[i] for i in keep], "tpr": [tpr[i] for i in keep],
            "auc": classification_metrics.roc_auc(scores, pos)}


def _headline(metrics: Mapping[str, float], prefix: str, suffix: str) -> dict[str, float]:
    return {f"{prefix}_{k}{suffix}": v for k in HEADLINE
            if (v := metrics.get(f"{prefix}_{k}")) is not None}


def run_cell(cell: Mapping[str, Any], work: str | Path) -> dict[str, float]:
    """Train one cell; writes artefacts (checkpoint, evaluation, roc.json, confusion.json)
    under `work/artifacts` and returns every metric of the cell."""
    work = Path(work)
    art = work / "artifacts"
    art.mkdir(parents=True, exist_ok=True)
    cfg = RunConfig.from_flat(cell["config"])
    device = str(protocol.device_of(cfg.train.device))
    bundle = protocol.open_for_seed(cfg.data, cfg.train.seed, device)
    t0 = time.perf_counter()
    res = protocol.train(cfg, bundle, work / "ckpt")
    wall = time.perf_counter() - t0
    model = protocol.best_model(res, device=device)
    classes = bundle.classes
    out = {k: v for k, v in protocol.evaluate_split(model, bundle.val, bundle.task, classes,
                                                    "val").items() if k.startswith("val_")}
    out.update(protocol.evaluate_split(model, bundle.test, bundle.task, classes, "test",
                                       art / "evaluation"))
    # train_time_s: the epochs (training steps + per-epoch validation); train_wall_s: all of
    # fit (model build, data, checkpoints); images_per_s: training steps only, mean over epochs
    train_time = float(sum(h.get("epoch_time_s", 0.0) for h in res.history))
    rates = [h["images_per_s"] for h in res.history if "images_per_s" in h]
    out.update(best_epoch=float(res.best_epoch or res.epoch), epochs=float(res.epoch),
               train_time_s=train_time, train_wall_s=wall,
               images_per_s=float(sum(rates) / max(1, len(rates))),
               num_params=float(res.num_params),
               flops_per_image=model_cost(model, tuple(bundle.image_shape)).flops)
    if bundle.task != "regression":
        logits = protocol.predict(model, bundle.test.images, cfg.train.eval_batch_size, device)
        labels = bundle.test.labels.long().cpu()
        (art / ROC_FILE).write_text(json.dumps(_roc_points(logits, labels)))
        cm = classification_metrics.confusion_matrix(logits.argmax(1), labels, len(classes))
        (art / CONFUSION_FILE).write_text(json.dumps({"classes": list(classes), "matrix": cm}))
    for label, data_flat in cell.get("generalise", {}).items():
        other = open_test_only(data_flat, device)
        if not compatible(bundle, other):
            continue
        m = protocol.evaluate_split(model, other.test, other.task, other.classes, "test")
        out.update(_headline(m, "test", f"{AT}{label}"))
    new_class = cell.get("new_class")
    if new_class and bundle.task != "regression":
        from .newclass import new_class_study

        out.update(new_class_study(cfg, bundle, new_class, work / "newclass"))
    shutil_copy(protocol.best_checkpoint(res), art / "checkpoint")
    return {k: float(v) for k, v in out.items()}


def shutil_copy(src: Path, dst: Path) -> None:
    import shutil

    shutil.copytree(src, dst, dirs_exist_ok=True)
