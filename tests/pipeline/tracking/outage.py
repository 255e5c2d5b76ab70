"""A tracking-server outage at one MLflow client call, as the REST client reports it."""

from __future__ import annotations

from typing import Any

from mlflow.exceptions import MlflowException

from pipeline import tracking


def outage_error() -> MlflowException:
    return MlflowException("API request to http://127.0.0.1:1/api failed with exception "
                           "ConnectionError('refused')")


def fail_once(monkeypatch: Any, tracker: tracking.Tracker, method: str, *,
              reply_lost: bool = False) -> dict[str, int]:
    """The next `tracker.client.<method>` call fails like an outage; with reply_lost, the
    server did the work first (the reply never came back). -> counts of calls made."""
    real = getattr(tracker.client, method)
    calls = {"n": 0}

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            if reply_lost:
                real(*args, **kwargs)
            raise outage_error()
        return real(*args, **kwargs)

    monkeypatch.setattr(tracker.client, method, flaky)
    return calls


def retry_now(tracker: tracking.Tracker) -> None:
    """Let the back-off pass and flush; every queued call must get through."""
    tracker._retry_at = 0.0
    assert tracker.flush(timeout=10) and tracker.pending == 0
