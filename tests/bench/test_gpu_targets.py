"""bench/gpu_targets.py: each target met, missed, or not measured when its section is absent."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("gpu_targets", ROOT / "bench" / "gpu_targets.py")
gpu_targets = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_targets)


def _case(precision: str, ips: float, mfu: float | None) -> dict:
    return {"precision": precision, "compile": False, "train_images_per_s": ips,
            "eval_images_per_s": 3 * ips, "peak_memory_mib": 100.0, "train_mfu": mfu}


def _output(bf16: float, packed4: float, sim_ips: float, share: float) -> dict:
    models = [{"model": name, "input": [1, 129, 129], "params": 10, "fwd_flops_per_image": 1e6,
               "cases": [_case("fp32", 100.0, 0.01), _case("bf16", 100.0 * bf16, 0.02)],
               "bf16_speedup_train": bf16} for name in ("cvt_baseline", "seed_eqcvt")]
    packed = [{"trials": n, "gpus_per_trial": 1 / n, "aggregate_images_per_s": 100.0 * r,
               "aggregate_vs_alone": r, "per_trial_slowdown": [n / r] * n}
              for n, r in ((1, 1.0), (4, packed4))]
    sim = [{"preset": "model_ii", "class": c, "batch": b, "images_per_s": sim_ips + i,
            "share_of_train_step": share - i / 1000} for i, c in enumerate(("no_sub", "cdm"))
           for b in (256, 1024)]
    return {"machine": {"device": "cuda", "peak_flops": {"bf16": 1e15}}, "quick": False,
            "models": models, "packed": {"model": "seed_eqcvt", "runs": packed},
            "simulation": {"runs": sim}}


def _status(d: dict) -> list[str]:
    return [t["status"] for t in gpu_targets.targets(d)]


def test_targets_met_and_missed():
    assert _status(_output(1.6, 2.6, 25_000.0, 0.05)) == ["met"] * 5
    assert _status(_output(1.4, 2.4, 19_000.0, 0.2)) == ["missed"] * 4 + ["met"]
    d = _output(1.6, 2.6, 25_000.0, 0.05)
    d["models"][1]["cases"] = [dict(c, train_mfu=None) for c in d["models"][1]["cases"]]
    judged = gpu_targets.targets(d)
    assert judged[-1]["status"] == "missed" and "seed_eqcvt" in judged[-1]["want"]


def test_a_missing_section_or_device_peak_is_not_measured(tmp_path):
    full = _output(1.6, 2.6, 25_000.0, 0.05)
    assert _status({"machine": full["machine"]}) == ["not measured"] * 5
    cpu = dict(full, machine={"device": "cpu", "peak_flops": None})
    assert _status(cpu)[-1] == "not measured"
    # sections split over files, one unreadable: merged, and the bad one named
    (tmp_path / "a.json").write_text(json.dumps({"models": full["models"],
                                                 "machine": full["machine"]}))
    (tmp_path / "b.json").write_text(json.dumps({"packed": full["packed"],
                                                 "interrupted": "packed"}))
    (tmp_path / "c.json").write_text("")
    merged, bad = gpu_targets.load([tmp_path / n for n in ("a.json", "b.json", "c.json")])
    assert bad == [str(tmp_path / "c.json")] and merged["interrupted"] == ["packed"]
    assert _status(merged) == ["met", "met", "not measured", "not measured", "met"]
    text = gpu_targets.markdown(merged, gpu_targets.targets(merged))
    assert "| cvt_baseline | 1x129x129 |" in text and "not measured" in text
    assert "cut short by a time limit, partial: packed" in text


def test_failed_cases_and_sections_are_shown(tmp_path):
    full = _output(1.6, 2.6, 25_000.0, 0.05)
    failed = dict(full["models"][0]["cases"][1], error="RuntimeError: x", train_images_per_s=None,
                  train_mfu=None)
    full["models"][0]["cases"][1] = failed
    full["models"][0]["bf16_speedup_train"] = None
    (tmp_path / "a.json").write_text(json.dumps({**full, "errors": {"feed": "OSError: y"}}))
    merged, _ = gpu_targets.load([tmp_path / "a.json"])
    assert merged["errors"] == {"feed": "OSError: y"}
    assert gpu_targets.targets(merged)[0]["status"] == "not measured"
    text = gpu_targets.markdown(merged, gpu_targets.targets(merged))
    assert "| bf16 (failed) | - |" in text and "section feed failed: `OSError: y`" in text
