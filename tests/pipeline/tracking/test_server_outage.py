"""A real `mlflow server` that goes away between a run's creation and its params: the
retried start, once the server is back, leaves one run with its params."""

from __future__ import annotations

import pytest

from pipeline import tracking

from ..mlflow_server import start_mlflow_server
from ..ray_cluster import free_port, kill_session
from .outage import retry_now


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_server_gone_after_create_run_leaves_one_parent_with_params(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")  # a busy machine's first reply
    port = free_port()
    server = start_mlflow_server(port, tmp_path)
    try:
        tr = tracking.Tracker(f"http://127.0.0.1:{port}", "outage", buffered=True,
                       log=lambda m: None)
        assert tr.experiment_id
        real = tr.client.create_run
        calls = {"n": 0}

        def create_then_server_dies(*args, **kwargs):
            calls["n"] += 1
            run = real(*args, **kwargs)
            if calls["n"] == 1:
                kill_session(server.pid)  # the params batch that follows meets a dead server
            return run

        monkeypatch.setattr(tr.client, "create_run", create_then_server_dies)
        parent = tr.start_run("search", kind="search", tags={tracking.TAG_SEARCH_ID: "s1"},
                              params={"search.name": "tiny", "search.num_samples": 2})
        assert tr.pending == 1 and calls["n"] == 1
        server = start_mlflow_server(port, tmp_path)  # back, same store
        retry_now(tr)
        tr.end_run(parent, tracking.FINISHED)
        assert tr.flush(timeout=30)
        runs = tr.runs(kind="search")
        assert [(r["run_id"], r["status"]) for r in runs] == [(parent.run_id, tracking.FINISHED)]
        assert runs[0]["params"] == {"search.name": "tiny", "search.num_samples": "2"}
        assert calls["n"] == 1  # found again, not created twice
    finally:
        kill_session(server.pid)
