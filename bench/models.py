"""Model benchmark: prints JSON per registered preset and input size.

For each model and size (default 64x64 and 150x150, batch 64, CPU): trainable parameters, forward
FLOPs (torch.utils.flop_counter, eval mode), train-step images/s (forward, backward, AdamW step),
eval images/s with escnn's cached filters and with the filters re-expanded on every batch (plus
the time one expansion of all filters takes, which is what the cache saves per batch), and the
ratio of seed_eqcvt to cvt_baseline train throughput (the two timed in turns). Each figure is
batch / median step time. Wall times are reported, never asserted.

    python bench/models.py            # the full benchmark (a few minutes on a small CPU)
    python bench/models.py --quick    # a smoke run: 64x64, batch 8, one timed step
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from _timing import median_step_time, sync  # bench/, the script's folder

import eqcvt
from eqcvt.filter_cache import caching_modules, per_batch_filters


def images_per_second(
    step: Callable[[], None], batch: int, iters: int, device: torch.device, warmup: int = 1
) -> float:
    """batch / median step time: the median shrugs off slow steps on a shared machine."""
    return batch / median_step_time(step, iters, device, warmup)


def images_per_second_ab(
    step_a: Callable[[], None],
    step_b: Callable[[], None],
    batch: int,
    iters: int,
    device: torch.device,
) -> tuple[float, float]:
    """Like images_per_second for two steps run in turns (a, b, a, b, ...)."""
    step_a()
    step_b()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(iters):
        for step, bucket in ((step_a, times[0]), (step_b, times[1])):
            sync(device)
            start = time.perf_counter()
            step()
            sync(device)
            bucket.append(time.perf_counter() - start)
    return batch / statistics.median(times[0]), batch / statistics.median(times[1])


def expansion_ms(model: torch.nn.Module, repeats: int = 20) -> float:
    """Median time to expand every escnn filter of `model` once: what the cache saves per batch."""
    layers = caching_modules(model)
    if not layers:
        return 0.0
    times = []
    with torch.no_grad():
        for _ in range(repeats + 2):
            start = time.perf_counter()
            for layer in layers:
                layer.expand_parameters()
            times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times[2:])


def setup(name: str, size: int, batch: int, device: torch.device):
    """A model and a fixed random batch for it."""
    torch.manual_seed(0)
    model = eqcvt.create_model(name, img_size=size).to(device)
    cfg = model.config
    x = torch.rand(batch, cfg.in_channels, size, size, device=device)
    y = torch.randint(0, cfg.out_features, (batch,), device=device)
    return model, x, y


def train_step_fn(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """One optimiser step (forward, backward, AdamW) on a fixed batch."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    return train_step


def train_ratio(size: int, batch: int, iters: int, device: torch.device) -> float:
    """seed_eqcvt / cvt_baseline train throughput, the two timed in turns."""
    seed = train_step_fn(*setup("seed_eqcvt", size, batch, device))
    cvt = train_step_fn(*setup("cvt_baseline", size, batch, device))
    seed_ips, cvt_ips = images_per_second_ab(seed, cvt, batch, iters, device)
    return seed_ips / cvt_ips


def bench_one(name: str, size: int, batch: int, iters: int, device: torch.device) -> dict:
    model, x, y = setup(name, size, batch, device)
    cfg = model.config
    result: dict = {
        "model": name,
        "variant": cfg.variant,
        "group": cfg.group,
        "img_size": size,
        "batch": batch,
        "params": eqcvt.count_params(model),
        "escnn_cached_layers": len(caching_modules(model)),
    }

    model.eval()
    result["filter_expansion_ms_per_batch"] = expansion_ms(model)
    result["forward_gflops_per_image"] = eqcvt.forward_flops(model, x) / batch / 1e9

    train_step = train_step_fn(model, x, y)
    result["train_images_per_s"] = images_per_second(train_step, batch, iters, device)

    model.eval()

    def eval_step() -> None:
        with torch.no_grad():
            model(x)

    def eval_step_rebuilt() -> None:
        with per_batch_filters(model):
            eval_step()

    # Alternate the two so that both see the same load on a shared machine.
    cached, rebuilt = images_per_second_ab(eval_step, eval_step_rebuilt, batch, iters, device)
    result["eval_images_per_s_cached"] = cached
    result["eval_images_per_s_rebuilt"] = rebuilt
    result["eval_cache_speedup"] = cached / rebuilt
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64x64, batch 8, one timed step")
    parser.add_argument("--models", nargs="*", default=None, help="default: every registered")
    parser.add_argument("--sizes", nargs="*", type=int, default=None)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--iters", type=int, default=None, help="timed steps per measurement")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    sizes = args.sizes or ([64] if args.quick else [64, 150])
    batch = args.batch or (8 if args.quick else 64)
    iters = args.iters or (1 if args.quick else 3)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    names = args.models or eqcvt.list_models()

    results = []
    for size in sizes:
        for name in names:
            print(f"bench {name} {size}x{size} batch {batch} ...", file=sys.stderr, flush=True)
            results.append(bench_one(name, size, batch, iters, device))

    ratios = {}
    if {"seed_eqcvt", "cvt_baseline"} <= set(names):
        for size in sizes:
            print(f"bench seed/cvt train ratio {size}x{size} ...", file=sys.stderr, flush=True)
            ratios[str(size)] = train_ratio(size, batch, iters, device)
    report = {
        "benchmark": "models",
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "batch": batch,
        "iters": iters,
        "results": results,
        "seed_over_cvt_train_throughput": ratios,
    }
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
