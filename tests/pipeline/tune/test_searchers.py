"""SearchSpec -> Tune objects: schedulers, searchers and HyperOpt's nested spaces for every
shipped space; trial workers never load the driver's modules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray")

from pipeline import tune as ptune  # noqa: E402
from pipeline.config import RunConfig  # noqa: E402
from pipeline.search import flatten_sampled, load_search_space  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
SPACES = ROOT / "search_spaces"


@pytest.mark.parametrize("name", ["default", "asha_hyperopt", "pbt", "baselines"])
def test_build_search_for_shipped_spaces(name):
    spec = load_search_space(SPACES / f"{name}.yaml")
    space, searcher, scheduler = ptune.build_search(spec)
    kind = type(scheduler).__name__
    assert kind == {"asha": "QuorumASHAScheduler", "pbt": "PopulationBasedTraining",
                    "fifo": "FIFOScheduler"}[spec.scheduler]
    if spec.searcher == "hyperopt" or spec.has_conditionals:
        assert type(searcher).__name__ == "HyperOptSearch" and space == {}
    else:
        assert "train.epochs" in space


@pytest.mark.parametrize("name", ["default", "asha_hyperopt"])
def test_hyperopt_space_samples_valid_nested_configs(name):
    """Conditional choices become nested hp.choice; every draw flattens to a valid config
    whose fields respect the branch it came from."""
    from hyperopt.pyll import stochastic

    spec = load_search_space(SPACES / f"{name}.yaml")
    space = ptune.hyperopt_space(spec)
    rng = __import__("numpy").random.default_rng(0)
    groups = set()
    for _ in range(30):
        flat = flatten_sampled(stochastic.sample(space, rng=rng))
        cfg = RunConfig.from_flat(flat)
        assert cfg.train.epochs == spec.max_epochs
        groups.add(cfg.model.group)
    assert len(groups) >= 2


class _Trial:
    def __init__(self, trial_id: str) -> None:
        self.trial_id = trial_id


def _decisions(quorum: int, accuracies: list[float]) -> list[str]:
    """Ray's scheduler decision for trials reaching the first rung (epoch 1) in turn."""
    scheduler = ptune.QuorumASHAScheduler(max_t=9, grace_period=1, reduction_factor=3,
                                          first_rung_quorum=quorum)
    scheduler.set_search_properties("val_acc", "max")
    out = []
    for i, acc in enumerate(accuracies):
        trial = _Trial(f"t{i}")
        scheduler.on_trial_add(None, trial)
        out.append(scheduler.on_trial_result(
            None, trial, {"training_iteration": 1, "val_acc": acc}))
    return out


def test_first_rung_quorum_stops_the_first_trials_then_compares_with_them():
    """Ray's ASHA promotes the first trial at a rung unopposed, and the next one that beats
    it; with a quorum of 3 the first three stop, and the fourth is judged against them."""
    accuracies = [0.5, 0.6, 0.7, 0.9, 0.55]
    assert _decisions(0, accuracies) == ["CONTINUE", "CONTINUE", "CONTINUE", "CONTINUE",
                                         "STOP"]
    assert _decisions(3, accuracies) == ["STOP", "STOP", "STOP", "CONTINUE", "STOP"]
    assert _decisions(3, [0.9, 0.9, 0.9, 0.5])[-1] == "STOP"  # recorded while stopping


def test_first_rung_quorum_leaves_later_rungs_alone():
    """A trial promoted from the first rung goes on at the next one, where few arrive."""
    scheduler = ptune.QuorumASHAScheduler(max_t=9, grace_period=1, reduction_factor=3,
                                          first_rung_quorum=2)
    scheduler.set_search_properties("val_acc", "max")
    for i, acc in enumerate([0.5, 0.6, 0.9]):
        scheduler.on_trial_add(None, _Trial(f"t{i}"))
        scheduler.on_trial_result(None, _Trial(f"t{i}"), {"training_iteration": 1,
                                                         "val_acc": acc})
    assert scheduler.on_trial_result(None, _Trial("t2"), {"training_iteration": 3,
                                                          "val_acc": 0.91}) == "CONTINUE"


def test_spec_quorum_reaches_the_scheduler():
    spec = load_search_space(SPACES / "asha_hyperopt.yaml")
    _, _, scheduler = ptune.build_search(spec)
    assert spec.first_rung_quorum == 4
    assert [b.quorum for b in scheduler._brackets] == [4]


def test_pbt_mutations_only_optimiser_values():
    spec = load_search_space(SPACES / "pbt.yaml")
    _, _, scheduler = ptune.build_search(spec)
    assert set(scheduler._hyperparam_mutations) <= {"train.lr", "train.weight_decay",
                                                     "train.momentum"}


def test_trial_workers_do_not_load_mlflow():
    """A worker unpickles `pipeline.tune.trainable.train_trial`: no driver module, no mlflow."""
    code = ("import sys, pipeline.tune.trainable; "
            "assert 'mlflow' not in sys.modules and 'pipeline.tracking' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
