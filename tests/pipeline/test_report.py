"""`eqcvt-search report` and the search selection of final/report, on a real MLflow store."""

from __future__ import annotations

import math
import time

import pytest

from pipeline import tracking
from pipeline.experiments import DEFAULT_EXPERIMENT, select_search
from pipeline.final import best_trials
from pipeline.report import write_report


def add_search(tracker: tracking.Tracker, name: str, trials: dict[str, dict[str, float]],
               lr: float = 0.0022272466466948426) -> tracking.RunRef:
    parent = tracker.start_run(name, kind="search", tags={tracking.TAG_EXPERIMENT: name},
                               params={"search.metric": "val_acc", "search.mode": "max",
                                       "search.name": name})
    for i, (tid, metrics) in enumerate(trials.items()):
        ref = tracker.start_run(f"trial_{tid}", kind="trial", parent=parent,
                                tags={tracking.TAG_TRIAL_ID: tid, tracking.TAG_EXPERIMENT: name},
                                params={"train.lr": lr * (i + 1), "model.group": "C4",
                                        "train.batch_size": 32 + i})
        tracker.log_metrics(ref, metrics, step=1, skip_logged=False)
        tracker.end_run(ref, tracking.FINISHED)
    tracker.end_run(parent, tracking.FINISHED)
    assert tracker.flush(timeout=10)
    time.sleep(0.01)  # distinct start times
    return parent


@pytest.fixture()
def store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = tracking.Tracker(uri, DEFAULT_EXPERIMENT)
    add_search(tracker, "first-search", {
        "a_00000": {"best_val_acc": 0.91, "num_params": 64810.0, "flops": 1.23456789e7},
        "a_00001": {"best_val_acc": 0.55, "num_params": 1200.0}})
    add_search(tracker, "second-search", {"b_00000": {"best_val_acc": 0.61,
                                                       "num_params": 3000.0}})
    return uri, tmp_path


def test_a_search_name_selects_that_search_in_the_shared_experiment(store):
    uri, _ = store
    first = select_search("first-search", uri)
    assert first.tracker.experiment == DEFAULT_EXPERIMENT and first.name == "first-search"
    assert {r["tags"][tracking.TAG_TRIAL_ID] for r in first.trials()} == {"a_00000", "a_00001"}
    latest = select_search(DEFAULT_EXPERIMENT, uri)  # an experiment: its latest search
    assert latest.name == "second-search"
    assert [r["tags"][tracking.TAG_TRIAL_ID] for r in latest.trials()] == ["b_00000"]
    with pytest.raises(ValueError, match="no search named 'nope'"):
        select_search("nope", uri)


def test_final_ranks_the_trials_of_one_search_only(store):
    uri, _ = store
    sel = select_search(DEFAULT_EXPERIMENT, uri)
    ranked = best_trials(sel.tracker, sel.metric, sel.mode, 5, parent=sel.run_id)
    assert [r["tags"][tracking.TAG_TRIAL_ID] for r in ranked] == ["b_00000"]  # not a_00000 (0.91)


def test_report_columns_and_four_significant_digits(store):
    uri, tmp = store
    text = write_report("first-search", tracking_uri=uri, out=tmp / "r.md").read_text()
    assert "# Search report: first-search" in text and DEFAULT_EXPERIMENT in text
    assert "b_00000" not in text  # the other search's trial
    header = next(line for line in text.splitlines() if line.startswith("| # |"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    assert "params" in cols and "FLOPs" in cols
    row = next(line for line in text.splitlines() if "a_00000" in line)
    cells = dict(zip(cols, [c.strip() for c in row.strip("|").split("|")], strict=True))
    assert cells["params"] == "64810" and cells["FLOPs"] == "1.235e+07"
    assert cells["lr"] == "0.002227"  # was 0.0022272466466948426
    assert "0.0022272466466948426" not in text
    assert cells["batch_size"] == "32"


def test_report_has_no_flops_column_until_trials_log_them(store):
    uri, tmp = store
    text = write_report("second-search", tracking_uri=uri, out=tmp / "r2.md").read_text()
    header = next(line for line in text.splitlines() if line.startswith("| # |"))
    assert "params" in header and "FLOPs" not in header
    assert not math.isnan(select_search("second-search", uri).trials()[0]["metrics"][
        "num_params"])


def test_final_runs_are_ranked_by_validation_with_n_and_interval(store):
    """The model that is best on test but not on validation is not ranked first."""
    uri, tmp = store
    sel = select_search("first-search", uri)
    trials = {r["tags"][tracking.TAG_TRIAL_ID]: r["run_id"] for r in sel.trials()}
    finals = {"a_00000": (0.80, 0.95), "a_00001": (0.90, 0.70)}  # (val mean, test mean)
    for tid, (val, test) in finals.items():
        ref = sel.tracker.start_run(f"final_{tid}", kind="final",
                                    tags={tracking.TAG_TRIAL_ID: tid,
                                          "eqcvt.trial_run_id": trials[tid]})
        sel.tracker.log_metrics(ref, {
            "val_acc_mean": val, "val_acc_std": 0.01, "val_acc_n": 3.0,
            "test_acc_mean": test, "test_acc_std": 0.02, "test_acc_n": 3.0,
            "test_acc_ci_low": test - 0.05, "test_acc_ci_high": test + 0.05,
        }, step=0, skip_logged=False)
        sel.tracker.end_run(ref, tracking.FINISHED)
    assert sel.tracker.flush(timeout=10)
    text = write_report("first-search", tracking_uri=uri, out=tmp / "f.md").read_text()
    section = text[text.index("## Final runs"):]
    section = section[:section.find("\n## ", 1)]  # up to the next section
    rows = [line for line in section.splitlines() if line.startswith("| a_")]
    assert [r.split("|")[1].strip() for r in rows] == ["a_00001", "a_00000"]
    assert "0.9 ± 0.01 (n=3)" in rows[0] and "[0.65, 0.75]" in rows[0]
