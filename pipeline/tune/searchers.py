"""SearchSpec -> (param_space, searcher, scheduler): ASHA + HyperOpt or Optuna (one or several
objectives; or random search, or FIFO) over architectures and optimiser values, or PBT over
optimiser values only. A search with `constraints` samples through `CheckedSearcher`."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining
from ray.tune.schedulers.async_hyperband import _Bracket
from ray.tune.search import BasicVariantGenerator
from ray.tune.search.hyperopt import HyperOptSearch

from ..search import Domain, SearchSpec, convert, walk_params
from .constrained import CheckedSearcher

STUDY_NAME = "eqcvt"  # the Optuna study inside a search's searcher


class _TuneBackend:
    """`search_space.convert` backend for Tune's own domains (random search, PBT)."""

    def choice(self, label: str, options: list[Any]) -> Any:
        return tune.choice(options)

    def uniform(self, label: str, low: float, high: float) -> Any:
        return tune.uniform(low, high)

    def loguniform(self, label: str, low: float, high: float) -> Any:
        return tune.loguniform(low, high)

    def randint(self, label: str, low: int, high: int) -> Any:
        return tune.randint(low, high)

    def quniform(self, label: str, low: float, high: float, q: float) -> Any:
        return tune.quniform(low, high, q)

    def grid(self, label: str, values: list[Any]) -> Any:
        return tune.grid_search(values)


class _HyperoptBackend:
    """Backend for hyperopt's `hp`: conditional choices become nested hp.choice."""

    def __init__(self) -> None:
        from hyperopt import hp

        self.hp = hp

    def choice(self, label: str, options: list[Any]) -> Any:
        return self.hp.choice(label, options)

    def uniform(self, label: str, low: float, high: float) -> Any:
        return self.hp.uniform(label, low, high)

    def loguniform(self, label: str, low: float, high: float) -> Any:
        return self.hp.loguniform(label, math.log(low), math.log(high))

    def randint(self, label: str, low: int, high: int) -> Any:
        return self.hp.randint(label, low, high)  # high exclusive, like Ray

    def quniform(self, label: str, low: float, high: float, q: float) -> Any:
        return self.hp.quniform(label, low, high, q)

    def grid(self, label: str, values: list[Any]) -> Any:
        raise ValueError(f"{label}: grid needs searcher random (validated earlier)")


def hyperopt_space(spec: SearchSpec) -> dict[str, Any]:
    return convert(spec.trial_params(), _HyperoptBackend())


def _define_by_run(params: Mapping[str, Any], trial: Any) -> dict[str, Any]:
    from ..search.optuna_space import suggest

    return suggest(trial, params)


def optuna_searcher(spec: SearchSpec, warm: Sequence[Any] = ()) -> Any:
    """Ray's OptunaSearch over the spec's tree (define-by-run: conditional branches), with
    every objective; `warm`: finished Optuna trials of an earlier search (warm start).

    The study is created here on an in-memory storage and handed to OptunaSearch by name,
    so the warm trials are in it before the first suggestion (Ray's `evaluated_rewards`
    cannot give several objectives nor a define-by-run space).
    """
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if spec.searcher == "random":
        sampler: Any = optuna.samplers.RandomSampler(seed=spec.seed)
    else:
        n_initial = spec.n_initial_points or max(2, spec.num_samples // 4)
        sampler = optuna.samplers.TPESampler(seed=spec.seed, n_startup_trials=n_initial)
    objectives = spec.all_objectives
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(
        storage=storage, sampler=sampler, study_name=STUDY_NAME,
        directions=["maximize" if o.mode == "max" else "minimize" for o in objectives])
    for trial in warm:
        study.add_trial(trial)
    metric: Any = [o.metric for o in objectives] if spec.multi_objective else spec.metric
    mode: Any = [o.mode for o in objectives] if spec.multi_objective else spec.mode
    return OptunaSearch(space=functools.partial(_define_by_run, spec.trial_params()),
                        metric=metric, mode=mode, sampler=sampler, storage=storage,
                        study_name=STUDY_NAME)


class _QuorumBracket(_Bracket):
    """An ASHA bracket whose first rung stops its first `quorum` trials.

    Asynchronous ASHA promotes a trial whose result is in the top 1/reduction_factor of those
    recorded at its rung so far, so the first trials to reach a rung are promoted with nothing
    (or little) to compare them against. In replays of recorded searches with reduction 9
    (bench/search_replay.py), ASHA promoted about one trial in four, where one in nine is
    meant, and spent a fifth of its first 72 epochs on promoted trials that never passed 0.9.
    """

    def __init__(self, quorum: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.quorum = quorum

    def cutoff(self, recorded: dict) -> Any:
        if recorded is self._rungs[-1][1] and len(recorded) < self.quorum:
            return math.inf  # every reward is below it: stop (the trial is still recorded)
        return super().cutoff(recorded)


class QuorumASHAScheduler(ASHAScheduler):
    """Ray's ASHAScheduler with `first_rung_quorum` (see `_QuorumBracket`); 0 is Ray's own."""

    def __init__(self, *, max_t: int, grace_period: int, reduction_factor: float,
                 first_rung_quorum: int = 0) -> None:
        super().__init__(time_attr="training_iteration", max_t=max_t,
                         grace_period=grace_period, reduction_factor=reduction_factor)
        self._brackets = [_QuorumBracket(first_rung_quorum, grace_period, max_t,
                                         reduction_factor, 0)]


def build_search(spec: SearchSpec, *, warm: Sequence[Any] = (), pinned: Sequence[str] = ()
                 ) -> tuple[dict[str, Any], Any, Any]:
    """(param_space, search_alg, scheduler) for a spec; `warm`: Optuna trials to start
    from; `pinned`: keys the command line set (named in cost errors)."""
    if spec.scheduler == "pbt":
        space = convert(spec.trial_params(), _TuneBackend())
        mutations = convert(spec.hyperparam_mutations, _TuneBackend())
        for key, dom in mutations.items():
            space.setdefault(key, dom)
        scheduler = PopulationBasedTraining(
            time_attr="training_iteration",
            perturbation_interval=spec.perturbation_interval,
            hyperparam_mutations=mutations,
            quantile_fraction=spec.quantile_fraction,
            resample_probability=spec.resample_probability,
        )
        return space, BasicVariantGenerator(random_state=spec.seed), scheduler
    if spec.scheduler == "asha":
        scheduler = QuorumASHAScheduler(
            max_t=spec.max_epochs,
            grace_period=spec.grace_period,
            reduction_factor=spec.reduction_factor,
            first_rung_quorum=spec.first_rung_quorum,
        )
    else:
        scheduler = FIFOScheduler()
    if spec.searcher == "optuna" or (spec.searcher == "random" and spec.constraints):
        searcher = CheckedSearcher(optuna_searcher(spec, warm), spec, optuna=True,
                                   sampled=sampled_keys(spec), pinned=tuple(pinned))
        return {}, searcher, scheduler
    if warm:
        raise ValueError("warm starts need searcher optuna")
    if spec.searcher == "hyperopt" or spec.has_conditionals:
        n_initial = spec.n_initial_points
        if spec.searcher == "random":  # nested domains: hyperopt with only random draws
            n_initial = spec.num_samples
        elif n_initial is None:
            n_initial = max(2, spec.num_samples // 4)
        searcher = HyperOptSearch(
            space=hyperopt_space(spec), metric=spec.metric, mode=spec.mode,
            n_initial_points=n_initial, random_state_seed=spec.seed,
        )
        if spec.constraints:
            searcher = CheckedSearcher(searcher, spec, optuna=False, sampled=sampled_keys(spec),
                                       pinned=tuple(pinned))
        return {}, searcher, scheduler
    space = convert(spec.trial_params(), _TuneBackend())
    return space, BasicVariantGenerator(random_state=spec.seed), scheduler


def sampled_keys(spec: SearchSpec) -> list[str]:
    """Keys that differ between trials (the columns worth showing)."""
    keys = [k for k, p in walk_params(spec.params) if isinstance(p, Domain)]
    keys += list(spec.hyperparam_mutations)
    return list(dict.fromkeys(keys))
