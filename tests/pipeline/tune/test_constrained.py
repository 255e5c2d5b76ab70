"""The searchers a spec builds, used directly (no cluster): Optuna with several objectives,
and constraints that reject configurations before they become trials."""

from __future__ import annotations

import pytest

pytest.importorskip("ray")

from ray.tune.search import Searcher  # noqa: E402
from ray.tune.search.optuna import OptunaSearch  # noqa: E402

from pipeline.search import parse_search_space  # noqa: E402
from pipeline.search.cost import CostMeter  # noqa: E402
from pipeline.tune.constrained import CheckedSearcher  # noqa: E402
from pipeline.tune.searchers import build_search  # noqa: E402

DOC = {
    "name": "mo", "scheduler": "asha", "searcher": "optuna", "num_samples": 8, "max_epochs": 3,
    "seed": 0, "n_initial_points": 2,
    "objectives": [{"metric": "val_acc", "mode": "max"}, {"metric": "num_params", "mode": "min"}],
    "params": {
        "data.source": "simulate", "data.task": "binary", "data.img_size": 32,
        "model.name": "eqcvt_stem",
        "model.group": {"choice": [
            {"value": "C4", "params": {"model.fields": {"choice": [1, 2]}}},
            {"value": "C8", "params": {"model.fields": {"choice": [1, 3]}}}]},
        "model.embed_dim": {"choice": [8, 16, 32]}, "model.depth": 1, "model.heads": 1,
        "model.head_hidden": 8, "model.kernel_size": 3, "model.stem_blocks": 1,
        "train.lr": {"loguniform": [1e-3, 1e-2]},
    },
}


def _run(searcher: Searcher, n: int) -> list[dict]:
    configs = []
    for i in range(n):
        c = searcher.suggest(f"t{i}")
        assert c not in (None, Searcher.FINISHED)
        configs.append(c)
        searcher.on_trial_complete(f"t{i}", {"val_acc": 0.5 + i / 100, "num_params": 1e3 + i})
    return configs


def test_optuna_searcher_sees_every_objective_and_gives_config_keys():
    spec = parse_search_space(DOC, "mo.yaml")
    space, searcher, _ = build_search(spec)
    assert space == {} and isinstance(searcher.inner, OptunaSearch)
    assert searcher.inner.metric == ["val_acc", "num_params"]
    assert searcher.inner.mode == ["max", "min"]
    configs = _run(searcher, 4)
    for c in configs:  # flat config keys, the branch's key included, no Optuna labels
        assert "@" not in "".join(c) and c["model.fields"] in ((1, 2) if c["model.group"] ==
                                                               "C4" else (1, 3))
        assert c["train.epochs"] == 3
    study = searcher.inner._ot_study
    assert [t.values for t in study.trials] == [[0.5 + i / 100, 1e3 + i] for i in range(4)]


def test_constraints_reject_before_a_trial_and_tell_the_searcher():
    doc = {**DOC, "constraints": {"num_params": {"max": 10000}, "flops": {"max": 7.0e5}}}
    spec = parse_search_space(doc, "mo.yaml")
    _, searcher, _ = build_search(spec)
    assert isinstance(searcher, CheckedSearcher)
    configs = _run(searcher, 6)
    meter = CostMeter()
    for c in configs:  # every suggested config is feasible
        cost = meter.measure(c)
        assert cost.num_params <= 10000 and cost.flops <= 7.0e5
    assert searcher.rejected, "the space has infeasible configurations: some were sampled"
    for r in searcher.rejected:
        assert r["violated"] and (r["num_params"] > 10000 or r["flops"] > 7.0e5)
        assert set(r["params"]) >= {"model.group", "model.embed_dim", "train.lr"}
    states = [t.state.name for t in searcher.inner._ot_study.trials]
    assert states.count("PRUNED") == len(searcher.rejected)  # told as infeasible
    assert states.count("COMPLETE") == 6


def test_hyperopt_and_random_resample_under_constraints():
    base = {k: v for k, v in DOC.items() if k not in ("objectives", "n_initial_points")}
    for searcher_name in ("hyperopt", "random"):
        doc = {**base, "searcher": searcher_name, "metric": "val_acc", "mode": "max",
               "constraints": {"num_params": {"max": 10000}}}
        _, searcher, _ = build_search(parse_search_space(doc, "x.yaml"))
        meter = CostMeter()
        for c in _run(searcher, 5):
            from pipeline.search import flatten_sampled

            assert meter.measure(flatten_sampled(c)).num_params <= 10000


def test_impossible_constraints_finish_the_search(monkeypatch):
    import pipeline.tune.constrained as constrained

    monkeypatch.setattr(constrained, "MAX_ATTEMPTS", 5)
    doc = {**DOC, "constraints": {"num_params": {"max": 10}}}
    _, searcher, _ = build_search(parse_search_space(doc, "mo.yaml"))
    assert searcher.suggest("t0") == Searcher.FINISHED
    assert len(searcher.rejected) == 5 and "constraints" in searcher.exhausted


def test_warm_trials_start_the_study_and_need_optuna():
    import optuna

    from pipeline.search.optuna_space import labelled

    spec = parse_search_space(DOC, "mo.yaml")
    flat = {"model.group": "C8", "model.fields": 3, "model.embed_dim": 16, "train.lr": 2e-3}
    params, dists = labelled(spec.trial_params(), flat)
    warm = [optuna.trial.create_trial(params=params, distributions=dists, values=[0.9, 5e3])]
    _, searcher, _ = build_search(spec, warm=warm)
    study = searcher.inner._ot_study
    assert len(study.trials) == 1 and study.trials[0].values == [0.9, 5e3]
    _run(searcher, 1)
    assert len(study.trials) == 2
    hyper = {**{k: v for k, v in DOC.items() if k != "objectives"}, "searcher": "hyperopt",
             "metric": "val_acc", "mode": "max"}
    with pytest.raises(ValueError, match="warm starts need searcher optuna"):
        build_search(parse_search_space(hyper, "x.yaml"), warm=warm)


def test_saved_searcher_state_restores_study_and_rejections(tmp_path):
    """Tune saves the searcher with the experiment; a resumed search continues its study
    and keeps the rejections made before the interruption."""
    doc = {**DOC, "constraints": {"num_params": {"max": 4000}}}
    spec = parse_search_space(doc, "mo.yaml")
    _, searcher, _ = build_search(spec)
    _run(searcher, 2)
    searcher.save(str(tmp_path / "searcher.pkl"))
    _, fresh, _ = build_search(spec)
    fresh.restore(str(tmp_path / "searcher.pkl"))
    assert fresh.rejected == searcher.rejected and fresh.rejected
    n = len(fresh.inner._ot_study.trials)
    assert n == len(searcher.inner._ot_study.trials)
    config = fresh.suggest("t9")
    assert config["model.embed_dim"] == 8 and len(fresh.inner._ot_study.trials) > n


def test_a_model_that_cannot_be_built_is_rejected_not_raised(monkeypatch):
    from pipeline.search import cost as cost_module

    real = cost_module.config_cost

    def picky(cfg, bundle):
        if cfg.model.embed_dim == 16:
            raise RuntimeError("no 16 today")
        return real(cfg, bundle)

    monkeypatch.setattr(cost_module, "config_cost", picky)
    doc = {**DOC, "constraints": {"num_params": {"max": 1e9}}}
    _, searcher, _ = build_search(parse_search_space(doc, "mo.yaml"))
    assert all(c["model.embed_dim"] != 16 for c in _run(searcher, 6))
    assert searcher.rejected, "embed_dim 16 was never sampled"
    for r in searcher.rejected:
        assert r["params"]["model.embed_dim"] == 16
        assert r["violated"] == ["model build: RuntimeError: no 16 today"]
