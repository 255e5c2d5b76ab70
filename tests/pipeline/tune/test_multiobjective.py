"""A tiny multi-objective search end to end on the two-node cluster: Optuna sees both
objectives, constraints reject configurations before any trial starts, ASHA stops trials at
a rung below max_t, the report shows the trade-off, and a second search warm-starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("ray")

from pipeline import tracking  # noqa: E402

from ..conftest import TINY_DATA, cli_env, run_cli, sets  # noqa: E402

MAX_PARAMS, MAX_FLOPS = 4000, 7.0e5  # only model.embed_dim 8 fits (2754 parameters)

MO_YAML = f"""
name: mo
scheduler: asha
searcher: optuna
objectives:
  - {{metric: val_loss, mode: min}}       # continuous: ASHA's rung comparisons never tie
  - {{metric: num_params, mode: min}}
constraints:
  num_params: {{max: {MAX_PARAMS}}}
  flops: {{max: {MAX_FLOPS}}}
num_samples: 6
max_epochs: 3
grace_period: 1
reduction_factor: 3                      # one rung, at epoch 1: two of three trials stop
n_initial_points: 3
seed: 0
resources: {{cpus: 1, gpus: 0}}
params:
  data.source: simulate
  data.task: binary
  model.name: eqcvt_stem
  model.group:
    choice:
      - {{value: C4, params: {{model.fields: {{choice: [1, 2]}}}}}}
      - {{value: C8, params: {{model.fields: {{choice: [1]}}}}}}
  model.embed_dim: {{choice: [8, 16, 32]}}
  model.depth: 1
  model.heads: 1
  model.head_hidden: 8
  model.kernel_size: 3
  model.stem_blocks: 1
  train.batch_size: 32
  train.lr: {{loguniform: [1.0e-4, 1.0e-1]}}
"""


@pytest.mark.slow
def test_multi_objective_search_with_constraints_report_and_warm_start(ray_cluster, tmp_path):
    (tmp_path / "mo.yaml").write_text(MO_YAML)
    env = cli_env(ray_cluster, tmp_path)
    storage = str(tmp_path / "results")
    proc = run_cli(["run", "--space", "mo.yaml", "--experiment", "mo", "--storage-path",
                    storage, *sets(TINY_DATA)], tmp_path, env)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = tracking.Tracker(uri, "mo")
    (parent,) = tracker.runs(kind="search")
    assert json.loads(parent["params"]["search.objectives"]) == [["val_loss", "min"],
                                                                  ["num_params", "min"]]
    trials = tracker.runs(kind="trial")
    assert len(trials) == 6 and {r["status"] for r in trials} == {tracking.FINISHED}
    epochs = []
    for r in trials:
        steps = [s for s, _ in tracker.metric_history(r["run_id"], "val_loss")]
        epochs.append(len(steps))
        for cost, bound in (("num_params", MAX_PARAMS), ("flops", MAX_FLOPS)):
            history = tracker.metric_history(r["run_id"], cost)
            # reported every epoch (the end-of-trial evaluation adds num_params at step 0)
            assert [s for s, _ in history if s > 0] == steps
            assert len({v for _, v in history}) == 1 and 0 < history[0][1] <= bound
        assert r["params"]["model.embed_dim"] == "8"  # no trial of a rejected size ran
    assert min(epochs) < 3 == max(epochs), epochs  # ASHA stopped trials at its epoch-1 rung

    # the rejected configurations: on the search run, with their counted costs, none trained
    work = tmp_path / "dl"
    rejected = json.loads((Path(tracker.download(parent["run_id"], "rejected_configs.json",
                                                 work))).read_text())
    assert rejected and parent["metrics"]["rejected_configs"] == len(rejected)
    for r in rejected:
        assert r["params"]["model.embed_dim"] in (16, 32)
        assert r["num_params"] > MAX_PARAMS or r["flops"] > MAX_FLOPS
    assert "FLOPs" in proc.stdout  # the leaderboard's cost column

    out = tmp_path / "report.md"
    rep = run_cli(["report", "--experiment", "mo", "--out", str(out), "--tracking-uri", uri],
                  tmp_path, env)
    assert rep.returncode == 0, rep.stderr[-4000:]
    text = out.read_text()
    for section in ("## Pareto fronts", "hypervolume", "reference point",
                    "## Parameter importance (fANOVA, val_loss)",
                    "## Sampled values against the metric",
                    "## Rejected before training (constraints)"):
        assert section in text, section
    assert f"{len(rejected)} sampled configurations broke a constraint" in text
    for png in ("pareto_num_params.png", "pareto_flops.png", "importance.png", "parallel.png"):
        assert (tmp_path / "report_plots" / png).is_file(), png

    # final --pareto retrains exactly the Pareto set (val_loss against parameters)
    from pipeline.experiments import select_search
    from pipeline.pareto import search_pareto_set

    front = {r["tags"][tracking.TAG_TRIAL_ID] for r in search_pareto_set(select_search("mo", uri))}
    fin = run_cli(["final", "--experiment", "mo", "--pareto", "--epochs", "1", "--seeds", "1",
                   "--tracking-uri", uri], tmp_path, env)
    assert fin.returncode == 0, fin.stderr[-6000:]
    assert front and {m["trial_id"] for m in json.loads(fin.stdout)["models"]} == front

    warm = run_cli(["run", "--space", "mo.yaml", "--experiment", "mo2", "--storage-path",
                    storage, "--warm-start", "mo", "--num-samples", "2", "--epochs", "1",
                    *sets(TINY_DATA)], tmp_path, env)
    assert warm.returncode == 0, warm.stdout[-4000:] + warm.stderr[-8000:]
    assert "warm start: 6 finished trials of mo (0 outside" in warm.stderr
    (second,) = tracking.Tracker(uri, "mo2").runs(kind="search")
    assert second["params"]["search.warm_start"] == "mo"
