"""Where the records go: tracking URIs, opening a store, telling an outage from an error."""

from __future__ import annotations

import fcntl
import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from .tags import DB_FILE


class TrackingUnavailable(RuntimeError):
    """The tracking server cannot be reached; raised before any trial starts."""


def default_tracking_uri(cwd: str | Path | None = None) -> str:
    """`sqlite:///<abs cwd>/mlflow.db`: absolute, so every process on the machine agrees."""
    return f"sqlite:///{Path(cwd or os.getcwd()).resolve() / DB_FILE}"


def resolve_tracking_uri(uri: str | None) -> str:
    """None -> the embedded default; relative sqlite/file paths -> absolute ones."""
    if not uri:
        return default_tracking_uri()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{Path(uri[len('sqlite:///'):]).resolve()}"
    if "://" not in uri:  # a plain folder: MLflow's file store
        return Path(uri).resolve().as_uri()
    return uri


def is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI, None for any other store."""
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def check_server(uri: str, timeout: float = 5.0) -> None:
    """Fail fast (seconds, not MLflow's minutes of retries) when an http server is down."""
    if not is_http(uri):
        return
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            if resp.status == 200:
                return
            reason = f"HTTP {resp.status}"
    except urllib.error.HTTPError as err:
        reason = f"HTTP {err.code}"
    except (urllib.error.URLError, OSError) as err:
        reason = str(getattr(err, "reason", err))
    raise TrackingUnavailable(
        f"MLflow tracking server at {uri} is not reachable ({reason}). Start it (see README "
        '"Running on a cluster") or drop --tracking-uri to use the local SQLite store.'
    )


def configure_http_env(uri: str) -> None:
    """An outage should cost seconds per call: no long retry chains against a dead server."""
    if is_http(uri):
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")


_OUTAGE_TYPES = (
    "ConnectionError", "ConnectTimeout", "ReadTimeout", "Timeout", "MaxRetryError",
    "NewConnectionError", "ProtocolError", "RemoteDisconnected", "ChunkedEncodingError",
)


def is_outage(err: BaseException) -> bool:
    """Connection-type failures (server down/restarting), not bad requests."""
    seen: set[int] = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, (ConnectionError, TimeoutError)) or type(e).__name__ in _OUTAGE_TYPES:
            return True
        if "database is locked" in str(e):  # SQLite busy (e.g. `mlflow ui` reading): retry
            return True
        if isinstance(e, MlflowException):
            msg = str(e)
            if "API request to" in msg and "failed with" in msg:
                return True
            if getattr(e, "error_code", "") in ("TEMPORARILY_UNAVAILABLE", "INTERNAL_ERROR") and (
                "503" in msg or "502" in msg or "Connection" in msg
            ):
                return True
        e = e.__cause__ or e.__context__
    return False


def open_client(uri: str) -> MlflowClient:
    """An MlflowClient whose store is open; a SQLite store is created or upgraded under a lock.

    MLflow builds the schema on first use; two processes doing it at once on a new file (a
    search starting while `mlflow ui` or a second command opens the same store) corrupt the
    migration and one of them crashes. The lock makes the first one build it and the others wait.
    """
    db = sqlite_path(uri)
    if db is None:
        return MlflowClient(tracking_uri=uri)
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            client = MlflowClient(tracking_uri=uri)
            client.search_experiments(max_results=1)  # opens the store: schema built here
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return client


def git_commit(path: str | Path | None = None) -> str:
    """The commit of the project checkout (plus "-dirty"), or "unknown" outside git."""
    where = Path(path) if path else Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
            capture_output=True, text=True, timeout=10,
        )
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
