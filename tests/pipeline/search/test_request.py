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
    assert spec.params["data.n_train"] == 16 and spec.params["train.batch_size"] == 8
    again = SearchRequest.from_json(req.to_json())
    assert again.spec() == spec
    assert req.resources(spec) == {"cpu": 4.0, "gpu": 0.25}
    req.cpus_per_trial, req.gpus_per_trial = 1, 0
    assert req.resources(spec) == {"cpu": 1.0, "gpu": 0.0}
