"""`final` on a finished tiny search: train the best trials longer, test them with several
seeds, register the best; `predict` loads it back from the registry; `report` summarises."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline import tracking
from pipeline.config import RunConfig
from pipeline.final import FinalModel, _train_one_seed, parse_params, select_model, select_seed

from .conftest import run_cli


def test_parse_params_restores_types():
    flat = parse_params({"train.lr": "0.001", "model.fields": "2", "model.group": "C4",
                         "model.dropout": "None", "data.on_the_fly": "False", "extra": "x"})
    assert flat == {"train.lr": 0.001, "model.fields": 2, "model.group": "C4",
                    "model.dropout": None, "data.on_the_fly": False}


def _model(tid, val, test):
    agg = {"val_acc_mean": val, "test_acc_mean": test}
    return FinalModel(tid, "r" + tid, "f" + tid, val, agg)


def test_selection_uses_validation_never_test():
    # seed 1 is best on test, seed 2 best on validation: validation decides
    per_seed = [{"val_acc": 0.70, "test_acc": 0.80}, {"val_acc": 0.72, "test_acc": 0.99},
                {"val_acc": 0.90, "test_acc": 0.60}]
    assert select_seed(per_seed, "val_acc", "max") == 2
    models = [_model("a", 0.80, 0.95), _model("b", 0.85, 0.70)]
    assert select_model(models, "val_acc", "max").trial_id == "b"
    # min mode (regression): lowest validation MSE wins, whatever test says
    per_seed = [{"val_mse": 0.3, "test_mse": 0.1}, {"val_mse": 0.2, "test_mse": 0.5}]
    assert select_seed(per_seed, "val_mse", "min") == 1
    with pytest.raises(ValueError, match="validation"):
        select_seed(per_seed, "test_mse", "min")
    with pytest.raises(ValueError, match="validation"):
        select_model(models, "test_acc", "max")


def test_one_seed_keeps_best_validation_epoch_and_reads_test_once(tmp_path, monkeypatch):
    from pipeline.study import protocol

    calls = []
    real = protocol.evaluate_split

    def spy(model, split, task, classes, prefix, out_dir=None):
        calls.append(prefix)
        return real(model, split, task, classes, prefix, out_dir)

    monkeypatch.setattr(protocol, "evaluate_split", spy)
    cfg = RunConfig.from_flat({
        "model.name": "eqcvt_stem", "model.fields": 2, "model.embed_dim": 8, "model.heads": 1,
        "model.depth": 1, "model.stem_blocks": 1, "train.epochs": 3, "train.batch_size": 8,
        "train.lr": 0.05, "train.device": "cpu", "data.n_train": 16, "data.n_val": 8,
        "data.n_test": 8, "data.img_size": 24})
    ckpt, out_dir, m, history = _train_one_seed(cfg, None, tmp_path)
    vals = [h["val_acc"] for h in history]
    best = max(range(len(vals)), key=lambda i: (vals[i], -i))
    assert m["best_epoch"] == best + 1
    assert m["val_acc"] == pytest.approx(vals[best])
    assert json.loads((ckpt / "metrics.json").read_text())["epoch"] == best + 1
    assert calls == ["val", "test"] and "test_acc" in m
    assert (out_dir / "evaluation.json").is_file()


@pytest.mark.slow
def test_final_registers_a_model_that_predicts(finished_search):
    fs = finished_search
    work, env = fs["work"], fs["env"]
    proc = run_cli(["final", "--experiment", fs["experiment"], "--top-k", "2", "--epochs", "2",
                    "--seeds", "2"], work, env)
    assert proc.returncode == 0, proc.stderr[-6000:]
    summary = json.loads(proc.stdout)
    assert len(summary["models"]) == 2 and summary["registered"] == "eqcvt-tiny/1"
    for m in summary["models"]:
        assert len(m["per_seed"]) == 2
        assert 0.0 <= m["test"]["test_acc_mean"] <= 1.0 and "test_acc_std" in m["test"]
        assert 0.0 <= m["test"]["val_acc_mean"] <= 1.0 and m["test"]["val_acc_n"] == 2
    best_val = max(summary["models"], key=lambda m: m["test"]["val_acc_mean"])
    assert summary["best_trial"] == best_val["trial_id"]

    tracker = tracking.Tracker(fs["uri"], fs["experiment"])
    finals = tracker.runs(kind="final")
    assert len(finals) == 2 and {r["status"] for r in finals} == {tracking.FINISHED}
    winner = next(r for r in finals if r["tags"].get("eqcvt.registered"))
    assert winner["params"]["final.data"].startswith("train split")
    assert winner["tags"]["eqcvt.registered"] == "eqcvt-tiny/1"
    assert {"evaluation", "checkpoint"} <= set(tracker.list_artifacts(winner["run_id"]))
    versions = tracker.client.search_model_versions("name = 'eqcvt-tiny'")
    assert [v.run_id for v in versions] == [winner["run_id"]]

    proc = run_cli(["predict", "--model", "eqcvt-tiny", "--simulate", "model_ii", "--n", "16",
                    "--out", str(work / "preds.csv")], work, env)
    assert proc.returncode == 0, proc.stderr[-6000:]
    pred = json.loads(proc.stdout)
    assert pred["model"] == "eqcvt-tiny/1" and pred["n"] == 16
    assert 0.0 <= pred["metrics"]["acc"] <= 1.0
    rows = (work / "preds.csv").read_text().splitlines()
    assert len(rows) == 17 and rows[0].startswith("index,predicted")

    # the registered model is exactly the final run's checkpoint
    from pipeline.checkpoints import load_model
    from pipeline.evaluation import predict

    model, _, _ = tracking.load_registered(fs["uri"], "eqcvt-tiny/1")
    ckpt = tracker.download(winner["run_id"], "checkpoint", work / "dl")
    x = np.random.default_rng(0).random((3, 1, 32, 32), dtype=np.float32)
    import torch

    np.testing.assert_allclose(np.asarray(model.predict(x)),
                               predict(load_model(ckpt), torch.from_numpy(x)).numpy(),
                               rtol=1e-5, atol=1e-6)

    proc = run_cli(["report", "--experiment", fs["experiment"], "--out",
                    str(work / "report.md")], work, env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = (work / "report.md").read_text()
    assert "## Trials" in text and "## Final runs" in text and "test_acc" in text
    assert (work / "report_plots" / "curves.png").is_file()
    assert (work / "report_plots" / "final.png").is_file()

    # fine-tuning from the best trial's weights instead of from scratch
    proc = run_cli(["final", "--experiment", fs["experiment"], "--top-k", "1", "--epochs", "1",
                    "--seeds", "1", "--from-checkpoint", "--model-name", "eqcvt-tiny-ft"],
                   work, env)
    assert proc.returncode == 0, proc.stderr[-6000:]
    assert json.loads(proc.stdout)["registered"] == "eqcvt-tiny-ft/1"
    ft = [r for r in tracker.runs(kind="final")
          if r["tags"].get("eqcvt.final.from_checkpoint") == "True"]
    assert len(ft) == 1 and ft[0]["status"] == tracking.FINISHED
