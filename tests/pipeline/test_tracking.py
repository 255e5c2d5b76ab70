"""MLflow tracking: run layout, no duplicate runs on continuation, outage buffering, registry."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException

from pipeline import tracking as T


@pytest.fixture
def tracker(tmp_path) -> T.Tracker:
    return T.Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "exp")


def test_default_uri_is_absolute_sqlite_in_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert T.default_tracking_uri() == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert T.resolve_tracking_uri(None) == T.default_tracking_uri()
    assert T.resolve_tracking_uri("sqlite:///rel.db") == f"sqlite:///{tmp_path.resolve()}/rel.db"
    assert T.resolve_tracking_uri("http://h:5000") == "http://h:5000"


def test_check_server_fails_fast_with_a_clear_message():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    with pytest.raises(T.TrackingUnavailable, match="not reachable") as err:
        T.check_server(uri, timeout=2.0)
    assert uri in str(err.value) and time.monotonic() - t0 < 10
    T.check_server("sqlite:///x.db")  # nothing to check


def test_parent_and_child_runs_continue_instead_of_duplicating(tracker):
    parent = tracker.start_run("search", kind="search", tags={T.TAG_SEARCH_ID: "s1"})
    find = f"tags.`{T.TAG_TRIAL_ID}` = 't1'"
    child = tracker.start_run("trial_t1", kind="trial", parent=parent,
                              tags={T.TAG_TRIAL_ID: "t1"}, params={"train.lr": 0.01},
                              find=find)
    tracker.log_metrics(child, {"val_acc": 0.5, "epoch": 1}, step=1)
    tracker.log_metrics(child, {"val_acc": 0.6, "epoch": 2}, step=2)
    tracker.end_run(child, T.KILLED)  # e.g. Ctrl-C

    again = tracker.start_run("trial_t1", kind="trial", parent=parent,
                              tags={T.TAG_TRIAL_ID: "t1"}, params={"train.lr": 0.01},
                              find=find)
    assert again.run_id == child.run_id and again.max_step == 2
    tracker.log_metrics(again, {"val_acc": 0.6, "epoch": 2}, step=2)  # repeated epoch: skipped
    tracker.log_metrics(again, {"val_acc": 0.7, "epoch": 3}, step=3)
    tracker.end_run(again, T.FINISHED)
    tracker.end_run(parent, T.FINISHED)

    trials = tracker.runs(kind="trial")
    assert len(trials) == 1
    (run,) = trials
    assert run["status"] == T.FINISHED and run["params"]["train.lr"] == "0.01"
    assert run["tags"][T.TAG_PARENT] == parent.run_id
    assert tracker.metric_history(run["run_id"], "val_acc") == [(1, 0.5), (2, 0.6), (3, 0.7)]


def test_buffered_tracker_survives_an_outage_in_order(tmp_path, monkeypatch):
    messages: list[str] = []
    tr = T.Tracker(f"sqlite:///{tmp_path / 'm.db'}", "exp", buffered=True,
                   log=messages.append)
    run = tr.start_run("trial", kind="trial")
    assert tr.flush(timeout=5)
    real = tr.client.log_batch
    down = {"on": True}

    def flaky(*args, **kwargs):
        if down["on"]:
            raise MlflowException("API request to http://127.0.0.1:1/api failed with "
                                  "exception ConnectionError('refused')")
        return real(*args, **kwargs)

    monkeypatch.setattr(tr.client, "log_batch", flaky)
    for step in (1, 2, 3):
        tr.log_metrics(run, {"val_acc": step / 10}, step=step)  # never raises
    assert tr.pending == 3 and any("buffering" in m for m in messages)
    down["on"] = False
    tr._retry_at = 0.0  # the back-off has passed
    tr.end_run(run, T.FINISHED)
    assert tr.flush(timeout=10) and tr.pending == 0
    assert any("back" in m for m in messages)
    assert tr.metric_history(run.run_id, "val_acc") == [(1, 0.1), (2, 0.2), (3, 0.3)]
    assert tr.runs(kind="trial")[0]["status"] == T.FINISHED
    tr.close()


def test_non_outage_errors_are_reported_and_dropped(tmp_path):
    messages: list[str] = []
    tr = T.Tracker(f"sqlite:///{tmp_path / 'm.db'}", "exp", buffered=True,
                   log=messages.append)
    run = tr.start_run("trial", kind="trial", params={"a": 1})
    tr.log_params(run, {"a": 2})  # MLflow refuses to change a param: not an outage
    assert tr.flush(timeout=5) and any("dropped" in m for m in messages)
    tr.close()


def test_registered_model_loads_back_and_predicts(tmp_path):
    """engine checkpoint -> pyfunc in the Model Registry -> loaded back -> same outputs."""
    import numpy as np
    import torch

    from pipeline.checkpoints import load_model
    from pipeline.config import RunConfig
    from pipeline.data.bundle import DataBundle, Split
    from pipeline.engine import fit
    from pipeline.evaluation import predict

    g = torch.Generator().manual_seed(0)

    def split(n):
        return Split(torch.rand(n, 1, 16, 16, generator=g), torch.arange(n) % 2,
                     torch.zeros(n, 0))

    bundle = DataBundle("binary", ("no_sub", "sub"), (1, 16, 16), split(8), split(4),
                        split(4), None, {})
    cfg = RunConfig.from_flat({
        "model.name": "eqcvt_stem", "model.group": "C4", "model.fields": 1,
        "model.embed_dim": 8, "model.depth": 1, "model.heads": 1, "model.head_hidden": 8,
        "model.kernel_size": 3, "model.stem_blocks": 1, "train.epochs": 1,
        "train.batch_size": 4, "train.num_threads": 1,
    })
    res = fit(cfg, data=bundle, checkpoint_root=tmp_path / "ckpt")
    tr = T.Tracker(f"sqlite:///{tmp_path / 'm.db'}", "exp")
    run = tr.start_run("final", kind="final")
    version = tr.register_model(run, res.checkpoint_dir, "eqcvt-test", config=cfg.to_flat())
    tr.end_run(run)
    assert version == "1"
    model, name, ver = T.load_registered(tr.uri, "eqcvt-test")
    assert (name, ver) == ("eqcvt-test", "1")
    x = bundle.test.images.numpy()
    out = np.asarray(model.predict(x))
    assert out.shape == (4, 2)
    direct = predict(load_model(res.checkpoint_dir), bundle.test.images).numpy()
    np.testing.assert_allclose(out, direct, rtol=1e-5, atol=1e-6)
    inner = T.unwrap_pyfunc(model)
    assert inner.config["model.group"] == "C4"
    assert Path(tr.uri[len("sqlite:///"):]).is_file()
