"""The search's Domain tree as Optuna distributions: the one mapping used by the Optuna
searcher (define-by-run, conditional branches included), by warm starts and by the report's
parameter importance (an in-memory study of finished trials).

A key set inside a conditional branch gets the label `key@choice=value` (Optuna needs one
distribution per name, and two branches may give the same key different options); a
top-level key is its own label. `key_of(label)` undoes it. No ray here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna

from ..config import key_type
from .domains import Branch, Choice, Domain, Grid, LogUniform, QUniform, RandInt, Uniform

BRANCH_MARK = "@"


def key_of(label: str) -> str:
    """The config key a label stands for ("model.fields@model.group=C8" -> "model.fields")."""
    return label.split(BRANCH_MARK, 1)[0]


def distribution(key: str, dom: Domain) -> optuna.distributions.BaseDistribution:
    """The Optuna distribution of one domain (grids have none: validated earlier)."""
    if isinstance(dom, Choice):
        return optuna.distributions.CategoricalDistribution(
            tuple(o.value if isinstance(o, Branch) else o for o in dom.options))
    if isinstance(dom, LogUniform):
        return optuna.distributions.FloatDistribution(dom.low, dom.high, log=True)
    if isinstance(dom, Uniform):
        return optuna.distributions.FloatDistribution(dom.low, dom.high)
    if isinstance(dom, RandInt):
        return optuna.distributions.IntDistribution(dom.low, dom.high - 1)
    if isinstance(dom, QUniform):
        if key_type(key)[0] is int:
            return optuna.distributions.IntDistribution(int(dom.low), int(dom.high),
                                                        step=int(dom.q))
        return optuna.distributions.FloatDistribution(dom.low, dom.high, step=dom.q)
    if isinstance(dom, Grid):
        raise ValueError(f"{key}: grid has no Optuna distribution (searcher random only)")
    raise TypeError(f"{key}: not a domain: {dom!r}")


def suggest(trial: Any, params: Mapping[str, Any], _path: str = "") -> dict[str, Any]:
    """Define-by-run: sample a params tree on an Optuna trial; returns flat {key: value}
    (fixed values included), the chosen branches' keys among them."""
    out: dict[str, Any] = {}
    for key, p in params.items():
        if not isinstance(p, Domain):
            out[key] = p
            continue
        label = key + (BRANCH_MARK + _path if _path else "")
        value = _suggest_one(trial, label, distribution(key, p))
        out[key] = value
        if isinstance(p, Choice):
            branch = next((o for o in p.options if isinstance(o, Branch) and o.value == value),
                          None)
            if branch is not None:
                sub = f"{_path}," if _path else ""
                out.update(suggest(trial, branch.params, f"{sub}{key}={value}"))
    return out


def _suggest_one(trial: Any, label: str, dist: Any) -> Any:
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return trial.suggest_categorical(label, list(dist.choices))
    if isinstance(dist, optuna.distributions.IntDistribution):
        return trial.suggest_int(label, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_float(label, dist.low, dist.high, step=dist.step, log=dist.log)


def labelled(params: Mapping[str, Any], flat: Mapping[str, Any], _path: str = ""
             ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(params by label, distributions by label) of a finished trial's flat config, walking
    the branches it took. Raises ValueError when a value lies outside its distribution (a
    trial of another search space)."""
    values: dict[str, Any] = {}
    dists: dict[str, Any] = {}
    for key, p in params.items():
        if not isinstance(p, Domain):
            continue
        if key not in flat:
            raise ValueError(f"{key} is missing from the trial's config")
        label = key + (BRANCH_MARK + _path if _path else "")
        dist = distribution(key, p)
        value = _typed_for(dist, flat[key])
        if not dist._contains(dist.to_internal_repr(value)):
            raise ValueError(f"{key}={value!r} lies outside {dist}")
        values[label], dists[label] = value, dist
        if isinstance(p, Choice):
            branch = next((o for o in p.options if isinstance(o, Branch) and o.value == value),
                          None)
            if branch is not None:
                sub = f"{_path}," if _path else ""
                v, d = labelled(branch.params, flat, f"{sub}{key}={value}")
                values.update(v)
                dists.update(d)
    return values, dists


def _typed_for(dist: Any, value: Any) -> Any:
    if isinstance(dist, optuna.distributions.IntDistribution):
        return int(value)
    if isinstance(dist, optuna.distributions.FloatDistribution):
        return float(value)
    if isinstance(dist, optuna.distributions.CategoricalDistribution) and value not in \
            dist.choices:
        raise ValueError(f"{value!r} is not one of {dist.choices}")
    return value
