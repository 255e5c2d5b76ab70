"""SearchRequest: the CLI's budget and pins applied to the YAML, and a JSON round trip (the
file a resume reads)."""

from __future__ import annotations

from pathlib import Path

from pipeline.search import SearchRequest

SPACES = Path(__file__).resolve().parents[3] / "search_spaces"


def test_request_budget_overrides_and_round_trip(tmp_path):
    text = (SPACES / "asha_hyperopt.yaml").read_text()
    req = SearchRequest(space_file="asha_hyperopt.yaml", space_text=text,
                        experiment="x", storage_path=str(tmp_path),
                        tracking_uri="sqlite:///x.db", max_epochs=1, num_samples=2,
                        fixed={"data.n_train": 16, "train.batch_size": 8})
    spec = req.spec()
    assert (spec.max_epochs, spec.grace_period, spec.num_samples) == (1, 1, 2)
    assert spec.first_rung_quorum == 1  # the YAML's 4, kept reachable by 2 trials
    assert spec.params["data.n_train"] == 16 and spec.params["train.batch_size"] == 8
    again = SearchRequest.from_json(req.to_json())
    assert again.spec() == spec
    assert req.resources(spec) == {"cpu": 4.0, "gpu": 0.25}
    req.cpus_per_trial, req.gpus_per_trial = 1, 0
    assert req.resources(spec) == {"cpu": 1.0, "gpu": 0.0}


def _outcome(statuses, **kw):
    from pipeline.live import LiveView
    from pipeline.search import SearchOutcome

    return SearchOutcome(experiment_path="/r/x", interrupted=kw.pop("interrupted", False),
                         statuses=statuses, view=LiveView("val_acc", "max", "x"), timings={},
                         parent_run_id=None, **kw)


def test_outcome_failure_when_no_trial_finished_or_stopped():
    assert _outcome({"a": "TERMINATED", "b": "ERROR"}).failure is None
    assert _outcome({"a": "TERMINATED"}).ok
    none_finished = _outcome({"a": "ERROR", "b": "ERROR"})
    assert "no trial finished" in none_finished.failure and not none_finished.ok
    assert _outcome({"a": "INTERRUPTED"}, interrupted=True).failure is None  # Ctrl-C: resume
    stopped = _outcome({"a": "ERROR", "b": "INTERRUPTED"}, interrupted=True,
                       stopped_on="5 trials in a row failed with: OSError: x")
    assert "OSError: x" in stopped.failure and "eqcvt-search resume /r/x" in stopped.failure
