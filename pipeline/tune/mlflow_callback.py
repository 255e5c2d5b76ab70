"""Driver-side MLflow logging of every trial, as child runs of the search's parent run; all
MLflow calls go through pipeline/tracking.py."""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ray import tune

from .. import tracking
from ..live import LiveView, is_better
from ..search import SearchRequest, SearchSpec, trial_config
from .artifacts import EVAL_DIR, EVAL_FILE, LOGGED_METRICS
from .failures import error_summary, is_nonfinite

TRIAL_TAG_KEYS = ("node_id", "node_ip", "gpu_ids", "hostname")


def resolved_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's config as the full flat RunConfig dict (what MLflow shows as params)."""
    return trial_config(config).to_flat()


def _best_checkpoint(trial: Any) -> Any:
    """The trial's best checkpoint by the search metric (Tune's checkpoint manager)."""
    with contextlib.suppress(AttributeError):
        best = trial.run_metadata.checkpoint_manager.best_checkpoint_result
        if best is not None and best.checkpoint is not None:
            return best.checkpoint
    return trial.checkpoint


class TrackingCallback(tune.Callback):
    """Driver-side MLflow logging of every trial (child runs of the search's parent run).

    Pickled into Tune's tuner.pkl: only settings survive pickling, and `resume_search`
    replaces the restored copy with a fresh one.
    """

    def __init__(self, request: SearchRequest, spec: SearchSpec, parent: tracking.RunRef,
                 tracker: tracking.Tracker, view: LiveView | None = None) -> None:
        self.request, self.spec, self.parent, self.tracker = request, spec, parent, tracker
        self.view = view
        self.metric, self.mode = spec.metric, spec.mode
        self.pbt = spec.scheduler == "pbt"
        self.runs: dict[str, tracking.RunRef] = {}
        self.best: dict[str, float] = {}
        self.statuses: dict[str, str] = {}
        self.timings: dict[str, dict[str, float]] = {}
        self.results: list[tuple[float, str, int, float]] = []  # (time, trial, epoch, value)
        self._restored_from: dict[str, str] = {}
        self._expected = 0  # trials the search will create (num_samples x grid)
        self._seen_start = False
        self.incomplete = False  # the searcher had not created every trial yet
        self.inert = False

    def __getstate__(self) -> dict[str, Any]:
        return {"inert": True}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def setup(self, **info: Any) -> None:
        self._expected = int(info.get("total_num_samples") or 0)

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if self.inert or self._seen_start:
            return
        self._seen_start = True
        for t in trials:  # finished in an earlier session (resume): they stay finished
            if t.status in ("TERMINATED", "ERROR"):
                self.statuses[t.trial_id] = t.status
        self._recover_artifacts(trials)

    def _recover_artifacts(self, trials: list) -> None:
        """Trials that finished before the last driver died, but whose artefacts (plots,
        equivariance metrics, best checkpoint) never reached their run: upload them now."""
        finished = {t.trial_id: t for t in trials if t.status == "TERMINATED"}
        if not finished or not self.tracker.flush(timeout=30.0):
            return
        for run in self.tracker.runs(kind="trial", extra=f"tags.`{tracking.TAG_SEARCH_ID}` = "
                                                         f"'{self.request.search_id}'"):
            trial = finished.get(run["tags"].get(tracking.TAG_TRIAL_ID, ""))
            if (trial is not None and run["tags"].get(tracking.TAG_ARTIFACTS) != "done"
                    and _best_checkpoint(trial) is not None):
                self._log_artifacts(trial)

    # -- runs
    def _run(self, trial: Any) -> tracking.RunRef:
        tid = trial.trial_id
        if tid not in self.runs:
            self.runs[tid] = self.tracker.start_run(
                f"trial_{tid}",
                kind="trial",
                parent=self.parent,
                tags={
                    tracking.TAG_TRIAL_ID: tid,
                    tracking.TAG_EXPERIMENT: self.request.experiment,
                    tracking.TAG_SEARCH_ID: self.request.search_id,
                },
                params={**resolved_config(trial.config), "tune.trial_id": tid},
                find=(f"tags.`{tracking.TAG_TRIAL_ID}` = '{tid}' and "
                      f"tags.`{tracking.TAG_SEARCH_ID}` = '{self.request.search_id}'"),
            )
            self.best.setdefault(tid, math.nan)
        return self.runs[tid]

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self.inert:
            return
        self._run(trial)
        self.timings.setdefault(trial.trial_id, {})["start"] = time.time()
        self.statuses[trial.trial_id] = "RUNNING"

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        if self.inert:
            return
        tid = trial.trial_id
        ref = self._run(trial)
        epoch = int(result.get("epoch", result.get("training_iteration", 0)))
        value = float(result.get(self.metric, math.nan))
        self.results.append((time.time(), tid, epoch, value))
        if is_better(value, self.best.get(tid, math.nan), self.mode):
            self.best[tid] = value
        metrics = {k: v for k, v in result.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)
                   and k not in ("trial_start_time", "timestamp", "pid", "done")}
        if not math.isnan(self.best.get(tid, math.nan)):
            metrics[f"best_{self.metric}"] = self.best[tid]
        if self.pbt:  # mutated values change over a trial's life: metrics, not params
            for key in self.spec.hyperparam_mutations:
                if key in trial.config:
                    metrics[f"pbt/{key}"] = float(trial.config[key])
        # epochs re-run after a PBT exploit of a donor behind, or a retry: logged once
        self.tracker.log_metrics(ref, metrics, step=epoch)
        timing = self.timings.setdefault(tid, {})
        if "first_result" not in timing:
            timing.update(first_result=time.time(),
                          first_epoch_s=float(result.get("epoch_time_s", 0.0)),
                          setup_s=float(result.get("setup_s", 0.0)))
            self.tracker.set_tags(ref, {f"ray.{k}": result.get(k, "") for k in TRIAL_TAG_KEYS})
        donor = str(result.get("restored_from_trial", ""))
        if donor and donor != tid and self._restored_from.get(tid) != donor:
            self._restored_from[tid] = donor
            self.tracker.set_tags(ref, {
                "pbt.last_exploit": f"{donor}@{int(result.get('restored_from_epoch', 0))}",
            })
            if self.view is not None:
                self.view.event(f"trial {tid} exploited {donor} (epoch "
                                f"{int(result.get('restored_from_epoch', 0))})")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self.inert:
            return
        if is_nonfinite(trial):
            # The retry resumes the last checkpoint and meets the same NaN: no more retries.
            trial.max_failures = 0
        self.tracker.set_tags(self._run(trial), {
            "tune.retries": str(trial.run_metadata.num_failures),
            "tune.last_failure": error_summary(trial),
        })

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self.inert:
            return
        ref = self._run(trial)
        msg = error_summary(trial)
        self.tracker.set_tags(ref, {"eqcvt.error": msg})
        self.tracker.end_run(ref, tracking.FAILED)
        self.statuses[trial.trial_id] = "ERROR"
        if self.view is not None:
            self.view.event(f"[red]trial {trial.trial_id} errored[/]: {msg}")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any
                          ) -> None:
        if self.inert:
            return
        self.statuses[trial.trial_id] = "TERMINATED"
        self._log_artifacts(trial)

    def _log_artifacts(self, trial: Any) -> None:
        """Log the files the trial computed into its best checkpoint (pipeline/tune/
        artifacts.py): the evaluation folder and the checkpoint itself."""
        ckpt = _best_checkpoint(trial)
        ref = self._run(trial)
        if ckpt is None:
            self.tracker.end_run(ref, tracking.FINISHED)
            return
        tmp = Path(tempfile.mkdtemp(prefix="eqcvt-art-"))
        try:
            best = tmp / "best_checkpoint"
            ckpt.to_directory(str(best))
            if (best / EVAL_DIR / EVAL_FILE).is_file():
                ev = Path(shutil.move(str(best / EVAL_DIR), str(tmp / EVAL_DIR)))
                self.tracker.log_artifacts(ref, ev, "evaluation")
                out = json.loads((ev / EVAL_FILE).read_text())
                keep = {k: float(v) for k, v in out.items() if k in LOGGED_METRICS}
                self.tracker.log_metrics(ref, keep, step=0, skip_logged=False)
            else:
                self.tracker.set_tags(ref, {"eqcvt.artifacts_error":
                                            "the best checkpoint holds no evaluation"})
            self.tracker.log_artifacts(ref, best, "best_checkpoint")
            self.tracker.set_tags(ref, {tracking.TAG_ARTIFACTS: "done"})
        except Exception as err:  # noqa: BLE001 - artefacts must not fail the search
            self.tracker.set_tags(ref, {"eqcvt.artifacts_error": str(err)[:500]})
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.tracker.end_run(ref, tracking.FINISHED)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if self.inert:
            return
        self.tracker.flush()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self.inert:
            return
        if not self._seen_start:  # restored a search whose trials had all finished
            self._recover_artifacts(trials)
        # Tune marks every trial TERMINATED when it stops on Ctrl-C; only the completions
        # and errors this callback saw (or an earlier session finished) are real.
        for trial in trials:
            status = self.statuses.get(trial.trial_id)
            if not self._seen_start and trial.status in ("TERMINATED", "ERROR"):
                # restored an already finished search: no step ran, statuses are real
                status = self.statuses[trial.trial_id] = trial.status
            if status not in ("TERMINATED", "ERROR"):
                status = self.statuses[trial.trial_id] = "INTERRUPTED"
            ref = self.runs.get(trial.trial_id)
            if ref is None or ref.ended:
                continue
            self.tracker.end_run(ref, {"TERMINATED": tracking.FINISHED, "ERROR": tracking.FAILED}.get(
                status, tracking.KILLED))
        self.incomplete = bool(self._expected and len(trials) < self._expected)
