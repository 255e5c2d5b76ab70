"""A real `mlflow server` on loopback for the outage tests: its own SQLite file and artefact
folder under `root`, its own process session (stopped by PID with `kill_session`)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from pipeline import tracking

from .ray_cluster import BIN, kill_session


def start_mlflow_server(port: int, root: Path, timeout: float = 120) -> subprocess.Popen:
    """Start the server and return once /health answers; fail with its log if it never does."""
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
         "--artifacts-destination", str(root / "artifacts"), "--workers", "1"],
        cwd=root, stdout=open(root / "server.log", "a"), stderr=subprocess.STDOUT,  # noqa: SIM115
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    while True:
        try:
            tracking.check_server(f"http://127.0.0.1:{port}", timeout=2.0)
            return proc
        except tracking.TrackingUnavailable:
            if proc.poll() is not None or time.monotonic() > deadline:
                kill_session(proc.pid)
                pytest.fail("the MLflow server did not start:\n"
                            + (root / "server.log").read_text()[-3000:])
            time.sleep(0.5)
