"""The Tracker on a real SQLite store: run layout, continuation instead of duplicates, outage
buffering in order, and retries that write each record exactly once."""

from __future__ import annotations

import pytest

from pipeline import tracking

from .outage import fail_once, outage_error, retry_now

TRIAL_FIND = f"tags.`{tracking.TAG_TRIAL_ID}` = 't1'"


@pytest.fixture
def tracker(tmp_path) -> tracking.Tracker:
    return tracking.Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "exp")


@pytest.fixture
def buffered(tmp_path):
    messages: list[str] = []
    tr = tracking.Tracker(f"sqlite:///{tmp_path / 'm.db'}", "exp", buffered=True, log=messages.append)
    tr.messages = messages
    yield tr
    tr.close()


def _start_trial(tr: tracking.Tracker, parent: tracking.RunRef, **params) -> tracking.RunRef:
    return tr.start_run("trial_t1", kind="trial", parent=parent, tags={tracking.TAG_TRIAL_ID: "t1"},
                        params=params, find=TRIAL_FIND)


def test_parent_and_child_runs_continue_instead_of_duplicating(tracker):
    parent = tracker.start_run("search", kind="search", tags={tracking.TAG_SEARCH_ID: "s1"})
    child = _start_trial(tracker, parent, **{"train.lr": 0.01})
    tracker.log_metrics(child, {"val_acc": 0.5, "epoch": 1}, step=1)
    tracker.log_metrics(child, {"val_acc": 0.6, "epoch": 2}, step=2)
    tracker.end_run(child, tracking.KILLED)  # e.g. Ctrl-C

    again = _start_trial(tracker, parent, **{"train.lr": 0.01})
    assert again.run_id == child.run_id and again.max_step == 2
    tracker.log_metrics(again, {"val_acc": 0.6, "epoch": 2}, step=2)  # repeated epoch: skipped
    tracker.log_metrics(again, {"val_acc": 0.7, "epoch": 3}, step=3)
    tracker.end_run(again, tracking.FINISHED)
    tracker.end_run(parent, tracking.FINISHED)

    trials = tracker.runs(kind="trial")
    assert len(trials) == 1
    (run,) = trials
    assert run["status"] == tracking.FINISHED and run["params"]["train.lr"] == "0.01"
    assert run["tags"][tracking.TAG_PARENT] == parent.run_id
    assert tracker.metric_history(run["run_id"], "val_acc") == [(1, 0.5), (2, 0.6), (3, 0.7)]


def test_buffered_tracker_survives_an_outage_in_order(buffered, monkeypatch):
    run = buffered.start_run("trial", kind="trial")
    assert buffered.flush(timeout=5)
    down = {"on": True}
    real = buffered.client.log_batch

    def flaky(*args, **kwargs):
        if down["on"]:
            raise outage_error()
        return real(*args, **kwargs)

    monkeypatch.setattr(buffered.client, "log_batch", flaky)
    for step in (1, 2, 3):
        buffered.log_metrics(run, {"val_acc": step / 10}, step=step)  # never raises
    assert buffered.pending == 3 and any("buffering" in m for m in buffered.messages)
    down["on"] = False
    buffered.end_run(run, tracking.FINISHED)
    retry_now(buffered)
    assert any("back" in m for m in buffered.messages)
    assert buffered.metric_history(run.run_id, "val_acc") == [(1, 0.1), (2, 0.2), (3, 0.3)]
    assert buffered.runs(kind="trial")[0]["status"] == tracking.FINISHED


def test_backlog_lists_what_never_reached_the_server(buffered, monkeypatch, tmp_path):
    run = buffered.start_run("trial", kind="trial")
    assert buffered.flush(timeout=5)
    fail_once(monkeypatch, buffered, "log_batch")
    buffered.log_metrics(run, {"val_acc": 0.5, "epoch": 1}, step=1)
    lines = buffered.write_backlog(tmp_path / "backlog.jsonl").read_text().splitlines()
    assert lines == ['{"what": "metrics of trial step 1", "records": 2}']


def test_non_outage_errors_are_reported_and_dropped(buffered):
    run = buffered.start_run("trial", kind="trial", params={"a": 1})
    buffered.log_params(run, {"a": 2})  # MLflow refuses to change a param: not an outage
    assert buffered.flush(timeout=5) and any("dropped" in m for m in buffered.messages)


# ----------------------------------------------------------------------------- exactly once


def test_retried_child_start_writes_the_params_its_first_attempt_lost(buffered, monkeypatch):
    """create_run succeeds, the params batch meets the outage: the retry finds the run by
    its tags and must still write the params."""
    parent = buffered.start_run("search", kind="search")
    assert buffered.flush(timeout=5)
    fail_once(monkeypatch, buffered, "log_batch")
    child = _start_trial(buffered, parent, **{"train.lr": 0.01, "model.group": "C4"})
    assert buffered.pending == 1
    retry_now(buffered)
    (run,) = buffered.runs(kind="trial")
    assert run["run_id"] == child.run_id
    assert run["params"] == {"train.lr": "0.01", "model.group": "C4"}


def test_continued_run_gets_missing_params_and_tags_but_keeps_its_values(tracker):
    parent = tracker.start_run("search", kind="search")
    first = _start_trial(tracker, parent, **{"train.lr": 0.01})
    again = tracker.start_run("trial_t1", kind="trial", parent=parent,
                              tags={tracking.TAG_TRIAL_ID: "t1", "eqcvt.note": "resumed"},
                              params={"train.lr": 0.5, "train.seed": 3}, find=TRIAL_FIND)
    assert again.run_id == first.run_id
    (run,) = tracker.runs(kind="trial")
    assert run["params"] == {"train.lr": "0.01", "train.seed": "3"}  # params are immutable
    assert run["tags"]["eqcvt.note"] == "resumed"


@pytest.mark.parametrize("fail", ["log_batch", "create_run"])
def test_retried_parent_start_makes_one_parent(buffered, monkeypatch, fail):
    """The outage hits the params batch, or the reply of a create_run the server did."""
    fail_once(monkeypatch, buffered, fail, reply_lost=fail == "create_run")
    parent = buffered.start_run("search", kind="search", tags={tracking.TAG_SEARCH_ID: "s1"},
                                params={"search.name": "tiny"})
    retry_now(buffered)
    buffered.end_run(parent, tracking.FINISHED)
    assert buffered.flush(timeout=5)
    runs = buffered.runs(kind="search")
    assert [(r["run_id"], r["status"]) for r in runs] == [(parent.run_id, tracking.FINISHED)]
    assert runs[0]["params"] == {"search.name": "tiny"}
    assert runs[0]["tags"][tracking.TAG_SEARCH_ID] == "s1"


@pytest.mark.parametrize("skip_logged", [True, False])
def test_metric_batch_whose_reply_was_lost_is_logged_once(buffered, monkeypatch, skip_logged):
    """Holds because the SQL store keeps one copy of an identical point: the retry sends
    the same batch, timestamps included."""
    run = buffered.start_run("trial", kind="trial")
    assert buffered.flush(timeout=5)
    fail_once(monkeypatch, buffered, "log_batch", reply_lost=True)
    buffered.log_metrics(run, {"val_acc": 0.5, "epoch": 1}, step=1, skip_logged=skip_logged)
    retry_now(buffered)
    buffered.log_metrics(run, {"val_acc": 0.6, "epoch": 2}, step=2, skip_logged=skip_logged)
    assert buffered.flush(timeout=5)
    assert buffered.metric_history(run.run_id, "val_acc") == [(1, 0.5), (2, 0.6)]


def test_continued_run_reads_its_last_step_through_an_outage(buffered, monkeypatch):
    """An outage while reading the run's last epoch must not make it 0 (every epoch re-logged)."""
    parent = buffered.start_run("search", kind="search")
    child = _start_trial(buffered, parent)
    for step in (1, 2):
        buffered.log_metrics(child, {"val_acc": step / 10, "epoch": step}, step=step)
    buffered.end_run(child, tracking.KILLED)
    assert buffered.flush(timeout=5)
    fail_once(monkeypatch, buffered, "get_metric_history")
    again = _start_trial(buffered, parent)
    retry_now(buffered)
    assert again.run_id == child.run_id and again.max_step == 2
    buffered.log_metrics(again, {"val_acc": 0.2, "epoch": 2}, step=2)
    buffered.log_metrics(again, {"val_acc": 0.3, "epoch": 3}, step=3)
    assert buffered.flush(timeout=5)
    assert buffered.metric_history(child.run_id, "val_acc") == [(1, 0.1), (2, 0.2), (3, 0.3)]
