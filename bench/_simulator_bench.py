"""Simulator throughput against lenstronomy, measured side by side in one run.

`run(quick)` returns a JSON-ready dict: images/s of the torch simulator (batch 256, float32,
parameters + render + noise + normalisation) and of lenstronomy making the same images
(ImageModel built once per class, numpy noise), per preset and class, and their ratio.
The two are timed alternately, several rounds, and the medians are compared, so that load
from other processes on a shared machine hits both alike. bench/data.py imports this.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.data.priors import KINDS, draw_params  # noqa: E402
from pipeline.data.simulate import PRESETS, get_preset, images_from_params  # noqa: E402

BATCH = 256


def _torch_run(
    preset: Any, kind: int, seed: int, device: str, compile: bool, batch: int = BATCH
) -> float:
    """Seconds for one batch, parameters included."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    params = draw_params(preset, torch.full((batch,), kind), torch.arange(batch), seed)
    images_from_params(preset, params, device=device, compile=compile)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def _lenstronomy_run(ref: Any, params: Any, rng: np.random.Generator) -> float:
    """Seconds per image for lenstronomy (kwargs, image, noise, normalisation)."""
    t0 = time.perf_counter()
    for i in range(len(params)):
        ref.noisy_image(params, i, rng)
    return (time.perf_counter() - t0) / len(params)


def _bench_case(
    preset: Any, kind: int, *, rounds: int, n_lens: int, device: str, compile: bool,
    compare: bool = True, batch: int = BATCH,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    _torch_run(preset, kind, 0, device, compile, batch)  # warm-up: compilation, caches
    warm = time.perf_counter() - t0
    if not compare:
        ts = [_torch_run(preset, kind, r + 2, device, compile, batch) / batch
              for r in range(rounds)]
        return {"torch_img_s": round(1.0 / statistics.median(ts), 1), "warmup_s": round(warm, 2),
                "batch": batch, "rounds": rounds}
    from pipeline.data.lenstronomy_ref import LenstronomyReference

    ref = LenstronomyReference(preset, kind)
    params = draw_params(preset, torch.full((n_lens,), kind), torch.arange(n_lens), 1)
    rng = np.random.default_rng(0)
    ref.noisy_image(params, 0, rng)  # warm-up
    torch_s, lens_s = [], []
    for r in range(rounds):
        torch_s.append(_torch_run(preset, kind, r + 2, device, compile) / BATCH)
        lens_s.append(_lenstronomy_run(ref, params, rng))
    t, ln = statistics.median(torch_s), statistics.median(lens_s)
    return {
        "torch_img_s": round(1.0 / t, 1),
        "lenstronomy_img_s": round(1.0 / ln, 1),
        "ratio": round(ln / t, 2),
        "warmup_s": round(warm, 2),
        "lenstronomy_images": n_lens,
        "rounds": rounds,
    }


def run(
    quick: bool,
    *,
    device: str = "cpu",
    compile: bool | None = None,
    threads: int | None = 1,
    presets: tuple[str, ...] = tuple(PRESETS),
    compare: bool = True,
    batch: int = BATCH,
) -> dict[str, Any]:
    """Benchmark every preset and class; quick=True is a smoke run (eager, few images).

    threads=1 by default: lenstronomy is single-threaded, and on a shared 2-core machine one
    torch thread is also faster than two fighting over cores with other processes.
    compare=False skips lenstronomy (e.g. on a GPU machine without it).
    """
    if threads:
        torch.set_num_threads(threads)
    compile = (not quick and device == "cpu") if compile is None else compile
    rounds, n_lens = (1, 4) if quick else (7, 24)
    results: dict[str, Any] = {}
    for name in presets:
        results[name] = {}
        cases = [(KINDS[k], get_preset(name), k) for k in range(3)]
        if not quick:  # like for like with lenstronomy's 100 point masses
            cases.append(("axion_point_masses", get_preset(name, vortex_profile="point_masses"), 2))
        for label, preset, kind in cases:
            results[name][label] = _bench_case(
                preset, kind, rounds=rounds, n_lens=n_lens, device=device, compile=compile,
                compare=compare, batch=batch,
            )
    return {
        "what": "images/s, torch simulator vs lenstronomy 1.14 on the same images",
        "batch": batch,
        "dtype": "float32",
        "device": device,
        "compile": compile,
        "torch_threads": torch.get_num_threads(),
        "axion": "torch: exact line segment (axion) or 100 point masses (axion_point_masses);"
        " lenstronomy: 100 point masses",
        "results": results,
    }


if __name__ == "__main__":
    import argparse
    import json

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--no-lenstronomy", action="store_true")
    ap.add_argument("--batch", type=int, default=BATCH)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--presets", default=",".join(PRESETS))
    a = ap.parse_args()
    out = run(
        a.quick, device=a.device,
        compile=False if a.no_compile else (True if a.compile else None),
        presets=tuple(a.presets.split(",")), compare=not a.no_lenstronomy, batch=a.batch,
        threads=a.threads or None,
    )
    print(json.dumps(out, indent=2))
