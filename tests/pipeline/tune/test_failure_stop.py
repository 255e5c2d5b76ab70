"""A search whose trials keep failing with one error stops itself (Tune's own saved-state
stop); what a failed search says to the CLI."""

from __future__ import annotations

import signal
from types import SimpleNamespace

import pytest

pytest.importorskip("ray")

from pipeline.tune import failures  # noqa: E402
from pipeline.tune.failures import RepeatedFailureStop, error_key  # noqa: E402

NAN = ("Traceback (most recent call last):\n  ...\npipeline.engine.NonFiniteLossError: "
       "non-finite training loss {v} at epoch {e}, step {s} (lower train.lr or set "
       "train.grad_clip)\n")


@pytest.fixture
def sigints(monkeypatch):
    sent = []
    monkeypatch.setattr(failures.signal, "raise_signal", sent.append)
    return sent


def _trial(tmp_path, tid, text):
    path = tmp_path / f"{tid}.txt"
    path.write_text(text)
    return SimpleNamespace(trial_id=tid, error_file=str(path))


def test_error_key_ignores_numbers_only():
    a = error_key("NonFiniteLossError: non-finite training loss nan at epoch 1, step 3")
    b = error_key("NonFiniteLossError: non-finite training loss inf at epoch 12, step 40")
    assert a == b
    assert error_key("ValueError: model.fields=2 bad") != error_key("KeyError: 'x'")
    assert "train.lr" in error_key("lower train.lr")


def test_five_trials_in_a_row_with_one_error_stop_the_search(tmp_path, sigints):
    stop = RepeatedFailureStop(5)
    for i in range(4):
        stop.on_trial_error(0, [], _trial(tmp_path, f"t{i}", NAN.format(v="nan", e=1, s=i)))
    stop.on_trial_recover(0, [], _trial(tmp_path, "t3", NAN.format(v="inf", e=2, s=9)))
    assert not sigints and not stop.message  # a retry of a counted trial adds nothing
    stop.on_trial_error(0, [], _trial(tmp_path, "t4", NAN.format(v="inf", e=1, s=2)))
    assert sigints == [signal.SIGINT]
    assert stop.message.startswith("5 trials in a row failed with: ")
    assert "non-finite training loss" in stop.message
    stop.on_trial_error(0, [], _trial(tmp_path, "t5", NAN.format(v="nan", e=1, s=2)))
    assert sigints == [signal.SIGINT]  # stopped once


def test_another_error_or_a_finished_trial_resets_the_count(tmp_path, sigints):
    stop = RepeatedFailureStop(3)
    stop.on_trial_error(0, [], _trial(tmp_path, "a", NAN.format(v="nan", e=1, s=1)))
    stop.on_trial_error(0, [], _trial(tmp_path, "b", NAN.format(v="nan", e=1, s=1)))
    stop.on_trial_error(0, [], _trial(tmp_path, "c", "Traceback\nOSError: disk full\n"))
    stop.on_trial_error(0, [], _trial(tmp_path, "d", NAN.format(v="nan", e=1, s=1)))
    stop.on_trial_complete(0, [], SimpleNamespace(trial_id="e"))
    stop.on_trial_error(0, [], _trial(tmp_path, "f", NAN.format(v="nan", e=1, s=1)))
    stop.on_trial_error(0, [], _trial(tmp_path, "g", NAN.format(v="nan", e=1, s=1)))
    assert not sigints and not stop.message


def test_a_restored_copy_is_inert(tmp_path, sigints):
    import pickle

    stop = pickle.loads(pickle.dumps(RepeatedFailureStop(1)))
    stop.on_trial_error(0, [], _trial(tmp_path, "a", "Traceback\nOSError: x\n"))
    assert not sigints
