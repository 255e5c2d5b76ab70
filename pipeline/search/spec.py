"""`SearchSpec`: a validated search, what to sample, how to schedule, what to optimise."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .domains import Choice, Domain, Grid, sample_trial, walk_params
from .errors import SearchSpaceError, check_key, coerce
from .validate import validate


@dataclass(frozen=True)
class Objective:
    """One optimised metric; a search's first objective is the one ASHA stops trials on."""

    metric: str
    mode: str


@dataclass(frozen=True)
class Bound:
    """A constraint on a cost counted before training (`num_params`, `flops` per image)."""

    min: float | None = None
    max: float | None = None

    def violated_by(self, value: float) -> bool:
        return ((self.max is not None and value > self.max)
                or (self.min is not None and value < self.min))


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
    # ASHA's first rung promotes no trial before this many have reached it (the first ones
    # stop there): asynchronous ASHA otherwise promotes its first trials with nothing to
    # compare them against
    first_rung_quorum: int = 0
    perturbation_interval: int = 1
    quantile_fraction: float = 0.25
    resample_probability: float = 0.25
    hyperparam_mutations: dict[str, Domain] = field(default_factory=dict)
    seed: int | None = None
    n_initial_points: int | None = None
    objectives: tuple[Objective, ...] = ()  # () means the one objective (metric, mode)
    constraints: dict[str, Bound] = field(default_factory=dict)  # cost key -> bound
    description: str = ""
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def all_objectives(self) -> tuple[Objective, ...]:
        """Every objective, the first being (metric, mode)."""
        return self.objectives or (Objective(self.metric, self.mode),)

    @property
    def multi_objective(self) -> bool:
        return len(self.all_objectives) > 1

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
        validate(spec)
        return spec

    def with_fixed(self, updates: Mapping[str, Any]) -> SearchSpec:
        """Pin top-level keys to values (e.g. CLI --simulate / --data), validated again."""
        params = dict(self.params)
        nested = {k for k, _ in walk_params(self.params)} - set(self.params)
        for key, value in updates.items():
            check_key(self.source, key)
            if key == "train.epochs":
                raise SearchSpaceError(self.source, key, "set max_epochs instead")
            if key in nested:
                raise SearchSpaceError(self.source, key, "is set inside a conditional branch")
            params[key] = coerce(self.source, key, value)
        return self.replace(params=params)


def sample(spec: SearchSpec, rng: random.Random,
           forced: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One flat trial config (dotted keys), as a trial would receive it; `forced` keys set."""
    return sample_trial(spec.trial_params(), spec.hyperparam_mutations, rng, forced)
