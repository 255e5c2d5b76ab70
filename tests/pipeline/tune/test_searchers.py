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
    assert kind == {"asha": "AsyncHyperBandScheduler", "pbt": "PopulationBasedTraining",
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
