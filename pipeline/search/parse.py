"""Search-space YAML -> `SearchSpec`, validated before any Ray work.

Keys are dotted paths into `pipeline.config.RunConfig` ("model.group", "train.lr"). Values are
fixed scalars or one operator: choice, uniform, loguniform, randint (high exclusive, as in Ray
and hyperopt), quniform, grid. A `choice` option may be a conditional branch
`{value: X, params: {...}}` whose sub-space applies only when X is chosen (HyperOpt nested
choice).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ..config import key_type, split_key
from .domains import OPERATORS, Branch, Choice, Grid, LogUniform, QUniform, RandInt, Uniform
from .errors import SearchSpaceError, coerce, number
from .spec import Bound, Objective, Resources, SearchSpec
from .validate import COST_METRICS, MODES, SCHEDULERS, SEARCHERS, validate

_TOP_KEYS = {
    "name", "description", "scheduler", "searcher", "metric", "mode", "num_samples",
    "max_epochs", "grace_period", "reduction_factor", "perturbation_interval",
    "quantile_fraction", "resample_probability", "hyperparam_mutations", "resources",
    "params", "seed", "n_initial_points", "objectives", "constraints", "first_rung_quorum",
}
_ASHA_KEYS = {"grace_period", "reduction_factor", "first_rung_quorum"}
_PBT_KEYS = {"perturbation_interval", "quantile_fraction", "resample_probability",
             "hyperparam_mutations"}


def load_search_space(path: str | Path) -> SearchSpec:
    """Read and validate a search-space YAML file."""
    return parse_search_text(Path(path).read_text(), source=str(path))


def parse_search_text(text: str, source: str = "<string>") -> SearchSpec:
    """Validate the text of a search-space YAML file (`source` names it in errors)."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise SearchSpaceError(source, "<yaml>", f"not valid YAML: {err}") from err
    return parse_search_space(doc, source=source)


def parse_search_space(doc: Any, source: str = "<string>") -> SearchSpec:
    """Validate a loaded YAML document and build the SearchSpec."""
    if not isinstance(doc, Mapping):
        raise SearchSpaceError(source, "<root>", "expected a mapping of search settings")
    unknown = sorted(set(doc) - _TOP_KEYS)
    if unknown:
        raise SearchSpaceError(
            source, str(unknown[0]), f"unknown setting; valid: {', '.join(sorted(_TOP_KEYS))}"
        )
    scheduler = _enum(source, doc, "scheduler", SCHEDULERS, "asha")
    searcher_default = None if scheduler == "pbt" else "random"
    searcher = doc.get("searcher", searcher_default)
    if searcher is not None:
        searcher = _enum(source, doc, "searcher", SEARCHERS, searcher_default)
    for only, keys in (("asha", _ASHA_KEYS), ("pbt", _PBT_KEYS)):
        misplaced = sorted(set(doc) & keys) if scheduler != only else []
        if misplaced:
            raise SearchSpaceError(
                source, misplaced[0], f"only applies to scheduler {only}, not {scheduler}"
            )
    raw_params = doc.get("params") or {}
    if not isinstance(raw_params, Mapping):
        raise SearchSpaceError(source, "params", "expected a mapping of dotted keys")
    params = _parse_params(source, raw_params, prefix="")
    mutations_raw = doc.get("hyperparam_mutations") or {}
    if not isinstance(mutations_raw, Mapping):
        raise SearchSpaceError(source, "hyperparam_mutations", "expected a mapping")
    mutations = _parse_params(source, mutations_raw, prefix="hyperparam_mutations: ")
    resources = _parse_resources(source, doc.get("resources") or {})
    objectives = _parse_objectives(source, doc)
    metric = objectives[0].metric if objectives else _typed(source, doc, "metric", str, "val_acc")
    mode = objectives[0].mode if objectives else _enum(source, doc, "mode", MODES, "max")
    spec = SearchSpec(
        source=source,
        name=str(doc.get("name") or Path(source).stem),
        description=str(doc.get("description") or ""),
        scheduler=scheduler,
        searcher=searcher,
        metric=metric,
        mode=mode,
        num_samples=_typed(source, doc, "num_samples", int, 1),
        max_epochs=_typed(source, doc, "max_epochs", int, 1),
        grace_period=_typed(source, doc, "grace_period", int, 1),
        reduction_factor=_typed(source, doc, "reduction_factor", float, 2.0),
        first_rung_quorum=_typed(source, doc, "first_rung_quorum", int, 0),
        perturbation_interval=_typed(source, doc, "perturbation_interval", int, 1),
        quantile_fraction=_typed(source, doc, "quantile_fraction", float, 0.25),
        resample_probability=_typed(source, doc, "resample_probability", float, 0.25),
        hyperparam_mutations=mutations,
        resources=resources,
        params=params,
        seed=_typed(source, doc, "seed", int, None),
        n_initial_points=_typed(source, doc, "n_initial_points", int, None),
        objectives=objectives,
        constraints=_parse_constraints(source, doc.get("constraints")),
        raw=dict(doc),
    )
    validate(spec)
    return spec


def _parse_objectives(source: str, doc: Mapping[str, Any]) -> tuple[Objective, ...]:
    """`objectives: [{metric: val_acc, mode: max}, ...]`; () when the file uses metric/mode."""
    raw = doc.get("objectives")
    if raw is None:
        return ()
    both = sorted({"metric", "mode"} & set(doc))
    if both:
        raise SearchSpaceError(source, both[0], "set either metric/mode or objectives, not both")
    if not isinstance(raw, list) or not raw:
        raise SearchSpaceError(source, "objectives",
                               "expected a non-empty list of {metric: ..., mode: min|max}")
    out = []
    for i, item in enumerate(raw):
        name = f"objectives[{i}]"
        if not isinstance(item, Mapping) or set(item) != {"metric", "mode"}:
            got = sorted(item) if isinstance(item, Mapping) else item
            raise SearchSpaceError(source, name, f"expected {{metric: ..., mode: min|max}}, "
                                                 f"got {got!r}")
        metric = _typed(source, item, "metric", str, None)
        if metric is None:
            raise SearchSpaceError(source, f"{name}.metric", "expected a metric name")
        if item["mode"] not in MODES:
            raise SearchSpaceError(source, f"{name}.mode",
                                   f"must be one of {', '.join(MODES)}, got {item['mode']!r}")
        out.append(Objective(metric, item["mode"]))
    return tuple(out)


def _parse_constraints(source: str, raw: Any) -> dict[str, Bound]:
    """`constraints: {num_params: {max: 100000}, flops: {max: 2.0e8}}`."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping) or not raw:
        raise SearchSpaceError(source, "constraints",
                               "expected a mapping such as {num_params: {max: 100000}}")
    out = {}
    for key, bound in raw.items():
        name = f"constraints.{key}"
        if key not in COST_METRICS:
            raise SearchSpaceError(source, name,
                                   f"unknown constraint; valid: {', '.join(COST_METRICS)}")
        if not isinstance(bound, Mapping) or not bound or set(bound) - {"min", "max"}:
            raise SearchSpaceError(source, name, f"expected {{max: N}} and/or {{min: N}}, "
                                                 f"got {bound!r}")
        lo, hi = (None if bound.get(k) is None else float(number(source, f"{name}.{k}",
                                                                  bound[k]))
                  for k in ("min", "max"))
        for k, v in (("min", lo), ("max", hi)):
            if v is not None and not (math.isfinite(v) and v > 0):
                raise SearchSpaceError(source, f"{name}.{k}", f"must be a number > 0, got {v}")
        if lo is not None and hi is not None and lo > hi:
            raise SearchSpaceError(source, name, f"min {lo} is above max {hi}")
        out[str(key)] = Bound(lo, hi)
    return out


def _parse_params(source: str, raw: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in raw.items():
        key = str(key)
        name = prefix + key
        try:
            split_key(key)
        except ValueError as err:
            raise SearchSpaceError(source, name, str(err)) from None
        out[key] = _parse_param(source, key, name, value)
    return out


def _parse_param(source: str, key: str, name: str, raw: Any) -> Any:
    if isinstance(raw, list):
        raise SearchSpaceError(
            source, name, "a list is not a value; write {choice: [...]} or {grid: [...]}"
        )
    if not isinstance(raw, Mapping):
        return coerce(source, key, raw)
    if len(raw) != 1 or next(iter(raw)) not in OPERATORS:
        raise SearchSpaceError(
            source, name,
            f"expected a value or one operator of {', '.join(OPERATORS)}, got keys {list(raw)}",
        )
    op, arg = next(iter(raw.items()))
    base, _ = key_type(key)
    if op in ("choice", "grid"):
        if not isinstance(arg, list) or not arg:
            raise SearchSpaceError(source, name, f"{op} needs a non-empty list of options")
        if op == "grid":
            return Grid(tuple(_option(source, key, name, o, allow_branch=False) for o in arg))
        return Choice(tuple(_option(source, key, name, o, allow_branch=True) for o in arg))
    n_args = 3 if op == "quniform" else 2
    if not isinstance(arg, list) or len(arg) != n_args:
        raise SearchSpaceError(source, name, f"{op} needs a list of {n_args} numbers")
    nums = [number(source, name, a) for a in arg]
    low, high = nums[0], nums[1]
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        raise SearchSpaceError(source, name, f"{op} needs low < high, got [{low}, {high}]")
    if base not in (int, float):
        raise SearchSpaceError(source, name, f"{op} samples numbers; {key} is a {base.__name__}")
    if op == "loguniform":
        if low <= 0:
            raise SearchSpaceError(source, name, f"loguniform needs low > 0, got {low}")
        if base is int:
            raise SearchSpaceError(source, name, f"loguniform samples floats; {key} is an int")
        return LogUniform(float(low), float(high))
    if op == "uniform":
        if base is int:
            raise SearchSpaceError(
                source, name, f"uniform samples floats; {key} is an int: use randint or quniform"
            )
        return Uniform(float(low), float(high))
    if op == "randint":
        if not (float(low).is_integer() and float(high).is_integer()):
            raise SearchSpaceError(source, name, f"randint needs integers, got [{low}, {high}]")
        return RandInt(int(low), int(high))
    q = nums[2]
    if not q > 0:
        raise SearchSpaceError(source, name, f"quniform needs q > 0, got {q}")
    if base is int and not all(float(v).is_integer() for v in nums):
        raise SearchSpaceError(
            source, name, f"quniform on the integer key {key} needs integral low, high and q"
        )
    return QUniform(float(low), float(high), float(q))


def _option(source: str, key: str, name: str, raw: Any, allow_branch: bool) -> Any:
    if isinstance(raw, Mapping):
        if not allow_branch or set(raw) != {"value", "params"}:
            raise SearchSpaceError(
                source, name,
                "an option that is a mapping must be a conditional branch "
                "{value: ..., params: {...}} inside a choice",
            )
        value = coerce(source, key, raw["value"])
        sub = raw["params"] or {}
        if not isinstance(sub, Mapping):
            raise SearchSpaceError(source, f"{name}={value}", "params must be a mapping")
        return Branch(value, _parse_params(source, sub, prefix=f"{name}={value} > "))
    if isinstance(raw, list):
        raise SearchSpaceError(source, name, f"option {raw!r} is a list; options are scalars")
    return coerce(source, key, raw)


def _parse_resources(source: str, raw: Any) -> Resources:
    if not isinstance(raw, Mapping):
        raise SearchSpaceError(source, "resources", "expected {cpus: N, gpus: M}")
    unknown = sorted(set(raw) - {"cpus", "gpus"})
    if unknown:
        raise SearchSpaceError(source, f"resources.{unknown[0]}", "unknown; valid: cpus, gpus")
    cpus = number(source, "resources.cpus", raw.get("cpus", 1.0))
    gpus = number(source, "resources.gpus", raw.get("gpus", 0.0))
    if cpus <= 0:
        raise SearchSpaceError(source, "resources.cpus", f"must be > 0, got {cpus}")
    if gpus < 0:
        raise SearchSpaceError(source, "resources.gpus", f"must be >= 0, got {gpus}")
    return Resources(float(cpus), float(gpus))


def _typed(source: str, doc: Mapping[str, Any], key: str, kind: type, default: Any) -> Any:
    value = doc.get(key, default)
    if value is None:
        return default
    if kind is str:
        if isinstance(value, str):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif kind is float:
        if isinstance(value, str):
            value = number(source, key, value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    raise SearchSpaceError(source, key, f"expected {kind.__name__}, got {value!r}")


def _enum(source: str, doc: Mapping[str, Any], key: str, allowed: tuple[str, ...],
          default: Any) -> Any:
    value = doc.get(key, default)
    if value not in allowed:
        raise SearchSpaceError(source, key, f"must be one of {', '.join(allowed)}, got {value!r}")
    return value
