"""Autoscaling without a cloud: Ray's fake_multinode provider adds GPU worker nodes on demand.

The head advertises no resources (like cluster.yaml's `CPU: 0` head), the only worker type
advertises one (fake) GPU, and the search asks for `--gpus-per-trial 0.25`: the autoscaler must
start worker nodes, and Ray must pack four trials on each fake GPU at the same time. The CPU
build of torch sees no GPU, so the trials train on the CPU (train.device "auto").
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from pipeline import tracking

from .ray_cluster import (
    FAKE_HEAD_NODE_ID,
    LocalCluster,
    eqcvt_search,
    fake_autoscaling_config,
    finish,
    timed,
    tiny_space,
)

TRIALS = 8
EPOCHS = 2
PER_GPU = 4  # --gpus-per-trial 0.25


def _max_overlap(spans: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    best = now = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_autoscaler_adds_gpu_nodes_and_packs_four_trials_per_gpu(tmp_path: Path) -> None:
    space = tiny_space(tmp_path / "space.yaml", trials=TRIALS, epochs=EPOCHS)
    storage = tmp_path / "results"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with LocalCluster() as cluster:
        config = fake_autoscaling_config(cluster.address, {"CPU": 2, "GPU": 1}, max_workers=2)
        with timed("fake head"):
            cluster.start_head(num_cpus=0, num_gpus=0, autoscaling=config)
        with timed("search"):
            proc = eqcvt_search(
                ["run", "--space", str(space), "--address", cluster.address,
                 "--storage-path", str(storage), "--experiment", "autoscale",
                 "--tracking-uri", uri, "--gpus-per-trial", "0.25", "--cpus-per-trial", "0.5"],
                cluster.env, tmp_path,
            )
            rc = finish(proc, timeout=300)
        monitor = cluster.log("monitor.log")
    log = (tmp_path / "cli.log").read_text()
    assert rc == 0, log[-4000:]

    # The autoscaler launched the worker nodes (the head alone can run nothing).
    launches = [line for line in monitor.splitlines()
                if "Adding" in line and "ray.worker.gpu" in line]
    assert launches, monitor[-3000:]

    # Where and when each trial ran, from MLflow (the driver logs every result there).
    tracker = tracking.Tracker(uri, "autoscale")
    runs = tracker.runs(kind="trial")
    assert len(runs) == TRIALS
    placement: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for run in runs:
        assert run["status"] == tracking.FINISHED, run
        epochs = tracker.client.get_metric_history(run["run_id"], "epoch")
        assert sorted(int(m.step) for m in epochs) == list(range(1, EPOCHS + 1)), run["name"]
        node, gpus = run["tags"]["ray.node_id"], run["tags"]["ray.gpu_ids"]
        assert node != FAKE_HEAD_NODE_ID, f"{run['name']} ran on the head"
        assert gpus != "", f"{run['name']} got no GPU"
        placement[(node, gpus)].append((run["start_time"], max(m.timestamp for m in epochs)))
    print({k[0][-5:] + "/gpu" + k[1]: sorted(v) for k, v in placement.items()})
    nodes = {node for node, _ in placement}
    assert len(nodes) == TRIALS // PER_GPU, placement.keys()
    # Four trials per fake GPU, and at the same time on it.
    assert sorted(len(v) for v in placement.values()) == [PER_GPU] * (TRIALS // PER_GPU)
    assert max(_max_overlap(v) for v in placement.values()) == PER_GPU, placement
