"""Under PBT a trial that exploits a donor behind it restarts at an epoch it has already
logged: its learning curves must still hold one point per (metric, step)."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

from pipeline import tracking
from pipeline.tune import TrackingCallback


def _result(epoch: int, val_loss: float, donor: str = "", donor_epoch: int = 0) -> dict:
    return {"epoch": epoch, "training_iteration": epoch, "val_loss": val_loss,
            "restored_from_trial": donor, "restored_from_epoch": float(donor_epoch)}


def test_pbt_exploit_does_not_relog_steps(tmp_path):
    tracker = tracking.Tracker(f"sqlite:///{tmp_path / 'm.db'}", "pbt", buffered=True)
    parent = tracker.start_run("pbt", kind="search")
    request = SimpleNamespace(experiment="pbt", search_id="s1")
    spec = SimpleNamespace(metric="val_loss", mode="min", scheduler="pbt",
                           hyperparam_mutations={"train.lr": None})
    cb = TrackingCallback(request, spec, parent, tracker)
    trial = SimpleNamespace(trial_id="t1", config={"model.name": "eqcvt_stem", "train.lr": 0.01})
    for epoch in (1, 2, 3):
        cb.on_trial_result(epoch, [], trial, _result(epoch, 1.0 / epoch))
    # exploit: t0's checkpoint of epoch 1 with a mutated lr; t1 trains epochs 2.. again
    trial.config = {**trial.config, "train.lr": 0.02}
    for epoch in (2, 3, 4):
        cb.on_trial_result(epoch, [], trial, _result(epoch, 0.5 / epoch, "t0", 1))
    tracker.end_run(cb.runs["t1"], tracking.FINISHED)
    assert tracker.flush(timeout=10)

    run_id = cb.runs["t1"].run_id
    for key in ("val_loss", "epoch", "best_val_loss", "pbt/train.lr"):
        steps = Counter(step for step, _ in tracker.metric_history(run_id, key))
        assert steps == {1: 1, 2: 1, 3: 1, 4: 1}, (key, steps)
    assert dict(tracker.metric_history(run_id, "pbt/train.lr"))[4] == 0.02  # after the exploit
    (run,) = tracker.runs(kind="trial")
    assert run["tags"]["pbt.last_exploit"] == "t0@1"
    tracker.close()
