"""Tracking URIs, the fast server check, and what counts as an outage."""

from __future__ import annotations

import socket
import sys
import time

import pytest
from mlflow.exceptions import MlflowException

from pipeline import tracking
from pipeline.tracking.store import is_outage

from .outage import outage_error


def test_default_uri_is_absolute_sqlite_in_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert tracking.default_tracking_uri() == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert tracking.resolve_tracking_uri(None) == tracking.default_tracking_uri()
    assert tracking.resolve_tracking_uri("sqlite:///rel.db") == f"sqlite:///{tmp_path.resolve()}/rel.db"
    assert tracking.resolve_tracking_uri("http://h:5000") == "http://h:5000"


def test_check_server_fails_fast_with_a_clear_message():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    with pytest.raises(tracking.TrackingUnavailable, match="not reachable") as err:
        tracking.check_server(uri, timeout=2.0)
    assert uri in str(err.value) and time.monotonic() - t0 < 10
    tracking.check_server("sqlite:///x.db")  # nothing to check


def test_outages_are_told_from_bad_requests():
    assert is_outage(outage_error())
    assert is_outage(ConnectionRefusedError("refused"))
    assert is_outage(MlflowException("sqlite3.OperationalError: database is locked"))
    assert not is_outage(MlflowException("Changing param values is not allowed"))
    assert not is_outage(ValueError("bad"))


def test_tag_names_need_no_mlflow_import():
    """Trial workers read the tag names; only the Tracker and the registry load MLflow."""
    import subprocess

    code = ("import sys; from pipeline import tracking; tracking.TAG_TRIAL_ID, tracking.FINISHED; "
            "assert 'mlflow' not in sys.modules; tracking.Tracker; assert 'mlflow' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
