"""A quick-sized study end to end: `eqcvt-search study` on the loopback Ray cluster with a real
MLflow store, then `eqcvt-search report --study` writes the same report from MLflow alone."""

from __future__ import annotations

import pytest

from pipeline import tracking
from pipeline.study.report import KIND_PARENT, KIND_STUDY

from ..conftest import cli_env, run_cli

TINY_STUDY = """
name: tiny
seeds: 2
budget: {epochs: 1}
train: {batch_size: 16, lr: 3.0e-3, device: cpu, num_threads: 1}
models:
  - label: eqcvt_tiny
    model: {name: eqcvt_stem, fields: 2, kernel_size: 3, stem_blocks: 1, embed_dim: 8,
            depth: 1, heads: 1, head_hidden: 8}
  - label: cvt_tiny
    model: {name: cvt_baseline, embed_dim: 8, depth: 1, heads: 1, head_hidden: 8}
datasets:
  - label: m2
    data: {preset: model_ii, task: multiclass, n_train: 48, n_val: 24, n_test: 24, img_size: 32}
    shifted: {randomize_orientation: false}
  - label: m3
    data: {preset: model_iii, task: multiclass, n_train: 48, n_val: 24, n_test: 24, img_size: 32}
new_class: {k: [2, 8], datasets: [m2]}
"""


@pytest.mark.slow
def test_study_end_to_end(ray_cluster, tmp_path):
    env = cli_env(ray_cluster, tmp_path)
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY_STUDY)
    proc = run_cli(["study", str(spec), "--storage-path", str(tmp_path / "results"),
                    "--cpus-per-trial", "1"], tmp_path, env)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    report = tmp_path / "study-tiny.md"
    text = report.read_text()

    tracker = tracking.Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "study-tiny")
    (parent,) = tracker.runs(kind=KIND_PARENT)
    children = tracker.runs(kind=KIND_STUDY)
    assert len(children) == 2 * 2 * 2 and parent["status"] == tracking.FINISHED
    assert {c["tags"][tracking.TAG_PARENT] for c in children} == {parent["run_id"]}
    assert {c["status"] for c in children} == {tracking.FINISHED}
    for c in children:
        m = c["metrics"]
        for key in ("val_acc", "test_acc", "test_auc_micro", "test_auc_macro", "test_auc_axion",
                    "num_params", "flops_per_image", "train_time_s", "images_per_s",
                    "invariance_error", "rotation_logit_std", "best_epoch"):
            assert key in m, key
        other = "m3" if c["tags"]["eqcvt.study.dataset"] == "m2" else "m2"
        assert f"test_acc:{other}" in m
        assert c["tags"]["eqcvt.device"] == "cpu"
        assert {"roc.json", "confusion.json", "checkpoint", "evaluation"} <= set(
            tracker.list_artifacts(c["run_id"]))
        if c["tags"]["eqcvt.study.dataset"] == "m2":
            assert "test_acc:shifted" in m and "new_class_acc_k8" in m
    for section in ("## Dataset `m2`", "## Dataset `m3`", "## Generalisation", "## New class",
                    "## Published reference numbers"):
        assert section in text
    assert "(n=2)" in text and (tmp_path / "study-tiny_plots" / "roc_m2.png").is_file()

    again = tmp_path / "again" / "study-tiny.md"
    proc = run_cli(["report", "--study", "tiny", "--out", str(again)], tmp_path, env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert again.read_text() == text
    assert (again.parent / "study-tiny_plots" / "pareto_m3.png").is_file()
