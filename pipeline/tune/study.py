"""Ray side of `eqcvt-search study`: every (model, dataset, seed) cell is one Tune trial of a
grid (no scheduler, no early stopping); the driver logs one MLflow parent run per study and one
child run per trial (tag eqcvt.kind=study). Ray stays inside pipeline/tune/."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray import tune

from .. import tracking
from ..study.cells import build_cells
from ..study.report import KIND_PARENT as KIND_STUDY_PARENT
from ..study.report import KIND_STUDY, TAG_DATASET, TAG_MODEL, TAG_SEED, TAG_STUDY
from ..study.spec import StudySpec
from .driver import connect


@dataclass
class StudyOutcome:
    experiment: str
    parent_run_id: str
    statuses: dict[str, str] = field(default_factory=dict)  # "model|dataset|seed" -> status
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.statuses) and all(s == tracking.FINISHED for s in self.statuses.values())


def cell_key(cell: dict[str, Any]) -> str:
    return f"{cell['model']}|{cell['dataset']}|{cell['seed']}"


def study_trial(config: dict[str, Any], cells: Sequence[dict[str, Any]] = (),
                threads: int = 1) -> None:
    """One cell, on whatever node Tune placed it; reports once, with its artefacts."""
    import logging

    import torch

    from ..study.trial import run_cell

    for name in ("ray.train", "ray.tune"):  # "Checkpoint successfully created"
        logging.getLogger(name).setLevel(logging.WARNING)
    cell = cells[int(config["cell"])]
    if not cell["config"].get("train.num_threads"):
        torch.set_num_threads(max(1, threads))
    work = Path(tempfile.mkdtemp(prefix="eqcvt-study-"))
    try:
        metrics = run_cell(cell, work)
        metrics["device_cuda"] = float(torch.cuda.is_available()
                                       and cell["config"]["train.device"] != "cpu")
        tune.report({**metrics, "device": _device_name(cell["config"]["train.device"])},
                    checkpoint=tune.Checkpoint.from_directory(str(work / "artifacts")))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _device_name(name: str) -> str:
    import torch

    from ..study.protocol import device_of

    dev = device_of(name)
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"


class _Progress(tune.Callback):
    """One line per finished or failed trial: the study's progress on the console."""

    def __init__(self, cells: Sequence[dict[str, Any]], say: Any) -> None:
        self.cells, self.say, self.done = cells, say, 0

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles its callbacks; a console can't be
        return {"cells": self.cells, "done": self.done}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, say=print)

    def _key(self, trial: Any) -> str:
        return cell_key(self.cells[int(trial.config["cell"])])

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        self.done += 1
        shown = ", ".join(f"{k} {result[k]:.4g}" for k in ("val_acc", "test_acc", "val_mse",
                                                           "test_mse") if k in result)
        self.say(f"[{self.done}/{len(self.cells)}] {self._key(trial)}: {shown}")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.say(f"[red]trial {self._key(trial)} failed[/]")


def run_study(spec: StudySpec, *, experiment: str, tracking_uri: str | None,
              storage_path: str, address: str | None = None, cpus_per_trial: float = 1.0,
              gpus_per_trial: float = 0.0, max_failures: int = 0, say: Any = print
              ) -> StudyOutcome:
    """Run every cell as a Tune trial and log it; the spec is already validated."""
    cells = build_cells(spec)
    tracker = tracking.Tracker(tracking_uri, experiment)
    parent = tracker.start_run(
        f"study-{spec.name}", kind=KIND_STUDY_PARENT,
        tags={TAG_STUDY: spec.name, tracking.TAG_GIT: tracking.git_commit(), "eqcvt.study.file": spec.path},
        params={"study.name": spec.name, "study.seeds": ",".join(map(str, spec.seeds)),
                "study.budget": json.dumps(spec.budget), "study.cells": len(cells),
                "study.models": ",".join(m.label for m in spec.models),
                "study.datasets": ",".join(d.label for d in spec.datasets),
                "resources.cpu": cpus_per_trial, "resources.gpu": gpus_per_trial},
    )
    tmp = Path(tempfile.mkdtemp(prefix="eqcvt-study-parent-"))
    (tmp / Path(spec.path).name).write_text(spec.text)
    tracker.log_artifacts(parent, tmp / Path(spec.path).name)
    outcome = StudyOutcome(experiment, parent.run_id)
    connect(address)
    trainable = tune.with_resources(
        tune.with_parameters(study_trial, cells=cells, threads=max(1, int(cpus_per_trial))),
        {"cpu": float(cpus_per_trial), "gpu": float(gpus_per_trial)},
    )
    name = f"study-{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    tuner = tune.Tuner(
        trainable,
        param_space={"cell": tune.grid_search(list(range(len(cells))))},
        tune_config=tune.TuneConfig(num_samples=1),
        run_config=tune.RunConfig(name=name, storage_path=storage_path, verbose=0,
                                  callbacks=[_Progress(cells, say)],
                                  failure_config=tune.FailureConfig(max_failures=max_failures)),
    )
    say(f"study {spec.name}: {len(cells)} trials ({len(spec.models)} models x "
        f"{len(spec.datasets)} datasets x {len(spec.seeds)} seeds) -> {storage_path}/{name}")
    grid = tuner.fit()
    for result in grid:
        cell = cells[int(result.config["cell"])]
        _log_child(tracker, parent, spec, cell, result, tmp, outcome)
    tracker.end_run(parent, tracking.FINISHED if outcome.ok else tracking.FAILED)
    shutil.rmtree(tmp, ignore_errors=True)
    return outcome


def _log_child(tracker: tracking.Tracker, parent: tracking.RunRef, spec: StudySpec, cell: dict[str, Any],
               result: Any, tmp: Path, outcome: StudyOutcome) -> None:
    key = cell_key(cell)
    ref = tracker.start_run(
        f"{cell['model']}@{cell['dataset']}#{cell['seed']}", kind=KIND_STUDY, parent=parent,
        tags={TAG_STUDY: spec.name, TAG_MODEL: cell["model"], TAG_DATASET: cell["dataset"],
              TAG_SEED: str(cell["seed"])},
        params=cell["config"],
    )
    if result.error is not None or not result.metrics:
        outcome.statuses[key], outcome.errors[key] = tracking.FAILED, str(result.error)[-2000:]
        tracker.set_tags(ref, {"eqcvt.error": str(result.error)[-4000:]})
        tracker.end_run(ref, tracking.FAILED)
        return
    metrics = {k: float(v) for k, v in result.metrics.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)
               and k not in ("training_iteration", "timestamp", "time_this_iter_s",
                             "time_total_s", "pid", "time_since_restore",
                             "iterations_since_restore", "done")}
    tracker.log_metrics(ref, metrics, step=0, skip_logged=False)
    tracker.set_tags(ref, {"eqcvt.device": str(result.metrics.get("device", ""))})
    if result.checkpoint is not None:
        dst = tmp / key.replace("|", "_")
        result.checkpoint.to_directory(str(dst))
        for p in sorted(dst.iterdir()):
            tracker.log_artifacts(ref, p, p.name if p.is_dir() else None)
    tracker.end_run(ref, tracking.FINISHED)
    outcome.statuses[key] = tracking.FINISHED
