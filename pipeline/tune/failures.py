"""What a failed trial says (its error's summary line; a non-finite loss, which a retry from
the last checkpoint would only meet again), and the stop of a search whose trials keep failing
with the same error."""

from __future__ import annotations

import contextlib
import re
import signal
from pathlib import Path
from typing import Any

from ray import tune

NONFINITE_MARK = "non-finite training loss"  # engine.NonFiniteLossError's message


def is_nonfinite(trial: Any) -> bool:
    with contextlib.suppress(OSError, TypeError, AttributeError):
        return NONFINITE_MARK in Path(trial.error_file).read_text()
    return False


def error_summary(trial: Any) -> str:
    with contextlib.suppress(OSError, TypeError, AttributeError):
        text = Path(trial.error_file).read_text()
        for line in reversed(text.strip().splitlines()):
            if "Error" in line and ":" in line:
                return line.strip()[:500]
    return "trial errored"


_NUMBERS = re.compile(r"(?i)(?<![\w.])[-+]?(?:\d+(?:\.\d*)?(?:e[-+]?\d+)?|nan|inf)(?![\w.])")


def error_key(message: str) -> str:
    """The error with its numbers blanked: "loss nan at epoch 1, step 3" and "loss inf at
    epoch 2, step 5" are the same error."""
    return _NUMBERS.sub("#", message)


class RepeatedFailureStop(tune.Callback):
    """Ends the search when `limit` trials in a row fail with the same error (numbers aside):
    the remaining trials would only meet it again. The stop is Tune's own Ctrl-C stop, so the
    search's state is saved and `eqcvt-search resume` continues it once the cause is fixed.
    A retry of a trial already counted adds nothing; a trial that completes resets the count.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.key: str | None = None
        self.trials: set[str] = set()
        self.message = ""  # set when the search was stopped
        self.inert = False

    def __getstate__(self) -> dict[str, Any]:
        return {"inert": True}  # pickled into tuner.pkl; resume_search adds a live one

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._failed(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._failed(trial)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any
                          ) -> None:
        if not self.inert:
            self.key, self.trials = None, set()

    def _failed(self, trial: Any) -> None:
        if self.inert or self.message or self.limit < 1:
            return
        summary = error_summary(trial)
        key = error_key(summary)
        if key != self.key:
            self.key, self.trials = key, set()
        self.trials.add(trial.trial_id)
        if len(self.trials) >= self.limit:
            self.message = f"{len(self.trials)} trials in a row failed with: {summary}"
            signal.raise_signal(signal.SIGINT)  # Tune saves its state and ends the loop
