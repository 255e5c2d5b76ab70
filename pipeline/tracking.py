"""MLflow tracking: the only `import mlflow` in the code base.

Layout of one search in MLflow: a parent run (kind "search": the YAML, the git commit, the
dataset manifest) and one nested child run per Tune trial (kind "trial", tag
`mlflow.parentRunId`): the flat resolved config as params, every epoch's metrics at
step=epoch, PBT-mutated values as metrics (params are immutable), and at the end plots,
equivariance metrics and the best checkpoint. `eqcvt-search final` adds runs of kind "final".

Every call is made by the driver (trials on worker nodes may not reach a server bound to the
head's loopback). A `Tracker(buffered=True)` keeps calls in order in memory while a tracking
server is unreachable and flushes them when it returns, so a server outage never stops a search.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

DB_FILE = "mlflow.db"
TAG_PARENT = "mlflow.parentRunId"
TAG_RUN_NAME = "mlflow.runName"
TAG_KIND = "eqcvt.kind"  # "search" | "trial" | "final"
TAG_EXPERIMENT = "eqcvt.experiment"  # Tune experiment name (folder under the storage path)
TAG_SEARCH_ID = "eqcvt.search_id"
TAG_TRIAL_ID = "tune.trial_id"
TAG_ARTIFACTS = "eqcvt.artifacts"  # "done" once the end-of-trial artefacts are logged
TAG_GIT = "eqcvt.git_commit"
FINISHED, FAILED, KILLED, RUNNING = "FINISHED", "FAILED", "KILLED", "RUNNING"
_PARAM_MAX = 6000  # MLflow's limit on a param value's length


class TrackingUnavailable(RuntimeError):
    """The tracking server cannot be reached; raised before any trial starts."""


# ----------------------------------------------------------------------------- URIs


def default_tracking_uri(cwd: str | Path | None = None) -> str:
    """`sqlite:///<abs cwd>/mlflow.db`: absolute, so every process on the machine agrees."""
    return f"sqlite:///{Path(cwd or os.getcwd()).resolve() / DB_FILE}"


def resolve_tracking_uri(uri: str | None) -> str:
    """None -> the embedded default; relative sqlite/file paths -> absolute ones."""
    if not uri:
        return default_tracking_uri()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{Path(uri[len('sqlite:///'):]).resolve()}"
    if "://" not in uri:  # a plain folder: MLflow's file store
        return Path(uri).resolve().as_uri()
    return uri


def is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def check_server(uri: str, timeout: float = 5.0) -> None:
    """Fail fast (seconds, not MLflow's minutes of retries) when an http server is down."""
    if not is_http(uri):
        return
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            if resp.status == 200:
                return
            reason = f"HTTP {resp.status}"
    except urllib.error.HTTPError as err:
        reason = f"HTTP {err.code}"
    except (urllib.error.URLError, OSError) as err:
        reason = str(getattr(err, "reason", err))
    raise TrackingUnavailable(
        f"MLflow tracking server at {uri} is not reachable ({reason}). Start it (see README "
        '"Running on a cluster") or drop --tracking-uri to use the local SQLite store.'
    )


def _configure_http_env(uri: str) -> None:
    """An outage should cost seconds per call: no long retry chains against a dead server."""
    if is_http(uri):
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")


def _is_outage(err: BaseException) -> bool:
    """Connection-type failures (server down/restarting), not bad requests."""
    seen: set[int] = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        name = type(e).__name__
        if isinstance(e, (ConnectionError, TimeoutError)) or name in (
            "ConnectionError", "ConnectTimeout", "ReadTimeout", "Timeout", "MaxRetryError",
            "NewConnectionError", "ProtocolError", "RemoteDisconnected", "ChunkedEncodingError",
        ):
            return True
        if "database is locked" in str(e):  # SQLite busy (e.g. `mlflow ui` reading): retry
            return True
        if isinstance(e, MlflowException):
            msg = str(e)
            if "API request to" in msg and "failed with" in msg:
                return True
            if getattr(e, "error_code", "") in ("TEMPORARILY_UNAVAILABLE", "INTERNAL_ERROR") and (
                "503" in msg or "502" in msg or "Connection" in msg
            ):
                return True
        e = e.__cause__ or e.__context__
    return False


def git_commit(path: str | Path | None = None) -> str:
    """The commit of the project checkout (plus "-dirty"), or "unknown" outside git."""
    where = Path(path) if path else Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
            capture_output=True, text=True, timeout=10,
        )
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# ----------------------------------------------------------------------------- the tracker


@dataclass
class RunRef:
    """A run that may not exist on the server yet (created while it was unreachable)."""

    run_id: str | None = None
    name: str = ""
    max_step: int = 0  # highest epoch already logged (a resumed trial skips repeats)
    ended: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Op:
    fn: Callable[[], None]
    what: str
    records: int = 1


def _open_client(uri: str) -> MlflowClient:
    """An MlflowClient whose store is open; a SQLite store is created or upgraded under a lock.

    MLflow builds the schema on first use; two processes doing it at once on a new file (a
    search starting while `mlflow ui` or a second command opens the same store) corrupt the
    migration and one of them crashes. The lock makes the first one build it and the others wait.
    """
    if not uri.startswith("sqlite:///"):
        return MlflowClient(tracking_uri=uri)
    db = Path(uri[len("sqlite:///"):])
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            client = MlflowClient(tracking_uri=uri)
            client.search_experiments(max_results=1)  # opens the store: schema built here
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return client


class Tracker:
    """MLflow writes for one experiment, in order.

    buffered=False: every call goes straight to MLflow and errors raise (CLI commands).
    buffered=True (the Tune driver callback): calls that fail because the server is
    unreachable are queued in order, retried after a back-off (5 s doubling to 60 s) and
    flushed when the server answers; other errors are reported and dropped, never raised.
    """

    def __init__(
        self,
        uri: str | None,
        experiment: str,
        *,
        buffered: bool = False,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.uri = resolve_tracking_uri(uri)
        _configure_http_env(self.uri)
        self.experiment = experiment
        self.buffered = buffered
        self.client = _open_client(self.uri)
        self._log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self._queue: deque[_Op] = deque()
        self._retry_at = 0.0
        self._backoff = 5.0
        self._outage_reported = False
        self._experiment_id: str | None = None
        self._spool: Path | None = None  # buffered artefact copies, made on first use

    # -- plumbing
    @property
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            exp = self.client.get_experiment_by_name(self.experiment)
            if exp is None:
                location = None
                if self.uri.startswith("sqlite:///"):
                    db = Path(self.uri[len("sqlite:///"):])
                    location = (db.parent / "mlartifacts").as_uri()
                try:
                    self._experiment_id = self.client.create_experiment(
                        self.experiment, artifact_location=location
                    )
                except MlflowException:  # created concurrently
                    exp = self.client.get_experiment_by_name(self.experiment)
                    if exp is None:
                        raise
                    self._experiment_id = exp.experiment_id
            else:
                self._experiment_id = exp.experiment_id
        return self._experiment_id

    @property
    def pending(self) -> int:
        return sum(op.records for op in self._queue)

    def _submit(self, fn: Callable[[], None], what: str, records: int = 1) -> None:
        if not self.buffered:
            fn()
            return
        self._queue.append(_Op(fn, what, records))
        self.flush()

    def flush(self, timeout: float = 0.0) -> bool:
        """Run queued calls in order; True when the queue is empty. Waits up to `timeout` s."""
        deadline = time.monotonic() + timeout
        while self._queue:
            now = time.monotonic()
            if now < self._retry_at:
                if now + min(1.0, self._retry_at - now) > deadline:
                    return False
                time.sleep(min(1.0, self._retry_at - now))
                continue
            op = self._queue[0]
            try:
                op.fn()
            except Exception as err:  # noqa: BLE001 - classified below
                if _is_outage(err):
                    if not self._outage_reported:
                        self._log(
                            f"tracking server unreachable, buffering ({self.pending} records "
                            f"queued): {str(err).splitlines()[0][:200]}"
                        )
                        self._outage_reported = True
                    self._retry_at = time.monotonic() + self._backoff
                    self._backoff = min(60.0, self._backoff * 2)
                    if time.monotonic() >= deadline and timeout <= 0:
                        return False
                    continue
                self._queue.popleft()
                self._log(f"MLflow: {op.what} failed and was dropped: {err}")
                continue
            self._queue.popleft()
            if self._outage_reported and not self._queue:
                self._log("tracking server back, flushed the buffered records")
                self._outage_reported = False
            self._backoff = 5.0
        return True

    def write_backlog(self, path: str | Path) -> Path:
        """Describe what could not be sent (a server that never came back)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w") as f:
            for op in self._queue:
                f.write(json.dumps({"what": op.what, "records": op.records}) + "\n")
        return path

    def close(self) -> None:
        """Drop the artefact spool (call once nothing is queued)."""
        if self._spool is not None and not self._queue:
            shutil.rmtree(self._spool, ignore_errors=True)
            self._spool = None

    # -- runs
    def find_runs(self, filter_string: str, max_results: int = 1000) -> list[Any]:
        return list(
            self.client.search_runs(
                [self.experiment_id], filter_string=filter_string, max_results=max_results
            )
        )

    def start_run(
        self,
        name: str,
        *,
        kind: str,
        tags: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        parent: RunRef | None = None,
        find: str | None = None,
    ) -> RunRef:
        """Create a run, or continue the run `find` (an MLflow filter) selects: never two."""
        ref = RunRef(name=name)
        all_tags = {TAG_KIND: kind, TAG_RUN_NAME: name, **(tags or {})}

        def create() -> None:
            if parent is not None and parent.run_id is None:
                raise MlflowException("API request to <parent> failed with pending parent")
            if parent is not None:
                all_tags[TAG_PARENT] = parent.run_id
            existing = None
            if find:
                query = find + (
                    f" and tags.`{TAG_PARENT}` = '{parent.run_id}'" if parent is not None else ""
                )
                found = self.find_runs(query, max_results=5)
                existing = found[0] if found else None
            if existing is not None:
                ref.run_id = existing.info.run_id
                ref.max_step = self._max_step(ref.run_id)
                if existing.info.status != RUNNING:
                    self.client.update_run(ref.run_id, status=RUNNING)
                return
            run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
            ref.run_id = run.info.run_id
            if params:
                self._log_params_now(ref.run_id, params)

        self._submit(create, f"start run {name}")
        return ref

    def continue_run(self, run_id: str, name: str = "") -> RunRef:
        """Reopen an existing run (e.g. a search's parent run after `resume`)."""
        ref = RunRef(run_id=run_id, name=name)
        self._submit(lambda: self.client.update_run(run_id, status=RUNNING), f"reopen {run_id}")
        return ref

    def _max_step(self, run_id: str) -> int:
        try:
            hist = self.client.get_metric_history(run_id, "epoch")
        except MlflowException:
            return 0
        return max((int(m.step) for m in hist), default=0)

    def _log_params_now(self, run_id: str, params: Mapping[str, Any]) -> None:
        items = [Param(str(k), _param_str(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i : i + 100])

    def log_params(self, ref: RunRef, params: Mapping[str, Any]) -> None:
        self._submit(lambda: self._log_params_now(_rid(ref), params), f"params of {ref.name}")

    def set_tags(self, ref: RunRef, tags: Mapping[str, Any]) -> None:
        items = [RunTag(str(k), str(v)) for k, v in tags.items()]
        self._submit(lambda: self.client.log_batch(_rid(ref), tags=items), f"tags of {ref.name}")

    def log_metrics(
        self,
        ref: RunRef,
        metrics: Mapping[str, Any],
        step: int,
        *,
        timestamp_ms: int | None = None,
        skip_logged: bool = True,
    ) -> None:
        """Numeric finite-or-NaN values only; a step a continued run already has is skipped."""
        ts = timestamp_ms or int(time.time() * 1000)
        items = [
            Metric(str(k), float(v), ts, int(step))
            for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        ]
        if not items:
            return

        def send() -> None:
            if skip_logged and step <= ref.max_step:
                return
            run_id = _rid(ref)
            for i in range(0, len(items), 500):
                self.client.log_batch(run_id, metrics=items[i : i + 500])
            if skip_logged:
                ref.max_step = max(ref.max_step, int(step))

        self._submit(send, f"metrics of {ref.name} step {step}", records=len(items))

    def log_artifacts(self, ref: RunRef, path: str | Path, artifact_path: str | None = None
                      ) -> None:
        """A file or a folder; copied to a spool first when buffered (the source may vanish)."""
        path = Path(path)
        if self.buffered:
            if self._spool is None:
                self._spool = Path(tempfile.mkdtemp(prefix="eqcvt-track-"))
            spool = Path(tempfile.mkdtemp(dir=self._spool))
            dest = spool / path.name
            if path.is_dir():
                shutil.copytree(path, dest)
            else:
                shutil.copy2(path, dest)
            path = dest

        def send() -> None:
            if path.is_dir():
                self.client.log_artifacts(_rid(ref), str(path), artifact_path)
            else:
                self.client.log_artifact(_rid(ref), str(path), artifact_path)

        self._submit(send, f"artefact {path.name} of {ref.name}")

    def log_dict(self, ref: RunRef, data: Any, file_name: str) -> None:
        tmp = Path(tempfile.mkdtemp(prefix="eqcvt-art-"))
        (tmp / file_name).write_text(json.dumps(data, indent=1, default=str))
        self.log_artifacts(ref, tmp / file_name)  # copied to the spool first when buffered
        shutil.rmtree(tmp, ignore_errors=True)

    def end_run(self, ref: RunRef, status: str = FINISHED) -> None:
        ref.ended = True
        self._submit(
            lambda: self.client.set_terminated(_rid(ref), status=status),
            f"end {ref.name} {status}",
        )

    # -- reading (report/final/resume)
    def runs(self, kind: str | None = None, extra: str = "") -> list[dict[str, Any]]:
        """Runs of this experiment as plain dicts (run_id, status, params, metrics, tags)."""
        if self.client.get_experiment_by_name(self.experiment) is None:
            return []
        parts = [f"tags.`{TAG_KIND}` = '{kind}'"] if kind else []
        if extra:
            parts.append(extra)
        out = []
        for run in self.find_runs(" and ".join(parts), max_results=5000):
            out.append(
                {
                    "run_id": run.info.run_id,
                    "name": run.info.run_name,
                    "status": run.info.status,
                    "start_time": run.info.start_time,
                    "end_time": run.info.end_time,
                    "params": dict(run.data.params),
                    "metrics": dict(run.data.metrics),
                    "tags": dict(run.data.tags),
                }
            )
        return out

    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        return [(int(m.step), float(m.value)) for m in self.client.get_metric_history(run_id, key)]

    def download(self, run_id: str, artifact_path: str, dst: str | Path) -> Path:
        Path(dst).mkdir(parents=True, exist_ok=True)
        return Path(
            mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=artifact_path, dst_path=str(dst),
                tracking_uri=self.uri,
            )
        )

    def list_artifacts(self, run_id: str, path: str | None = None) -> list[str]:
        return [a.path for a in self.client.list_artifacts(run_id, path)]

    # -- model registry
    def register_model(
        self,
        ref: RunRef,
        checkpoint_dir: str | Path,
        model_name: str,
        *,
        config: Mapping[str, Any],
        description: str = "",
    ) -> str:
        """Log the checkpoint as a pyfunc model of run `ref` and register it; -> version."""
        mlflow.set_tracking_uri(self.uri)
        with mlflow.start_run(run_id=_rid(ref)):
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=EqcvtPyfunc(),
                artifacts={"checkpoint": str(checkpoint_dir)},
                registered_model_name=model_name,
                pip_requirements=[],
                metadata={"eqcvt_config": dict(config)},
                await_registration_for=30,
            )
        version = str(info.registered_model_version)
        if description:
            with contextlib.suppress(MlflowException):
                self.client.update_model_version(model_name, version, description=description)
        with contextlib.suppress(MlflowException):
            self.client.set_model_version_tag(model_name, version, "eqcvt.run_id", _rid(ref))
        # the RunConfig as a plain artefact too, for people reading the run in the UI
        self.log_dict(ref, dict(config), "config.json")
        return version

    def resolve_model_version(self, spec: str) -> tuple[str, str]:
        """"NAME" (latest version) or "NAME/VERSION" -> (name, version)."""
        name, _, version = spec.partition("/")
        if not version:
            versions = self.client.search_model_versions(f"name = '{name}'")
            if not versions:
                raise ValueError(f"no registered model named {name!r} at {self.uri}")
            version = str(max(int(v.version) for v in versions))
        return name, version


def _rid(ref: RunRef) -> str:
    if ref.run_id is None:  # its creation is still queued: treat like an outage, keep order
        raise MlflowException("API request to <pending run> failed with pending run creation")
    return ref.run_id


def _param_str(value: Any) -> str:
    text = "None" if value is None else str(value)
    return text if len(text) <= _PARAM_MAX else text[: _PARAM_MAX - 3] + "..."


# ----------------------------------------------------------------------------- pyfunc model


class EqcvtPyfunc(mlflow.pyfunc.PythonModel):
    """A registered model: the engine checkpoint, rebuilt with `checkpoints.load_model`.

    predict: float array (N, C, H, W) -> raw outputs (N, classes) logits or (N, targets).
    """

    def load_context(self, context: Any) -> None:
        from pipeline.checkpoints import load_model

        self.checkpoint_dir = context.artifacts["checkpoint"]
        self.model = load_model(self.checkpoint_dir)
        self.config = json.loads((Path(self.checkpoint_dir) / "config.json").read_text())

    def predict(self, context: Any, model_input: np.ndarray, params: Any = None) -> np.ndarray:
        """np.ndarray in and out: MLflow then skips schema inference (and its warnings)."""
        import torch

        from pipeline.evaluation import predict

        x = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
        return predict(self.model, x).numpy()


def load_registered(uri: str | None, spec: str) -> tuple[Any, str, str]:
    """(pyfunc model, name, version) of "NAME[/VERSION]" from the registry at `uri`."""
    tracker_uri = resolve_tracking_uri(uri)
    _configure_http_env(tracker_uri)
    mlflow.set_tracking_uri(tracker_uri)
    client = _open_client(tracker_uri)
    name, _, version = spec.partition("/")
    if not version:
        versions = client.search_model_versions(f"name = '{name}'")
        if not versions:
            raise ValueError(f"no registered model named {name!r} at {tracker_uri}")
        version = str(max(int(v.version) for v in versions))
    model = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    return model, name, version


def unwrap_pyfunc(model: Any) -> Any:
    """The EqcvtPyfunc behind a loaded pyfunc model (for its torch model and config)."""
    return model.unwrap_python_model()


def iter_metric_keys(metrics: Iterable[str], prefix: str) -> list[str]:
    return sorted(k for k in metrics if k.startswith(prefix))
