"""One study cell, real training: test metrics, cost figures, generalisation keys, regression."""

from __future__ import annotations

import json

from pipeline.study.cells import build_cells
from pipeline.study.spec import parse_study
from pipeline.study.trial import run_cell

STUDY = """
name: t
seeds: 1
budget: {epochs: 1}
train: {batch_size: 8, device: cpu}
models:
  - {label: e, model: {name: eqcvt_stem, fields: 2, kernel_size: 3, stem_blocks: 1,
                       embed_dim: 8, depth: 1, heads: 1, head_hidden: 8}}
datasets:
  - {label: a, data: {preset: model_ii, task: TASK, n_train: 16, n_val: 8, n_test: 8,
                      img_size: 24}, shifted: {randomize_orientation: false}}
  - {label: b, data: {preset: model_iii, task: TASK, n_train: 16, n_val: 8, n_test: 8,
                      img_size: 24}}
  - {label: c, data: {preset: model_iii, task: TASK, n_train: 16, n_val: 8, n_test: 8,
                      img_size: 16}}
"""


def test_classification_cell(tmp_path):
    cell = build_cells(parse_study(STUDY.replace("TASK", "binary"), "t.yaml"))[0]
    m = run_cell(cell, tmp_path)
    for key in ("val_acc", "test_acc", "test_auc_micro", "test_auc_no_sub", "num_params",
                "train_time_s", "images_per_s", "rotation_logit_std", "invariance_error"):
        assert key in m, key
    assert m["flops_per_image"] > m["num_params"]  # convolutions reuse weights across pixels
    assert "test_acc:b" in m and "test_acc:shifted" in m
    assert not any(k.endswith(":c") for k in m)  # 16 px: not compatible with a 24 px model
    roc = json.loads((tmp_path / "artifacts" / "roc.json").read_text())
    assert roc["fpr"][0] == 0.0 and roc["tpr"][-1] == 1.0 and 0.0 <= roc["auc"] <= 1.0
    cm = json.loads((tmp_path / "artifacts" / "confusion.json").read_text())
    assert sum(map(sum, cm["matrix"])) == 8 and cm["classes"] == ["no_sub", "sub"]
    assert (tmp_path / "artifacts" / "checkpoint" / "state.pt").is_file()


def test_regression_cell(tmp_path):
    cell = build_cells(parse_study(STUDY.replace("TASK", "regression"), "t.yaml"))[0]
    m = run_cell(cell, tmp_path)
    assert {"val_mse", "test_mse", "test_mae", "test_mae:b", "test_mse:shifted"} <= set(m)
    assert "test_acc" not in m and not (tmp_path / "artifacts" / "roc.json").exists()


def test_shard_folder_dataset_cell(tmp_path):
    """A dataset may be a shard folder (`eqcvt-data generate`), beside simulated ones."""
    from pipeline.data.cli import main as data_main

    shards = tmp_path / "ds"
    data_main(["generate", "--preset", "model_ii", "--task", "binary", "--n-per-class", "16",
               "--seed", "0", "--out", str(shards)])
    study = STUDY.replace("TASK", "binary").replace(
        "  - {label: c,", f"  - {{label: folder, data: {{source: shards, path: {shards}, "
        "img_size: 24}}\n  - {label: c,")
    cells = build_cells(parse_study(study, "t.yaml"))
    (cell,) = [c for c in cells if c["dataset"] == "folder"]
    m = run_cell(cell, tmp_path / "run")
    assert {"val_acc", "test_acc", "test_acc:a", "test_acc:b"} <= set(m)
