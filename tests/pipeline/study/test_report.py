"""The study report from a real MLflow store alone: its sections, tables and plots."""

from __future__ import annotations

import json

from pipeline import tracking
from pipeline.study.figures import pareto_front
from pipeline.study.report import (
    KIND_PARENT,
    KIND_STUDY,
    TAG_DATASET,
    TAG_MODEL,
    TAG_SEED,
    TAG_STUDY,
    write_study_report,
)


def _store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tr = tracking.Tracker(uri, "study-s")
    parent = tr.start_run("study-s", kind=KIND_PARENT, tags={TAG_STUDY: "s"},
                          params={"study.seeds": "0,1", "study.cells": 4})
    roc = tmp_path / "roc.json"
    roc.write_text(json.dumps({"fpr": [0, 0.5, 1], "tpr": [0, 0.9, 1], "auc": 0.7}))
    for model, params, accs in (("small", 1000, (0.80, 0.84)), ("big", 9000, (0.78, 0.80))):
        for seed, acc in enumerate(accs):
            ref = tr.start_run(f"{model}#{seed}", kind=KIND_STUDY, parent=parent,
                               tags={TAG_STUDY: "s", TAG_MODEL: model, TAG_DATASET: "m2",
                                     TAG_SEED: str(seed)})
            tr.log_metrics(ref, {"test_acc": acc, "val_acc": acc, "num_params": params,
                                 "flops_per_image": 10 * params, "train_time_s": 2.0,
                                 "test_acc:m3": acc - 0.1, "test_acc:shifted": acc - 0.3,
                                 "new_class_acc_k4": 0.5, "new_class_acc_k16": 0.6,
                                 "rotation_logit_std": 0.1}, step=0, skip_logged=False)
            tr.log_artifacts(ref, roc)
            tr.end_run(ref)
    tr.end_run(parent)
    return uri


def test_report_sections_from_mlflow(tmp_path):
    uri = _store(tmp_path)
    out = write_study_report("s", tracking_uri=uri, out=tmp_path / "rep" / "study-s.md")
    text = out.read_text()
    for section in ("## Dataset `m2`", "## Generalisation", "## New class",
                    "## Published reference numbers (other data, other protocol)"):
        assert section in text
    assert "0.82 ± 0.028 (n=2)" in text  # small: mean of 0.80/0.84, sample std 0.0283
    assert "| small / m2 | 0.82 ± 0.028 (n=2) | 0.72 ± 0.028 (n=2) | 0.52 ± 0.028 (n=2) |" in text
    assert "test_acc 95% CI" in text and "[0.5659, 1.074]" in text  # 0.82 ± 12.71*0.02
    assert "| 1,000 | 10,000 |" in text  # parameters and FLOPs shown once, not as a spread
    assert "Pareto front (fewest parameters for the accuracy): `small`" in text
    assert "97.1%" in text and "98.1%" in text
    plots = tmp_path / "rep" / "study-s_plots"
    for name in ("roc_m2.png", "pareto_m2.png", "new_class.png"):
        assert (plots / name).stat().st_size > 1000
        assert f"study-s_plots/{name}" in text


def test_pareto_front():
    assert pareto_front([(1, 0.8), (2, 0.7), (3, 0.9), (3, 0.85)]) == [0, 2]
