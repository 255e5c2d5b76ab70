"""A search, before and around Ray: YAML -> validated `SearchSpec` (parse, validate), the
neutral domain tree (domains), the request/outcome types and where their files live; a
configuration's cost before training (cost) and the tree as Optuna distributions (optuna_space).

Imports no ray and no hyperopt: `pipeline.tune` turns the Domain tree into Tune/HyperOpt
objects with `convert(params, backend)`.
"""

from .domains import (
    OPERATORS,
    Branch,
    Choice,
    Domain,
    Grid,
    LogUniform,
    QUniform,
    RandInt,
    Uniform,
    convert,
    flatten_sampled,
    walk_params,
)
from .errors import SearchSpaceError
from .parse import load_search_space, parse_search_space
from .request import SearchOutcome, SearchRequest, load_request
from .spec import Resources, SearchSpec, sample
from .storage import META_FILE, latest_experiment
from .trial import trial_config
from .validate import MODES, PBT_MUTABLE_KEYS, SCHEDULERS, SEARCHERS

__all__ = [
    "META_FILE", "MODES", "OPERATORS", "PBT_MUTABLE_KEYS", "SCHEDULERS", "SEARCHERS",
    "Branch", "Choice", "Domain", "Grid", "LogUniform", "QUniform", "RandInt", "Resources",
    "SearchOutcome", "SearchRequest", "SearchSpaceError", "SearchSpec", "Uniform",
    "convert", "flatten_sampled", "latest_experiment", "load_request", "load_search_space",
    "parse_search_space", "sample", "trial_config", "walk_params",
]
