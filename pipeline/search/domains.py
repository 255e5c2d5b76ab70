"""The neutral parameter tree of a search: sampled domains, conditional branches, and the walks
over it (sampling, flattening HyperOpt's nesting, conversion to a Tune/HyperOpt backend).

No ray or hyperopt here: `pipeline.tune.searchers` supplies the backends.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar


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


def walk_params(params: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """Every (key, param) in the tree, branch sub-spaces included."""
    for key, p in params.items():
        yield key, p
        if isinstance(p, Choice):
            for o in p.options:
                if isinstance(o, Branch):
                    yield from walk_params(o.params)


def sample_params(params: Mapping[str, Any], rng: random.Random,
                  forced: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One flat draw of a params tree (a chosen branch adds its sub-space's keys); `forced`
    keys take the given value instead (a forced choice takes that value's branch)."""
    forced = forced or {}
    out: dict[str, Any] = {}
    for key, p in params.items():
        if not isinstance(p, Domain):
            out[key] = p
            continue
        value = p.sample(rng)  # drawn even when forced: the other keys' draws stay the same
        if key in forced:
            value = forced[key]
            if isinstance(p, Choice):
                value = next((o for o in p.options if isinstance(o, Branch)
                              and o.value == value), value)
        if isinstance(value, Branch):
            out[key] = value.value
            out.update(sample_params(value.params, rng, forced))
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


def sample_trial(params: Mapping[str, Any], mutations: Mapping[str, Domain],
                 rng: random.Random, forced: Mapping[str, Any] | None = None
                 ) -> dict[str, Any]:
    """One flat trial config; PBT's initial value of a mutated key comes from its mutation."""
    out = sample_params(params, rng, forced)
    for key, dom in mutations.items():
        if key not in out:
            out[key] = dom.sample(rng)
    return out
