"""Smoke runs of the benchmarks (`--quick`): they must run and print the JSON they promise.

Wall times are never asserted here; the benchmarks exist to measure them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _bench(script: str, env: dict[str, str] | None = None, timeout: float = 600) -> dict:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), "--quick"], cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, capture_output=True,
        text=True, timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    return json.loads(proc.stdout)


@pytest.mark.slow
def test_search_bench(ray_cluster):
    out = _bench("search.py", env=ray_cluster.env)
    assert out["machine"]["ray_address"] == ray_cluster.address
    overhead = out["per_trial_overhead_s"]
    assert overhead["n"] >= 2 and 0 <= overhead["median"] <= overhead["max"]
    assert out["driver_startup_s"]["first_search"] > 0
    (seed,) = out["asha_hyperopt_vs_random"]
    assert seed["random_trials"] == 2 and seed["random_epochs"] == 4  # 2 trials x 2 epochs
    assert seed["asha_trials"] == 8 and 8 <= seed["asha_epochs"] <= 16
    assert 0.0 <= seed["random_best"] <= 1.0 and 0.0 <= seed["asha_best"] <= 1.0
    fraction = out["summary"]["median_asha_fraction_of_random_epochs"]
    assert fraction is None or fraction > 0
    assert isinstance(out["summary"]["goal_median_fraction_at_most_half"], bool)


@pytest.mark.slow
def test_models_bench():
    out = _bench("models.py")
    text = json.dumps(out)
    for preset in ("seed_eqcvt", "cvt_baseline"):
        assert preset in text


@pytest.mark.slow
def test_gpu_bench():
    out = _bench("gpu.py")
    assert out["machine"]["device"] == "cpu" and out["machine"]["peak_flops"] is None
    models = {row["model"]: row for row in out["models"]}
    assert {"cvt_baseline", "seed_eqcvt"} <= set(models)
    for row in models.values():
        assert row["fwd_flops_per_image"] > 0 and row["params"] > 0
        assert [c["precision"] for c in row["cases"]] == ["fp32", "bf16"]
        for case in row["cases"]:
            assert case["train_images_per_s"] > 0 and case["eval_images_per_s"] > 0
            assert case["train_mfu"] is None and case["peak_memory_mib"] is None  # CPU
    runs = out["packed"]["runs"]
    assert [r["trials"] for r in runs] == [1, 2] and runs[1]["gpus_per_trial"] == 0.5
    assert len(runs[1]["per_trial_images_per_s"]) == 2 and runs[1]["aggregate_images_per_s"] > 0
    sim = out["simulation"]["runs"]
    assert {r["class"] for r in sim} == {"no_sub", "cdm", "axion"}
    assert all(r["images_per_s"] > 0 and 0 < r["share_of_train_step"] < 1 for r in sim)
