"""Which MLflow experiment a search is logged in, and which search `--experiment NAME` means.

Every `eqcvt-search run` without `--experiment` logs to the one MLflow experiment
DEFAULT_EXPERIMENT, as a parent run named after the search (`<space>-<timestamp>`, also the
Tune folder), so a user's searches sit side by side in the MLflow UI. `final` and `report`
take either name: a search's name selects that search; an MLflow experiment's name selects
its latest search. Trials of different searches are never ranked together: they may differ
in data, task and metric.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import tracking

DEFAULT_EXPERIMENT = "eqcvt-default"


@dataclass(frozen=True)
class SearchSelection:
    """One search run (a parent run) and the tracker of the experiment that holds it."""

    tracker: tracking.Tracker
    search: dict[str, Any]

    @property
    def run_id(self) -> str:
        return str(self.search["run_id"])

    @property
    def name(self) -> str:
        return str(self.search["tags"].get(tracking.TAG_EXPERIMENT) or self.search["name"])

    @property
    def metric(self) -> str:
        return str(self.search["params"].get("search.metric", "val_acc"))

    @property
    def mode(self) -> str:
        return str(self.search["params"].get("search.mode", "max"))

    def trials(self) -> list[dict[str, Any]]:
        return self.tracker.runs(kind="trial", extra=f"tags.`{tracking.TAG_PARENT}` = '{self.run_id}'")

    def finals(self, trials: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """Final runs trained from this search's trials."""
        ids = {r["run_id"] for r in (self.trials() if trials is None else trials)}
        return [r for r in self.tracker.runs(kind="final")
                if r["tags"].get("eqcvt.trial_run_id") in ids]


def select_search(name: str, tracking_uri: str | None = None) -> SearchSelection:
    """The search called `name`, else the latest search of the MLflow experiment `name`."""
    tracker = tracking.Tracker(tracking_uri, name)
    searches = tracker.runs(kind="search")
    if not searches:
        home = _experiment_of_search(tracker, name)
        if home is None:
            raise ValueError(
                f"no search named {name!r} and no MLflow experiment {name!r} with searches "
                f"at {tracker.uri}"
            )
        tracker = tracking.Tracker(tracking_uri, home)
        searches = tracker.runs(kind="search", extra=f"tags.`{tracking.TAG_EXPERIMENT}` = '{name}'")
    latest = max(searches, key=lambda r: r["start_time"] or 0)
    return SearchSelection(tracker, latest)


def _experiment_of_search(tracker: tracking.Tracker, name: str) -> str | None:
    client = tracker.client
    ids = [e.experiment_id for e in client.search_experiments()]
    if not ids:
        return None
    runs = client.search_runs(
        ids, filter_string=f"tags.`{tracking.TAG_KIND}` = 'search' and "
                           f"tags.`{tracking.TAG_EXPERIMENT}` = '{name}'",
        order_by=["attributes.start_time DESC"], max_results=1,
    )
    return client.get_experiment(runs[0].info.experiment_id).name if runs else None
