"""End-of-trial artefacts (ROC, confusion, evaluation.json, invariance), computed where the
trial ran, on its own validation images and device, and shipped inside its checkpoint.

A trial cannot know which epoch will be its last (ASHA and PBT stop it mid-fit), so every
epoch that is the trial's best so far by the search metric (ties included: Tune may keep any
of equal checkpoints as the best) evaluates its checkpoint into `<checkpoint>/evaluation/`.
The driver then only logs the files of the best checkpoint. Runs on the workers: no mlflow.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

EVAL_DIR = "evaluation"  # inside a checkpoint; logged as the trial run's "evaluation" folder
EVAL_FILE = "evaluation.json"  # written by pipeline.evaluation.evaluate_model
LOGGED_METRICS = ("invariance_error", "rotation_logit_std", "num_params")


class BestEpochEvaluation:
    """engine.fit callback (put it before the one that reports the checkpoint to Tune)."""

    def __init__(self, bundle: Any, metric: str, mode: str, device: Any,
                 batch_size: int = 256) -> None:
        self.bundle, self.metric, self.mode = bundle, metric, mode
        self.device, self.batch_size = device, batch_size
        self.best = math.nan

    def on_epoch_end(self, epoch: int, metrics: dict[str, float], checkpoint_dir: Path) -> None:
        value = float(metrics.get(self.metric, math.nan))
        if math.isnan(value):
            return
        if not math.isnan(self.best) and (value < self.best if self.mode == "max"
                                          else value > self.best):
            return
        self.best = value
        evaluate_into(Path(checkpoint_dir), self.bundle, self.device, self.batch_size)


def evaluate_into(checkpoint_dir: Path, bundle: Any, device: Any, batch_size: int
                  ) -> dict[str, float]:
    """Evaluate a checkpoint on the bundle's val split; files in checkpoint_dir/EVAL_DIR."""
    from ..checkpoints import load_model
    from ..evaluation import evaluate_model

    model = load_model(checkpoint_dir, device=device)
    return evaluate_model(model, bundle.val, bundle.task, bundle.classes,
                          checkpoint_dir / EVAL_DIR, batch_size=batch_size, device=device)
