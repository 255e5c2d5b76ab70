"""Fixtures shared by the search tests: a private two-node Ray cluster on loopback, and helpers
that run the `eqcvt-search` CLI against it in a subprocess (so each driver is a real, separate
process that can be interrupted) and read the MLflow store it wrote."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .ray_cluster import LoopbackCluster

# A tiny budget every search test uses: 32x32 crops, a few images, tiny models, 1 thread.
TINY_DATA = [
    "data.n_train=64", "data.n_val=32", "data.n_test=32", "data.img_size=32",
    "train.num_threads=1",
]
TINY_MODEL = [
    "model.embed_dim=8", "model.depth=1", "model.heads=1", "model.head_hidden=8",
    "model.kernel_size=3", "model.stem_blocks=1",
]


def cli_env(cluster: LoopbackCluster, tracking_dir: Path) -> dict[str, str]:
    env = {**os.environ, **cluster.env}
    env.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               RAY_DEDUP_LOGS="1")
    env.pop("RAY_AIR_NEW_OUTPUT", None)
    return env


def run_cli(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 600
            ) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args], cwd=cwd, env=env, capture_output=True,
        text=True, timeout=timeout,
    )


def sets(*groups: list[str]) -> list[str]:
    out: list[str] = []
    for g in groups:
        for item in g:
            out += ["--set", item]
    return out


@pytest.fixture(scope="session")
def finished_search(ray_cluster, tmp_path_factory):
    """default.yaml (ASHA + HyperOpt, conditional group -> fields) on a tiny budget, run to
    the end on the two-node cluster; shared by the tracking, final and report tests."""
    work = tmp_path_factory.mktemp("search")
    env = cli_env(ray_cluster, work)
    args = ["run", "--space", "default", "--experiment", "tiny", "--storage-path",
            str(work / "results"), "--num-samples", "4", "--epochs", "2",
            "--cpus-per-trial", "1", *sets(TINY_DATA, TINY_MODEL, ["train.batch_size=32", "data.n_train=512"])]
    # 512 images make a trial last a few seconds, so the second node's actor is up before the
    # first node (which reuses its actor) could run every trial alone.
    proc = run_cli(args, work, env)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    return {"work": work, "env": env, "proc": proc, "uri": f"sqlite:///{work / 'mlflow.db'}",
            "experiment": "tiny", "path": work / "results" / "tiny", "num_samples": 4,
            "epochs": 2}
