"""Search-space YAML -> validated `SearchSpec`, before any Ray work.

Keys are dotted paths into `pipeline.config.RunConfig` ("model.group", "train.lr"). Values are
fixed scalars or one operator: choice, uniform, loguniform, randint (high exclusive, as in Ray
and hyperopt), quniform, grid. A `choice` option may be a conditional branch
`{value: X, params: {...}}` whose sub-space applies only when X is chosen (HyperOpt nested
choice). This module imports no ray/hyperopt: `pipeline.tune` turns the neutral Domain tree into
Tune/HyperOpt objects with `convert(params, backend)`.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from .config import RunConfig, coerce_value, key_type, split_key

SCHEDULERS: tuple[str, ...] = ("asha", "pbt", "fifo")
SEARCHERS: tuple[str, ...] = ("hyperopt", "random")
MODES: tuple[str, ...] = ("min", "max")
# Values PBT may change between trials: none of them changes a weight's shape.
PBT_MUTABLE_KEYS: tuple[str, ...] = (
    "train.lr",
    "train.weight_decay",
    "train.momentum",
    "train.grad_clip",
    "train.label_smoothing",
)
_MIN_METRICS = ("val_loss", "train_loss", "val_mse", "val_mae")
_CLASSIFICATION_METRICS = ("val_acc", "val_auc_micro", "val_auc_macro")
_REGRESSION_METRICS = ("val_mse", "val_mae")
_TOP_KEYS = {
    "name", "description", "scheduler", "searcher", "metric", "mode", "num_samples",
    "max_epochs", "grace_period", "reduction_factor", "perturbation_interval",
    "quantile_fraction", "resample_probability", "hyperparam_mutations", "resources",
    "params", "seed", "n_initial_points",
}
_ASHA_KEYS = {"grace_period", "reduction_factor"}
_PBT_KEYS = {"perturbation_interval", "quantile_fraction", "resample_probability",
             "hyperparam_mutations"}


class SearchSpaceError(ValueError):
    """A search-space file is wrong; the message names the file and the key."""

    def __init__(self, source: str, key: str, message: str) -> None:
        super().__init__(f"{source}: {key}: {message}")
        self.source, self.key = source, key


# ----------------------------------------------------------------------------- domains


class Domain:
    """A sampled parameter; `kind` is the operator name used in YAML and by `convert`."""

    kind: ClassVar[str] = ""

    def sample(self, rng: random.Random) -> Any:
        raise NotImplementedError

    def corner_values(self) -> list[Any]:
        """Values checked against the config's own validation."""
        raise NotImplementedError


@dataclass(frozen=True)
class Uniform(Domain):
    low: float
    high: float
    kind: ClassVar[str] = "uniform"

    def sample(self, rng: random.Random) -> float:
        return rng.uniform(self.low, self.high)

    def corner_values(self) -> list[Any]:
        return [self.low, self.high]


@dataclass(frozen=True)
class LogUniform(Domain):
    low: float
    high: float
    kind: ClassVar[str] = "loguniform"

    def sample(self, rng: random.Random) -> float:
        return math.exp(rng.uniform(math.log(self.low), math.log(self.high)))

    def corner_values(self) -> list[Any]:
        return [self.low, self.high]


@dataclass(frozen=True)
class RandInt(Domain):
    low: int
    high: int  # exclusive
    kind: ClassVar[str] = "randint"

    def sample(self, rng: random.Random) -> int:
        return rng.randrange(self.low, self.high)

    def corner_values(self) -> list[Any]:
        return [self.low, self.high - 1]


@dataclass(frozen=True)
class QUniform(Domain):
    low: float
    high: float
    q: float
    kind: ClassVar[str] = "quniform"

    def sample(self, rng: random.Random) -> float:
        return self._snap(rng.uniform(self.low, self.high))

    def corner_values(self) -> list[Any]:
        return [self._snap(self.low), self._snap(self.high)]

    def _snap(self, value: float) -> float:
        # round(...) * q leaves float noise (0.30000000000000004); trim it for readable params
        return round(round(value / self.q) * self.q, 12)


@dataclass(frozen=True)
class Branch:
    """A `choice` option with its own sub-space: `params` apply only when `value` is chosen."""

    value: Any
    params: Mapping[str, Any]


@dataclass(frozen=True)
class Choice(Domain):
    options: tuple[Any, ...]  # scalars and/or Branch
    kind: ClassVar[str] = "choice"

    @property
    def has_branches(self) -> bool:
        return any(isinstance(o, Branch) for o in self.options)

    def sample(self, rng: random.Random) -> Any:
        return rng.choice(self.options)

    def corner_values(self) -> list[Any]:
        return [o.value if isinstance(o, Branch) else o for o in self.options]


@dataclass(frozen=True)
class Grid(Domain):
    values: tuple[Any, ...]
    kind: ClassVar[str] = "grid"

    def sample(self, rng: random.Random) -> Any:
        return rng.choice(self.values)

    def corner_values(self) -> list[Any]:
        return list(self.values)


OPERATORS: dict[str, type[Domain]] = {
    c.kind: c for c in (Choice, Uniform, LogUniform, RandInt, QUniform, Grid)
}


@dataclass(frozen=True)
class Resources:
    cpus: float = 1.0
    gpus: float = 0.0


# ----------------------------------------------------------------------------- the spec


@dataclass(frozen=True)
class SearchSpec:
    """A validated search: what to sample, how to schedule, what to optimise."""

    source: str
    name: str
    scheduler: str
    searcher: str | None
    metric: str
    mode: str
    num_samples: int
    max_epochs: int
    params: dict[str, Any]
    resources: Resources = field(default_factory=Resources)
    grace_period: int = 1
    reduction_factor: float = 2.0
    perturbation_interval: int = 1
    quantile_fraction: float = 0.25
    resample_probability: float = 0.25
    hyperparam_mutations: dict[str, Domain] = field(default_factory=dict)
    seed: int | None = None
    n_initial_points: int | None = None
    description: str = ""
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def has_conditionals(self) -> bool:
        return any(isinstance(p, Choice) and p.has_branches for _, p in walk_params(self.params))

    @property
    def has_grid(self) -> bool:
        return any(isinstance(p, Grid) for _, p in walk_params(self.params))

    def trial_params(self) -> dict[str, Any]:
        """The params every trial gets, with train.epochs set from max_epochs."""
        return {**self.params, "train.epochs": self.max_epochs}

    def fixed(self) -> dict[str, Any]:
        """The plain (non-sampled) top-level values, train.epochs included."""
        return {k: v for k, v in self.trial_params().items() if not isinstance(v, Domain)}

    def replace(self, **changes: Any) -> SearchSpec:
        """dataclasses.replace, validated again (e.g. a CLI --num-samples)."""
        spec = dataclasses.replace(self, **changes)
        _validate(spec)
        return spec

    def with_fixed(self, updates: Mapping[str, Any]) -> SearchSpec:
        """Pin top-level keys to values (e.g. CLI --simulate / --data), validated again."""
        params = dict(self.params)
        nested = {k for k, _ in walk_params(self.params)} - set(self.params)
        for key, value in updates.items():
            _key_check(self.source, key)
            if key == "train.epochs":
                raise SearchSpaceError(self.source, key, "set max_epochs instead")
            if key in nested:
                raise SearchSpaceError(self.source, key, "is set inside a conditional branch")
            params[key] = _coerce(self.source, key, value)
        return self.replace(params=params)


def load_search_space(path: str | Path) -> SearchSpec:
    """Read and validate a search-space YAML file."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SearchSpaceError(str(path), "<yaml>", f"not valid YAML: {err}") from err
    return parse_search_space(doc, source=str(path))


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
    spec = SearchSpec(
        source=source,
        name=str(doc.get("name") or Path(source).stem),
        description=str(doc.get("description") or ""),
        scheduler=scheduler,
        searcher=searcher,
        metric=_typed(source, doc, "metric", str, "val_acc"),
        mode=_enum(source, doc, "mode", MODES, "max"),
        num_samples=_typed(source, doc, "num_samples", int, 1),
        max_epochs=_typed(source, doc, "max_epochs", int, 1),
        grace_period=_typed(source, doc, "grace_period", int, 1),
        reduction_factor=_typed(source, doc, "reduction_factor", float, 2.0),
        perturbation_interval=_typed(source, doc, "perturbation_interval", int, 1),
        quantile_fraction=_typed(source, doc, "quantile_fraction", float, 0.25),
        resample_probability=_typed(source, doc, "resample_probability", float, 0.25),
        hyperparam_mutations=mutations,
        resources=resources,
        params=params,
        seed=_typed(source, doc, "seed", int, None),
        n_initial_points=_typed(source, doc, "n_initial_points", int, None),
        raw=dict(doc),
    )
    _validate(spec)
    return spec


# ----------------------------------------------------------------------------- sampling


def sample(spec: SearchSpec, rng: random.Random) -> dict[str, Any]:
    """One flat trial config (dotted keys), as a trial would receive it."""
    out = _sample_params(spec.trial_params(), rng)
    for key, dom in spec.hyperparam_mutations.items():
        if key not in out:  # PBT samples the initial value from the mutation
            out[key] = dom.sample(rng)
    return out


def _sample_params(params: Mapping[str, Any], rng: random.Random) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, p in params.items():
        if not isinstance(p, Domain):
            out[key] = p
            continue
        value = p.sample(rng)
        if isinstance(value, Branch):
            out[key] = value.value
            out.update(_sample_params(value.params, rng))
        else:
            out[key] = value
    return out


def flatten_sampled(config: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten HyperOpt's nested-choice result: {"k": {"k": v, "sub": w}} -> {"k": v, "sub": w}."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            inner = flatten_sampled(value)
            if key not in inner:
                raise ValueError(f"nested value of {key!r} lacks the key itself: {value!r}")
            out.update(inner)
        else:
            out[key] = value
    return out


def convert(params: Mapping[str, Any], backend: Any, _path: str = "") -> dict[str, Any]:
    """Map a params tree onto a Tune/HyperOpt backend, without importing either here.

    `backend` has methods choice/uniform/loguniform/randint/quniform/grid taking a unique
    `label` first (the key, prefixed by its branch path; hyperopt needs unique labels), then
    the domain's values. A conditional choice becomes
    `backend.choice(label, [{key: value, **converted sub-params}, ...])`.
    """
    out: dict[str, Any] = {}
    for key, p in params.items():
        label = f"{_path}{key}"
        if isinstance(p, Choice) and p.has_branches:
            options = []
            for o in p.options:
                if isinstance(o, Branch):
                    sub = convert(o.params, backend, _path=f"{label}={o.value}/")
                    options.append({key: o.value, **sub})
                else:
                    options.append({key: o})
            out[key] = backend.choice(label, options)
        elif isinstance(p, Choice):
            out[key] = backend.choice(label, list(p.options))
        elif isinstance(p, Grid):
            out[key] = backend.grid(label, list(p.values))
        elif isinstance(p, QUniform):
            out[key] = backend.quniform(label, p.low, p.high, p.q)
        elif isinstance(p, (Uniform, LogUniform, RandInt)):
            out[key] = getattr(backend, p.kind)(label, p.low, p.high)
        else:
            out[key] = p
    return out


# ----------------------------------------------------------------------------- parsing


def walk_params(params: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """Every (key, param) in the tree, branch sub-spaces included."""
    for key, p in params.items():
        yield key, p
        if isinstance(p, Choice):
            for o in p.options:
                if isinstance(o, Branch):
                    yield from walk_params(o.params)


def _key_check(source: str, key: Any) -> None:
    try:
        split_key(str(key))
    except ValueError as err:
        raise SearchSpaceError(source, str(key), str(err)) from None


def _number(source: str, key: str, value: Any) -> Any:
    """YAML 1.1 reads `1e-4` as a string; accept numeric strings where a number is due."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise SearchSpaceError(source, key, f"expected a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SearchSpaceError(source, key, f"expected a number, got {value!r}")
    return value


def _coerce(source: str, key: str, value: Any) -> Any:
    base, _ = key_type(key)
    if base in (int, float) and isinstance(value, str):
        value = _number(source, key, value)
    try:
        return coerce_value(key, value)
    except ValueError as err:
        raise SearchSpaceError(source, key, str(err)) from None


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
        return _coerce(source, key, raw)
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
    nums = [_number(source, name, a) for a in arg]
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
        value = _coerce(source, key, raw["value"])
        sub = raw["params"] or {}
        if not isinstance(sub, Mapping):
            raise SearchSpaceError(source, f"{name}={value}", "params must be a mapping")
        return Branch(value, _parse_params(source, sub, prefix=f"{name}={value} > "))
    if isinstance(raw, list):
        raise SearchSpaceError(source, name, f"option {raw!r} is a list; options are scalars")
    return _coerce(source, key, raw)


def _parse_resources(source: str, raw: Any) -> Resources:
    if not isinstance(raw, Mapping):
        raise SearchSpaceError(source, "resources", "expected {cpus: N, gpus: M}")
    unknown = sorted(set(raw) - {"cpus", "gpus"})
    if unknown:
        raise SearchSpaceError(source, f"resources.{unknown[0]}", "unknown; valid: cpus, gpus")
    cpus = _number(source, "resources.cpus", raw.get("cpus", 1.0))
    gpus = _number(source, "resources.gpus", raw.get("gpus", 0.0))
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
            value = _number(source, key, value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    raise SearchSpaceError(source, key, f"expected {kind.__name__}, got {value!r}")


def _enum(source: str, doc: Mapping[str, Any], key: str, allowed: tuple[str, ...],
          default: Any) -> Any:
    value = doc.get(key, default)
    if value not in allowed:
        raise SearchSpaceError(source, key, f"must be one of {', '.join(allowed)}, got {value!r}")
    return value


# ----------------------------------------------------------------------------- validation


def _validate(spec: SearchSpec) -> None:
    src = spec.source
    _check_numbers(spec)
    if "train.epochs" in {k for k, _ in walk_params(spec.params)}:
        raise SearchSpaceError(src, "train.epochs", "set max_epochs (the per-trial budget)")
    _check_tree(src, spec.params, context=spec.fixed(), seen=set(), path="")
    if spec.scheduler == "pbt":
        _validate_pbt(spec)
    elif spec.searcher is None:
        raise SearchSpaceError(src, "searcher", f"scheduler {spec.scheduler} needs a searcher")
    if spec.has_grid and (spec.searcher == "hyperopt" or spec.has_conditionals):
        raise SearchSpaceError(
            src, _first_key(spec, Grid),
            "grid needs searcher random and no conditional choices (HyperOpt cannot grid)",
        )
    if spec.n_initial_points is not None and spec.searcher != "hyperopt":
        raise SearchSpaceError(src, "n_initial_points", "only applies to searcher hyperopt")
    _validate_metric(spec)
    # combined values (e.g. model.embed_dim with model.heads) checked on a few samples
    rng = random.Random(0)
    for _ in range(16):
        flat = sample(spec, rng)
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


def _validate_metric(spec: SearchSpec) -> None:
    src, metric = spec.source, spec.metric
    task = spec.params.get("data.task", RunConfig().data.task)
    classification = metric in _CLASSIFICATION_METRICS or metric.startswith("val_auc_")
    if not (classification or metric in _REGRESSION_METRICS or metric in _MIN_METRICS):
        raise SearchSpaceError(
            src, "metric",
            f"unknown metric {metric!r}; the engine reports train_loss, val_loss, val_acc, "
            "val_auc_micro, val_auc_macro, val_auc_<class>, val_mse, val_mae",
        )
    if isinstance(task, str):
        if task == "regression" and classification:
            raise SearchSpaceError(src, "metric", f"{metric} is not reported for regression")
        if task != "regression" and metric in _REGRESSION_METRICS:
            raise SearchSpaceError(src, "metric", f"{metric} is only reported for regression")
    wanted = "min" if metric in _MIN_METRICS else "max"
    if spec.mode != wanted:
        raise SearchSpaceError(src, "mode", f"{metric} should be {wanted}imised, got {spec.mode}")


def _first_key(spec: SearchSpec, cls: type) -> str:
    return next(k for k, p in walk_params(spec.params) if isinstance(p, cls) and (
        cls is not Choice or p.has_branches))
