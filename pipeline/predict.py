"""`eqcvt-search predict`: load a registered model back from MLflow and predict.

The registered pyfunc carries the engine checkpoint (weights + model.json + the RunConfig), so
the images are prepared exactly as in training (same crop) from a shard folder or the
simulator. A shard folder is predicted whole (train, val and test, in that order) unless a
split is named; the simulator makes the test split (or the one named). The CSV has one row per
image: its position in its split, the prediction, and the split it came from.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import metrics
from .config import RunConfig
from .data.splits import SPLITS

PredictFn = Callable[[np.ndarray], Any]


@dataclass
class PredictResult:
    model: str
    n: int
    task: str
    classes: list[str]
    metrics: dict[str, float] = field(default_factory=dict)  # over every predicted image
    splits: dict[str, int] = field(default_factory=dict)  # images predicted per split
    metrics_by_split: dict[str, dict[str, float]] = field(default_factory=dict)
    out: str | None = None

    def to_json(self) -> str:
        def clean(m: dict[str, float]) -> dict[str, float | None]:
            return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                    for k, v in m.items()}

        body = {**dataclasses.asdict(self), "metrics": clean(self.metrics),
                "metrics_by_split": {s: clean(m) for s, m in self.metrics_by_split.items()}}
        return json.dumps(body, indent=1)


def splits_to_predict(split: str | None, data_dir: str | None) -> tuple[str, ...]:
    """The named split; else every split of a shard folder, or the simulator's test split."""
    if split is not None:
        if split not in SPLITS:
            raise ValueError(f"--split must be one of {SPLITS}, got {split!r}")
        return (split,)
    return SPLITS if data_dir else ("test",)


def prediction_config(
    cfg: RunConfig, data_dir: str | None, preset: str | None, splits: Sequence[str],
    n: int | None,
) -> RunConfig:
    """The model's training config pointed at the data to predict (crop and task kept)."""
    updates: dict[str, Any] = {"data.on_the_fly": False}
    if data_dir:
        updates.update({"data.source": "shards", "data.path": str(Path(data_dir).resolve())})
    else:
        updates.update({"data.source": "simulate", "data.preset": preset})
        # simulate just the splits asked for (open_data needs a train and a val image)
        least = {"train": 1, "val": 1, "test": 0}
        for s in SPLITS:
            if s not in splits:
                updates[f"data.n_{s}"] = least[s]
            elif n is not None:
                updates[f"data.n_{s}"] = n
    return cfg.with_updates(updates)


def predict_bundle(
    predict: PredictFn, bundle: Any, splits: Sequence[str], *, n: int | None = None,
    out: str | None = None, model: str = "",
) -> PredictResult:
    """Predict the images of `splits` of a DataBundle (at most n in all, in split order)."""
    regression = bundle.task == "regression"
    left = n
    parts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for s in splits:
        part = getattr(bundle, s)
        if part is None:
            raise ValueError(f"the data have no fixed {s!r} split to predict")
        k = len(part.images) if left is None else min(left, len(part.images))
        truth = part.targets[:k] if regression else part.labels[:k]
        if k:
            outputs = np.asarray(predict(part.images[:k].numpy()))
        else:
            outputs = np.zeros((0, bundle.num_outputs), np.float32)
        parts[s] = (outputs, truth.numpy())
        if left is not None:
            left -= k
    outputs = np.concatenate([o for o, _ in parts.values()])
    truth = np.concatenate([t for _, t in parts.values()])
    classes = list(bundle.classes)

    def score(o: np.ndarray, t: np.ndarray) -> dict[str, float]:
        if regression:
            return metrics.regression_metrics(o, t)
        return metrics.classification_metrics(o, t, classes)

    result = PredictResult(
        model=model, n=len(outputs), task=bundle.task, classes=classes,
        metrics=score(outputs, truth) if len(outputs) else {},
        splits={s: len(o) for s, (o, _) in parts.items()},
        metrics_by_split={s: score(o, t) for s, (o, t) in parts.items() if len(o)},
    )
    if out:
        _write_csv(out, {s: o for s, (o, _) in parts.items()}, classes, regression)
        result.out = str(out)
    return result


def predict_registered(
    spec: str,
    *,
    tracking_uri: str | None = None,
    data_dir: str | None = None,
    preset: str | None = None,
    split: str | None = None,
    n: int | None = None,
    out: str | None = None,
) -> PredictResult:
    """Predict with the registered model `spec` ("NAME[/VERSION]"); see the module docstring."""
    from . import tracking
    from .data.bundle import open_data

    model, name, version = tracking.load_registered(tracking_uri, spec)
    cfg = RunConfig.from_flat(tracking.unwrap_pyfunc(model).config)
    splits = splits_to_predict(split, data_dir)
    bundle = open_data(prediction_config(cfg, data_dir, preset, splits, n).data, device="cpu")
    return predict_bundle(model.predict, bundle, splits, n=n, out=out, model=f"{name}/{version}")


def _write_csv(
    path: str, outputs: dict[str, np.ndarray], classes: list[str], regression: bool
) -> None:
    """One row per image: index (its position in its split), prediction(s), split."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        if regression:
            w.writerow(["index", "prediction", "split"])
            for s, out in outputs.items():
                for i, row in enumerate(out):
                    w.writerow([i, float(np.ravel(row)[0]), s])
            return
        w.writerow(["index", "predicted", *[f"p_{c}" for c in classes], "split"])
        for s, out in outputs.items():
            for i, p in enumerate(metrics.softmax(out) if len(out) else []):
                w.writerow([i, classes[int(np.argmax(p))], *[f"{x:.6f}" for x in p], s])
