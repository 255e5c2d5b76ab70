"""`eqcvt-search run --warm-start EXPERIMENT`: the finished trials of an earlier search, read
from MLflow, as completed Optuna trials the new search's study starts with.

Each earlier trial's config is labelled with the new search's domains
(pipeline/search/optuna_space.py); its objective values are the ones Ray's OptunaSearch would
have told the study: every objective's last reported value. A trial whose values lie outside
the new domains, that lacks an objective or breaks the new constraints, is skipped and counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from . import tracking as T
from .experiments import select_search
from .final import parse_params


@dataclass
class WarmStart:
    search: str  # the earlier search's name
    trials: list[Any] = field(default_factory=list)  # optuna FrozenTrial, COMPLETE
    skipped: int = 0


def warm_trials(experiment: str, spec: Any, tracking_uri: str | None = None) -> WarmStart:
    """The earlier search's finished trials for `spec`'s Optuna study (searcher optuna only)."""
    import optuna

    from .search.optuna_space import labelled

    if spec.searcher != "optuna":
        raise ValueError(f"--warm-start needs searcher optuna, the search space has "
                         f"{spec.searcher}")
    sel = select_search(experiment, tracking_uri)
    out = WarmStart(sel.name)
    metrics = [o.metric for o in spec.all_objectives]
    for run in sel.trials():
        if run["status"] != T.FINISHED:
            continue
        values = [float(run["metrics"].get(m, math.nan)) for m in metrics]
        try:
            if not all(math.isfinite(v) for v in values):
                raise ValueError("an objective is missing")
            if any(b.violated_by(float(run["metrics"].get(k, math.inf)))
                   for k, b in spec.constraints.items()):
                raise ValueError("it breaks this search's constraints")
            params, dists = labelled(spec.trial_params(), parse_params(run["params"]))
        except ValueError:
            out.skipped += 1
            continue
        out.trials.append(optuna.trial.create_trial(
            params=params, distributions=dists, values=values,
            user_attrs={"warm_start": sel.name, "trial_id": run["tags"].get(T.TAG_TRIAL_ID, "")}))
    return out
