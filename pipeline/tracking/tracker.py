"""The tracker: every MLflow write of a search, in order, surviving a server outage.

Layout of one search in MLflow: a parent run (kind "search": the YAML, the git commit, the
dataset manifest) and one nested child run per Tune trial (kind "trial", tag
`mlflow.parentRunId`): the flat resolved config as params, every epoch's metrics at
step=epoch, PBT-mutated values as metrics (params are immutable), and at the end plots,
equivariance metrics and the best checkpoint. `eqcvt-search final` adds runs of kind "final".

Every call is made by the driver (trials on worker nodes may not reach a server bound to the
head's loopback). A `Tracker(buffered=True)` keeps calls in order in memory while a tracking
server is unreachable and flushes them when it returns, so a server outage never stops a search.
A retried call writes its records once: a retried run start finds the run its first attempt
made and adds what that attempt did not write.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from .store import configure_http_env, is_outage, open_client, resolve_tracking_uri, sqlite_path
from .tags import FINISHED, RUNNING, TAG_KIND, TAG_PARENT, TAG_RUN_KEY, TAG_RUN_NAME

_PARAM_MAX = 6000  # MLflow's limit on a param value's length
_PARAMS_PER_BATCH, _METRICS_PER_BATCH = 100, 500  # MLflow's log_batch limits


@dataclass
class RunRef:
    """A run that may not exist on the server yet (created while it was unreachable)."""

    run_id: str | None = None
    name: str = ""
    max_step: int = 0  # highest epoch already logged (a resumed trial skips repeats)
    ended: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def require_id(self) -> str:
        """The run id; while its creation is still queued, fail like an outage (keeps order)."""
        if self.run_id is None:
            raise MlflowException("API request to <pending run> failed with pending run creation")
        return self.run_id


@dataclass
class _Op:
    fn: Callable[[], None]
    what: str
    records: int = 1


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
        configure_http_env(self.uri)
        self.experiment = experiment
        self.buffered = buffered
        self.client = open_client(self.uri)
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
                db = sqlite_path(self.uri)
                location = (db.parent / "mlartifacts").as_uri() if db is not None else None
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
                if is_outage(err):
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
        """Create a run, or continue the run `find` (an MLflow filter) selects: never two.

        A start retried after an outage finds the run its first attempt made (by `find`, or
        by a TAG_RUN_KEY made here) and writes what that attempt did not: the params the run
        lacks, the tags that differ. A param the run already has keeps its value (immutable).
        """
        ref = RunRef(name=name)
        want_tags = {TAG_KIND: kind, TAG_RUN_NAME: name, **(tags or {})}
        keyed = find is None
        if keyed:
            key = uuid.uuid4().hex
            want_tags[TAG_RUN_KEY] = key
            find = f"tags.`{TAG_RUN_KEY}` = '{key}'"
        created = [False]  # a keyed run can only exist once a create_run was sent

        def start() -> None:
            query = find
            if parent is not None:
                want_tags[TAG_PARENT] = parent.require_id()
                query += f" and tags.`{TAG_PARENT}` = '{parent.run_id}'"
            found = self.find_runs(query, max_results=5) if created[0] or not keyed else []
            if found:
                run = found[0]
                ref.run_id = run.info.run_id
                ref.max_step = self._max_step(ref.run_id)
                have_params, have_tags = dict(run.data.params), dict(run.data.tags)
            else:
                created[0] = True
                run = self.client.create_run(self.experiment_id, run_name=name, tags=want_tags)
                ref.run_id = run.info.run_id
                have_params, have_tags = {}, {k: str(v) for k, v in want_tags.items()}
            self._log_params_now(
                ref.run_id, {k: v for k, v in (params or {}).items() if str(k) not in have_params}
            )
            stale = [RunTag(k, str(v)) for k, v in want_tags.items() if have_tags.get(k) != str(v)]
            if stale:
                self.client.log_batch(ref.run_id, tags=stale)
            if found and run.info.status != RUNNING:
                self.client.update_run(ref.run_id, status=RUNNING)

        self._submit(start, f"start run {name}")
        return ref

    def continue_run(self, run_id: str, name: str = "") -> RunRef:
        """Reopen an existing run (e.g. a search's parent run after `resume`)."""
        ref = RunRef(run_id=run_id, name=name)
        self._submit(lambda: self.client.update_run(run_id, status=RUNNING), f"reopen {run_id}")
        return ref

    def _max_step(self, run_id: str) -> int:
        """The highest epoch the run has logged (an outage raises: 0 would re-log them all)."""
        try:
            hist = self.client.get_metric_history(run_id, "epoch")
        except MlflowException as err:
            if is_outage(err):
                raise
            return 0
        return max((int(m.step) for m in hist), default=0)

    def _log_params_now(self, run_id: str, params: Mapping[str, Any]) -> None:
        items = [Param(str(k), _param_str(v)) for k, v in params.items()]
        for i in range(0, len(items), _PARAMS_PER_BATCH):  # same value again: MLflow accepts
            self.client.log_batch(run_id, params=items[i : i + _PARAMS_PER_BATCH])

    def log_params(self, ref: RunRef, params: Mapping[str, Any]) -> None:
        self._submit(lambda: self._log_params_now(ref.require_id(), params),
                     f"params of {ref.name}")

    def set_tags(self, ref: RunRef, tags: Mapping[str, Any]) -> None:
        items = [RunTag(str(k), str(v)) for k, v in tags.items()]
        self._submit(lambda: self.client.log_batch(ref.require_id(), tags=items),
                     f"tags of {ref.name}")

    def log_metrics(
        self,
        ref: RunRef,
        metrics: Mapping[str, Any],
        step: int,
        *,
        timestamp_ms: int | None = None,
        skip_logged: bool = True,
    ) -> None:
        """Numeric finite-or-NaN values only; a step a continued run already has is skipped.

        A batch retried after its reply was lost is harmless: the SQL store keeps one copy
        of an identical point (key, value, timestamp, step).
        """
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
            run_id = ref.require_id()
            for i in range(0, len(items), _METRICS_PER_BATCH):
                self.client.log_batch(run_id, metrics=items[i : i + _METRICS_PER_BATCH])
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
                self.client.log_artifacts(ref.require_id(), str(path), artifact_path)
            else:
                self.client.log_artifact(ref.require_id(), str(path), artifact_path)

        self._submit(send, f"artefact {path.name} of {ref.name}")

    def log_dict(self, ref: RunRef, data: Any, file_name: str) -> None:
        tmp = Path(tempfile.mkdtemp(prefix="eqcvt-art-"))
        (tmp / file_name).write_text(json.dumps(data, indent=1, default=str))
        self.log_artifacts(ref, tmp / file_name)  # copied to the spool first when buffered
        shutil.rmtree(tmp, ignore_errors=True)

    def end_run(self, ref: RunRef, status: str = FINISHED) -> None:
        ref.ended = True
        self._submit(
            lambda: self.client.set_terminated(ref.require_id(), status=status),
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

    # -- model registry (pipeline/tracking/registry.py)
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
        from .registry import register_model

        return register_model(self, ref, checkpoint_dir, model_name, config=config,
                              description=description)

    def resolve_model_version(self, spec: str) -> tuple[str, str]:
        """"NAME" (latest version) or "NAME/VERSION" -> (name, version)."""
        from .registry import resolve_model_version

        return resolve_model_version(self.client, spec, self.uri)


def _param_str(value: Any) -> str:
    text = "None" if value is None else str(value)
    return text if len(text) <= _PARAM_MAX else text[: _PARAM_MAX - 3] + "..."
