"""MLflow tracking: the only `import mlflow` in the code base.

    tags.py      tag names and run statuses (no MLflow import)
    store.py     tracking URIs, opening a store, server checks, outage vs error
    tracker.py   Tracker: parent/child runs, params, metrics, artefacts, outage buffering
    registry.py  the Model Registry: pyfunc wrapper, register, load back

`import pipeline.tracking` is cheap: the tag names are plain strings, and MLflow is imported
when a name from the other modules is first used (trial workers never load it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .tags import (
    DB_FILE,
    FAILED,
    FINISHED,
    KILLED,
    RUNNING,
    TAG_ARTIFACTS,
    TAG_EXPERIMENT,
    TAG_GIT,
    TAG_KIND,
    TAG_PARENT,
    TAG_RUN_KEY,
    TAG_RUN_NAME,
    TAG_SEARCH_ID,
    TAG_TRIAL_ID,
)

if TYPE_CHECKING:
    from .registry import EqcvtPyfunc, load_registered, unwrap_pyfunc
    from .store import (
        TrackingUnavailable,
        check_server,
        default_tracking_uri,
        git_commit,
        is_http,
        resolve_tracking_uri,
    )
    from .tracker import RunRef, Tracker

_LAZY = {
    "TrackingUnavailable": "store", "check_server": "store", "default_tracking_uri": "store",
    "git_commit": "store", "is_http": "store", "resolve_tracking_uri": "store",
    "RunRef": "tracker", "Tracker": "tracker",
    "EqcvtPyfunc": "registry", "load_registered": "registry", "unwrap_pyfunc": "registry",
}

__all__ = [
    "DB_FILE", "FAILED", "FINISHED", "KILLED", "RUNNING", "TAG_ARTIFACTS", "TAG_EXPERIMENT",
    "TAG_GIT", "TAG_KIND", "TAG_PARENT", "TAG_RUN_KEY", "TAG_RUN_NAME", "TAG_SEARCH_ID",
    "TAG_TRIAL_ID", "EqcvtPyfunc", "RunRef", "Tracker", "TrackingUnavailable", "check_server",
    "default_tracking_uri", "git_commit", "is_http", "load_registered", "resolve_tracking_uri",
    "unwrap_pyfunc",
]


def __getattr__(name: str) -> Any:
    """The MLflow-backed names, imported on first use (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
