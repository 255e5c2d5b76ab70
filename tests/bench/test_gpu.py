"""bench/gpu.py's failure handling, in process: a failing case or section is recorded and the
rest is still measured (a one-shot run on a lent GPU must not lose everything to one error)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import gpu  # noqa: E402


def test_a_failing_case_is_kept_with_its_error(monkeypatch):
    real = gpu._train_step

    def bf16_fails(model, precision, *a, **k):
        if precision == "bf16":
            raise RuntimeError("no bf16 kernel here")
        return real(model, precision, *a, **k)

    monkeypatch.setattr(gpu, "_train_step", bf16_fails)
    args = gpu.parse(["--quick", "--models", "cvt_baseline", "--iters", "1"])
    (row,) = gpu.bench_models(args, torch.device("cpu"))
    fp32, bf16 = row["cases"]
    assert fp32["train_images_per_s"] > 0 and "error" not in fp32
    assert bf16["error"] == "RuntimeError: no bf16 kernel here"
    assert bf16["train_images_per_s"] is None and row["bf16_speedup_train"] is None


def test_a_failing_section_is_named_and_the_others_run(capsys):
    gpu.main(["--quick", "--sections", "simulation", "layout", "--packed-model", "no_such_model",
              "--layout-models", "cvt_baseline", "--iters", "1"])
    out = json.loads(capsys.readouterr().out)
    assert set(out["errors"]) == {"simulation"} and "no_such_model" in out["errors"]["simulation"]
    assert len(out["layout"]["runs"]) == 4 and out["interrupted"] is None


def test_compiled_cases_come_after_every_models_plain_cases(monkeypatch):
    """Compiling is slow: under a time limit it must be what is cut, not another model."""
    calls = []

    def case(model, precision, compile, *a):
        calls.append((type(model).__name__, precision, compile))
        return {"precision": precision, "compile": compile, "train_images_per_s": 1.0}

    monkeypatch.setattr(gpu, "_model_case", case)
    args = gpu.parse(["--quick", "--models", "cvt_baseline", "seed_eqcvt"])
    args.compile, args.compile_models = True, ["cvt_baseline"]
    rows = []
    for row in gpu.bench_models(args, torch.device("cpu")):
        rows.append(row)
        assert len(row["cases"]) == 2  # yielded with its plain cases only
    assert [c[1:] for c in calls] == [("fp32", False), ("bf16", False), ("fp32", False),
                                      ("bf16", False), ("bf16", True)]
    assert calls[-1][0] == calls[0][0]  # the compiled one is the first model, cvt_baseline
    assert [len(r["cases"]) for r in rows] == [3, 2]
