"""The MLflow Model Registry: an engine checkpoint logged and registered as a pyfunc model,
and loaded back for `eqcvt-search predict`."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from .store import configure_http_env, open_client, resolve_tracking_uri

if TYPE_CHECKING:
    from .tracker import RunRef, Tracker


class EqcvtPyfunc(mlflow.pyfunc.PythonModel):
    """A registered model: the engine checkpoint, rebuilt with `checkpoints.load_model`.

    predict: float array (N, C, H, W) -> raw outputs (N, classes) logits or (N, targets).
    """

    def load_context(self, context: Any) -> None:
        from pipeline.checkpoints import load_model

        self.checkpoint_dir = context.artifacts["checkpoint"]
        self.model = load_model(self.checkpoint_dir)
        self.config = json.loads((Path(self.checkpoint_dir) / "config.json").read_text())

    def predict(self, context: Any, model_input: np.ndarray, params: Any = None) -> np.ndarray:
        """np.ndarray in and out: MLflow then skips schema inference (and its warnings)."""
        import torch

        from pipeline.evaluation import predict

        x = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
        return predict(self.model, x).numpy()


def register_model(
    tracker: Tracker,
    ref: RunRef,
    checkpoint_dir: str | Path,
    model_name: str,
    *,
    config: Mapping[str, Any],
    description: str = "",
) -> str:
    """Log the checkpoint as a pyfunc model of run `ref` and register it; -> version."""
    run_id = ref.require_id()
    mlflow.set_tracking_uri(tracker.uri)
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=EqcvtPyfunc(),
            artifacts={"checkpoint": str(checkpoint_dir)},
            registered_model_name=model_name,
            pip_requirements=[],
            metadata={"eqcvt_config": dict(config)},
            await_registration_for=30,
        )
    version = str(info.registered_model_version)
    client = tracker.client
    if description:
        with contextlib.suppress(MlflowException):
            client.update_model_version(model_name, version, description=description)
    with contextlib.suppress(MlflowException):
        client.set_model_version_tag(model_name, version, "eqcvt.run_id", run_id)
    # the RunConfig as a plain artefact too, for people reading the run in the UI
    tracker.log_dict(ref, dict(config), "config.json")
    return version


def resolve_model_version(client: MlflowClient, spec: str, uri: str) -> tuple[str, str]:
    """"NAME" (latest version) or "NAME/VERSION" -> (name, version)."""
    name, _, version = spec.partition("/")
    if not version:
        versions = client.search_model_versions(f"name = '{name}'")
        if not versions:
            raise ValueError(f"no registered model named {name!r} at {uri}")
        version = str(max(int(v.version) for v in versions))
    return name, version


def load_registered(uri: str | None, spec: str) -> tuple[Any, str, str]:
    """(pyfunc model, name, version) of "NAME[/VERSION]" from the registry at `uri`."""
    tracker_uri = resolve_tracking_uri(uri)
    configure_http_env(tracker_uri)
    mlflow.set_tracking_uri(tracker_uri)
    name, version = resolve_model_version(open_client(tracker_uri), spec, tracker_uri)
    model = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    return model, name, version


def unwrap_pyfunc(model: Any) -> Any:
    """The EqcvtPyfunc behind a loaded pyfunc model (for its torch model and config)."""
    return model.unwrap_python_model()
