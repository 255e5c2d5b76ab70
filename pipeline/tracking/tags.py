"""Names the MLflow records of a search are found by: tags, run statuses, the store file.

No MLflow import here, so callers (and `pipeline.tracking` itself) can use them cheaply.
"""

from __future__ import annotations

DB_FILE = "mlflow.db"
TAG_PARENT = "mlflow.parentRunId"
TAG_RUN_NAME = "mlflow.runName"
TAG_KIND = "eqcvt.kind"  # "search" | "trial" | "final"
TAG_EXPERIMENT = "eqcvt.experiment"  # Tune experiment name (folder under the storage path)
TAG_SEARCH_ID = "eqcvt.search_id"
TAG_TRIAL_ID = "tune.trial_id"
TAG_ARTIFACTS = "eqcvt.artifacts"  # "done" once the end-of-trial artefacts are logged
TAG_GIT = "eqcvt.git_commit"
# a client-made id on every run `start_run` creates without a `find` filter: a retried
# creation (its first reply lost in an outage) finds the run by it instead of making a second
TAG_RUN_KEY = "eqcvt.run_key"
FINISHED, FAILED, KILLED, RUNNING = "FINISHED", "FAILED", "KILLED", "RUNNING"
