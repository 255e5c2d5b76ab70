"""The Tune callback that feeds the rich live table (pipeline/live.py)."""

from __future__ import annotations

import math
import time
from typing import Any

from ray import tune

from ..live import LiveView, is_better
from ..search import flatten_sampled
from .failures import error_summary


class LiveCallback(tune.Callback):
    """Feeds the rich live table: state, epoch, metric, best so far, sampled values."""

    def __init__(self, view: LiveView, keys: list[str]) -> None:
        self.view, self.keys = view, keys
        self._last = 0.0
        self.inert = False

    def __getstate__(self) -> dict[str, Any]:
        return {"inert": True}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def _sync(self, trial: Any) -> Any:
        row = self.view.row(trial.trial_id)
        row.state = trial.status
        if not row.params:
            flat = flatten_sampled(trial.config)
            row.params = {k: flat.get(k, "") for k in self.keys}
        return row

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if not self.inert:
            self._sync(trial).state = "RUNNING"

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        if self.inert:
            return
        row = self._sync(trial)
        row.state = "RUNNING"
        row.epoch = int(result.get("epoch", 0))
        row.value = float(result.get(self.view.metric, math.nan))
        if is_better(row.value, row.best, self.view.mode):
            row.best, row.best_epoch = row.value, row.epoch
        row.node = str(result.get("node_id", ""))[:8]
        row.take_cost(result)  # parameter count (and FLOPs once measured) for the leaderboard
        donor = str(result.get("restored_from_trial", ""))
        if donor and donor != trial.trial_id:
            row.note = f"from {donor}@{int(result.get('restored_from_epoch', 0))}"
        flat = flatten_sampled(trial.config)
        for k in self.keys:  # PBT mutates values
            row.params[k] = flat.get(k, row.params.get(k, ""))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any
                          ) -> None:
        if self.inert:
            return
        row = self._sync(trial)
        row.state = "TERMINATED"
        self.view.event(f"trial {trial.trial_id} finished: epoch {row.epoch}, "
                        f"best {self.view.metric} {row.best:.4g}")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self.inert:
            return
        row = self._sync(trial)
        row.state = "ERROR"
        row.error = error_summary(trial)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if self.inert:
            return
        now = time.monotonic()
        if now - self._last >= 0.5:
            self._last = now
            for t in trials:
                self._sync(t)
            self.view.refresh()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self.inert:
            return
        for t in trials:
            self._sync(t)
        self.view.stop()
