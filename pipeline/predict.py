"""`eqcvt-search predict`: load a registered model back from MLflow and predict.

The registered pyfunc carries the engine checkpoint (weights + model.json + the RunConfig), so
the images are prepared exactly as in training (same crop) from a shard folder or the
simulator.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import metrics as M
from . import tracking as T
from .config import RunConfig


@dataclass
class PredictResult:
    model: str
    n: int
    task: str
    classes: list[str]
    metrics: dict[str, float] = field(default_factory=dict)
    out: str | None = None

    def to_json(self) -> str:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                 for k, v in self.metrics.items()}
        return json.dumps({**dataclasses.asdict(self), "metrics": clean}, indent=1)


def predict_registered(
    spec: str,
    *,
    tracking_uri: str | None = None,
    data_dir: str | None = None,
    preset: str | None = None,
    split: str = "test",
    n: int | None = None,
    out: str | None = None,
) -> PredictResult:
    from .data.bundle import open_data
    from .evaluation import task_kind

    model, name, version = T.load_registered(tracking_uri, spec)
    inner = T.unwrap_pyfunc(model)
    cfg = RunConfig.from_flat(inner.config)
    updates: dict[str, Any] = {"data.on_the_fly": False}
    if data_dir:
        updates.update({"data.source": "shards", "data.path": str(Path(data_dir).resolve())})
    else:
        updates.update({"data.source": "simulate", "data.preset": preset})
        if n is not None:  # simulate just the split that is asked for
            updates.update({"data.n_train": n if split == "train" else 1,
                            "data.n_val": n if split == "val" else 1,
                            "data.n_test": n if split == "test" else 0})
    cfg = cfg.with_updates(updates)
    bundle = open_data(cfg.data, device="cpu")
    part = getattr(bundle, split)
    images = part.images[:n] if n is not None else part.images
    outputs = np.asarray(model.predict(images.numpy()))
    result = PredictResult(model=f"{name}/{version}", n=len(images), task=bundle.task,
                           classes=list(bundle.classes))
    if task_kind(bundle.task) == "regression":
        target = part.targets[: len(images)].numpy()
        result.metrics = M.regression_metrics(outputs, target)
    else:
        labels = part.labels[: len(images)].numpy()
        result.metrics = M.classification_metrics(outputs, labels, list(bundle.classes))
    if out:
        _write_csv(out, outputs, bundle)
        result.out = str(out)
    return result


def _write_csv(path: str, outputs: np.ndarray, bundle: Any) -> None:
    from .evaluation import task_kind

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        if task_kind(bundle.task) == "regression":
            w.writerow(["index", "prediction"])
            for i, row in enumerate(outputs):
                w.writerow([i, float(np.ravel(row)[0])])
            return
        probs = M.softmax(outputs)
        w.writerow(["index", "predicted", *[f"p_{c}" for c in bundle.classes]])
        for i, p in enumerate(probs):
            w.writerow([i, bundle.classes[int(np.argmax(p))], *[f"{x:.6f}" for x in p]])
