"""`final` on a finished tiny search: train the best trials longer, test them with several
seeds, register the best; `predict` loads it back from the registry; `report` summarises."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline import tracking as T
from pipeline.final import merge_train_val, parse_params

from .conftest import run_cli


def test_parse_params_restores_types():
    flat = parse_params({"train.lr": "0.001", "model.fields": "2", "model.group": "C4",
                         "model.dropout": "None", "data.on_the_fly": "False", "extra": "x"})
    assert flat == {"train.lr": 0.001, "model.fields": 2, "model.group": "C4",
                    "model.dropout": None, "data.on_the_fly": False}


def test_merge_train_val_keeps_test_apart():
    import torch

    from pipeline.data.bundle import DataBundle, Split

    def split(n, v):
        return Split(torch.full((n, 1, 4, 4), v), torch.zeros(n, dtype=torch.long),
                     torch.zeros(n, 0))

    b = DataBundle("binary", ("a", "b"), (1, 4, 4), split(3, 0.0), split(2, 1.0),
                   split(2, 2.0), None, {})
    m = merge_train_val(b)
    assert len(m.train.labels) == 5 and m.test is b.test and m.val is b.val


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

    tracker = T.Tracker(fs["uri"], fs["experiment"])
    finals = tracker.runs(kind="final")
    assert len(finals) == 2 and {r["status"] for r in finals} == {T.FINISHED}
    winner = next(r for r in finals if r["tags"].get("eqcvt.registered"))
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

    model, _, _ = T.load_registered(fs["uri"], "eqcvt-tiny/1")
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
    assert len(ft) == 1 and ft[0]["status"] == T.FINISHED
