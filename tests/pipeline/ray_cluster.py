"""A private multi-node Ray cluster on this machine, for tests.

Two (or more) `ray start --block` processes, each in its own process group, with a short
private temp dir, free ports everywhere and token auth on (a fresh token passed to every
process through RAY_AUTH_MODE/RAY_AUTH_TOKEN, never written to ~/.ray). Stopped by killing
exactly those process groups: never `ray stop`, which would kill every Ray on the machine.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


@dataclass
class LoopbackCluster:
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

    def start(self, timeout: float = 120.0) -> LoopbackCluster:
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
        self.stop()
        raise RuntimeError(f"Ray node did not start: {path}\n{path.read_text()[-3000:]}")

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
            raise RuntimeError(f"Ray cluster did not come up: {r.stderr[-3000:]}")

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
        for pid in self._stray_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.procs.clear()
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def _stray_pids(self) -> list[int]:
        """Processes of this cluster that left its process groups (found by our temp dir)."""
        out = []
        for d in Path("/proc").iterdir():
            if not d.name.isdigit() or int(d.name) == os.getpid():
                continue
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="ignore")
            except OSError:
                continue
            if self.temp_dir in cmd:
                out.append(int(d.name))
        return out

    def __enter__(self) -> LoopbackCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
