"""Ray Tune: the only `import ray` in the code base.

A search is a validated `SearchSpec` (pipeline/search_space.py) turned into a Tuner:
ASHA + HyperOpt (or random search, or FIFO) over architectures and optimiser values, or PBT
over optimiser values only. Every trial runs `engine.fit`, the one training loop, with a
callback that reports each epoch's metrics together with that epoch's checkpoint; a trial that
Tune restores (resume, retry after a failure, PBT exploit) continues from
`tune.get_checkpoint()`. The data is opened once by the driver and put in the object store,
so every node holds one copy that all its trials read without copying.

The driver runs two Tune callbacks: `TrackingCallback` (every MLflow call, through
pipeline/tracking.py) and `LiveCallback` (the rich table). Ctrl-C and SIGTERM both end the
search with its state saved; `resume_search` continues it with `Tuner.restore`.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
import signal
import socket
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray
import yaml
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining
from ray.tune.search import BasicVariantGenerator
from ray.tune.search.hyperopt import HyperOptSearch

from .config import RunConfig
from .live import LiveView, is_better
from .procs import owner_token, remove_orphans
from .search_space import (
    Domain,
    SearchSpec,
    convert,
    flatten_sampled,
    parse_search_space,
    walk_params,
)

if TYPE_CHECKING:  # mlflow is imported by the driver only, never by trial workers
    from . import tracking as T

META_FILE = "eqcvt_search.json"  # in the Tune experiment folder: how to resume and track
ORIGIN_FILE = "origin.json"  # in every checkpoint: which trial wrote it, at which epoch
NONFINITE_MARK = "non-finite training loss"  # engine.NonFiniteLossError's message
TRIAL_TAG_KEYS = ("node_id", "node_ip", "gpu_ids", "hostname")
_STR_RESULT_KEYS = (*TRIAL_TAG_KEYS, "restored_from_trial")


# ----------------------------------------------------------------------------- the request


@dataclass
class SearchRequest:
    """Everything needed to run a search, and (saved as META_FILE) to resume it."""

    space_file: str
    space_text: str
    experiment: str
    storage_path: str
    tracking_uri: str
    fixed: dict[str, Any] = field(default_factory=dict)  # CLI pins: --simulate/--data/--set
    max_epochs: int | None = None
    num_samples: int | None = None
    cpus_per_trial: float | None = None
    gpus_per_trial: float | None = None
    max_failures: int = 3
    search_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    parent_run_id: str | None = None
    address: str | None = None
    mlflow_experiment: str | None = None  # None: the Tune name (requests saved before it)

    @property
    def experiment_path(self) -> str:
        return _join(self.storage_path, self.experiment)

    @property
    def tracking_experiment(self) -> str:
        """The MLflow experiment; the search is a parent run named `experiment` in it."""
        return self.mlflow_experiment or self.experiment

    def spec(self) -> SearchSpec:
        """The YAML with the CLI's pins and budget applied, validated again."""
        spec = parse_search_space(yaml.safe_load(self.space_text), source=self.space_file)
        if self.fixed:
            spec = spec.with_fixed(self.fixed)
        changes: dict[str, Any] = {}
        if self.max_epochs is not None:
            changes.update(
                max_epochs=self.max_epochs,
                grace_period=min(spec.grace_period, self.max_epochs),
                perturbation_interval=min(spec.perturbation_interval, self.max_epochs),
            )
        if self.num_samples is not None:
            changes["num_samples"] = self.num_samples
        return spec.replace(**changes) if changes else spec

    def resources(self, spec: SearchSpec) -> dict[str, float]:
        cpus = spec.resources.cpus if self.cpus_per_trial is None else self.cpus_per_trial
        gpus = spec.resources.gpus if self.gpus_per_trial is None else self.gpus_per_trial
        return {"cpu": float(cpus), "gpu": float(gpus)}

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1, default=str)

    @classmethod
    def from_json(cls, text: str) -> SearchRequest:
        data = json.loads(text)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class SearchOutcome:
    experiment_path: str
    interrupted: bool
    statuses: dict[str, str]  # trial id -> TERMINATED | ERROR | ...
    view: LiveView
    timings: dict[str, dict[str, float]]  # trial id -> driver start, first result, epoch time
    parent_run_id: str | None
    tracking_pending: int = 0  # records the tracking server never accepted
    results: list[tuple[float, str, int, float]] = field(default_factory=list)
    tracking_uri: str = ""

    @property
    def ok(self) -> bool:
        return not self.interrupted and self.tracking_pending == 0


class _LazyTracking:
    """`pipeline.tracking` on first use: the driver loads mlflow, trial workers never do."""

    def __getattr__(self, name: str) -> Any:
        from . import tracking

        return getattr(tracking, name)


if not TYPE_CHECKING:
    T = _LazyTracking()


# ----------------------------------------------------------------------------- storage helpers


def _join(base: str, name: str) -> str:
    return f"{base.rstrip('/')}/{name}" if "://" in base else str(Path(base) / name)


def _fs(path: str) -> tuple[Any, str]:
    import pyarrow.fs as pafs

    if "://" in path:
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), str(Path(path).resolve())


def write_text(path: str, text: str) -> None:
    fs, p = _fs(path)
    fs.create_dir(p.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(p) as f:
        f.write(text.encode())


def read_text(path: str) -> str:
    fs, p = _fs(path)
    with fs.open_input_stream(p) as f:
        return f.read().decode()


def load_request(experiment_path: str) -> SearchRequest:
    try:
        return SearchRequest.from_json(read_text(_join(experiment_path, META_FILE)))
    except (FileNotFoundError, OSError) as err:
        raise FileNotFoundError(
            f"{experiment_path} is not an eqcvt-search experiment (no {META_FILE}): {err}"
        ) from None


def latest_experiment(storage_path: str) -> str:
    """The most recently started search under a local storage folder."""
    metas = sorted(Path(storage_path).glob(f"*/{META_FILE}"), key=lambda p: p.stat().st_mtime)
    if not metas:
        raise FileNotFoundError(f"no eqcvt-search experiment under {storage_path}")
    return str(metas[-1].parent)


# ----------------------------------------------------------------------------- data once per node


def share_bundle(bundle: Any) -> dict[str, Any]:
    """The DataBundle as numpy arrays: `ray.put` once, read zero-copy by every trial."""

    def arrays(split: Any) -> dict[str, Any] | None:
        if split is None:
            return None
        return {
            "images": split.images.detach().cpu().contiguous().numpy(),
            "labels": split.labels.detach().cpu().numpy(),
            "targets": split.targets.detach().cpu().numpy(),
        }

    return {
        "task": bundle.task,
        "classes": tuple(bundle.classes),
        "image_shape": tuple(bundle.image_shape),
        "manifest": bundle.manifest,
        "train": arrays(bundle.train),
        "val": arrays(bundle.val),
    }


def bundle_from_shared(shared: Mapping[str, Any]) -> Any:
    """A DataBundle whose tensors view the object store's read-only memory (no copy)."""
    import torch

    from .data.bundle import DataBundle, Split

    def split(d: Mapping[str, Any] | None) -> Any:
        if d is None:
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # read-only arrays: we never write
            return Split(*(torch.from_numpy(d[k]) for k in ("images", "labels", "targets")))

    val = split(shared["val"])
    return DataBundle(
        task=shared["task"],
        classes=tuple(shared["classes"]),
        image_shape=tuple(shared["image_shape"]),
        train=split(shared["train"]),
        val=val,
        test=type(val)(val.images[:0], val.labels[:0], val.targets[:0]),
        stream=None,
        manifest=dict(shared["manifest"]),
    )


def data_is_searched(spec: SearchSpec) -> bool:
    """Trials open their own data when a data.* key is sampled (no single shared copy)."""
    return any(k.startswith("data.") and (isinstance(p, Domain) or k not in spec.params)
               for k, p in walk_params(spec.params))


# ----------------------------------------------------------------------------- the trainable


@dataclass(frozen=True)
class TrialOptions:
    pbt: bool = False
    threads: int = 1


class _TuneReporter:
    """engine.fit callback: one `tune.report` per epoch, with that epoch's checkpoint."""

    def __init__(self, trial_id: str, info: dict[str, Any]) -> None:
        self.trial_id = trial_id
        self.info = info

    def on_epoch_end(self, epoch: int, metrics: dict[str, float], checkpoint_dir: Path) -> None:
        (Path(checkpoint_dir) / ORIGIN_FILE).write_text(
            json.dumps({"trial_id": self.trial_id, "epoch": epoch})
        )
        result = {**metrics, **self.info}
        tune.report(result, checkpoint=tune.Checkpoint.from_directory(str(checkpoint_dir)))


def train_trial(config: dict[str, Any], data: Any = None,
                options: TrialOptions = TrialOptions()) -> None:
    """One trial: flat (or HyperOpt-nested) config -> RunConfig -> engine.fit."""
    import torch

    from .engine import fit

    t_start = time.time()
    for name in ("ray.train", "ray.tune"):  # "Checkpoint successfully created" per epoch
        logging.getLogger(name).setLevel(logging.WARNING)
    cfg = RunConfig.from_flat(flatten_sampled(config))
    if cfg.train.num_threads == 0:
        torch.set_num_threads(max(1, options.threads))
    ctx = tune.get_context()
    trial_id = ctx.get_trial_id()
    info: dict[str, Any] = {
        "node_id": ray.get_runtime_context().get_node_id(),
        "node_ip": ray.util.get_node_ip_address(),
        "hostname": socket.gethostname(),
        "gpu_ids": ",".join(str(g) for g in ray.get_gpu_ids()),
        "trial_start_time": t_start,
        "restored_from_trial": "",
        "restored_from_epoch": 0.0,
        "data_from_object_store": float(data is not None),
    }
    bundle = bundle_from_shared(data) if data is not None else None
    resume_dir = None
    _sweep_stale_workdirs()
    work = Path(tempfile.mkdtemp(prefix=f"{_WORK_PREFIX}{owner_token()}-{trial_id}-"))
    atexit.register(shutil.rmtree, work, True)  # Tune stops trials mid-fit (ASHA, PBT)
    try:
        ckpt = tune.get_checkpoint()
        if ckpt is not None:
            resume_dir = work / "restored"
            ckpt.to_directory(str(resume_dir))
            origin = resume_dir / ORIGIN_FILE
            if origin.is_file():
                o = json.loads(origin.read_text())
                info.update(restored_from_trial=str(o["trial_id"]),
                            restored_from_epoch=float(o["epoch"]))
        info["setup_s"] = time.time() - t_start
        fit(
            cfg,
            [_TuneReporter(trial_id, info)],
            data=bundle,
            resume_from=resume_dir,
            run_until_stopped=options.pbt,
            checkpoint_root=work / "ckpt",
            keep_checkpoints=1,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


_WORK_PREFIX = "eqcvt-trial-"


def _sweep_stale_workdirs() -> None:
    """Remove local work folders of trials whose process is gone (killed by Tune)."""
    remove_orphans(Path(tempfile.gettempdir()).glob(f"{_WORK_PREFIX}*"),
                   lambda d: d.name[len(_WORK_PREFIX):])


def trial_name(trial: Any) -> str:
    return str(trial.trial_id)


def trial_dirname(trial: Any) -> str:
    return f"trial_{trial.trial_id}"


# ----------------------------------------------------------------------------- search spaces


class _TuneBackend:
    """`search_space.convert` backend for Tune's own domains (random search, PBT)."""

    def choice(self, label: str, options: list[Any]) -> Any:
        return tune.choice(options)

    def uniform(self, label: str, low: float, high: float) -> Any:
        return tune.uniform(low, high)

    def loguniform(self, label: str, low: float, high: float) -> Any:
        return tune.loguniform(low, high)

    def randint(self, label: str, low: int, high: int) -> Any:
        return tune.randint(low, high)

    def quniform(self, label: str, low: float, high: float, q: float) -> Any:
        return tune.quniform(low, high, q)

    def grid(self, label: str, values: list[Any]) -> Any:
        return tune.grid_search(values)


class _HyperoptBackend:
    """Backend for hyperopt's `hp`: conditional choices become nested hp.choice."""

    def __init__(self) -> None:
        from hyperopt import hp

        self.hp = hp

    def choice(self, label: str, options: list[Any]) -> Any:
        return self.hp.choice(label, options)

    def uniform(self, label: str, low: float, high: float) -> Any:
        return self.hp.uniform(label, low, high)

    def loguniform(self, label: str, low: float, high: float) -> Any:
        return self.hp.loguniform(label, math.log(low), math.log(high))

    def randint(self, label: str, low: int, high: int) -> Any:
        return self.hp.randint(label, low, high)  # high exclusive, like Ray

    def quniform(self, label: str, low: float, high: float, q: float) -> Any:
        return self.hp.quniform(label, low, high, q)

    def grid(self, label: str, values: list[Any]) -> Any:
        raise ValueError(f"{label}: grid needs searcher random (validated earlier)")


def hyperopt_space(spec: SearchSpec) -> dict[str, Any]:
    return convert(spec.trial_params(), _HyperoptBackend())


def build_search(spec: SearchSpec) -> tuple[dict[str, Any], Any, Any]:
    """(param_space, search_alg, scheduler) for a spec."""
    if spec.scheduler == "pbt":
        space = convert(spec.trial_params(), _TuneBackend())
        mutations = convert(spec.hyperparam_mutations, _TuneBackend())
        for key, dom in mutations.items():
            space.setdefault(key, dom)
        scheduler = PopulationBasedTraining(
            time_attr="training_iteration",
            perturbation_interval=spec.perturbation_interval,
            hyperparam_mutations=mutations,
            quantile_fraction=spec.quantile_fraction,
            resample_probability=spec.resample_probability,
        )
        return space, BasicVariantGenerator(random_state=spec.seed), scheduler
    if spec.scheduler == "asha":
        scheduler = ASHAScheduler(
            time_attr="training_iteration",
            max_t=spec.max_epochs,
            grace_period=spec.grace_period,
            reduction_factor=spec.reduction_factor,
        )
    else:
        scheduler = FIFOScheduler()
    if spec.searcher == "hyperopt" or spec.has_conditionals:
        n_initial = spec.n_initial_points
        if spec.searcher == "random":  # nested domains: hyperopt with only random draws
            n_initial = spec.num_samples
        elif n_initial is None:
            n_initial = max(2, spec.num_samples // 4)
        searcher = HyperOptSearch(
            space=hyperopt_space(spec), metric=spec.metric, mode=spec.mode,
            n_initial_points=n_initial, random_state_seed=spec.seed,
        )
        return {}, searcher, scheduler
    space = convert(spec.trial_params(), _TuneBackend())
    return space, BasicVariantGenerator(random_state=spec.seed), scheduler


def resolved_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's config as the full flat RunConfig dict (what MLflow shows as params)."""
    return RunConfig.from_flat(flatten_sampled(config)).to_flat()


def sampled_keys(spec: SearchSpec) -> list[str]:
    """Keys that differ between trials (the columns worth showing)."""
    keys = [k for k, p in walk_params(spec.params) if isinstance(p, Domain)]
    keys += list(spec.hyperparam_mutations)
    return list(dict.fromkeys(keys))


# ----------------------------------------------------------------------------- driver callbacks


def _trial_artifacts(checkpoint: Any, data: Any, data_cfg: dict[str, Any] | None,
                     max_images: int = 2048) -> dict[str, Any]:
    """Ray task: evaluate a trial's best checkpoint on val -> PNG bytes + metrics."""
    import torch

    from .evaluation import evaluate_checkpoint

    torch.set_num_threads(1)
    if data is not None:
        bundle = bundle_from_shared(data)
    else:
        from .config import DataConfig
        from .data.bundle import open_data

        bundle = open_data(DataConfig(**data_cfg), device="cpu")
    val = bundle.val
    if len(val.labels) > max_images:
        val = type(val)(val.images[:max_images], val.labels[:max_images],
                        val.targets[:max_images])
    with tempfile.TemporaryDirectory(prefix="eqcvt-art-") as tmp:
        ckpt_dir = Path(tmp) / "ckpt"
        checkpoint.to_directory(str(ckpt_dir))
        out = Path(tmp) / "out"
        metrics = evaluate_checkpoint(ckpt_dir, val, bundle.task, bundle.classes, out)
        files = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    return {"metrics": metrics, "files": files}


def _best_checkpoint(trial: Any) -> Any:
    """The trial's best checkpoint by the search metric (Tune's checkpoint manager)."""
    with contextlib.suppress(AttributeError):
        best = trial.run_metadata.checkpoint_manager.best_checkpoint_result
        if best is not None and best.checkpoint is not None:
            return best.checkpoint
    return trial.checkpoint


def _is_nonfinite(trial: Any) -> bool:
    with contextlib.suppress(OSError, TypeError, AttributeError):
        return NONFINITE_MARK in Path(trial.error_file).read_text()
    return False


def _error_summary(trial: Any) -> str:
    with contextlib.suppress(OSError, TypeError, AttributeError):
        text = Path(trial.error_file).read_text()
        for line in reversed(text.strip().splitlines()):
            if "Error" in line and ":" in line:
                return line.strip()[:500]
    return "trial errored"


class TrackingCallback(tune.Callback):
    """Driver-side MLflow logging of every trial (child runs of the search's parent run).

    Pickled into Tune's tuner.pkl: only settings survive pickling, and `resume_search`
    replaces the restored copy with a fresh one.
    """

    def __init__(self, request: SearchRequest, spec: SearchSpec, parent: T.RunRef,
                 tracker: T.Tracker, eval_ref: Any, view: LiveView | None = None) -> None:
        self.request, self.spec, self.parent, self.tracker = request, spec, parent, tracker
        self.eval_ref = eval_ref
        self.view = view
        self.metric, self.mode = spec.metric, spec.mode
        self.pbt = spec.scheduler == "pbt"
        self.runs: dict[str, T.RunRef] = {}
        self.best: dict[str, float] = {}
        self.jobs: dict[str, tuple[Any, Any, Any]] = {}  # trial id -> (ref, trial, ckpt)
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
        for run in self.tracker.runs(kind="trial", extra=f"tags.`{T.TAG_SEARCH_ID}` = "
                                                         f"'{self.request.search_id}'"):
            trial = finished.get(run["tags"].get(T.TAG_TRIAL_ID, ""))
            if (trial is not None and run["tags"].get(T.TAG_ARTIFACTS) != "done"
                    and _best_checkpoint(trial) is not None):
                self._submit_artifacts(trial)

    # -- runs
    def _run(self, trial: Any) -> T.RunRef:
        tid = trial.trial_id
        if tid not in self.runs:
            self.runs[tid] = self.tracker.start_run(
                f"trial_{tid}",
                kind="trial",
                parent=self.parent,
                tags={
                    T.TAG_TRIAL_ID: tid,
                    T.TAG_EXPERIMENT: self.request.experiment,
                    T.TAG_SEARCH_ID: self.request.search_id,
                },
                params={**resolved_config(trial.config), "tune.trial_id": tid},
                find=(f"tags.`{T.TAG_TRIAL_ID}` = '{tid}' and "
                      f"tags.`{T.TAG_SEARCH_ID}` = '{self.request.search_id}'"),
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
        self.tracker.log_metrics(ref, metrics, step=epoch, skip_logged=not self.pbt)
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
        if _is_nonfinite(trial):
            # The retry resumes the last checkpoint and meets the same NaN: no more retries.
            trial.max_failures = 0
        self.tracker.set_tags(self._run(trial), {
            "tune.retries": str(trial.run_metadata.num_failures),
            "tune.last_failure": _error_summary(trial),
        })

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self.inert:
            return
        ref = self._run(trial)
        msg = _error_summary(trial)
        self.tracker.set_tags(ref, {"eqcvt.error": msg})
        self.tracker.end_run(ref, T.FAILED)
        self.statuses[trial.trial_id] = "ERROR"
        if self.view is not None:
            self.view.event(f"[red]trial {trial.trial_id} errored[/]: {msg}")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any
                          ) -> None:
        if self.inert:
            return
        self.statuses[trial.trial_id] = "TERMINATED"
        self._submit_artifacts(trial)

    def _submit_artifacts(self, trial: Any) -> None:
        ckpt = _best_checkpoint(trial)
        ref = self._run(trial)
        if ckpt is None:
            self.tracker.end_run(ref, T.FINISHED)
            return
        task = ray.remote(_trial_artifacts).options(num_cpus=0, max_retries=0)
        data_cfg = None
        if self.eval_ref is None:  # the trial's own data (sampled data.* keys)
            data_cfg = dataclasses.asdict(RunConfig.from_flat(flatten_sampled(trial.config)).data)
        job = task.remote(ckpt, self.eval_ref, data_cfg)
        self.jobs[trial.trial_id] = (job, trial, ckpt)

    def _collect(self, timeout: float = 0.0) -> None:
        if not self.jobs:
            return
        refs = [j[0] for j in self.jobs.values()]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout)
        for tid, (job, trial, ckpt) in list(self.jobs.items()):
            if job not in ready:
                continue
            del self.jobs[tid]
            self._log_artifacts(trial, job, ckpt)

    def _log_artifacts(self, trial: Any, job: Any, ckpt: Any) -> None:
        ref = self._run(trial)
        tmp = Path(tempfile.mkdtemp(prefix="eqcvt-art-"))
        try:
            try:
                out = ray.get(job)
            except Exception as err:  # noqa: BLE001 - artefacts must not fail the search
                self.tracker.set_tags(ref, {"eqcvt.artifacts_error": str(err)[:500]})
            else:
                ev = tmp / "evaluation"
                ev.mkdir()
                for name, blob in out["files"].items():
                    (ev / name).write_bytes(blob)
                self.tracker.log_artifacts(ref, ev, "evaluation")
                keep = {k: v for k, v in out["metrics"].items()
                        if k in ("invariance_error", "rotation_logit_std", "num_params")}
                self.tracker.log_metrics(ref, keep, step=0, skip_logged=False)
            best = tmp / "best_checkpoint"
            ckpt.to_directory(str(best))
            self.tracker.log_artifacts(ref, best, "best_checkpoint")
            self.tracker.set_tags(ref, {T.TAG_ARTIFACTS: "done"})
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.tracker.end_run(ref, T.FINISHED)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if self.inert:
            return
        self._collect()
        self.tracker.flush()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self.inert:
            return
        if not self._seen_start:  # restored a search whose trials had all finished
            self._recover_artifacts(trials)
        deadline = time.monotonic() + 600
        while self.jobs and time.monotonic() < deadline:
            self._collect(timeout=5.0)
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
            self.tracker.end_run(ref, {"TERMINATED": T.FINISHED, "ERROR": T.FAILED}.get(
                status, T.KILLED))
        self.incomplete = bool(self._expected and len(trials) < self._expected)


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
        row.error = _error_summary(trial)

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


# ----------------------------------------------------------------------------- run / resume


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


@dataclass
class DriverData:
    """What the driver puts in the object store once per search."""

    trial_ref: Any  # the bundle trials read (None: trials open/stream their own data)
    eval_ref: Any  # the val split the end-of-trial evaluation reads (None: it opens data)
    manifest: dict[str, Any]


def _open_driver_data(spec: SearchSpec) -> DriverData:
    from .data.bundle import open_data

    cfg = RunConfig.from_flat(spec.fixed())
    if data_is_searched(spec):
        return DriverData(None, None, {"note": "data.* keys are sampled; each trial opens "
                                               "its own data"})
    bundle = open_data(cfg.data, device="cpu")
    if cfg.data.on_the_fly:  # trials stream batches on their device; val shared for evals
        import dataclasses as dc

        return DriverData(None, ray.put(share_bundle(dc.replace(bundle, train=None))),
                          bundle.manifest)
    ref = ray.put(share_bundle(bundle))
    return DriverData(ref, ref, bundle.manifest)


def _trainable(spec: SearchSpec, request: SearchRequest, data: DriverData) -> Any:
    res = request.resources(spec)
    options = TrialOptions(pbt=spec.scheduler == "pbt", threads=max(1, int(res["cpu"])))
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
                    view: LiveView, resume: bool) -> tuple[T.Tracker, T.RunRef]:
    tracker = T.Tracker(request.tracking_uri, request.tracking_experiment, buffered=True,
                        log=lambda m: view.event(f"[yellow]{m}[/]"))
    if resume and request.parent_run_id:
        parent = tracker.continue_run(request.parent_run_id, name=request.experiment)
        return tracker, parent
    parent = tracker.start_run(
        request.experiment,
        kind="search",
        tags={
            T.TAG_EXPERIMENT: request.experiment,
            T.TAG_SEARCH_ID: request.search_id,
            T.TAG_GIT: T.git_commit(),
            "eqcvt.space_file": request.space_file,
            "eqcvt.experiment_path": request.experiment_path,
        },
        params={
            "search.name": spec.name, "search.scheduler": spec.scheduler,
            "search.searcher": str(spec.searcher), "search.metric": spec.metric,
            "search.mode": spec.mode, "search.num_samples": spec.num_samples,
            "search.max_epochs": spec.max_epochs,
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
        raise T.TrackingUnavailable(f"could not create the search's run at {tracker.uri}")
    shutil.rmtree(tmp, ignore_errors=True)
    request.parent_run_id = parent.run_id
    return tracker, parent


def _finish(request: SearchRequest, spec: SearchSpec, tracker: T.Tracker, parent: T.RunRef,
            cb: TrackingCallback, view: LiveView) -> SearchOutcome:
    interrupted = cb.incomplete or not cb.statuses or any(
        s not in ("TERMINATED", "ERROR") for s in cb.statuses.values()
    )
    best_rows = [r for r in view.rows.values() if not math.isnan(r.best)]
    if best_rows:
        pick = max if spec.mode == "max" else min
        top = pick(best_rows, key=lambda r: r.best)
        tracker.log_metrics(parent, {f"best_{spec.metric}": top.best}, step=0,
                            skip_logged=False)
        tracker.set_tags(parent, {"eqcvt.best_trial": top.trial_id})
    tracker.end_run(parent, T.KILLED if interrupted else T.FINISHED)
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
    )


def run_search(request: SearchRequest, view: LiveView | None = None) -> SearchOutcome:
    """Start a new search (see module docstring); returns when done or interrupted."""
    T.check_server(T.resolve_tracking_uri(request.tracking_uri))
    spec = request.spec()
    connect(request.address)
    data = _open_driver_data(spec)
    view = view or LiveView(spec.metric, spec.mode, title=request.experiment)
    tracker, parent = _start_tracking(request, spec, data.manifest, view, resume=False)
    write_text(_join(request.experiment_path, META_FILE), request.to_json())
    cb = TrackingCallback(request, spec, parent, tracker, data.eval_ref, view)
    live = LiveCallback(view, sampled_keys(spec))
    run_config, _ = _tuner_configs(spec, request, [cb, live])
    space, searcher, scheduler = build_search(spec)
    with _ending_runs_on_error(cb, view):
        tuner = _new_tuner(spec, request, data, space, searcher, scheduler, run_config)
    _fit(tuner, cb, view)
    return _finish(request, spec, tracker, parent, cb, view)


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
    status = T.KILLED if isinstance(err, KeyboardInterrupt) else T.FAILED
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
    T.check_server(T.resolve_tracking_uri(request.tracking_uri))
    spec = request.spec()
    connect(request.address)
    data = _open_driver_data(spec)
    view = view or LiveView(spec.metric, spec.mode, title=f"{request.experiment} (resumed)")
    tracker, parent = _start_tracking(request, spec, data.manifest, view, resume=True)
    cb = TrackingCallback(request, spec, parent, tracker, data.eval_ref, view)
    live = LiveCallback(view, sampled_keys(spec))
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
            if not isinstance(c, (TrackingCallback, LiveCallback))
        ] + [cb, live]
    _fit(tuner, cb, view)
    _close_finished_runs(tracker, request, cb)
    return _finish(request, spec, tracker, parent, cb, view)


def _close_finished_runs(tracker: T.Tracker, request: SearchRequest,
                         cb: TrackingCallback) -> None:
    """Runs a killed driver left RUNNING for trials that had finished: end them."""
    if not tracker.flush(timeout=30.0):
        return
    for run in tracker.runs(kind="trial", extra=f"tags.`{T.TAG_SEARCH_ID}` = "
                                                f"'{request.search_id}'"):
        tid = run["tags"].get(T.TAG_TRIAL_ID, "")
        if run["status"] != T.RUNNING or (tid in cb.runs and not cb.runs[tid].ended):
            continue
        status = cb.statuses.get(tid, "")
        final = {"TERMINATED": T.FINISHED, "ERROR": T.FAILED}.get(status, T.KILLED)
        tracker.end_run(T.RunRef(run_id=run["run_id"], name=run["name"]), final)


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
