"""Which sampled values mattered for the search metric: fANOVA importance (optuna.importance)
over a search's finished trials, as read from MLflow.

The trials go into an in-memory Optuna study, each with the distributions of the search's
own domains (pipeline/search/optuna_space.py), so a trial of any searcher (random, HyperOpt,
Optuna) can be ranked. A key inside a conditional branch is its label
(`model.fields@model.group=C8`); fANOVA ranks the labels every trial has.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

MIN_TRIALS = 3  # fANOVA on fewer trials is not worth printing


def trial_study(params: Mapping[str, Any], trials: Sequence[tuple[Mapping[str, Any], float]],
                mode: str) -> Any:
    """An in-memory study of (flat config, metric value) pairs; trials whose values lie outside
    the domains (another search space) or without a finite value are left out."""
    import optuna

    from .search.optuna_space import labelled

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    for flat, value in trials:
        if not math.isfinite(value):
            continue
        try:
            values, dists = labelled(params, flat)
        except ValueError:
            continue
        study.add_trial(optuna.trial.create_trial(params=values, distributions=dists,
                                                  value=float(value)))
    return study


def param_importance(params: Mapping[str, Any],
                     trials: Sequence[tuple[Mapping[str, Any], float]], mode: str,
                     seed: int = 0) -> dict[str, float]:
    """Label -> fANOVA importance (summing to 1), largest first; {} below MIN_TRIALS trials
    or when no sampled value varies."""
    import optuna

    study = trial_study(params, trials, mode)
    if len(study.trials) < MIN_TRIALS:
        return {}
    try:
        return dict(optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=seed)))
    except (ValueError, RuntimeError):  # e.g. no parameter in every trial
        return {}
