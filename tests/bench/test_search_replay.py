"""bench/search_replay.py: ASHA replayed over recorded learning curves with the project's own
searcher and Ray's scheduler."""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import pytest

from pipeline.search import parse_search_space, sample

from .test_benchmarks import _bench

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import search as bench_search  # noqa: E402
import search_replay as replay  # noqa: E402

TASK = {"epochs": 4, "n_train": 128, "n_val": 128, "img_size": 32,
        "preset": "model_ii_deeplense"}


def _spec(seed: int = 0):
    args = argparse.Namespace(searcher="hyperopt", trials=4, asha_trials=16, grace_period=1,
                              first_rung_quorum=0,
                              reduction_factor=3.0, n_initial=4, **TASK)
    return parse_search_space(bench_search.task_space("asha_hyperopt", seed, args))


def _curves(n: int) -> list[replay.Curve]:
    """Random configurations of the bench space: a learning rate below 1e-3 stays at
    chance, a higher one climbs, so ASHA has trials to stop."""
    spec, rng = _spec(), random.Random(0)
    curves = []
    for _ in range(n):
        config = sample(spec, rng)
        good = config["train.lr"] >= 1e-3
        curves.append(replay.Curve(config, tuple(0.5 + (0.1 * e if good else 0.0)
                                                 for e in range(1, TASK["epochs"] + 1))))
    return curves


def test_coordinates_scale_each_domain_to_the_unit_interval():
    position = replay.coordinates(_spec())
    pos = position({"train.lr": 1e-3, "train.batch_size": 16, "train.weight_decay": 0.3,
                    "model.group": "C4", "model.fields": 8, "model.embed_dim": 16})
    assert pos["train.lr"] == pytest.approx(0.5)  # log midpoint of [1e-5, 1e-1]
    assert pos["train.weight_decay"] == pytest.approx(1.0)
    assert pos["train.batch_size"] == 0.0  # rank among 16, 32, 64, 128
    assert pos["model.fields"] == 1.0  # the union of every group's field counts: 1, 2, 4, 8
    assert pos["model.embed_dim"] == 0.5
    assert pos["model.group"] == "C4"  # categorical
    assert replay.distance(pos, {**pos, "model.group": "C8"}) == 1.0


@pytest.mark.parametrize("oracle", ["forest", "nearest"])
def test_replayed_asha_stops_trials_and_reports_recorded_values(oracle):
    curves = _curves(24)
    recorded = sorted({v for c in curves for v in c.val_acc})
    setting = replay.Setting("hyperopt", grace_period=1, reduction_factor=3.0, n_initial=4)
    reports = replay.replay_asha(curves, setting, 7, task=TASK, asha_trials=16, workers=2,
                                 budget=10_000, oracle=oracle, neighbours=1)
    assert all(min(abs(r - v) for v in recorded) < 1e-9 for r in reports)
    assert len(reports) < 16 * TASK["epochs"]  # ASHA stopped trials before their last epoch
    assert max(reports) == pytest.approx(0.5 + 0.1 * TASK["epochs"])
    budget = 4 * TASK["epochs"]
    assert replay.fraction_to_reach([0.5, 0.7, 0.9], 0.7, budget) == 2 / budget
    assert replay.fraction_to_reach([0.5, 0.6], 0.7, budget) == float("inf")


def test_replay_grid_on_the_shipped_curves():
    out = _bench("search_replay.py", args=("--reduction-factor", "3,9", "--n-initial", "4",
                                           "--first-rung-quorum", "0,4"))
    shipped = json.loads(replay.DEFAULT_CURVES.read_text())
    assert out["curves"]["n"] == len(shipped["curves"]) >= 80
    assert out["curves"]["task"]["epochs"] == 9
    rows = out["results"]
    assert sorted((r["reduction_factor"], r["first_rung_quorum"]) for r in rows) == [
        (3.0, 0), (3.0, 4), (9.0, 0), (9.0, 4)]
    for r in rows:
        assert 0.0 <= r["share_at_most_half"] <= 1.0
        assert 0.0 <= r["p_median_of_5_at_most_half"] <= 1.0
        assert 0.0 <= r["share_never"] <= 1.0
    ps = [r["p_median_of_5_at_most_half"] for r in rows]
    assert ps == sorted(ps, reverse=True)


@pytest.mark.slow
def test_collect_records_curves_a_replay_can_use(ray_cluster, tmp_path):
    out = tmp_path / "curves.json"
    summary = _bench("search_replay.py", env=ray_cluster.env,
                     args=("--collect", "0,1", "--out", str(out)))
    doc = json.loads(out.read_text())
    assert summary["curves"] == len(doc["curves"]) == 4  # 2 searches x 2 full trials
    assert doc["task"]["epochs"] == 2
    for c in doc["curves"]:
        assert len(c["val_acc"]) == 2 and "train.lr" in c["config"]
    again = _bench("search_replay.py", args=("--curves", str(out), "--trials", "2"))
    assert again["curves"]["n"] == 4 and len(again["results"]) == 1


def test_reseed_retrains_the_best_recorded_configurations(tmp_path):
    spec, rng = _spec(), random.Random(1)
    configs = [{**sample(spec, rng), "train.epochs": 2, "train.lr": 3e-3} for _ in range(2)]
    doc = {"task": TASK, "seeds": [0], "recorded": "today", "curves": [
        {"config": configs[0], "val_acc": [0.5, 0.6]},
        {"config": configs[1], "val_acc": [0.5, 0.9]},  # the best recording
    ]}
    (tmp_path / "curves.json").write_text(json.dumps(doc))
    out = _bench("search_replay.py", args=("--curves", str(tmp_path / "curves.json"),
                                           "--reseed", "1", "--reseed-seeds", "2"))
    (row,) = out["configs"]
    assert row["config"] == configs[1] and row["recorded_best"] == 0.9
    assert row["n"] == 2 and len(row["reseeded_first_epoch"]) == 2
    assert all(0.0 <= v <= 1.0 for v in row["reseeded_best"])
    assert row["reseeded_mean"] == pytest.approx(sum(row["reseeded_best"]) / 2)
    assert row["recorded_minus_mean"] == pytest.approx(0.9 - row["reseeded_mean"])
    assert out["mean_recorded_minus_mean"] == pytest.approx(row["recorded_minus_mean"])
