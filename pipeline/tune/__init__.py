"""Ray Tune: with pipeline/cluster.py (the offline cluster check), the only `import ray`.

A search is a validated `SearchSpec` (pipeline/search/) turned into a Tuner:
  searchers.py       ASHA (with a first-rung quorum) + HyperOpt or Optuna (several
                     objectives), random search, FIFO, or PBT (optimiser values only)
  constrained.py     the searcher wrapper: constraints checked before a trial starts
  trainable.py       one trial = engine.fit, one `tune.report` per epoch with its checkpoint
  data.py            the data opened once by the driver, shared through the object store
  mlflow_callback.py every MLflow call of the driver, through pipeline/tracking.py
  live_callback.py   the rich live table
  failures.py        what a failed trial says
  driver.py          run_search / resume_search / connect / shutdown

Names are loaded on first use, so a trial worker that imports `pipeline.tune.trainable`
never loads the driver's modules (mlflow among them).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "driver": ("connect", "resume_search", "run_search", "shutdown", "sigterm_as_sigint",
               "trial_overheads", "when_ready"),
    "searchers": ("QuorumASHAScheduler", "build_search", "hyperopt_space", "sampled_keys"),
    "data": ("DriverData", "bundle_from_shared", "data_is_searched", "open_driver_data",
             "share_bundle"),
    "trainable": ("ORIGIN_FILE", "TrialOptions", "train_trial"),
    "mlflow_callback": ("TrackingCallback", "resolved_config"),
    "live_callback": ("LiveCallback",),
    "failures": ("NONFINITE_MARK", "error_summary", "is_nonfinite"),
}
_SEARCH = ("META_FILE", "SearchOutcome", "SearchRequest", "latest_experiment", "load_request")
_WHERE = {name: mod for mod, names in _EXPORTS.items() for name in names}

__all__ = sorted([*_WHERE, *_SEARCH])


def __getattr__(name: str) -> Any:
    if name in _SEARCH:
        return getattr(importlib.import_module("pipeline.search"), name)
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
