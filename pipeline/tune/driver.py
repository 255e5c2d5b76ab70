"""The driver of a search: connect to Ray, open the data once, start the search's MLflow run,
run (or restore) the Tuner with the MLflow and live-table callbacks, and sum up the outcome.

Ctrl-C and SIGTERM both end the search with its state saved; `resume_search` continues it
with `Tuner.restore`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ray
from ray import tune

from .. import tracking
from ..live import LiveView
from ..search import META_FILE, SearchOutcome, SearchRequest, SearchSpec, load_request
from ..search.cost import REJECTED_FILE
from ..search.storage import join, write_text
from .constrained import CheckedSearcher
from .data import DriverData, open_driver_data
from .failures import RepeatedFailureStop
from .live_callback import LiveCallback
from .mlflow_callback import TrackingCallback
from .searchers import build_search, sampled_keys
from .trainable import TrialOptions, train_trial, trial_dirname, trial_name


def connect(address: str | None) -> None:
    """Join the cluster at `address` (or RAY_ADDRESS), else start a local one."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # our rich table replaces Tune's output
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    kwargs: dict[str, Any] = {"log_to_driver": True, "logging_level": "WARNING"}
    if not address and not os.environ.get("RAY_ADDRESS"):
        kwargs["include_dashboard"] = False
    ray.init(address=address or None, **kwargs)


@contextlib.contextmanager
def sigterm_as_sigint() -> Iterator[None]:
    """Tune saves its state on SIGINT only: turn SIGTERM into SIGINT while a search runs."""

    def forward(signum: int, frame: Any) -> None:
        os.kill(os.getpid(), signal.SIGINT)

    try:
        old = signal.signal(signal.SIGTERM, forward)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)





def _trainable(spec: SearchSpec, request: SearchRequest, data: DriverData) -> Any:
    res = request.resources(spec)
    options = TrialOptions(pbt=spec.scheduler == "pbt", threads=max(1, int(res["cpu"])),
                           metric=spec.metric, mode=spec.mode)
    return tune.with_resources(
        tune.with_parameters(train_trial, data=data.trial_ref, options=options), res
    )


def _tuner_configs(spec: SearchSpec, request: SearchRequest,
                   callbacks: list[Any]) -> tuple[Any, Any]:
    stop = {"training_iteration": spec.max_epochs} if spec.scheduler == "pbt" else None
    run_config = tune.RunConfig(
        name=request.experiment,
        storage_path=request.storage_path,
        stop=stop,
        callbacks=callbacks,
        verbose=0,
        failure_config=tune.FailureConfig(max_failures=request.max_failures),
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=2,
            checkpoint_score_attribute=spec.metric,
            checkpoint_score_order=spec.mode,
        ),
    )
    return run_config, stop


def _start_tracking(request: SearchRequest, spec: SearchSpec, manifest: Any,
                    view: LiveView, resume: bool) -> tuple[tracking.Tracker, tracking.RunRef]:
    tracker = tracking.Tracker(request.tracking_uri, request.tracking_experiment, buffered=True,
                        log=lambda m: view.event(f"[yellow]{m}[/]"))
    if resume and request.parent_run_id:
        parent = tracker.continue_run(request.parent_run_id, name=request.experiment)
        return tracker, parent
    parent = tracker.start_run(
        request.experiment,
        kind="search",
        tags={
            tracking.TAG_EXPERIMENT: request.experiment,
            tracking.TAG_SEARCH_ID: request.search_id,
            tracking.TAG_GIT: tracking.git_commit(),
            "eqcvt.space_file": request.space_file,
            "eqcvt.experiment_path": request.experiment_path,
        },
        params={
            "search.name": spec.name, "search.scheduler": spec.scheduler,
            "search.searcher": str(spec.searcher), "search.metric": spec.metric,
            "search.mode": spec.mode, "search.num_samples": spec.num_samples,
            "search.max_epochs": spec.max_epochs,
            "search.objectives": json.dumps([[o.metric, o.mode] for o in spec.all_objectives]),
            "search.warm_start": request.warm_start or "",
            "search.constraints": json.dumps({k: [b.min, b.max]
                                              for k, b in spec.constraints.items()}),
            **{f"fixed.{k}": v for k, v in spec.fixed().items()},
            **{f"resources.{k}": v for k, v in request.resources(spec).items()},
        },
    )
    tmp = Path(tempfile.mkdtemp(prefix="eqcvt-parent-"))
    (tmp / Path(request.space_file).name).write_text(request.space_text)
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, default=str))
    (tmp / "request.json").write_text(request.to_json())
    for p in sorted(tmp.iterdir()):
        tracker.log_artifacts(parent, p)
    if not tracker.flush(timeout=30.0):
        raise tracking.TrackingUnavailable(f"could not create the search's run at {tracker.uri}")
    shutil.rmtree(tmp, ignore_errors=True)
    request.parent_run_id = parent.run_id
    return tracker, parent


def _log_rejections(tracker: tracking.Tracker, parent: tracking.RunRef, searcher: Any,
                    view: LiveView) -> str:
    """The configurations the constraints rejected before training, on the search's run
    (`rejected_configs.json`, read by the report); returns why sampling stopped, if it did."""
    if not isinstance(searcher, CheckedSearcher) or not searcher.constraints:
        return ""
    rejected = searcher.rejected
    tracker.log_dict(parent, rejected, REJECTED_FILE)
    tracker.log_metrics(parent, {"rejected_configs": float(len(rejected)),
                                 "cost_models_built": float(searcher.meter.models_built)},
                        step=0, skip_logged=False)
    if rejected:
        view.event(f"constraints rejected {len(rejected)} sampled configurations before "
                   "training")
    return searcher.exhausted


def _finish(request: SearchRequest, spec: SearchSpec, tracker: tracking.Tracker,
            parent: tracking.RunRef, cb: TrackingCallback, view: LiveView,
            guard: RepeatedFailureStop, searcher: Any = None) -> SearchOutcome:
    exhausted = _log_rejections(tracker, parent, searcher, view)
    if exhausted:
        tracker.set_tags(parent, {"eqcvt.constraints_exhausted": exhausted[:500]})
        view.event(f"[yellow]{exhausted}[/]")
    interrupted = not exhausted and (cb.incomplete or not cb.statuses or any(
        s not in ("TERMINATED", "ERROR") for s in cb.statuses.values()
    ))
    best_rows = [r for r in view.rows.values() if not math.isnan(r.best)]
    if best_rows:
        pick = max if spec.mode == "max" else min
        top = pick(best_rows, key=lambda r: r.best)
        tracker.log_metrics(parent, {f"best_{spec.metric}": top.best}, step=0,
                            skip_logged=False)
        tracker.set_tags(parent, {"eqcvt.best_trial": top.trial_id})
    if guard.message:
        tracker.set_tags(parent, {"eqcvt.stopped": guard.message[:500]})
    tracker.end_run(parent, tracking.KILLED if interrupted else tracking.FINISHED)
    timeout = float(os.environ.get("EQCVT_TRACKING_FLUSH_TIMEOUT", "60"))
    pending = 0
    if not tracker.flush(timeout=timeout):
        pending = tracker.pending
        where = request.experiment_path
        if "://" in where:
            where = str(Path(tempfile.gettempdir()) / "eqcvt_tracking_backlog" / request.experiment)
        path = tracker.write_backlog(Path(where) / "tracking_backlog.jsonl")
        view.event(f"[red]tracking server still unreachable: {pending} records not "
                   f"logged (listed in {path})[/]")
    tracker.close()
    return SearchOutcome(
        experiment_path=request.experiment_path,
        interrupted=interrupted,
        statuses=dict(cb.statuses),
        view=view,
        timings=dict(cb.timings),
        parent_run_id=parent.run_id,
        tracking_pending=pending,
        results=list(cb.results),
        tracking_uri=tracker.uri,
        stopped_on=guard.message,
    )


def run_search(request: SearchRequest, view: LiveView | None = None, *,
               spec: SearchSpec | None = None, warm: list[Any] | None = None
               ) -> SearchOutcome:
    """Start a new search (see module docstring); returns when done or interrupted.

    spec: `request.spec()` when the caller has already parsed it (the YAML is parsed once
    per command). The tracking server is checked here, once, before Ray starts.
    warm: Optuna trials of an earlier search (pipeline/warm_start.py) the searcher starts from.
    """
    warm = warm or []
    tracking.check_server(tracking.resolve_tracking_uri(request.tracking_uri))
    spec = spec if spec is not None else request.spec()
    connect(request.address)
    data = open_driver_data(spec)
    view = view or LiveView(spec.metric, spec.mode, title=request.experiment)
    tracker, parent = _start_tracking(request, spec, data.manifest, view, resume=False)
    write_text(join(request.experiment_path, META_FILE), request.to_json())
    cb = TrackingCallback(request, spec, parent, tracker, view)
    live = LiveCallback(view, sampled_keys(spec))
    guard = RepeatedFailureStop(request.max_repeated_failures)
    run_config, _ = _tuner_configs(spec, request, [cb, live, guard])
    space, searcher, scheduler = build_search(spec, warm=warm, pinned=list(request.fixed))
    with _ending_runs_on_error(cb, view):
        tuner = _new_tuner(spec, request, data, space, searcher, scheduler, run_config)
    _fit(tuner, cb, view)
    return _finish(request, spec, tracker, parent, cb, view, guard, searcher)


@contextlib.contextmanager
def _ending_runs_on_error(cb: TrackingCallback, view: LiveView) -> Iterator[None]:
    try:
        yield
    except BaseException as err:
        _abort(cb, view, err)
        raise


def _new_tuner(spec: SearchSpec, request: SearchRequest, data: DriverData, space: dict,
               searcher: Any, scheduler: Any, run_config: Any) -> Any:
    return tune.Tuner(
        _trainable(spec, request, data),
        param_space=space,
        tune_config=tune.TuneConfig(
            metric=spec.metric,
            mode=spec.mode,
            num_samples=spec.num_samples,
            search_alg=searcher,
            scheduler=scheduler,
            reuse_actors=True,
            trial_name_creator=trial_name,
            trial_dirname_creator=trial_dirname,
        ),
        run_config=run_config,
    )


def _fit(tuner: Any, cb: TrackingCallback, view: LiveView) -> None:
    """tuner.fit with SIGTERM handled like Ctrl-C (Tune then saves its state and returns)."""
    try:
        with sigterm_as_sigint():
            tuner.fit()
    except BaseException as err:
        _abort(cb, view, err)
        raise


def _abort(cb: TrackingCallback, view: LiveView, err: BaseException) -> None:
    """The driver stops abnormally: no run of this search may stay RUNNING."""
    view.stop()
    status = tracking.KILLED if isinstance(err, KeyboardInterrupt) else tracking.FAILED
    for ref in [*cb.runs.values(), cb.parent]:
        if not ref.ended:
            cb.tracker.end_run(ref, status)
    cb.tracker.flush(timeout=10.0)


def resume_search(experiment_path: str, *, address: str | None = None,
                  tracking_uri: str | None = None, view: LiveView | None = None
                  ) -> SearchOutcome:
    """Finish an interrupted search: unfinished and errored trials continue from their last
    checkpoints; their MLflow runs continue too (no second run per trial)."""
    request = load_request(experiment_path)
    if tracking_uri:
        request.tracking_uri = tracking_uri
    if address:
        request.address = address
    tracking.check_server(tracking.resolve_tracking_uri(request.tracking_uri))
    spec = request.spec()
    connect(request.address)
    data = open_driver_data(spec)
    view = view or LiveView(spec.metric, spec.mode, title=f"{request.experiment} (resumed)")
    tracker, parent = _start_tracking(request, spec, data.manifest, view, resume=True)
    cb = TrackingCallback(request, spec, parent, tracker, view)
    live = LiveCallback(view, sampled_keys(spec))
    guard = RepeatedFailureStop(request.max_repeated_failures)
    with _ending_runs_on_error(cb, view):
        tuner = tune.Tuner.restore(
            experiment_path,
            trainable=_trainable(spec, request, data),
            resume_unfinished=True,
            resume_errored=True,
        )
        # The restored RunConfig holds inert copies of our callbacks (they pickle to
        # settings only); swap in live ones bound to this driver's tracker and view.
        run_config = tuner._local_tuner.get_run_config()
        run_config.callbacks = [
            c for c in (run_config.callbacks or [])
            if not isinstance(c, (TrackingCallback, LiveCallback, RepeatedFailureStop))
        ] + [cb, live, guard]
    _fit(tuner, cb, view)
    _close_finished_runs(tracker, request, cb)
    # the restored searcher holds every session's rejections (its state is Tune's to restore)
    searcher = getattr(getattr(tuner._local_tuner, "_tune_config", None), "search_alg", None)
    return _finish(request, spec, tracker, parent, cb, view, guard, searcher)


def _close_finished_runs(tracker: tracking.Tracker, request: SearchRequest,
                         cb: TrackingCallback) -> None:
    """Runs a killed driver left RUNNING for trials that had finished: end them."""
    if not tracker.flush(timeout=30.0):
        return
    for run in tracker.runs(kind="trial", extra=f"tags.`{tracking.TAG_SEARCH_ID}` = "
                                                f"'{request.search_id}'"):
        tid = run["tags"].get(tracking.TAG_TRIAL_ID, "")
        if run["status"] != tracking.RUNNING or (tid in cb.runs and not cb.runs[tid].ended):
            continue
        status = cb.statuses.get(tid, "")
        final = {"TERMINATED": tracking.FINISHED, "ERROR": tracking.FAILED}.get(status, tracking.KILLED)
        tracker.end_run(tracking.RunRef(run_id=run["run_id"], name=run["name"]), final)


def shutdown() -> None:
    if ray.is_initialized():
        ray.shutdown()


def trial_overheads(outcome: SearchOutcome) -> list[float]:
    """Per trial: driver's trial start to first report, less the first epoch's own time."""
    out = []
    for t in outcome.timings.values():
        if "start" in t and "first_result" in t:
            out.append(max(0.0, t["first_result"] - t["start"] - t.get("first_epoch_s", 0.0)))
    return out


def when_ready(fn: Callable[[], bool], timeout: float, every: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return True
        time.sleep(every)
    return fn()
