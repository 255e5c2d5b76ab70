"""End-of-trial artefacts are computed where the trial ran, on its own validation images:
the evaluation shipped in a checkpoint equals the validation metrics that epoch reported."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from pipeline.config import RunConfig
from pipeline.data.bundle import open_data
from pipeline.engine import fit
from pipeline.tune.artifacts import EVAL_DIR, EVAL_FILE, BestEpochEvaluation

TINY = {
    "model.name": "eqcvt_stem", "model.group": "C4", "model.fields": 1, "model.embed_dim": 8,
    "model.depth": 1, "model.heads": 1, "model.head_hidden": 8, "model.kernel_size": 3,
    "model.stem_blocks": 1, "data.n_train": 32, "data.n_val": 24, "data.n_test": 8,
    "data.img_size": 32, "train.epochs": 3, "train.batch_size": 16, "train.lr": 3e-3,
    "train.device": "cpu", "train.num_threads": 1, "train.eval_batch_size": 8,
}


class KeepEvaluations:
    """Copies each epoch's evaluation (if any) before fit removes the epoch's checkpoint."""

    def __init__(self, root: Path) -> None:
        self.root, self.epochs = root, {}

    def on_epoch_end(self, epoch, metrics, checkpoint_dir):
        ev = Path(checkpoint_dir) / EVAL_DIR
        if ev.is_dir():
            shutil.copytree(ev, self.root / str(epoch))
        self.epochs[epoch] = dict(metrics)


@pytest.mark.parametrize("metric, mode", [("val_loss", "min")])
def test_best_epochs_ship_an_evaluation_equal_to_their_own_metrics(tmp_path, metric, mode):
    cfg = RunConfig.from_flat(TINY)
    bundle = open_data(cfg.data)
    keep = KeepEvaluations(tmp_path / "kept")
    evaluation = BestEpochEvaluation(bundle, metric, mode, "cpu", cfg.train.eval_batch_size)
    fit(cfg, bundle, [evaluation, keep], checkpoint_root=tmp_path / "ckpt")
    best = -math.inf if mode == "max" else math.inf
    for epoch, metrics in sorted(keep.epochs.items()):
        value = metrics[metric]
        is_best = value >= best if mode == "max" else value <= best
        best = max(best, value) if mode == "max" else min(best, value)
        kept = tmp_path / "kept" / str(epoch)
        assert kept.is_dir() == is_best, (epoch, value)
        if not is_best:
            continue
        ev = json.loads((kept / EVAL_FILE).read_text())
        for key in ("val_loss", "val_acc", "val_auc_micro"):
            assert ev[key] == pytest.approx(metrics[key], rel=1e-5, abs=1e-6), key
        assert {"invariance_error", "num_params"} <= set(ev)
        assert {"roc.png", "confusion.png"} <= {p.name for p in kept.iterdir()}
    assert (tmp_path / "kept" / "1").is_dir()  # the first epoch is always the best so far
