"""GPU benchmark: prints one JSON document (figures are measured, never asserted).

Sections:
  models     every registered model at its native input size: train and eval images/s at fp32
             and bf16 (and bf16 with torch.compile, after every model's plain cases), peak
             memory, forward FLOPs per image (eqcvt.forward_flops) and model FLOP
             utilisation = FLOPs x images/s / peak
             (train counts 3x the forward FLOPs; null where the device's peak is not known).
  packed     1, 2, 4, 8 training processes sharing one device, as `--gpus-per-trial 1 / 0.5 /
             0.25 / 0.125` places them (separate processes on one GPU, no memory cap, like
             Ray's fractional GPUs): aggregate images/s and each trial's slowdown.
  simulation on-device simulation images/s per preset and class at batch 256 and 1024, and its
             share of a training step (simulate + train one batch of the reference model).
  feed       training images/s of the reference model fed from a fixed host split through each
             `train.feed` (device-resident, pinned + asynchronous, pageable), timed over many
             steps between synchronisations so that copies can overlap compute.
  layout     train images/s with `train.channels_last` and `train.cudnn_benchmark` on and off
             (bf16), for the models they could help: whether to turn them on by default.

    python bench/gpu.py              # on the GPU machine (a few minutes)
    python bench/gpu.py --quick      # CPU smoke run: tiny models and batches, well under a minute

On SIGTERM (what `timeout` sends) it stops and prints the rows measured so far, with
"interrupted" naming the section it cut short (null when every section ran to the end). A
model case that fails (torch.compile on one model, say) is kept with its "error", and a section
that fails is named under "errors"; the rest is measured all the same.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _timing import median_step_time, sync  # noqa: E402  (bench/, the script's folder)

import eqcvt  # noqa: E402
from pipeline.config import TrainConfig  # noqa: E402
from pipeline.data.priors import KINDS, draw_params  # noqa: E402
from pipeline.data.simulate import PRESETS, get_preset, images_from_params  # noqa: E402
from pipeline.data.splits import Split  # noqa: E402
from pipeline.device import device_name, exact_fp32, step_settings  # noqa: E402
from pipeline.feed import TrainFeed  # noqa: E402
from pipeline.optim import optimizer_step  # noqa: E402

# Dense peak FLOP/s by device-name fragment (vendor datasheets, SXM parts). fp32 training runs
# with TF32 matmuls (the engine allows TF32 for training), so its peak is the TF32 one; eval is
# exact fp32 (TF32 off).
PEAK_FLOPS: dict[str, dict[str, float]] = {
    "H200": {"bf16": 989e12, "fp16": 989e12, "tf32": 494e12, "fp32": 67e12},
    "H100": {"bf16": 989e12, "fp16": 989e12, "tf32": 494e12, "fp32": 67e12},
    "A100": {"bf16": 312e12, "fp16": 312e12, "tf32": 156e12, "fp32": 19.5e12},
}
TINY = {"embed_dim": 8, "depth": 1, "heads": 1, "head_hidden": 8, "kernel_size": 3,
        "stem_blocks": 1}
PACKED_FRACTIONS = {1: 1.0, 2: 0.5, 4: 0.25, 8: 0.125}
SECTIONS = ("models", "packed", "simulation", "feed", "layout")


def peak_flops(device: torch.device) -> dict[str, float] | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_FLOPS.items() if k in name), None)


def _peak_memory_mib(device: torch.device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return None  # CPU: the process RSS peak is reported once, under "machine"


def build(name: str, quick: bool, device: torch.device) -> tuple[torch.nn.Module, tuple, int]:
    """(model on device, input shape (C, H, W), outputs) at the model's native size."""
    model = eqcvt.create_model(name, **({**TINY, "img_size": 32} if quick else {}))
    cfg = model.config
    return model.to(device), (cfg.in_channels, cfg.img_size, cfg.img_size), model.config


def _flops_per_image(model: torch.nn.Module, shape: tuple, device: torch.device) -> float:
    return eqcvt.forward_flops(model, torch.randn(2, *shape, device=device)) / 2


def _train_step(model: torch.nn.Module, precision: str, compile: bool, batch: int,
                shape: tuple, device: torch.device, channels_last: bool = False
                ) -> Callable[[], None]:
    """One optimiser step: the engine's own `optimizer_step` with its step settings."""
    settings = step_settings(model, TrainConfig(precision=precision, compile=compile), device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, *shape, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    classes = getattr(model.config, "classes", 2) or 2
    y = torch.randint(0, classes, (batch,), device=device)

    def step() -> None:
        optimizer_step(model, opt, settings, x, y, y, task="classification")

    return step


def _eval_step(model: torch.nn.Module, batch: int, shape: tuple, device: torch.device
               ) -> Callable[[], None]:
    x = torch.randn(batch, *shape, device=device)

    def step() -> None:
        with torch.inference_mode(), exact_fp32():
            model(x)

    return step


def _error(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"[:1000]


def _model_case(model: torch.nn.Module, precision: str, compile: bool, shape: tuple,
                flops: float, peaks: dict[str, float] | None, args: argparse.Namespace,
                device: torch.device) -> dict[str, Any]:
    """Train and eval images/s, peak memory and MFU of one (precision, compile) case."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model.train()
    t_train = median_step_time(_train_step(model, precision, compile, args.batch, shape, device),
                               args.iters, device, warmup=2)
    model.eval()
    t_eval = median_step_time(_eval_step(model, args.batch, shape, device), args.iters, device,
                              warmup=2)
    train_ips, eval_ips = args.batch / t_train, args.batch / t_eval
    train_peak = peaks and peaks["tf32" if precision == "fp32" else precision]
    return {"precision": precision, "compile": compile,
            "train_images_per_s": train_ips, "eval_images_per_s": eval_ips,
            "peak_memory_mib": _peak_memory_mib(device),
            "train_mfu": 3 * flops * train_ips / train_peak if train_peak else None,
            "eval_mfu": flops * eval_ips / peaks["fp32"] if peaks else None}


def _case_or_error(name: str, model: torch.nn.Module, precision: str, compile: bool,
                   shape: tuple, flops: float, peaks: dict[str, float] | None,
                   args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    try:
        return _model_case(model, precision, compile, shape, flops, peaks, args, device)
    except Interrupted:
        raise
    except Exception as err:  # noqa: BLE001 - e.g. compile failing on one model: noted
        print(f"[gpu bench] {name} {precision} compile={compile}: {err!r}", file=sys.stderr,
              flush=True)
        return {"precision": precision, "compile": compile, "error": _error(err),
                "train_images_per_s": None, "eval_images_per_s": None, "peak_memory_mib": None,
                "train_mfu": None, "eval_mfu": None}


def bench_models(args: argparse.Namespace, device: torch.device) -> Iterator[dict[str, Any]]:
    """Every model at fp32 and bf16 first, yielded one by one; then the torch.compile cases,
    added to the rows already yielded. Compiling is the slow part: under a time limit it is
    what gets cut, not a model's plain figures."""
    peaks = peak_flops(device)
    to_compile = []
    for name in args.models or eqcvt.list_models():
        model, shape, _ = build(name, args.quick, device)
        flops = _flops_per_image(model, shape, device)
        row: dict[str, Any] = {"model": name, "input": list(shape), "batch": args.batch,
                               "params": eqcvt.count_params(model), "fwd_flops_per_image": flops,
                               "cases": [_case_or_error(name, model, precision, False, shape,
                                                        flops, peaks, args, device)
                                         for precision in ("fp32", "bf16")]}
        fp32, bf16 = (c["train_images_per_s"] for c in row["cases"])
        row["bf16_speedup_train"] = bf16 / fp32 if fp32 and bf16 else None
        print(f"[gpu bench] {name}: done", file=sys.stderr, flush=True)
        yield row
        if args.compile and (args.compile_models is None or name in args.compile_models):
            to_compile.append((row, model, shape, flops))
    for row, model, shape, flops in to_compile:
        row["cases"].append(_case_or_error(row["model"], model, "bf16", True, shape, flops, peaks,
                                           args, device))
        print(f"[gpu bench] {row['model']} compiled: done", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- packed trials


def worker(args: argparse.Namespace) -> None:
    """One packed trial: train steps until the shared deadline; prints its images/s."""
    device = torch.device(args.device)
    torch.set_num_threads(1)
    model, shape, _ = build(args.packed_model, args.quick, device)
    step = _train_step(model, args.precision, False, args.batch, shape, device)
    for _ in range(2):
        step()
    sync(device)
    print("ready", flush=True)
    start_at = float(sys.stdin.readline())  # the parent starts every trial together
    while time.time() < start_at:
        time.sleep(0.002)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < args.seconds:
        step()
        n += 1
    sync(device)
    print(json.dumps({"images_per_s": n * args.batch / (time.perf_counter() - t0)}))


def bench_packed(args: argparse.Namespace, device: torch.device, precision: str
                 ) -> Iterator[dict[str, Any]]:
    alone = None
    for n in args.packed:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--device", str(device),
               "--packed-model", args.packed_model, "--precision", precision,
               "--batch", str(args.batch), "--seconds", str(args.seconds)]
        if args.quick:
            cmd.append("--quick")
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        procs = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=env) for _ in range(n)]
        for p in procs:  # every worker built its model and warmed up
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError(f"packed worker failed: {p.communicate()[1][-3000:]}")
        start_at = f"{time.time() + 0.2}\n"
        each = []
        for p in procs:
            out, err = p.communicate(start_at, timeout=args.seconds + 600)
            if p.returncode:
                raise RuntimeError(f"packed worker failed: {err[-3000:]}")
            each.append(json.loads(out.strip().splitlines()[-1])["images_per_s"])
        alone = alone or each[0]
        print(f"[gpu bench] packed {n}: done", file=sys.stderr, flush=True)
        yield {"trials": n, "gpus_per_trial": PACKED_FRACTIONS.get(n, 1 / n),
               "aggregate_images_per_s": sum(each), "per_trial_images_per_s": each,
               "aggregate_vs_alone": sum(each) / alone,
               "per_trial_slowdown": [alone / e for e in each]}


# ----------------------------------------------------------------------------- simulation


def bench_simulation(args: argparse.Namespace, device: torch.device, train_ips: float
                     ) -> Iterator[dict[str, Any]]:
    """Simulator images/s (parameters + render + noise + normalisation) on `device`; share =
    simulate time / (simulate + train step time) for one batch of the reference model."""
    for name in args.presets:
        preset = get_preset(name, num_pix=24) if args.quick else PRESETS[name]
        for kind in range(len(KINDS)):
            for batch in args.sim_batches:
                calls = itertools.count(1)

                def step(preset: Any = preset, batch: int = batch, kind: int = kind,
                         calls: Any = calls) -> None:
                    first = next(calls) * batch  # new images every call
                    params = draw_params(preset, torch.full((batch,), kind),
                                         torch.arange(first, first + batch), 0)
                    images_from_params(preset, params, device=device)

                t = median_step_time(step, args.iters, device, warmup=1)
                ips = batch / t
                yield {"preset": name, "class": KINDS[kind], "batch": batch,
                       "images_per_s": ips,
                       "share_of_train_step": (1 / ips) / (1 / ips + 1 / train_ips)}


# ----------------------------------------------------------------------------- feed, layout


def _throughput(step: Callable[[], None], steps: int, batch: int, device: torch.device) -> float:
    """Images/s over `steps` calls with one synchronisation at the end (copies may overlap)."""
    for _ in range(2):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return steps * batch / (time.perf_counter() - t0)


def bench_feed(args: argparse.Namespace, device: torch.device, precision: str
               ) -> list[dict[str, Any]]:
    model, shape, _ = build(args.packed_model, args.quick, device)
    n = args.feed_images
    split = Split(torch.randn(n, *shape), torch.randint(0, 2, (n,)), torch.zeros(n, 0))
    modes = ["device", "pinned", "pageable"] if device.type == "cuda" else ["device", "pageable"]
    rows = []
    for mode in modes:
        feed = TrainFeed(split, split, device, mode)
        settings = step_settings(model, TrainConfig(precision=precision), device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        gen = torch.Generator().manual_seed(0)

        def step(feed: TrainFeed = feed, settings: Any = settings, opt: Any = opt,
                 gen: torch.Generator = gen) -> None:
            x, y, t = feed.batch(torch.randint(0, n, (args.batch,), generator=gen))
            optimizer_step(model, opt, settings, x.float(), y, t, task="classification")

        rows.append({"feed": mode, "train_images_per_s":
                     _throughput(step, args.feed_steps, args.batch, device)})
        del feed
    base = next(r for r in rows if r["feed"] == "pageable")["train_images_per_s"]
    for r in rows:
        r["vs_pageable"] = r["train_images_per_s"] / base
    return rows


def bench_layout(args: argparse.Namespace, device: torch.device, precision: str
                 ) -> Iterator[dict[str, Any]]:
    for name in args.layout_models:
        rows = []
        for channels_last, benchmark in itertools.product((False, True), repeat=2):
            torch.backends.cudnn.benchmark = benchmark
            model, shape, _ = build(name, args.quick, device)
            if channels_last:
                model = model.to(memory_format=torch.channels_last)
            step = _train_step(model, precision, False, args.batch, shape, device,
                               channels_last=channels_last)
            rows.append({"model": name, "channels_last": channels_last,
                         "cudnn_benchmark": benchmark, "train_images_per_s":
                         args.batch / median_step_time(step, args.iters, device, warmup=3)})
        torch.backends.cudnn.benchmark = False
        for r in rows:
            r["vs_default"] = r["train_images_per_s"] / rows[0]["train_images_per_s"]
        yield from rows


# ----------------------------------------------------------------------------- main


def _machine(device: torch.device) -> dict[str, Any]:
    return {"device": device_name(device), "torch": torch.__version__,
            "cuda": torch.version.cuda, "python": platform.python_version(),
            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "peak_flops": peak_flops(device)}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="CPU smoke run on tiny sizes")
    p.add_argument("--device", default="auto")
    p.add_argument("--models", nargs="*", default=None, help="default: every registered model")
    p.add_argument("--batch", type=int, default=None, help="train/eval batch (default 128)")
    p.add_argument("--iters", type=int, default=None)
    p.add_argument("--no-compile", dest="compile", action="store_false")
    p.add_argument("--compile-models", nargs="*", default=None,
                   help="models also timed with torch.compile (default: all)")
    p.add_argument("--packed", type=int, nargs="*", default=None, help="default 1 2 4 8")
    p.add_argument("--packed-model", default="seed_eqcvt")
    p.add_argument("--seconds", type=float, default=None, help="timed seconds per packed run")
    p.add_argument("--presets", nargs="*", default=sorted(PRESETS))
    p.add_argument("--sim-batches", type=int, nargs="*", default=None)
    p.add_argument("--feed-images", type=int, default=None,
                   help="host split size of the feed section (default 8192)")
    p.add_argument("--feed-steps", type=int, default=None)
    p.add_argument("--layout-models", nargs="*", default=["cvt_baseline", "seed_eqcvt"])
    p.add_argument("--sections", nargs="*", default=list(SECTIONS))
    # worker-only options (one packed trial)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    q = a.quick
    a.batch = a.batch or (4 if q else 128)
    a.iters = a.iters or (2 if q else 10)
    a.packed = a.packed if a.packed is not None else ([1, 2] if q else [1, 2, 4, 8])
    a.seconds = a.seconds or (1.0 if q else 20.0)
    a.sim_batches = a.sim_batches or ([8] if q else [256, 1024])
    a.feed_images = a.feed_images or (64 if q else 8192)
    a.feed_steps = a.feed_steps or (3 if q else 50)
    unknown = set(a.sections) - set(SECTIONS)
    if unknown:
        p.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    if q:
        a.compile = False  # compiling costs ~50 s on a small CPU; the GPU run measures it
        a.models = a.models or ["cvt_baseline", "seed_eqcvt"]
        a.presets = a.presets if a.presets != sorted(PRESETS) else ["model_ii"]
    return a


class Interrupted(Exception):
    """SIGTERM (what `timeout` sends): stop, and print what was measured so far."""


def _interrupt(signum: int, frame: Any) -> None:
    raise Interrupted


def _collect(into: list[dict[str, Any]], rows: Iterator[dict[str, Any]]) -> None:
    """Append each row as it is measured, so an interruption keeps the finished ones."""
    for row in rows:
        into.append(row)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.worker:
        return worker(args)
    device = torch.device(args.device)
    precision = "bf16" if device.type == "cuda" else "fp32"
    out: dict[str, Any] = {"machine": _machine(device), "batch": args.batch,
                           "quick": args.quick, "interrupted": None, "errors": {}}
    # rows are kept as they are measured: under a time limit, a late section's SIGTERM still
    # leaves every finished row in the JSON, with "interrupted" naming the section cut short
    previous = signal.signal(signal.SIGTERM, _interrupt)
    section = None
    try:
        for section in (s for s in SECTIONS if s in args.sections):
            try:
                _run_section(section, out, args, device, precision)
            except Interrupted:
                raise
            except Exception as err:  # noqa: BLE001 - one failed section leaves the others
                traceback.print_exc()
                out["errors"][section] = _error(err)
        section = None
    except Interrupted:
        print(f"[gpu bench] interrupted in section {section}", file=sys.stderr, flush=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
    out["interrupted"] = section
    out["machine"]["max_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out, indent=1))


def _run_section(section: str, out: dict[str, Any], args: argparse.Namespace,
                 device: torch.device, precision: str) -> None:
    """Measure one section into `out`, row by row."""
    if section == "models":
        _collect(out.setdefault("models", []), bench_models(args, device))
    elif section == "packed":
        out["packed"] = {"model": args.packed_model, "precision": precision, "runs": []}
        _collect(out["packed"]["runs"], bench_packed(args, device, precision))
    elif section == "simulation":
        model, shape, _ = build(args.packed_model, args.quick, device)
        t = median_step_time(_train_step(model, precision, False, args.batch, shape, device),
                             args.iters, device, warmup=2)
        out["simulation"] = {"reference_model": args.packed_model, "precision": precision,
                             "reference_train_images_per_s": args.batch / t, "runs": []}
        _collect(out["simulation"]["runs"], bench_simulation(args, device, args.batch / t))
    elif section == "feed":
        out["feed"] = {"model": args.packed_model, "precision": precision,
                       "host_images": args.feed_images,
                       "runs": bench_feed(args, device, precision)}
    elif section == "layout":
        out["layout"] = {"precision": precision, "runs": []}
        _collect(out["layout"]["runs"], bench_layout(args, device, precision))


if __name__ == "__main__":
    main()
