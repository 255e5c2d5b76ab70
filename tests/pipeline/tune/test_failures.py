"""A search survives what a cloud does to it: a lost worker node, a killed driver, a tracking
server that is down or goes away. Real Ray on loopback, real MLflow, the real CLI."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline import tracking

from ..mlflow_server import start_mlflow_server
from ..ray_cluster import (
    BIN,
    LocalCluster,
    eqcvt_search,
    finish,
    free_port,
    kill_session,
    timed,
    tiny_space,
)

EPOCHS = 10  # long enough that a kill lands mid-trial even when MLflow lags the trial
N_TRAIN = 1024  # about a second per epoch: slow enough to interrupt mid-search


def _wait(what: str, fn: Callable[[], Any], timeout: float, proc: subprocess.Popen | None = None,
          log: Path | None = None) -> Any:
    """Poll fn until truthy; fail early if the CLI process ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = fn()
        except Exception:  # noqa: BLE001 - the store may be mid-write; poll again
            value = None
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-4000:] if log else ""
            pytest.fail(f"the search ended (rc {proc.returncode}) before {what}\n{tail}")
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


def _trial_runs(uri: str, experiment: str) -> list[dict[str, Any]]:
    return tracking.Tracker(uri, experiment).runs(kind="trial")


def _epochs_logged(uri: str, experiment: str) -> dict[str, float]:
    """Trial id -> highest epoch in MLflow."""
    return {r["tags"][tracking.TAG_TRIAL_ID]: r["metrics"].get("epoch", 0.0)
            for r in _trial_runs(uri, experiment)}


def _assert_complete(uri: str, experiment: str, trials: int) -> list[dict[str, Any]]:
    """One FINISHED run per trial, each holding every epoch exactly once."""
    tracker = tracking.Tracker(uri, experiment)
    runs = tracker.runs(kind="trial")
    ids = [r["tags"][tracking.TAG_TRIAL_ID] for r in runs]
    assert len(ids) == trials and len(set(ids)) == trials, ids
    for run in runs:
        assert run["status"] == tracking.FINISHED, (run["name"], run["status"])
        steps = sorted(step for step, _ in tracker.metric_history(run["run_id"], "val_loss"))
        assert steps == list(range(1, EPOCHS + 1)), (run["name"], steps)
    parents = tracker.runs(kind="search")
    assert [p["status"] for p in parents] == [tracking.FINISHED]
    return runs


def _restored_epochs(uri: str, experiment: str, run: dict[str, Any]) -> list[float]:
    history = tracking.Tracker(uri, experiment).metric_history(run["run_id"], "restored_from_epoch")
    return [v for _, v in history if v > 0]


def _run_args(space: Path, cluster: LocalCluster, storage: Path, experiment: str,
              uri: str) -> list[str]:
    return ["run", "--space", str(space), "--address", cluster.address,
            "--storage-path", str(storage), "--experiment", experiment, "--tracking-uri", uri,
            "--cpus-per-trial", "1", "--max-failures", "2"]


# ----------------------------------------------------------------------------- node failure


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_worker_node_failure_retries_trial_from_its_checkpoint(tmp_path: Path) -> None:
    space = tiny_space(tmp_path / "space.yaml", trials=2, epochs=EPOCHS, n_train=N_TRAIN)
    storage, uri, exp = tmp_path / "results", f"sqlite:///{tmp_path / 'mlflow.db'}", "nodefail"
    with LocalCluster() as cluster:
        with timed("two nodes"):
            cluster.start_head(num_cpus=1)
            worker = cluster.add_node("worker", num_cpus=1)
        proc = eqcvt_search(_run_args(space, cluster, storage, exp, uri), cluster.env, tmp_path)

        def on_worker() -> tuple[str, float] | None:
            for run in _trial_runs(uri, exp):
                if run["tags"].get("ray.node_id") == worker and run["metrics"].get("epoch", 0):
                    return run["tags"][tracking.TAG_TRIAL_ID], run["metrics"]["epoch"]
            return None

        victim, seen_epoch = _wait("an epoch of a trial on the worker node", on_worker, 240,
                                   proc, tmp_path / "cli.log")
        cluster.kill_raylet("worker")
        with timed("search after the node loss"):
            rc = finish(proc, timeout=300)
    log = (tmp_path / "cli.log").read_text()
    assert rc == 0, log[-4000:]

    runs = _assert_complete(uri, exp, trials=2)  # the retried trial is still one run
    run = next(r for r in runs if r["tags"][tracking.TAG_TRIAL_ID] == victim)
    assert run["tags"].get("tune.retries") == "1", run["tags"]
    # The retry started from the last checkpoint the lost node had written, not from scratch.
    restored = _restored_epochs(uri, exp, run)
    assert restored and min(restored) >= seen_epoch, (restored, seen_epoch)
    assert max(restored) < EPOCHS


# ----------------------------------------------------------------------------- driver failure


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_driver_kill9_then_resume_finishes_from_storage(tmp_path: Path) -> None:
    space = tiny_space(tmp_path / "space.yaml", trials=2, epochs=EPOCHS, n_train=N_TRAIN)
    storage, uri, exp = tmp_path / "results", f"sqlite:///{tmp_path / 'mlflow.db'}", "driverkill"
    with LocalCluster() as cluster:
        cluster.start_head(num_cpus=2)
        proc = eqcvt_search(_run_args(space, cluster, storage, exp, uri), cluster.env, tmp_path)
        # Past two checkpoints Tune snapshots the experiment state with every checkpoint.
        _wait("a trial at epoch 3", lambda: max(_epochs_logged(uri, exp).values()) >= 3, 240,
              proc, tmp_path / "cli.log")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        kill_session(proc.pid)  # nothing of the driver may linger
        before = _epochs_logged(uri, exp)
        assert min(before.values()) < EPOCHS, f"the search finished before the kill: {before}"

        with timed("resume"):
            resume = eqcvt_search(["resume", str(storage / exp), "--address", cluster.address,
                                   "--tracking-uri", uri], cluster.env, tmp_path)
            rc = finish(resume, timeout=300)
    log = (tmp_path / "cli.log").read_text()
    assert rc == 0, log[-4000:]
    runs = _assert_complete(uri, exp, trials=2)
    # A trial with >= 3 checkpoints is in Tune's last state snapshot with its checkpoint; one
    # that had barely started when the driver died may legitimately start again from epoch 1.
    checkpointed = [r for r in runs if 3 <= before[r["tags"][tracking.TAG_TRIAL_ID]] < EPOCHS]
    assert checkpointed, before
    for run in checkpointed:  # continued from a checkpoint in storage, not from epoch 1
        restored = _restored_epochs(uri, exp, run)
        assert restored, (run["name"], before)


# ----------------------------------------------------------------------------- tracking server


def test_tracking_server_down_at_start_refuses_before_any_trial(tmp_path: Path) -> None:
    space = tiny_space(tmp_path / "space.yaml", trials=2, epochs=1)
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    t0 = time.monotonic()
    proc = subprocess.run(
        [str(BIN / "eqcvt-search"), "run", "--space", str(space), "--address", "127.0.0.1:1",
         "--storage-path", str(tmp_path / "results"), "--experiment", "down",
         "--tracking-uri", uri],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("RAY_")},
    )
    assert proc.returncode != 0
    assert "not reachable" in proc.stderr and uri in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "results").exists(), "Tune started before the check"
    assert time.monotonic() - t0 < 60


def _checkpoints(experiment_dir: Path) -> int:
    """Checkpoints written so far (Tune keeps 2 per trial; the index keeps counting)."""
    best = {}
    for ckpt in experiment_dir.glob("trial_*/checkpoint_*"):
        trial, index = ckpt.parent.name, int(ckpt.name.split("_")[-1])
        best[trial] = max(best.get(trial, -1), index)
    return sum(i + 1 for i in best.values())


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_tracking_server_outage_mid_search_loses_no_metrics(tmp_path: Path) -> None:
    space = tiny_space(tmp_path / "space.yaml", trials=2, epochs=EPOCHS, n_train=N_TRAIN)
    storage, exp = tmp_path / "results", "outage"
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = start_mlflow_server(port, tmp_path)
    try:
        with LocalCluster() as cluster:
            cluster.start_head(num_cpus=2)
            proc = eqcvt_search(_run_args(space, cluster, storage, exp, uri), cluster.env,
                                tmp_path)
            _wait("a logged epoch", lambda: max(_epochs_logged(uri, exp).values()) >= 1, 240,
                  proc, tmp_path / "cli.log")
            kill_session(server.pid)  # the server goes away mid-search
            written = _checkpoints(storage / exp)
            # Trials keep training and checkpointing while nothing can be logged.
            _wait("checkpoints during the outage",
                  lambda: _checkpoints(storage / exp) >= written + 2, 120, proc,
                  tmp_path / "cli.log")
            server = start_mlflow_server(port, tmp_path)  # back, same store
            with timed("search after the outage"):
                rc = finish(proc, timeout=300)
    finally:
        kill_session(server.pid)
    log = (tmp_path / "cli.log").read_text()
    assert rc == 0, log[-4000:]
    assert "tracking server unreachable" in log, log[-4000:]  # the failure is reported
    # The server's store holds every epoch of every trial: nothing logged during the outage
    # was lost (read straight from its SQLite file, the server is gone).
    runs = _assert_complete(f"sqlite:///{tmp_path / 'server.db'}", exp, trials=2)
    assert all(not math.isnan(r["metrics"]["val_loss"]) for r in runs)


if __name__ == "__main__":  # pragma: no cover - handy for running one scenario by hand
    sys.exit(pytest.main([__file__, "-x", "-s", *sys.argv[1:]]))
