"""The searcher wrapper that checks each sampled configuration before it becomes a trial.

`suggest` asks the inner searcher (Optuna or HyperOpt) under a probe id, turns Optuna's
labels back into config keys, and counts the configuration's cost (pipeline/search/cost.py:
parameters and FLOPs of the model, built on the driver's CPU, never trained). A configuration
out of its `constraints` never starts a trial and never holds a GPU: it is told to the inner
searcher as a pruned trial (Optuna's TPE ranks it with the bad ones; HyperOpt: an error) and
the searcher is asked again, at most MAX_ATTEMPTS times per trial. A model that cannot be
built is rejected the same way (its trial would fail). Rejections are kept in `rejected` for
the search's MLflow run and the report.
"""

from __future__ import annotations

import math
import pickle
from typing import Any

from ray.tune.search import Searcher

from ..search import SearchSpec, flatten_sampled
from ..search.cost import CostMeter, violations
from ..search.optuna_space import BRANCH_MARK

MAX_ATTEMPTS = 200  # samples per trial before the search gives up on the constraints


class CheckedSearcher(Searcher):
    """Labels -> config keys (Optuna) and constraints checked before a trial starts."""

    def __init__(self, inner: Searcher, spec: SearchSpec, *, optuna: bool,
                 sampled: list[str], pinned: tuple[str, ...] = ()) -> None:
        super().__init__(metric=inner.metric, mode=inner.mode)
        self.inner, self.optuna, self.sampled = inner, optuna, list(sampled)
        self.constraints = dict(spec.constraints)
        self.meter = CostMeter(spec.source, pinned) if self.constraints else None
        self.alias: dict[str, str] = {}  # Tune trial id -> the inner searcher's probe id
        self.rejected: list[dict[str, Any]] = []
        self.exhausted = ""  # why the search stopped sampling (constraints never met)
        self._probes = 0

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict,
                              **spec: Any) -> bool:
        return self.inner.set_search_properties(metric, mode, config, **spec)

    def _config(self, raw: dict[str, Any]) -> dict[str, Any]:
        if self.optuna:  # branch labels duplicate their key's value: drop them
            return {k: v for k, v in raw.items() if BRANCH_MARK not in k}
        return raw

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        for _ in range(MAX_ATTEMPTS):
            self._probes += 1
            probe = f"{trial_id}~{self._probes}"
            raw = self.inner.suggest(probe)
            if raw is None or raw == Searcher.FINISHED:
                return raw
            config = self._config(raw)
            if self.meter is None:
                self.alias[trial_id] = probe
                return config
            flat = flatten_sampled(config)
            try:
                cost = self.meter.measure(flat)
            except Exception as err:  # noqa: BLE001 - the trial would fail the same way
                costs, out = {"num_params": math.nan, "flops": math.nan}, [
                    f"model build: {type(err).__name__}: {str(err)[:200]}"]
            else:
                costs, out = cost.as_dict(), sorted(violations(self.constraints, cost))
            if not out:
                self.alias[trial_id] = probe
                return config
            self.rejected.append({
                "params": {k: flat.get(k) for k in self.sampled if k in flat},
                **costs,
                "violated": out,
            })
            # infeasible: a pruned trial for Optuna (ranked bad), an error for HyperOpt
            self.inner.on_trial_complete(probe, result=None, error=not self.optuna)
        self.exhausted = (f"{MAX_ATTEMPTS} sampled configurations in a row broke the "
                          f"constraints {self.constraints}; no more trials started")
        return Searcher.FINISHED

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self.alias:
            self.inner.on_trial_result(self.alias[trial_id], result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        if trial_id in self.alias:
            self.inner.on_trial_complete(self.alias[trial_id], result=result, error=error)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))
