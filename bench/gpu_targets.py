"""Judge bench/gpu.py outputs against the GPU targets; print JSON, optionally write Markdown.

    python bench/gpu_targets.py gpu_check_out/gpu_*.json --markdown gpu_check_out/gpu.md

Reads any number of bench/gpu.py JSON files (one per section, as scripts/gpu_check.sh writes
them; a missing or empty file is reported, not fatal) and prints each target with its measured
value and whether it is met. A target whose section did not run is "not measured", never met.
MFU needs the device's peak (a known GPU), so on a CPU it is "not measured" too. The Markdown
holds the tables the README's measured GPU figures are copied from.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

BF16_SPEEDUP = 1.5  # cvt_baseline, bf16 over fp32 training images/s
PACKED_TRIALS, PACKED_SPEEDUP = 4, 2.5  # four packed trials over one alone, aggregate images/s
SIM_PRESET, SIM_BATCH = "model_ii", 1024
SIM_IMAGES_PER_S, SIM_SHARE = 20_000.0, 0.10  # slowest class; share of a training step


def load(paths: list[Path]) -> tuple[dict[str, Any], list[str]]:
    """Merge the sections of several outputs; return them and the files that could not be read.
    `interrupted` becomes the list of sections a time limit cut short (their rows are partial),
    `errors` the sections that failed, with their errors."""
    merged: dict[str, Any] = {}
    unreadable, interrupted = [], []
    errors: dict[str, str] = {}
    for path in paths:
        try:
            part = json.loads(path.read_text())
        except (OSError, ValueError):
            unreadable.append(str(path))
            continue
        cut = part.pop("interrupted", None)
        interrupted += [cut] if cut else []
        errors.update(part.pop("errors", None) or {})
        merged.update(part)
    if merged:
        merged["interrupted"], merged["errors"] = interrupted, errors
    return merged, unreadable


def _target(name: str, value: float | None, want: str, met: bool | None) -> dict[str, Any]:
    return {"target": name, "value": value, "want": want,
            "status": "not measured" if met is None else "met" if met else "missed"}


def targets(d: dict[str, Any]) -> list[dict[str, Any]]:
    models = {m["model"]: m for m in d.get("models", [])}
    speedup = models.get("cvt_baseline", {}).get("bf16_speedup_train")
    out = [_target("cvt_baseline bf16 / fp32 train images/s", speedup, f">= {BF16_SPEEDUP}",
                   None if speedup is None else speedup >= BF16_SPEEDUP)]
    packed = d.get("packed", {})
    four = [r for r in packed.get("runs", []) if r["trials"] == PACKED_TRIALS]
    ratio = four[0]["aggregate_vs_alone"] if four else None
    out.append(_target(f"{PACKED_TRIALS} packed {packed.get('model', 'model')} trials / one "
                       "alone, aggregate images/s", ratio, f">= {PACKED_SPEEDUP}",
                       None if ratio is None else ratio >= PACKED_SPEEDUP))
    sim = [r for r in d.get("simulation", {}).get("runs", [])
           if r["preset"] == SIM_PRESET and r["batch"] == SIM_BATCH]
    ips = min((r["images_per_s"] for r in sim), default=None)
    share = max((r["share_of_train_step"] for r in sim), default=None)
    out.append(_target(f"{SIM_PRESET} simulation images/s at batch {SIM_BATCH} (slowest class)",
                       ips, f">= {SIM_IMAGES_PER_S:.0f}",
                       None if ips is None else ips >= SIM_IMAGES_PER_S))
    out.append(_target(f"{SIM_PRESET} simulation share of a training step (largest)", share,
                       f"< {SIM_SHARE}", None if share is None else share < SIM_SHARE))
    without = sorted(name for name, m in models.items()
                     if not any(c["train_mfu"] is not None for c in m["cases"]))
    measured = bool(models) and d.get("machine", {}).get("peak_flops") is not None
    out.append(_target("MFU reported for every registered model",
                       len(models) - len(without) if measured else None,
                       f"all of {len(models)}" + (f" (none for {', '.join(without)})"
                                                  if measured and without else ""),
                       not without if measured else None))
    return out


def _fmt(x: Any, digits: int = 0) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return str(x)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def markdown(d: dict[str, Any], judged: list[dict[str, Any]]) -> str:
    m = d.get("machine", {})
    parts = [f"device {m.get('device', '?')}, torch {m.get('torch', '?')}, CUDA "
             f"{m.get('cuda', '-')}, Python {m.get('python', '?')}, {m.get('date', '?')}"
             + (" (--quick: CPU smoke sizes, not figures)" if d.get("quick") else "")
             + (f"; cut short by a time limit, partial: {', '.join(d['interrupted'])}"
                if d.get("interrupted") else "")
             + "".join(f"\n\nsection {k} failed: `{v}`" for k, v in (d.get("errors") or {}).items())]
    rows = [[mod["model"], "x".join(map(str, mod["input"])), _fmt(mod["params"]),
             _fmt(mod["fwd_flops_per_image"] / 1e6, 1), c["precision"] + (" + compile" if
             c["compile"] else "") + (" (failed)" if c.get("error") else ""),
             _fmt(c["train_images_per_s"]), _fmt(c["eval_images_per_s"]),
             _fmt(c["peak_memory_mib"]), _fmt(c["train_mfu"] and 100 * c["train_mfu"], 2)]
            for mod in d.get("models", []) for c in mod["cases"]]
    if rows:
        parts.append(_table(["model", "input", "params", "MFLOPs/image", "precision",
                             "train img/s", "eval img/s", "peak MiB", "train MFU %"], rows))
    runs = d.get("packed", {}).get("runs", [])
    if runs:
        parts.append(_table(["trials", "GPU per trial", "aggregate img/s", "vs one alone",
                             "slowest trial's slowdown"],
                            [[str(r["trials"]), _fmt(r["gpus_per_trial"], 3),
                              _fmt(r["aggregate_images_per_s"]), _fmt(r["aggregate_vs_alone"], 2),
                              _fmt(max(r["per_trial_slowdown"]), 2)] for r in runs]))
    runs = d.get("simulation", {}).get("runs", [])
    if runs:
        parts.append(_table(["preset", "class", "batch", "img/s", "share of a training step"],
                            [[r["preset"], r["class"], str(r["batch"]), _fmt(r["images_per_s"]),
                              _fmt(r["share_of_train_step"], 3)] for r in runs]))
    runs = d.get("feed", {}).get("runs", [])
    if runs:
        parts.append(_table(["feed", "train img/s", "vs pageable"],
                            [[r["feed"], _fmt(r["train_images_per_s"]),
                              _fmt(r["vs_pageable"], 2)] for r in runs]))
    runs = d.get("layout", {}).get("runs", [])
    if runs:
        parts.append(_table(["model", "channels_last", "cudnn.benchmark", "train img/s",
                             "vs default"],
                            [[r["model"], _fmt(r["channels_last"]), _fmt(r["cudnn_benchmark"]),
                              _fmt(r["train_images_per_s"]), _fmt(r["vs_default"], 2)]
                             for r in runs]))
    parts.append(_table(["target", "measured", "wanted", ""],
                        [[t["target"], _fmt(t["value"], 2), t["want"], t["status"]]
                         for t in judged]))
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("outputs", nargs="+", type=Path, help="bench/gpu.py JSON outputs")
    p.add_argument("--markdown", type=Path, default=None, help="also write the tables here")
    args = p.parse_args(argv)
    d, unreadable = load(args.outputs)
    judged = targets(d)
    if args.markdown:
        args.markdown.write_text(markdown(d, judged))
    print(json.dumps({"machine": d.get("machine"), "quick": d.get("quick"),
                      "interrupted": d.get("interrupted", []), "errors": d.get("errors", {}),
                      "unreadable": unreadable,
                      "targets": judged}, indent=1))
    if not d:
        sys.exit("no bench/gpu.py output could be read")


if __name__ == "__main__":
    main()
