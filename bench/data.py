"""Data throughput: simulator vs lenstronomy, and Parquet shard reads vs simulation. Prints JSON.

    python bench/data.py [--quick]

The simulator-vs-lenstronomy part comes from bench/_simulator_bench.py (`run(quick)`). The shard
part times the simulator (batch 256, float32, CPU), writes a shard of many more images by
cycling through the simulated batches (read speed does not depend on content, and a realistic
size amortises per-file costs), and times loading the split into a torch tensor with and
without the digest check (best of a few reads; the first read is reported too).
Goal: reading >= 20x faster than simulating.
No asserts on wall time: the numbers are for people, not for CI.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BATCH = 256
GOAL_RATIO = 20.0


def _simulator_vs_lenstronomy(quick: bool) -> Any:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        import _simulator_bench
    except ImportError as e:
        return {"error": f"bench/_simulator_bench.py unavailable: {e}"}
    return _simulator_bench.run(quick)


def _simulate_rate(preset: str, task: str, n: int) -> tuple[float, list[Any]]:
    """Images/s of the torch simulator at batch 256 on CPU, and the batches it made."""
    from pipeline.data.simulate import simulate

    simulate(preset, task, 0, 8, seed=99)  # warm-up (caches, lazy init)
    batches = []
    t0 = time.perf_counter()
    for start in range(0, n, BATCH):
        batches.append(simulate(preset, task, start, min(BATCH, n - start), seed=0))
    return n / (time.perf_counter() - t0), batches


def _write(
    out: Path, batches: list[Any], rows: int, task: str, classes: tuple[str, ...]
) -> dict[str, Any]:
    """Write `rows` images, cycling through the simulated batches (read speed ignores content)."""
    from pipeline.data.shard_writer import ShardWriter

    with ShardWriter(out, classes=classes, task=task, seed=0, source={"kind": "bench"}) as w:
        done = 0
        while done < rows:
            for b in batches:
                k = min(len(b), rows - done)
                if k <= 0:
                    break
                w.add(
                    "train",
                    b.images[:k],
                    b.labels[:k],
                    targets={n: v[:k] for n, v in b.targets.items()},
                    params={n: v[:k] for n, v in b.params.items()},
                )
                done += k
        return w.commit()


def _read_rates(path: Path, n: int, repeats: int) -> dict[str, float]:
    from pipeline.data.shard_reader import load_shards

    out: dict[str, float] = {}
    for verify in (True, False):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            splits, _ = load_shards(path, ["train"], verify=verify)
            times.append(time.perf_counter() - t0)
            assert len(splits["train"]) == n
            del splits
        key = "verified" if verify else "unverified"
        out[f"{key}_first_images_per_s"] = n / times[0]
        out[f"{key}_images_per_s"] = n / min(times)
    return out


def shard_bench(quick: bool) -> dict[str, Any]:
    """(preset, images simulated, images in the shard read back) per case."""
    from pipeline.data.simulate import TASK_CLASSES

    cases = [("model_ii", 512, 16384)] if quick else [("model_ii", 4096, 32768)]
    if not quick:
        cases.append(("model_i", 1024, 8192))
    task = "multiclass"
    results: dict[str, Any] = {}
    for preset, n_sim, n_read in cases:
        sim_rate, batches = _simulate_rate(preset, task, n_sim)
        with tempfile.TemporaryDirectory(prefix="eqcvt-bench-") as tmp:
            path = Path(tmp) / "ds"
            t0 = time.perf_counter()
            manifest = _write(path, batches, n_read, task, tuple(TASK_CLASSES[task]))
            write_s = time.perf_counter() - t0
            del batches
            rates = _read_rates(path, n_read, 3 if quick else 4)
            size = manifest["files"]["train"]["bytes"]
        read = rates["verified_images_per_s"]
        results[preset] = {
            "simulated_images": n_sim,
            "shard_images": n_read,
            "image_shape": manifest["image_shape"],
            "simulate_images_per_s": sim_rate,
            "write_images_per_s": n_read / write_s,
            **rates,
            "shard_mb": size / 1e6,
            "verified_read_mb_per_s": size / 1e6 * read / n_read,
            "read_over_simulate": read / sim_rate,
            "read_over_simulate_unverified": rates["unverified_images_per_s"] / sim_rate,
            "goal_ratio": GOAL_RATIO,
            "meets_goal": bool(read / sim_rate >= GOAL_RATIO),
        }
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one preset")
    parser.add_argument(
        "--skip-lenstronomy",
        action="store_true",
        help="only the shard part (no bench/_simulator_bench.py)",
    )
    args = parser.parse_args(argv)
    report: dict[str, Any] = {
        "bench": "data",
        "quick": args.quick,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "numpy": np.__version__,
    }
    if not args.skip_lenstronomy:
        threads = torch.get_num_threads()
        report["simulator_vs_lenstronomy"] = _simulator_vs_lenstronomy(args.quick)
        torch.set_num_threads(threads)  # it pins one thread; time shards with the default
    try:
        report["shards"] = shard_bench(args.quick)
    except ImportError as e:
        report["shards"] = {"error": f"simulator unavailable: {e}"}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
