"""Real searches on a private two-node cluster: ASHA + HyperOpt across nodes, PBT exploits,
Ctrl-C / SIGTERM + resume, NaN losses."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

pytest.importorskip("ray")

from pipeline import tracking  # noqa: E402
from pipeline import tune as ptune  # noqa: E402

from ..conftest import TINY_DATA, TINY_MODEL, cli_env, run_cli, sets  # noqa: E402

TINY_YAML = """
name: {name}
scheduler: {scheduler}
searcher: random
metric: val_acc
mode: max
num_samples: {n}
max_epochs: {epochs}
seed: 0
resources: {{cpus: 1, gpus: 0}}
params:
  data.source: simulate
  data.task: binary
  model.name: eqcvt_stem
  model.group: C4
  model.fields: 1
  train.batch_size: 32
  train.lr: {{loguniform: [1.0e-3, 1.0e-2]}}
"""

PBT_YAML = """
name: pbt_tiny
scheduler: pbt
metric: val_loss
mode: min
num_samples: 3
max_epochs: 3
perturbation_interval: 1
quantile_fraction: 0.5
resample_probability: 0.5
seed: 0
resources: {cpus: 1, gpus: 0}
hyperparam_mutations:
  train.lr: {loguniform: [1.0e-4, 1.0e-2]}
params:
  data.source: simulate
  data.task: binary
  model.name: eqcvt_stem
  model.group: C4
  model.fields: 1
  train.scheduler: constant
  train.batch_size: 32
"""

# ----------------------------------------------------------------------------- on the cluster


@pytest.mark.slow
def test_asha_hyperopt_on_two_nodes(finished_search):
    """Every trial ran (on both nodes), ended FINISHED as a nested child run with per-epoch
    metrics and its end-of-trial artefacts; the parent run holds the YAML and manifest."""
    fs = finished_search
    tracker = tracking.Tracker(fs["uri"], fs["experiment"])
    (parent,) = tracker.runs(kind="search")
    assert parent["status"] == tracking.FINISHED
    assert parent["tags"][tracking.TAG_GIT]
    assert {"default.yaml", "manifest.json"} <= set(tracker.list_artifacts(parent["run_id"]))
    trials = tracker.runs(kind="trial")
    assert len(trials) == fs["num_samples"]
    assert {r["status"] for r in trials} == {tracking.FINISHED}
    assert {r["tags"][tracking.TAG_PARENT] for r in trials} == {parent["run_id"]}
    assert len({r["tags"][tracking.TAG_TRIAL_ID] for r in trials}) == fs["num_samples"]
    nodes = {r["tags"]["ray.node_id"] for r in trials}
    assert len(nodes) == 2, nodes  # trials seen on both nodes
    groups = set()
    for r in trials:
        steps = [s for s, _ in tracker.metric_history(r["run_id"], "val_acc")]
        assert steps == list(range(1, len(steps) + 1)) and 1 <= len(steps) <= fs["epochs"]
        assert r["params"]["train.epochs"] == str(fs["epochs"])
        groups.add(r["params"]["model.group"])
        assert "invariance_error" in r["metrics"] and "num_params" in r["metrics"]
        assert r["metrics"]["data_from_object_store"] == 1.0  # no per-trial data loading
        arts = set(tracker.list_artifacts(r["run_id"]))
        assert {"evaluation", "best_checkpoint"} <= arts
        ev = set(tracker.list_artifacts(r["run_id"], "evaluation"))
        assert {"evaluation/roc.png", "evaluation/confusion.png"} <= ev
        assert "best_checkpoint/state.pt" in tracker.list_artifacts(r["run_id"],
                                                                     "best_checkpoint")
        # computed by the trial on its own val images: equal to the metrics of the epoch it
        # was ranked on (the best val_acc), not a second evaluation on the driver's copy
        ev_dir = tracker.download(r["run_id"], "evaluation", fs["work"] / r["run_id"])
        ev = json.loads((Path(ev_dir) / "evaluation.json").read_text())
        history = {k: dict(tracker.metric_history(r["run_id"], k))
                   for k in ("val_acc", "val_loss")}
        assert ev["val_acc"] == r["metrics"]["best_val_acc"]
        assert any(abs(loss - ev["val_loss"]) < 1e-5 and history["val_acc"][e] == ev["val_acc"]
                   for e, loss in history["val_loss"].items()), (ev, history)
    out = fs["proc"].stdout
    assert "leaderboard" in out


@pytest.mark.slow
def test_pbt_exploit_loads_donor_checkpoint(ray_cluster, tmp_path):
    """A PBT population where a trial exploits: it restarts from the donor's checkpoint
    (origin recorded in that checkpoint) and trains on with the mutated lr."""
    (tmp_path / "pbt.yaml").write_text(PBT_YAML)
    env = cli_env(ray_cluster, tmp_path)
    proc = run_cli(["run", "--space", "pbt.yaml", "--experiment", "pbt", "--storage-path",
                    str(tmp_path / "results"),
                    *sets(TINY_DATA, TINY_MODEL, ["data.n_train=256"])], tmp_path, env)
    # 256 images make each epoch last long enough for the members to overlap: PBT compares
    # members that are running side by side.
    assert proc.returncode == 0, proc.stderr[-6000:]
    assert (tmp_path / "results" / "pbt" / "pbt_global.txt").is_file(), proc.stdout[-4000:]
    tracker = tracking.Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "pbt")
    trials = tracker.runs(kind="trial")
    assert len(trials) == 3 and {r["status"] for r in trials} == {tracking.FINISHED}
    exploited = [r for r in trials if "pbt.last_exploit" in r["tags"]]
    assert exploited, "no PBT exploit happened"
    ids = {r["tags"][tracking.TAG_TRIAL_ID] for r in trials}
    for r in exploited:
        donor, epoch = r["tags"]["pbt.last_exploit"].split("@")
        assert donor in ids and donor != r["tags"][tracking.TAG_TRIAL_ID] and int(epoch) >= 1
        # the mutated lr is the one the optimiser used after the exploit
        lrs = dict(tracker.metric_history(r["run_id"], "lr"))
        mutated = dict(tracker.metric_history(r["run_id"], "pbt/train.lr"))
        last = max(lrs)
        assert lrs[last] == pytest.approx(mutated[last], rel=1e-6)
    for r in trials:  # every member trained until Tune stopped it at max_epochs
        its = [v for _, v in tracker.metric_history(r["run_id"], "training_iteration")]
        assert max(its) == 3


def _epochs_logged(db: Path, experiment: str) -> int:
    """Epochs logged over all trials so far (0 while the store is being created)."""
    if not db.exists():
        return 0
    try:
        runs = tracking.Tracker(f"sqlite:///{db}", experiment).runs(kind="trial")
    except Exception:  # noqa: BLE001 - the store is being created by the driver
        return 0
    return int(sum(r["metrics"].get("epoch", 0) for r in runs))


def _interrupt(args, cwd, env, db, experiment, sig, timeout=300):
    """Start the CLI, wait until it logs a new epoch, then send `sig` mid-search."""
    baseline = _epochs_logged(db, experiment)
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + timeout
        while _epochs_logged(db, experiment) <= baseline:
            if proc.poll() is not None:
                pytest.fail("the search ended before it could be interrupted:\n"
                            + proc.stdout.read()[-4000:])
            assert time.monotonic() < deadline, "no progress before the timeout"
            time.sleep(1.0)
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out


@pytest.mark.slow
def test_sigint_and_sigterm_leave_resumable_state(ray_cluster, tmp_path):
    """run -> Ctrl-C -> resume -> SIGTERM -> resume: every trial completes all its epochs,
    and MLflow holds exactly one run per trial (each epoch logged once), none RUNNING."""
    n, epochs = 3, 5
    (tmp_path / "s.yaml").write_text(TINY_YAML.format(name="sig", scheduler="fifo", n=n,
                                                      epochs=epochs))
    env = cli_env(ray_cluster, tmp_path)
    db, storage = tmp_path / "mlflow.db", tmp_path / "results"
    path = storage / "sig"
    run = ["run", "--space", "s.yaml", "--experiment", "sig", "--storage-path", str(storage),
           *sets(TINY_DATA, TINY_MODEL, ["data.n_train=256"])]  # epochs of a few seconds
    rc, out = _interrupt(run, tmp_path, env, db, "sig", signal.SIGINT)
    assert rc == 130, out[-5000:]
    assert "eqcvt-search resume" in out
    tracker = tracking.Tracker(f"sqlite:///{db}", "sig")
    assert tracking.RUNNING not in {r["status"] for r in tracker.runs()}, "a run was left RUNNING"

    rc, out = _interrupt(["resume", str(path)], tmp_path, env, db, "sig", signal.SIGTERM)
    assert rc in (0, 130), out[-5000:]
    assert tracking.RUNNING not in {r["status"] for r in tracker.runs()}

    proc = run_cli(["resume", str(path)], tmp_path, env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    assert f"{n} TERMINATED" in proc.stderr
    trials = tracker.runs(kind="trial")
    assert len(trials) == n, [r["tags"].get(tracking.TAG_TRIAL_ID) for r in trials]
    assert len({r["tags"][tracking.TAG_TRIAL_ID] for r in trials}) == n
    assert {r["status"] for r in trials} == {tracking.FINISHED}
    for r in trials:
        steps = [s for s, _ in tracker.metric_history(r["run_id"], "epoch")]
        assert sorted(steps) == list(range(1, epochs + 1)), steps
    (parent,) = tracker.runs(kind="search")
    assert parent["status"] == tracking.FINISHED

    # resuming a finished search changes nothing and says it is done
    proc = run_cli(["resume", str(path)], tmp_path, env)
    assert proc.returncode == 0 and f"{n} TERMINATED" in proc.stderr, proc.stderr[-3000:]
    assert len(tracker.runs(kind="trial")) == n
    assert {r["status"] for r in tracker.runs()} == {tracking.FINISHED}
    meta = json.loads((path / ptune.META_FILE).read_text())
    assert meta["parent_run_id"] == parent["run_id"]

    # A driver killed after a trial finished but before its artefacts were logged leaves the
    # run RUNNING with no artefacts: the next resume logs them and ends the run.
    lost = trials[0]["run_id"]
    tracker.client.delete_tag(lost, tracking.TAG_ARTIFACTS)
    shutil.rmtree(Path(unquote(urlparse(tracker.client.get_run(lost).info.artifact_uri).path)))
    tracker.client.update_run(lost, status=tracking.RUNNING)
    assert not tracker.client.list_artifacts(lost)
    proc = run_cli(["resume", str(path)], tmp_path, env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    run = tracker.client.get_run(lost)
    assert run.info.status == tracking.FINISHED and run.data.tags[tracking.TAG_ARTIFACTS] == "done"
    assert {a.path for a in tracker.client.list_artifacts(lost)} == {
        "best_checkpoint", "evaluation"}
    assert tracker.client.list_artifacts(lost, "evaluation")
    assert len(tracker.runs(kind="trial")) == n
    assert {r["status"] for r in tracker.runs()} == {tracking.FINISHED}


@pytest.mark.slow
def test_every_shipped_space_runs_on_a_tiny_budget(ray_cluster, tmp_path):
    """asha_hyperopt, pbt and baselines end to end (default.yaml: `finished_search`), with
    budgets and sizes pinned from the command line; one driver process for all three."""
    env = cli_env(ray_cluster, tmp_path)
    script = tmp_path / "run_all.py"
    tiny = {k: v for k, v in (s.split("=") for s in TINY_DATA)}
    script.write_text(
        "import json, sys\n"
        "from pipeline import tune as t\n"
        "from pipeline.cli import shipped_space, parse_sets\n"
        f"fixed = parse_sets({[f'{k}={v}' for k, v in tiny.items()]!r})\n"
        "fixed.update({'data.n_train': 32, 'data.n_val': 16, 'data.n_test': 16,\n"
        "              'train.batch_size': 16, 'train.eval_batch_size': 16})\n"
        "small = {'asha_hyperopt': {}, 'baselines': {},\n"
        "         'pbt': {'model.embed_dim': 8, 'model.fields': 1, 'model.stem_blocks': 1,\n"
        "                 'model.depth': 1, 'model.head_dim': 8, 'model.kernel_size': 3}}\n"
        "res = {}\n"
        "for name in ('asha_hyperopt', 'pbt', 'baselines'):\n"
        "    p = shipped_space(name)\n"
        "    req = t.SearchRequest(space_file=str(p), space_text=p.read_text(),\n"
        "        experiment=name, storage_path=sys.argv[1], tracking_uri=sys.argv[2],\n"
        "        fixed={**fixed, **small[name]}, max_epochs=1,\n"
        "        num_samples=2, cpus_per_trial=1, gpus_per_trial=0, max_failures=0)\n"
        "    out = t.run_search(req)\n"
        "    res[name] = out.statuses\n"
        "print('RESULT', json.dumps(res))\n"
    )
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "results"), f"sqlite:///{tmp_path}/m.db"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-8000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    res = json.loads(line.split(" ", 1)[1])
    for name, statuses in res.items():
        assert statuses and set(statuses.values()) == {"TERMINATED"}, (name, statuses)
    for name in res:
        runs = tracking.Tracker(f"sqlite:///{tmp_path}/m.db", name).runs(kind="trial")
        assert runs and {r["status"] for r in runs} == {tracking.FINISHED}


@pytest.mark.slow
def test_nan_loss_errors_the_trial_and_the_search_goes_on(ray_cluster, tmp_path):
    """An absurd lr makes the loss non-finite: that trial ends ERROR (MLflow FAILED) with the
    engine's message, the other trial finishes, and the CLI still exits normally."""
    space = TINY_YAML.format(name="nan", scheduler="fifo", n=2, epochs=2).replace(
        "train.lr: {loguniform: [1.0e-3, 1.0e-2]}", "train.lr: {grid: [1.0e-3, 1.0e+30]}")
    (tmp_path / "nan.yaml").write_text(space)
    env = cli_env(ray_cluster, tmp_path)
    proc = run_cli(["run", "--space", "nan.yaml", "--experiment", "nan", "--storage-path",
                    str(tmp_path / "results"), "--num-samples", "1",
                    *sets(TINY_DATA, TINY_MODEL)], tmp_path, env)
    assert proc.returncode == 0, proc.stderr[-6000:]
    runs = tracking.Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "nan").runs(kind="trial")
    by_status = {r["status"]: r for r in runs}
    assert set(by_status) == {tracking.FINISHED, tracking.FAILED}
    failed = by_status[tracking.FAILED]
    assert "non-finite training loss" in failed["tags"]["eqcvt.error"]
    assert int(failed["tags"].get("tune.retries", "1")) <= 1  # no endless retries


@pytest.mark.slow
def test_trials_failing_with_one_error_stop_the_search_resumably(ray_cluster, tmp_path):
    """Every trial diverges (lr 1e30; the step in the message differs): after five in a row
    the search stops with that one message, its state saved for `resume`, and exits
    non-zero; the remaining trials never start."""
    from ray import tune

    n = 9
    space = TINY_YAML.format(name="stop", scheduler="fifo", n=n, epochs=2).replace(
        "train.lr: {loguniform: [1.0e-3, 1.0e-2]}", "train.lr: {grid: [1.0e+30]}")
    (tmp_path / "stop.yaml").write_text(space)
    env = cli_env(ray_cluster, tmp_path)
    proc = run_cli(["run", "--space", "stop.yaml", "--experiment", "stop", "--storage-path",
                    str(tmp_path / "results"), "--max-failures", "0",
                    *sets(TINY_DATA, TINY_MODEL)], tmp_path, env)
    err = " ".join(proc.stderr.split())  # rich wraps long lines
    assert proc.returncode == 1, proc.stderr[-6000:]
    assert err.count("search stopped: 5 trials in a row failed with:") == 1, err[-3000:]
    assert "non-finite training loss" in err
    assert f"eqcvt-search resume {tmp_path / 'results' / 'stop'}" in err
    tracker = tracking.Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "stop")
    trials = tracker.runs(kind="trial")
    assert 5 <= len(trials) < n, len(trials)  # stopped instead of running every trial
    assert sum(r["status"] == tracking.FAILED for r in trials) >= 5
    assert tracking.RUNNING not in {r["status"] for r in tracker.runs()}
    (parent,) = tracker.runs(kind="search")
    assert "5 trials in a row" in parent["tags"]["eqcvt.stopped"]
    assert tune.Tuner.can_restore(str(tmp_path / "results" / "stop"))
