"""What a search is asked to do (`SearchRequest`, saved beside Tune's state to resume it) and
what it did (`SearchOutcome`)."""

from __future__ import annotations

import dataclasses
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..live import LiveView
from .parse import parse_search_text
from .spec import SearchSpec
from .storage import META_FILE, join, read_text


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
    max_repeated_failures: int = 5  # trials in a row with one error that stop the search
    search_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    parent_run_id: str | None = None
    address: str | None = None
    mlflow_experiment: str | None = None  # None: the Tune name (requests saved before it)
    warm_start: str | None = None  # the earlier search whose trials the searcher started from

    @property
    def experiment_path(self) -> str:
        return join(self.storage_path, self.experiment)

    @property
    def tracking_experiment(self) -> str:
        """The MLflow experiment; the search is a parent run named `experiment` in it."""
        return self.mlflow_experiment or self.experiment

    def spec(self) -> SearchSpec:
        """The YAML with the CLI's pins and budget applied, validated again."""
        spec = parse_search_text(self.space_text, source=self.space_file)
        if self.fixed:
            spec = spec.with_fixed(self.fixed)
        changes: dict[str, Any] = {}
        if self.max_epochs is not None:
            changes.update(
                max_epochs=self.max_epochs,
                grace_period=min(spec.grace_period, self.max_epochs),
                perturbation_interval=min(spec.perturbation_interval, self.max_epochs),
            )
        if self.num_samples is not None:  # a smaller budget keeps a quorum it can reach
            changes.update(num_samples=self.num_samples, first_rung_quorum=min(
                spec.first_rung_quorum, max(0, self.num_samples - 1)))
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
    statuses: dict[str, str]  # trial id -> TERMINATED | ERROR | INTERRUPTED
    view: LiveView
    timings: dict[str, dict[str, float]]  # trial id -> driver start, first result, epoch time
    parent_run_id: str | None
    tracking_pending: int = 0  # records the tracking server never accepted
    results: list[tuple[float, str, int, float]] = field(default_factory=list)
    tracking_uri: str = ""
    stopped_on: str = ""  # why the search stopped itself (trials failing with one error)

    @property
    def failure(self) -> str | None:
        """What went wrong with the search as a whole, or None."""
        if self.stopped_on:
            return (f"search stopped: {self.stopped_on}\nstate saved; once the cause is fixed, "
                    f"continue with: eqcvt-search resume {self.experiment_path}")
        if not self.interrupted and "TERMINATED" not in self.statuses.values():
            return f"no trial finished ({len(self.statuses)} trials, none TERMINATED)"
        return None

    @property
    def ok(self) -> bool:
        return not self.interrupted and self.tracking_pending == 0 and self.failure is None


def load_request(experiment_path: str) -> SearchRequest:
    try:
        return SearchRequest.from_json(read_text(join(experiment_path, META_FILE)))
    except (FileNotFoundError, OSError) as err:
        raise FileNotFoundError(
            f"{experiment_path} is not an eqcvt-search experiment (no {META_FILE}): {err}"
        ) from None
