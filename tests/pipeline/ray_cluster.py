"""Private Ray clusters on loopback for the tests, and helpers that drive the CLI against them.

Every cluster has a private, short temp dir (Ray's unix sockets live under it: 108-byte limit),
free ports and token auth on (a fresh token passed to every process through
RAY_AUTH_MODE/RAY_AUTH_TOKEN, never written to ~/.ray). Each `ray start` runs in a session (and
process group) of its own, so everything it leaves behind (GCS, raylet, agents, trial workers,
the nodes a fake autoscaler adds) can be found and stopped by PID. `ray stop` is never used: it
would stop every Ray on the machine.

Two ways to run one:

* `LoopbackCluster`: N identical nodes, each a `ray start --block` process, started together
  and joined by drivers through `env` (RAY_ADDRESS + token). The session-wide fixture.
* `LocalCluster`: a head and named worker nodes started one by one (daemonised `ray start`),
  with fixed node ids, an optional fake_multinode autoscaling head, and `kill_raylet` to lose
  a node. Drivers get `env` (token, fast health checks, no inherited RAY_*) and `--address`.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

BIN = Path(sys.executable).parent
RAY = str(BIN / "ray")
ROOT = Path(__file__).resolve().parents[2]
# The fake provider's head node id (ray.autoscaler._private.fake_multi_node.node_provider).
FAKE_HEAD_NODE_ID = "f" * 51 + "00000"


# ----------------------------------------------------------------------------- ports and ids


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _free_range(width: int = 40) -> int:
    """A base port whose next `width` ports are free now (worker ports of one node)."""
    for _ in range(200):
        base = 20000 + secrets.randbelow(30000)
        ok = True
        for p in range(base, base + width):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free port range for Ray workers")


def node_id(n: int) -> str:
    """A fixed 28-byte node id (hex) for RAY_OVERRIDE_NODE_ID_FOR_TESTING."""
    return "e" * 51 + str(n).zfill(5)


# ----------------------------------------------------------------------------- processes


def _pids() -> Iterator[int]:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            yield int(entry.name)


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
    for pid in _pids():
        st = _stat(pid)
        if st and st[2] == sid and st[1] != "Z":
            out.append(pid)
    return out


def kill_session(sid: int, timeout: float = 15.0) -> None:
    """SIGKILL every process of a session until none is left."""
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


def pids_mentioning(text: str) -> list[int]:
    """Processes (but this one) whose command line contains `text`, e.g. a cluster's temp dir."""
    out = []
    for pid in _pids():
        if pid == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if text in cmd.decode(errors="ignore"):
            out.append(pid)
    return out


# ----------------------------------------------------------------------------- N nodes, blocking


class NodeStartError(RuntimeError):
    """A node of a loopback cluster died or never joined while the cluster started."""


@dataclass
class LoopbackCluster:
    """`num_nodes` nodes of `cpus_per_node` CPUs, each a `ray start --block` process group;
    `start()` returns once all are alive. Use as a context manager or start()/stop()."""

    num_nodes: int = 2
    cpus_per_node: int = 1
    object_store_bytes: int = 120 * 1024 * 1024
    temp_dir: str = field(default_factory=lambda: f"/tmp/ray_eqcvt_{secrets.token_hex(3)}")
    token: str = field(default_factory=lambda: secrets.token_hex(32))
    procs: list[subprocess.Popen] = field(default_factory=list)
    port: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """What a driver (or CLI subprocess) needs to join: address and token."""
        return {
            "RAY_ADDRESS": self.address,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": self.token,
        }

    def _node_args(self, head: bool) -> list[str]:
        base = _free_range()
        args = [
            f"--temp-dir={self.temp_dir}",
            f"--num-cpus={self.cpus_per_node}",
            "--num-gpus=0",
            f"--object-store-memory={self.object_store_bytes}",
            "--disable-usage-stats",
            "--block",
            f"--node-manager-port={free_port()}",
            f"--object-manager-port={free_port()}",
            f"--min-worker-port={base}",
            f"--max-worker-port={base + 39}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            f"--metrics-export-port={free_port()}",
        ]
        if head:
            args += [f"--port={self.port}", "--head", "--include-dashboard=false",
                     f"--dashboard-port={free_port()}"]
        else:
            args += [f"--address={self.address}"]
        return args

    def start(self, timeout: float = 120.0, attempts: int = 3) -> LoopbackCluster:
        """Start every node; a node that dies on start-up (e.g. a port another process took
        between `free_port()` and its bind) is retried on fresh ports and a fresh temp dir."""
        for attempt in range(1, attempts + 1):
            try:
                return self._start_once(timeout)
            except NodeStartError as err:
                if attempt == attempts:
                    raise
                print(f"loopback cluster: attempt {attempt} failed, retrying: {err}",
                      file=sys.stderr)
                self.temp_dir = f"/tmp/ray_eqcvt_{secrets.token_hex(3)}"
        raise AssertionError("unreachable")

    def _start_once(self, timeout: float) -> LoopbackCluster:
        self.port = free_port()
        Path(self.temp_dir).mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env, "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
        env.pop("RAY_ADDRESS", None)
        logs = Path(self.temp_dir)
        for i in range(self.num_nodes):
            log = open(logs / f"node{i}.log", "w")  # noqa: SIM115 - lives as long as the node
            self.procs.append(subprocess.Popen(
                [RAY, "start", *self._node_args(head=i == 0)],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            ))
            if i == 0:
                self._wait_log(logs / "node0.log", "Ray runtime started", timeout)
        for i in range(1, self.num_nodes):
            self._wait_log(logs / f"node{i}.log", "Ray runtime started", timeout)
        self._wait_nodes(timeout)
        return self

    def _wait_log(self, path: Path, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in path.read_text():
                return
            if any(p.poll() is not None for p in self.procs):
                break
            time.sleep(0.3)
        logs = {p.name: p.read_text()[-1500:] for p in sorted(Path(self.temp_dir).glob("node*.log"))}
        self.stop()  # removes the temp dir: the logs were read first
        raise NodeStartError(f"Ray node did not start: {path}\n"
                             + "\n".join(f"--- {n}\n{t}" for n, t in logs.items()))

    def _wait_nodes(self, timeout: float) -> None:
        code = (
            "import ray,time,sys\n"
            "ray.init(logging_level='ERROR')\n"
            f"t=time.time()\n"
            f"while len([n for n in ray.nodes() if n['Alive']])<{self.num_nodes}:\n"
            f"    time.sleep(0.5)\n"
            f"    if time.time()-t>{timeout}: sys.exit(1)\n"
        )
        r = subprocess.run([sys.executable, "-c", code], env={**os.environ, **self.env},
                           capture_output=True, text=True, timeout=timeout + 30)
        if r.returncode != 0:
            self.stop()
            raise NodeStartError(f"Ray cluster did not come up: {r.stderr[-3000:]}")

    def stop(self) -> None:
        """Kill our process groups (SIGTERM, then SIGKILL), and our workers by their PID."""
        for p in reversed(self.procs):
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=10)
        # Processes of this cluster that left its process groups (found by our temp dir).
        for pid in pids_mentioning(self.temp_dir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.procs.clear()
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> LoopbackCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ----------------------------------------------------------------------------- node by node


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
    """Head (and worker nodes) on 127.0.0.1, started one by one; use as a context manager.
    Stopped by SIGKILLing every process of each `ray start`'s session."""

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
            [RAY, "start", *args], env={**self.env, **env}, text=True,
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
