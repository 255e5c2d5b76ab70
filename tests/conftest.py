"""Fixtures shared across the test packages."""

from __future__ import annotations

import pytest

from tests.pipeline.ray_cluster import LoopbackCluster


@pytest.fixture(scope="session")
def ray_cluster():
    """Two Ray nodes of one CPU each on this machine, token auth on, stopped by PID; shared by
    the search tests and the search benchmark's smoke run."""
    cluster = LoopbackCluster(num_nodes=2, cpus_per_node=1).start()
    try:
        yield cluster
    finally:
        cluster.stop()
