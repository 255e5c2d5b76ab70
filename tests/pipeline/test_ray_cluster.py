"""The loopback cluster the search tests share: a node that dies on start-up (here: its GCS
port is already taken) is retried on fresh ports, and the failure's log is kept."""

from __future__ import annotations

import socket

import pytest

from . import ray_cluster


@pytest.mark.slow
def test_a_port_taken_before_the_head_binds_it_is_retried(monkeypatch, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken, real, calls = busy.getsockname()[1], ray_cluster.free_port, []

        def first_taken() -> int:
            calls.append(1)
            return taken if len(calls) == 1 else real()  # the head's --port

        monkeypatch.setattr(ray_cluster, "free_port", first_taken)
        cluster = ray_cluster.LoopbackCluster(num_nodes=2, cpus_per_node=1)
        first_dir = cluster.temp_dir
        try:
            cluster.start(timeout=90)
            assert cluster.port != taken and cluster.temp_dir != first_dir
        finally:
            cluster.stop()
    err = capsys.readouterr().err
    assert "attempt 1 failed" in err and "node0.log" in err
