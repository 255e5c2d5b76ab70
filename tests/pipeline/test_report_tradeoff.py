"""The report's trade-off sections on a real MLflow store of known trials: Pareto fronts with
their hypervolume, importance of the value that drives the metric, rejected configurations;
`final --pareto`'s selection and `run --warm-start`'s trials from the same store."""

from __future__ import annotations

import math
import random

import pytest
import yaml

from pipeline import tracking as T
from pipeline.experiments import select_search
from pipeline.pareto import front_2d, search_pareto_set
from pipeline.report import write_report
from pipeline.search import SearchRequest

SPACE = """
name: known
searcher: optuna
objectives: [{metric: val_acc, mode: max}, {metric: num_params, mode: min}]
constraints: {num_params: {max: 20000}}
params:
  model.embed_dim: {choice: [8, 16, 32]}
  train.lr: {loguniform: [1.0e-4, 1.0e-1]}
"""
REJECTED = [{"params": {"model.embed_dim": 64, "train.lr": 0.01}, "num_params": 50000.0,
             "flops": 3.0e6, "violated": ["num_params"]}]


@pytest.fixture()
def store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = T.Tracker(uri, "known")
    request = SearchRequest(space_file="known.yaml", space_text=SPACE, experiment="known",
                            storage_path=str(tmp_path), tracking_uri=uri)
    parent = tracker.start_run("known", kind="search", tags={T.TAG_EXPERIMENT: "known"},
                               params={"search.metric": "val_acc", "search.mode": "max",
                                       "search.objectives":
                                           '[["val_acc", "max"], ["num_params", "min"]]'})
    (tmp_path / "request.json").write_text(request.to_json())
    tracker.log_artifacts(parent, tmp_path / "request.json")
    tracker.log_dict(parent, REJECTED, "rejected_configs.json")
    rng = random.Random(0)
    points = []
    for i in range(12):
        embed, lr = rng.choice([8, 16, 32]), math.exp(rng.uniform(math.log(1e-4),
                                                                 math.log(1e-1)))
        acc = 0.9 - 0.1 * abs(math.log10(lr) + 2.5) + 0.002 * (embed // 8)  # lr matters
        params = 1000.0 * embed
        points.append((params, acc))
        ref = tracker.start_run(f"trial_t{i}", kind="trial", parent=parent,
                                tags={T.TAG_TRIAL_ID: f"t{i}", T.TAG_EXPERIMENT: "known"},
                                params={"model.embed_dim": embed, "train.lr": lr})
        tracker.log_metrics(ref, {"best_val_acc": acc, "val_acc": acc, "num_params": params,
                                  "flops": 40.0 * params}, step=1, skip_logged=False)
        tracker.end_run(ref, T.FINISHED)
    tracker.end_run(parent, T.FINISHED)
    assert tracker.flush(timeout=10)
    return uri, tmp_path, points


def test_report_shows_fronts_importance_and_rejections(store):
    uri, tmp, points = store
    out = write_report("known", tracking_uri=uri, out=tmp / "r.md")
    text = out.read_text()
    front = front_2d([p for p, _ in points], [a for _, a in points], "max")
    assert "## Pareto fronts" in text
    assert (f"{len(front.indices)} of 12 trials on the front; hypervolume "
            f"{front.hypervolume:.4g}") in text
    assert "reference point (parameters = " in text
    best = max(range(len(points)), key=lambda i: points[i][1])
    assert f"| t{best} | {int(points[best][0])} |" in text  # front rows name their trial
    imp = text.split("## Parameter importance (fANOVA, val_acc)")[1].split("![")[0]
    rows = [line for line in imp.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[1].startswith("| train.lr |"), imp  # the first row after the header
    assert "1 sampled configurations broke a constraint" in text
    assert "| num_params | 50000 |" in text
    for png in ("pareto_num_params.png", "pareto_flops.png", "importance.png", "parallel.png"):
        assert (tmp / "r_plots" / png).is_file()


def test_final_pareto_selects_the_front(store):
    uri, _, points = store
    chosen = search_pareto_set(select_search("known", uri))
    front = front_2d([p for p, _ in points], [a for _, a in points], "max")
    assert sorted(r["tags"][T.TAG_TRIAL_ID] for r in chosen) == sorted(
        f"t{i}" for i in front.indices)
    accs = [r["metrics"]["best_val_acc"] for r in chosen]
    assert accs == sorted(accs, reverse=True)


def test_warm_start_reads_the_finished_trials_that_fit(store):
    """`run --warm-start`: the store's trials as completed Optuna trials with both objective
    values; those that break this search's constraint (32000 parameters) are skipped."""
    from pipeline.search import parse_search_space
    from pipeline.warm_start import warm_trials

    uri, _, points = store
    spec = parse_search_space({"max_epochs": 1, **yaml.safe_load(SPACE)}, "k.yaml")
    start = warm_trials("known", spec, uri)
    fits = [(p, a) for p, a in points if p <= 20000]
    assert start.search == "known" and len(start.trials) == len(fits)
    assert start.skipped == len(points) - len(fits) > 0
    assert sorted(tuple(t.values) for t in start.trials) == sorted((a, p) for p, a in fits)
    assert all(set(t.params) == {"model.embed_dim", "train.lr"} for t in start.trials)
    hyper = spec.replace(searcher="hyperopt", objectives=(), constraints={})
    with pytest.raises(ValueError, match="needs searcher optuna"):
        warm_trials("known", hyper, uri)
