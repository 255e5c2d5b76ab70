"""What makes a search valid: numbers in range, one owner per key, values the config accepts,
PBT mutating optimiser values only, a metric the engine reports, optimised the right way."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..config import RunConfig
from .domains import Branch, Choice, Domain, Grid, sample_trial, walk_params
from .errors import SearchSpaceError

if TYPE_CHECKING:
    from .spec import SearchSpec

SCHEDULERS: tuple[str, ...] = ("asha", "pbt", "fifo")
SEARCHERS: tuple[str, ...] = ("hyperopt", "optuna", "random")
MODES: tuple[str, ...] = ("min", "max")
# Values PBT may change between trials: none of them changes a weight's shape.
PBT_MUTABLE_KEYS: tuple[str, ...] = (
    "train.lr",
    "train.weight_decay",
    "train.momentum",
    "train.grad_clip",
    "train.label_smoothing",
)
# Costs known before training (pipeline/search/cost.py): objectives (minimised) and constraints.
COST_METRICS: tuple[str, ...] = ("num_params", "flops")
_MIN_METRICS = ("val_loss", "train_loss", "val_mse", "val_mae")
_CLASSIFICATION_METRICS = ("val_acc", "val_auc_micro", "val_auc_macro")
_REGRESSION_METRICS = ("val_mse", "val_mae")


def validate(spec: SearchSpec) -> None:
    src = spec.source
    _check_numbers(spec)
    if "train.epochs" in {k for k, _ in walk_params(spec.params)}:
        raise SearchSpaceError(src, "train.epochs", "set max_epochs (the per-trial budget)")
    _check_tree(src, spec.params, context=spec.fixed(), seen=set(), path="")
    if spec.scheduler == "pbt":
        _validate_pbt(spec)
    elif spec.searcher is None:
        raise SearchSpaceError(src, "searcher", f"scheduler {spec.scheduler} needs a searcher")
    if spec.has_grid and (spec.searcher in ("hyperopt", "optuna") or spec.has_conditionals
                          or spec.constraints):
        raise SearchSpaceError(
            src, _first_key(spec, Grid),
            "grid needs searcher random, no conditional choices and no constraints "
            "(HyperOpt and Optuna cannot grid; a grid cannot resample a rejected point)",
        )
    if spec.n_initial_points is not None and spec.searcher not in ("hyperopt", "optuna"):
        raise SearchSpaceError(src, "n_initial_points",
                               "only applies to searchers hyperopt and optuna")
    _validate_objectives(spec)
    if spec.constraints and spec.searcher is None:
        raise SearchSpaceError(src, "constraints", "constraints need a searcher; PBT has none")
    # combined values (e.g. model.embed_dim with model.heads) checked on a few samples
    rng = random.Random(0)
    for _ in range(16):
        flat = sample_trial(spec.trial_params(), spec.hyperparam_mutations, rng)
        try:
            RunConfig.from_flat(flat)
        except ValueError as err:
            raise SearchSpaceError(src, "params", f"a sampled config is invalid: {err}") from None


def _check_numbers(spec: SearchSpec) -> None:
    src = spec.source
    if spec.num_samples < 1:
        raise SearchSpaceError(src, "num_samples", f"must be >= 1, got {spec.num_samples}")
    if spec.max_epochs < 1:
        raise SearchSpaceError(src, "max_epochs", f"must be >= 1, got {spec.max_epochs}")
    if not 1 <= spec.grace_period <= spec.max_epochs:
        raise SearchSpaceError(
            src, "grace_period", f"must be in [1, max_epochs={spec.max_epochs}], "
            f"got {spec.grace_period}"
        )
    if spec.reduction_factor <= 1:
        raise SearchSpaceError(src, "reduction_factor", f"must be > 1, got {spec.reduction_factor}")
    if not 0 <= spec.first_rung_quorum < spec.num_samples:
        raise SearchSpaceError(
            src, "first_rung_quorum", f"must be in [0, num_samples={spec.num_samples}) "
            f"(with as many, no trial is ever promoted), got {spec.first_rung_quorum}")
    if not 1 <= spec.perturbation_interval <= spec.max_epochs:
        raise SearchSpaceError(
            src, "perturbation_interval",
            f"must be in [1, max_epochs={spec.max_epochs}], got {spec.perturbation_interval}",
        )
    if not 0 < spec.quantile_fraction <= 0.5:
        raise SearchSpaceError(src, "quantile_fraction", "must be in (0, 0.5]")
    if not 0 <= spec.resample_probability <= 1:
        raise SearchSpaceError(src, "resample_probability", "must be in [0, 1]")
    if spec.n_initial_points is not None and spec.n_initial_points < 1:
        raise SearchSpaceError(src, "n_initial_points", "must be >= 1")


def _check_tree(
    src: str, params: Mapping[str, Any], context: dict[str, Any], seen: set[str], path: str
) -> None:
    """Each key once per branch path; every value/bound passes the config's validation."""
    fixed_here = {k: v for k, v in params.items() if not isinstance(v, Domain)}
    context = {**context, **fixed_here}
    owner: dict[str, str] = {}  # key set inside a branch -> the choice that owns the branch
    for key, p in params.items():
        if isinstance(p, Choice):
            for o in p.options:
                for sub, _ in walk_params(o.params) if isinstance(o, Branch) else ():
                    if owner.setdefault(sub, key) != key:
                        raise SearchSpaceError(
                            src, f"{path}{key}",
                            f"its branches set {sub}, which the branches of "
                            f"{path}{owner[sub]} set too",
                        )
    for key, p in params.items():
        name = f"{path}{key}"
        if key in seen:
            raise SearchSpaceError(src, name, "is already set outside this conditional branch")
        if not isinstance(p, Domain):
            _check_value(src, name, key, p, context)
            continue
        for value in p.corner_values():
            _check_value(src, name, key, value, context)
        if isinstance(p, Choice):
            for o in p.options:
                if isinstance(o, Branch):
                    _check_tree(
                        src, o.params, {**context, key: o.value},
                        seen | set(params) | {key}, f"{name}={o.value} > ",
                    )


def _check_value(src: str, name: str, key: str, value: Any, context: dict[str, Any]) -> None:
    try:
        RunConfig.from_flat({**context, key: value})
    except ValueError as err:
        raise SearchSpaceError(src, name, f"value {value!r} is invalid: {err}") from None


def _validate_pbt(spec: SearchSpec) -> None:
    src = spec.source
    if spec.searcher is not None:
        raise SearchSpaceError(
            src, "searcher", "PBT runs without a searcher (Ray refuses a searcher with PBT)"
        )
    if not spec.hyperparam_mutations:
        raise SearchSpaceError(src, "hyperparam_mutations", "PBT needs at least one mutation")
    for key, dom in spec.hyperparam_mutations.items():
        name = f"hyperparam_mutations: {key}"
        if key not in PBT_MUTABLE_KEYS:
            raise SearchSpaceError(
                src, name, "PBT copies weights between trials, so it may only mutate "
                f"optimiser values: {', '.join(PBT_MUTABLE_KEYS)}",
            )
        if not isinstance(dom, Domain) or isinstance(dom, Grid) or (
            isinstance(dom, Choice) and dom.has_branches
        ):
            raise SearchSpaceError(
                src, name, "a mutation is choice, uniform, loguniform, randint or quniform"
            )
        for value in dom.corner_values():
            _check_value(src, name, key, value, spec.fixed())
    if spec.has_conditionals:
        raise SearchSpaceError(
            src, _first_key(spec, Choice), "conditional choices need a searcher; PBT has none"
        )
    if spec.params.get("train.scheduler") != "constant":
        raise SearchSpaceError(
            src, "train.scheduler",
            "PBT schedules the lr itself and trials run until stopped: fix it to 'constant'",
        )


def _validate_objectives(spec: SearchSpec) -> None:
    """The first objective is a metric the engine reports (ASHA stops trials on it); the
    others are such metrics or a cost (num_params, flops) to minimise. Several need Optuna."""
    src, objectives = spec.source, spec.all_objectives
    where = "objectives[0]." if spec.objectives else ""
    _validate_metric(spec, objectives[0].metric, objectives[0].mode, where)
    if len(objectives) > 1 and spec.searcher != "optuna":
        raise SearchSpaceError(src, "objectives", "several objectives need searcher optuna, "
                                                  f"got {spec.searcher}")
    seen = {objectives[0].metric}
    for i, o in enumerate(objectives[1:], 1):
        if o.metric in seen:
            raise SearchSpaceError(src, f"objectives[{i}].metric", f"{o.metric} is listed twice")
        seen.add(o.metric)
        if o.metric in COST_METRICS:
            if o.mode != "min":
                raise SearchSpaceError(src, f"objectives[{i}].mode",
                                       f"{o.metric} is a cost: its mode is min")
        else:
            _validate_metric(spec, o.metric, o.mode, f"objectives[{i}].")


def _validate_metric(spec: SearchSpec, metric: str, mode: str, where: str = "") -> None:
    src = spec.source
    task = spec.params.get("data.task", RunConfig().data.task)
    classification = metric in _CLASSIFICATION_METRICS or metric.startswith("val_auc_")
    if not (classification or metric in _REGRESSION_METRICS or metric in _MIN_METRICS):
        costs = (f"; {', '.join(COST_METRICS)} may only be a later objective"
                 if metric in COST_METRICS else "")
        raise SearchSpaceError(
            src, f"{where}metric",
            f"unknown metric {metric!r}; the engine reports train_loss, val_loss, val_acc, "
            f"val_auc_micro, val_auc_macro, val_auc_<class>, val_mse, val_mae{costs}",
        )
    if isinstance(task, str):
        if task == "regression" and classification:
            raise SearchSpaceError(src, f"{where}metric",
                                   f"{metric} is not reported for regression")
        if task != "regression" and metric in _REGRESSION_METRICS:
            raise SearchSpaceError(src, f"{where}metric",
                                   f"{metric} is only reported for regression")
    wanted = "min" if metric in _MIN_METRICS else "max"
    if mode != wanted:
        raise SearchSpaceError(src, f"{where}mode", f"{metric} should be {wanted}imised, "
                                                    f"got {mode}")


def _first_key(spec: SearchSpec, cls: type) -> str:
    return next(k for k, p in walk_params(spec.params) if isinstance(p, cls) and (
        cls is not Choice or p.has_branches))
