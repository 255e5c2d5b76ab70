"""What a failed trial says: its error's summary line, and whether it is a non-finite loss
(which a retry from the last checkpoint would only meet again)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

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
