"""Simulator noise before/after a change, side by side in one run (CPU or any device).

Loads `pipeline/data/noise.py` as it was at git revision --before (default: the per-image
generator version this branch replaced) next to the current module, renders each preset and
class once per round (batch 256, eager), and times both noise paths on the same images, in
turns; the current path also with compile=True (compiled once, untimed). Prints JSON: noise ms
and whole-simulation images/s (parameters + render + noise), minimum over rounds (the least
disturbed by other load on a shared machine).

    python bench/noise_compare.py [--before REV] [--rounds 4] [--presets model_ii ...]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))

from pipeline.data import noise as current  # noqa: E402
from pipeline.data.priors import KINDS, draw_params  # noqa: E402
from pipeline.data.render import render_noiseless  # noqa: E402
from pipeline.data.simulate import PRESETS  # noqa: E402

BEFORE = "10e4a06"  # integ before the batched counter-based noise


def _load_before(rev: str):
    text = subprocess.run(["git", "show", f"{rev}:pipeline/data/noise.py"], cwd=ROOT,
                          check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "noise_before.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("noise_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _one_round(before, pre, kind: int, r: int, b: int, device: torch.device
               ) -> dict[str, float]:
    """Seconds of each stage for images [r * b, (r + 1) * b) of one preset and class."""
    def clock() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    t0 = clock()
    prm = draw_params(pre, torch.full((b,), kind), torch.arange(b) + r * b, 0)
    t1 = clock()
    img = render_noiseless(pre, prm, device=device)
    t2 = clock()
    before.add_noise(img, pre, prm.exposure_time, prm.noise_seed.tolist(), normalize_after=True)
    t3 = clock()
    current.add_noise(img, pre, prm.exposure_time, prm.noise_seed, normalize_after=True)
    t4 = clock()
    current.add_noise(img, pre, prm.exposure_time, prm.noise_seed, normalize_after=True,
                      compile=True)
    t5 = clock()
    return {"params": t1 - t0, "render": t2 - t1, "before": t3 - t2, "after": t4 - t3,
            "compiled": t5 - t4}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--before", default=BEFORE)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--device", default="cpu")
    p.add_argument("--presets", nargs="*", default=sorted(PRESETS))
    args = p.parse_args()
    before = _load_before(args.before)
    device, b = torch.device(args.device), args.batch

    rows = []
    for name in args.presets:
        pre = PRESETS[name]
        for kind in range(len(KINDS)):
            p0 = draw_params(pre, torch.full((b,), kind), torch.arange(b), 0)
            img0 = render_noiseless(pre, p0, device=device)
            current.add_noise(img0, pre, p0.exposure_time, p0.noise_seed, compile=True)
            t: dict[str, list[float]] = {}
            for r in range(args.rounds):
                for key, sec in _one_round(before, pre, kind, r, b, device).items():
                    t.setdefault(key, []).append(sec)
            best = {k: min(v) for k, v in t.items()}
            base = best["params"] + best["render"]
            rows.append({"preset": name, "class": KINDS[kind], "noise": pre.noise,
                         **{f"noise_ms_{k}": round(1e3 * best[k], 1)
                            for k in ("before", "after", "compiled")},
                         **{f"images_per_s_{k}": round(b / (base + best[k]), 1)
                            for k in ("before", "after", "compiled")}})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(json.dumps({"device": str(device), "batch": b, "before": args.before,
                      "torch_threads": torch.get_num_threads(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
