"""Ray clusters on loopback for the scale-out tests.

Each `ray start` runs in a session of its own (start_new_session), so every process it leaves
behind (GCS, raylet, agents, trial workers, and the nodes the fake autoscaler adds) can be found
by session id and stopped by PID; `ray stop` is never used, since it would stop every Ray on the
machine. Each cluster has a private temp dir, its own ports and its own auth token.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
# The fake provider's head node id (ray.autoscaler._private.fake_multi_node.node_provider).
FAKE_HEAD_NODE_ID = "f" * 51 + "00000"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def node_id(n: int) -> str:
    """A fixed 28-byte node id (hex) for RAY_OVERRIDE_NODE_ID_FOR_TESTING."""
    return "e" * 51 + str(n).zfill(5)


def _stat(pid: int) -> tuple[str, str, int] | None:
    """(comm, state, session id) of a process, None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    rest = raw[raw.rindex(")") + 2 :].split()
    return comm, rest[0], int(rest[3])


def session_pids(sid: int) -> list[int]:
    """Live (non-zombie) processes of a session."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st and st[2] == sid and st[1] != "Z":
                out.append(int(entry.name))
    return out


def kill_session(sid: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        pids = session_pids(sid)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes of session {sid} survive SIGKILL: {pids}")
        time.sleep(0.2)


def fake_autoscaling_config(gcs_address: str, worker_resources: Mapping[str, int],
                            max_workers: int) -> dict[str, Any]:
    """A complete fake_multinode config (the provider's example.yaml is not in the wheel):
    a head without resources and one worker type the autoscaler may start `max_workers` of."""
    return {
        "cluster_name": "eqcvt-fake",
        "max_workers": max_workers,
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": 5,
        "provider": {
            "type": "fake_multinode",
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
            "gcs_address": gcs_address,  # else the fake nodes look for a GCS on port 6379
        },
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
            "ray.worker.gpu": {
                "resources": {**worker_resources, "object_store_memory": 100 * 1024**2},
                "node_config": {},
                "min_workers": 0,
                "max_workers": max_workers,
            },
        },
        "head_node_type": "ray.head.default",
        "auth": {},
        "docker": {},
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
    }


class LocalCluster:
    """Head (and worker nodes) on 127.0.0.1; use as a context manager."""

    def __init__(self) -> None:
        # Short path: Ray's unix sockets live under it (108-byte limit).
        self.tmp = Path(tempfile.mkdtemp(prefix="eqr", dir="/tmp"))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        token = secrets.token_hex(16)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update(
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN=token,
            RAY_USAGE_STATS_ENABLED="0",
            # Notice a dead node in ~3 s instead of ~30 s.
            RAY_health_check_period_ms="1000",
            RAY_health_check_timeout_ms="1000",
            RAY_health_check_failure_threshold="3",
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        )
        self.env = env
        self.sessions: dict[str, int] = {}

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _ports(self) -> list[str]:
        return [
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            "--object-store-memory=100000000",
            "--disable-usage-stats",
        ]

    def _start(self, name: str, args: Sequence[str], env: Mapping[str, str]) -> None:
        proc = subprocess.Popen(
            [str(BIN / "ray"), "start", *args], env={**self.env, **env}, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.sessions[name] = proc.pid  # the session id, even after `ray start` exits
        try:
            out, _ = proc.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            kill_session(proc.pid)
            raise
        if proc.returncode != 0:
            raise RuntimeError(f"ray start ({name}) failed:\n{out[-3000:]}")

    def start_head(self, num_cpus: int, num_gpus: int = 0,
                   autoscaling: Mapping[str, Any] | None = None) -> None:
        args = [
            "--head", f"--port={self.port}", "--node-ip-address=127.0.0.1",
            f"--temp-dir={self.tmp}", f"--num-cpus={num_cpus}", f"--num-gpus={num_gpus}",
            "--include-dashboard=false", *self._ports(),
        ]
        env: dict[str, str] = {}
        if autoscaling is not None:
            path = self.tmp / "autoscaling.yaml"
            path.write_text(yaml.safe_dump(dict(autoscaling)))
            args.append(f"--autoscaling-config={path}")
            env["RAY_FAKE_CLUSTER"] = "1"
        self._start("head", args, env)

    def add_node(self, name: str, num_cpus: int, num_gpus: int = 0, n: int = 1) -> str:
        """Start a worker node with a known node id; returns the id."""
        nid = node_id(n)
        args = [f"--address={self.address}", "--node-ip-address=127.0.0.1",
                f"--num-cpus={num_cpus}", f"--num-gpus={num_gpus}", *self._ports()]
        self._start(name, args, {"RAY_OVERRIDE_NODE_ID_FOR_TESTING": nid})
        return nid

    def kill_raylet(self, name: str) -> int:
        """SIGKILL the raylet of a node (what a lost machine looks like to the cluster)."""
        pids = [p for p in session_pids(self.sessions[name]) if (_stat(p) or ("",))[0] == "raylet"]
        assert len(pids) == 1, f"raylet of {name}: {pids}"
        os.kill(pids[0], signal.SIGKILL)
        return pids[0]

    def stop(self) -> None:
        errors = []
        for sid in self.sessions.values():
            try:
                kill_session(sid)
            except RuntimeError as err:
                errors.append(str(err))
        self.sessions.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)
        if errors:
            raise RuntimeError("; ".join(errors))

    def log(self, name: str) -> str:
        """A log file of the head's session (e.g. monitor.log), '' if absent."""
        path = self.tmp / "session_latest" / "logs" / name
        return path.read_text(errors="replace") if path.is_file() else ""


# ----------------------------------------------------------------------------- the CLI


def eqcvt_search(args: Sequence[str], env: Mapping[str, str], cwd: Path,
                 timeout: float = 300.0, **popen: Any) -> subprocess.Popen[str]:
    """Start `eqcvt-search ARGS` in a session of its own (stdout+stderr to cwd/cli.log)."""
    log = open(cwd / "cli.log", "a")  # noqa: SIM115 - closed by the caller's wait()
    return subprocess.Popen(
        [str(BIN / "eqcvt-search"), *args], env={**env, "COLUMNS": "160"}, cwd=cwd,
        stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True, **popen,
    )


def finish(proc: subprocess.Popen[str], timeout: float) -> int:
    """Wait for a CLI process; on timeout kill its session and fail."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_session(proc.pid)
        raise


def tiny_space(path: Path, *, trials: int, epochs: int, n_train: int = 64,
               extra: Mapping[str, Any] | None = None) -> Path:
    """A search of `trials` small CvT models (grid over lr, FIFO: every trial runs all epochs)."""
    lrs = [round(1e-3 * (1 + i), 6) for i in range(trials)]
    doc = {
        "name": "scaleout",
        "scheduler": "fifo",
        "searcher": "random",
        "metric": "val_acc",
        "mode": "max",
        "num_samples": 1,
        "max_epochs": epochs,
        "resources": {"cpus": 1, "gpus": 0},
        "params": {
            "data.source": "simulate",
            "data.preset": "model_ii",
            "data.task": "binary",
            "data.n_train": n_train,
            "data.n_val": 32,
            "data.n_test": 32,
            "data.img_size": 32,
            "model.name": "cvt_baseline",
            "model.embed_dim": 16,
            "model.depth": 1,
            "model.heads": 1,
            "model.head_hidden": 16,
            "train.batch_size": 32,
            "train.num_threads": 1,
            "train.device": "auto",
            "train.lr": {"grid": lrs},
            **(extra or {}),
        },
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def results(experiment_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Trial id -> the results Tune recorded (result.json lines), in order."""
    out: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(experiment_dir.glob("trial_*/result.json")):
        rows = []
        for line in path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                rows.append(json.loads(line))
        out[path.parent.name.removeprefix("trial_")] = rows
    return out


@contextlib.contextmanager
def timed(label: str) -> Iterator[None]:
    t0 = time.monotonic()
    yield
    print(f"[{label}: {time.monotonic() - t0:.1f} s]")
