"""Smoke runs of the benchmarks (`--quick`): they must run and print the JSON they promise.

Wall times are never asserted here; the benchmarks exist to measure them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run_bench(script: str, env: dict[str, str] | None = None, timeout: float = 600,
               args: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), "--quick", *args], cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, capture_output=True,
        text=True, timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    return proc


def _bench(script: str, env: dict[str, str] | None = None, timeout: float = 600,
           args: tuple[str, ...] = ()) -> dict:
    return json.loads(_run_bench(script, env, timeout, args).stdout)


@pytest.mark.slow
def test_search_bench(ray_cluster, tmp_path):
    proc = _run_bench("search.py", env=ray_cluster.env,
                      args=("--plot", str(tmp_path / "a.png"), "--reseed", "2"))
    out = json.loads(proc.stdout)
    # one progress line per finished search on stderr, the JSON alone on stdout
    progress = [line for line in proc.stderr.splitlines()
                if line.startswith("seed 0: ") and " trials, " in line]
    assert [line.split(":")[1].strip() for line in progress] == ["random", "asha_hyperopt"]
    assert "random's best" in progress[1]
    assert out["machine"]["ray_address"] == ray_cluster.address
    overhead = out["per_trial_overhead_s"]
    assert overhead["n"] >= 2 and 0 <= overhead["median"] <= overhead["max"]
    assert out["driver_startup_s"]["first_search"] > 0
    (seed,) = out["asha_hyperopt_vs_random"]
    assert seed["random_trials"] == 2 and seed["random_epochs"] == 4  # 2 trials x 2 epochs
    assert seed["asha_trials"] == 8 and 8 <= seed["asha_epochs"] <= 16
    assert 0.0 <= seed["random_best"] <= 1.0 and 0.0 <= seed["asha_best"] <= 1.0
    assert len(seed["random_trial_bests"]) == 2 and max(seed["random_trial_bests"]) == seed[
        "random_best"]
    quartiles = out["summary"]["random_trial_best_quartiles"]
    assert len(quartiles) == 5 and quartiles == sorted(quartiles)
    fraction = out["summary"]["median_asha_fraction_of_random_epochs"]
    assert fraction is None or fraction > 0
    if seed["asha_fraction_of_random_epochs"] is not None:  # a tie comes no later than a match
        assert seed["asha_fraction_within_one_se"] <= seed["asha_fraction_of_random_epochs"]
    assert "median_asha_fraction_within_one_se" in out["summary"]
    assert out["summary"]["paired"] is False  # independent draws unless asked
    assert isinstance(out["summary"]["goal_median_fraction_at_most_half"], bool)
    assert out["interrupted"] is False
    curve = out["curves"]["random"][0]
    assert [e for e, _ in curve] == list(range(1, 5))
    assert curve[-1][1] == seed["random_best"]
    # --reseed: each search's pick trained again with two other seeds
    pick = seed["random_pick"]
    assert pick["val_acc"] == seed["random_best"] and pick["config"]["train.epochs"] == 2
    again = seed["reseeded"]
    assert again["random"]["trial"] == pick["trial"] and again["random"]["n"] == 2
    for name in ("random", "asha_at_half", "asha_at_equal"):
        if again[name] is not None:
            assert len(again[name]["bests"]) == 2 and all(0 <= v <= 1 for v in again[name]["bests"])
    if again["asha_at_half"] is not None:
        assert again["asha_at_half_minus_random"] == pytest.approx(
            again["asha_at_half"]["mean"] - again["random"]["mean"])
    assert out["summary"]["reseeded"]["asha_at_half"]["n"] == 1
    assert sum("pick, seed" in line for line in proc.stderr.splitlines()) >= 4
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
    # the figure can be redrawn from the printed JSON alone, without a search
    (tmp_path / "out.json").write_text(json.dumps(out))
    again = _bench("search.py", args=("--plot-from", str(tmp_path / "out.json"),
                                      "--plot", str(tmp_path / "b.png")))
    assert again == out and (tmp_path / "b.png").stat().st_size > 0
    # ASHA alone against the saved random search: the same baseline, only ASHA rerun
    asha_only = _bench("search.py", env=ray_cluster.env,
                       args=("--random-from", str(tmp_path / "out.json"), "--reseed", "2"))
    assert asha_only["curves"]["random"] == out["curves"]["random"]
    (seed_again,) = asha_only["asha_hyperopt_vs_random"]
    assert seed_again["random_best"] == seed["random_best"]
    assert seed_again["random_pick"] == pick  # the saved pick, re-trained again
    assert seed_again["reseeded"]["random"]["config"] == pick["config"]
    assert seed_again["asha_trials"] == 8 and seed_again["asha_epochs"] >= 8


def test_search_bench_refuses_reseed_with_one_seed():
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "search.py"), "--reseed", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--reseed needs K >= 2" in proc.stderr


def test_search_bench_refuses_a_saved_baseline_of_another_task(tmp_path):
    saved = {"settings": {"trials": 2, "epochs": 2, "n_train": 128, "n_val": 128,
                          "img_size": 32, "preset": "model_ii_deeplense", "first_seed": 0},
             "asha_hyperopt_vs_random": [], "curves": {"random": []},
             "search_wall_s": {"random": []}}
    path = tmp_path / "saved.json"
    for change, message in (({"epochs": 3}, "epochs"), ({}, "no random search for seeds [0]")):
        path.write_text(json.dumps({**saved, "settings": {**saved["settings"], **change}}))
        proc = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "search.py"), "--quick", "--random-from",
             str(path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode != 0 and message in proc.stderr, proc.stderr[-2000:]
    # a baseline saved before picks were recorded cannot be re-trained
    seed = {"random_best": 0.6, "random_epochs": 4, "random_trials": 2,
            "random_trial_bests": [0.5, 0.6]}
    path.write_text(json.dumps({**saved, "asha_hyperopt_vs_random": [seed],
                                "curves": {"random": [[[1, 0.5], [2, 0.6]]]},
                                "search_wall_s": {"random": [1.0]}}))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "search.py"), "--quick", "--random-from",
         str(path), "--reseed", "2"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "no random_pick for seed 0" in proc.stderr, proc.stderr


@pytest.mark.slow
def test_models_bench():
    out = _bench("models.py")
    text = json.dumps(out)
    for preset in ("seed_eqcvt", "cvt_baseline"):
        assert preset in text


@pytest.mark.slow
def test_gpu_bench_prints_what_it_measured_when_terminated():
    """scripts/gpu_check.sh runs each section under `timeout`: its SIGTERM keeps the rows."""
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "gpu.py"), "--quick", "--sections", "models",
         "layout"], cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:  # the first model is measured: terminate as `timeout` would
        if "cvt_baseline: done" in line:
            proc.send_signal(signal.SIGTERM)
            break
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    d = json.loads(out)
    assert d["interrupted"] in ("models", "layout") and "interrupted in section" in err
    assert d["models"][0]["model"] == "cvt_baseline"
    assert all(c["train_images_per_s"] > 0 for c in d["models"][0]["cases"])


@pytest.mark.slow
def test_gpu_bench(tmp_path):
    proc = _run_bench("gpu.py")
    out = json.loads(proc.stdout)
    assert out["interrupted"] is None
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
    feeds = {r["feed"]: r for r in out["feed"]["runs"]}
    assert set(feeds) == {"device", "pageable"}  # pinned needs CUDA
    assert feeds["pageable"]["vs_pageable"] == 1 and feeds["device"]["train_images_per_s"] > 0
    layout = out["layout"]["runs"]
    assert {(r["model"], r["channels_last"], r["cudnn_benchmark"]) for r in layout} == {
        (m, c, b) for m in ("cvt_baseline", "seed_eqcvt") for c in (False, True)
        for b in (False, True)}
    assert all(r["train_images_per_s"] > 0 for r in layout)
    # the targets read the same output; a quick CPU run has no 4-trial packing, no batch 1024
    # and no device peak, so only the bf16 ratio is judged
    (tmp_path / "gpu.json").write_text(proc.stdout)
    judged = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_targets.py"), str(tmp_path / "gpu.json"),
         "--markdown", str(tmp_path / "gpu.md")], capture_output=True, text=True, check=True)
    status = {t["target"]: t["status"] for t in json.loads(judged.stdout)["targets"]}
    assert list(status.values())[1:] == ["not measured"] * 4
    assert list(status.values())[0] in ("met", "missed")
    assert "(--quick: CPU smoke sizes, not figures)" in (tmp_path / "gpu.md").read_text()
