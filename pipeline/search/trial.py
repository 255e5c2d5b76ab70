"""The trial boundary: what Tune hands a trial (flat dotted keys, or HyperOpt's nested
choices) becomes a RunConfig here, once; past this line nothing reads `config.get(...)`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..config import RunConfig
from .domains import flatten_sampled


def trial_config(config: Mapping[str, Any]) -> RunConfig:
    """A trial's Tune config -> its RunConfig (type coercion and validation included)."""
    return RunConfig.from_flat(flatten_sampled(config))
