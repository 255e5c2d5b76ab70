"""`eqcvt-data`: make, import, inspect and preview Parquet datasets.

eqcvt-data generate --preset model_ii --task multiclass --n-per-class 1000 --seed 0 --out DIR
eqcvt-data import-deeplense Model_II --out DIR [--allow-pickle] [--skip-bad]
eqcvt-data info DIR [--verify] [--json]
eqcvt-data preview DIR --out grid.png [--split train] [--per-class 6]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from pipeline.data.splits import DEFAULT_FRACTIONS, SPLITS, assign_splits, parse_fractions

_FRACTIONS_HELP = "train,val,test fractions, stratified per class and fixed by --seed"


def _progress() -> Progress:
    """A progress bar on stderr, so stdout keeps only the summary."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )


def _parse_set(items: Sequence[str]) -> dict[str, Any]:
    """KEY=VALUE preset overrides; values are YAML scalars (1e-3, true, [1, 2])."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _preset_params(preset: Any) -> dict[str, Any]:
    import dataclasses

    if not dataclasses.is_dataclass(preset):
        return {}
    return json.loads(json.dumps(dataclasses.asdict(preset), default=str))


# -- generate -----------------------------------------------------------------------------
def cmd_generate(args: argparse.Namespace, console: Console) -> None:
    import torch

    from pipeline.data.shard_writer import ShardWriter
    from pipeline.data.simulate import TASK_CLASSES, get_preset, simulate

    fractions = parse_fractions(args.split)
    if args.n_per_class <= 0:
        raise ValueError(f"--n-per-class must be > 0, got {args.n_per_class}")
    if args.chunk_size <= 0:
        raise ValueError(f"--chunk-size must be > 0, got {args.chunk_size}")
    if args.task not in TASK_CLASSES:
        raise ValueError(f"--task must be one of {sorted(TASK_CLASSES)}, got {args.task!r}")
    preset = get_preset(args.preset, **_parse_set(args.set or []))
    classes = tuple(TASK_CLASSES[args.task])
    n = args.n_per_class * len(classes)
    codes = assign_splits(np.arange(n) % len(classes), fractions, args.seed)
    source = {"kind": "simulate", "preset": args.preset, "device": args.device}
    with (
        ShardWriter(
            args.out,
            classes=classes,
            task=args.task,
            seed=args.seed,
            source=source,
            preset=args.preset,
            fractions=fractions,
            overwrite=args.overwrite,
            extra={"preset_params": _preset_params(preset), "preset_overrides": args.set or []},
        ) as writer,
        _progress() as progress,
    ):
        bar = progress.add_task(f"simulating {args.preset}/{args.task}", total=n)
        for start in range(0, n, args.chunk_size):
            count = min(args.chunk_size, n - start)
            b = simulate(
                preset, args.task, start, count, args.seed, device=args.device,
                dtype=torch.float32, compile=args.compile,
            )
            part = codes[start : start + count]
            for code, split in enumerate(SPLITS):
                rows = np.flatnonzero(part == code)
                if rows.size == 0:
                    continue
                sel = torch.from_numpy(rows).to(b.images.device)
                writer.add(
                    split,
                    b.images[sel],
                    b.labels[sel],
                    index=start + rows,
                    targets={k: v[sel] for k, v in b.targets.items()},
                    params={k: v[sel] for k, v in b.params.items()},
                )
            progress.advance(bar, count)
        manifest = writer.commit()
    console.print(f"wrote {n} images to {escape(str(Path(args.out)))}")
    _print_info(manifest, console)


# -- import-deeplense ---------------------------------------------------------------------
def cmd_import(args: argparse.Namespace, console: Console) -> None:
    from pipeline.data.deeplense import import_deeplense

    test_dir: Any = False if args.no_test else (args.test_dir or True)
    with _progress() as progress:
        bar = progress.add_task(f"importing {Path(args.src).name}", total=None)

        def report(done: int, total: int) -> None:
            progress.update(bar, completed=done, total=total)

        manifest = import_deeplense(
            args.src,
            args.out,
            test_dir=test_dir,
            allow_pickle=args.allow_pickle,
            skip_bad=args.skip_bad,
            normalize=args.normalize,
            seed=args.seed,
            fractions=parse_fractions(args.split),
            overwrite=args.overwrite,
            progress=report,
        )
    _print_info(manifest, console)
    if manifest["n_skipped"]:
        console.print(
            f"[yellow]skipped {manifest['n_skipped']} bad files[/] (listed in manifest.json)"
        )


# -- info ---------------------------------------------------------------------------------
def _print_info(manifest: dict[str, Any], console: Console) -> None:
    src = manifest.get("source") or {}
    console.print(
        f"task [bold]{manifest.get('task')}[/]  classes {escape(str(manifest['classes']))}  "
        f"image {tuple(manifest['image_shape'])}  seed {manifest.get('seed')}"
    )
    origin = manifest.get("preset") or src.get("path") or src.get("kind")
    console.print(f"source {escape(str(src.get('kind')))}: {escape(str(origin))}")
    console.print(f"content {manifest['content_hash']}")
    table = Table(title="images per split and class")
    table.add_column("class")
    for split in SPLITS:
        table.add_column(split, justify="right")
    counts = manifest["counts"]
    for c in manifest["classes"]:
        table.add_row(escape(c), *(str(counts[s]["per_class"].get(c, 0)) for s in SPLITS))
    table.add_row("[bold]total", *(f"[bold]{counts[s]['total']}" for s in SPLITS))
    console.print(table)
    if manifest.get("targets"):
        console.print(f"targets {manifest['targets']}")
    if manifest.get("n_skipped"):
        names = ", ".join(s["file"] for s in manifest["skipped"][:5])
        more = " ..." if manifest["n_skipped"] > 5 else ""
        console.print(f"[yellow]skipped {manifest['n_skipped']} files:[/] {escape(names)}{more}")


def cmd_info(args: argparse.Namespace, console: Console) -> None:
    from pipeline.data.shard_reader import verify_shards
    from pipeline.data.shards import read_manifest

    manifest = verify_shards(args.dir) if args.verify else read_manifest(args.dir)
    if args.json:
        print(json.dumps(manifest, indent=2))
        return
    _print_info(manifest, console)
    if args.verify:
        console.print("[green]all files match their hashes[/]")


# -- preview ------------------------------------------------------------------------------
def cmd_preview(args: argparse.Namespace, console: Console) -> None:
    from matplotlib.figure import Figure

    from pipeline.data.shard_reader import load_shards

    if args.per_class <= 0:
        raise ValueError(f"--per-class must be > 0, got {args.per_class}")
    splits, manifest = load_shards(args.dir, [args.split])
    data = splits[args.split]
    classes = manifest["classes"]
    labels = data.labels.numpy()
    tcol = manifest["targets"].index("log10_m_a") if "log10_m_a" in manifest["targets"] else None
    k = args.per_class
    fig = Figure(figsize=(1.6 * k, 1.8 * len(classes)), layout="constrained")
    axes = fig.subplots(len(classes), k, squeeze=False)
    for c, name in enumerate(classes):
        rows = np.flatnonzero(labels == c)[:k]
        for j in range(k):
            ax = axes[c, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(f"{name} ({c})")
            if j >= rows.size:
                ax.set_frame_on(False)
                continue
            ax.imshow(data.images[rows[j], 0].numpy(), cmap="inferno", origin="lower")
            if tcol is not None:
                m = float(data.targets[rows[j], tcol])
                if np.isfinite(m):
                    ax.set_title(f"log10 m_a {m:.2f}", fontsize=7)
    title = manifest.get("preset") or (manifest.get("source") or {}).get("kind", "")
    fig.suptitle(f"{title} {args.split}: {len(data)} images, {tuple(manifest['image_shape'])}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=args.dpi)
    console.print(f"wrote {escape(str(out))}")


# -- entry point --------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eqcvt-data", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    fr = ",".join(f"{f:g}" for f in DEFAULT_FRACTIONS)

    g = sub.add_parser("generate", help="simulate a dataset into Parquet shards")
    g.add_argument(
        "--preset", default="model_ii",
        help="simulator preset: model_i/ii/iii, or model_i/ii/iii_deeplense for the original "
        "DeepLense lens (fixed Einstein radius, substructure mass on top, fixed axes)",
    )
    g.add_argument("--task", default="multiclass", help="binary | multiclass | regression")
    g.add_argument("--n-per-class", type=int, required=True, help="images per class, all splits")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--out", required=True, help="dataset folder to create")
    g.add_argument("--split", default=fr, help=f"{_FRACTIONS_HELP} (default {fr})")
    g.add_argument("--chunk-size", type=int, default=256, help="images simulated per batch")
    g.add_argument("--device", default="cpu", help="torch device for the simulator")
    g.add_argument(
        "--compile", action="store_true",
        help="torch.compile the ray tracer (2-5x faster on CPU for large datasets; "
        "5-20 s to compile once per preset and class)",
    )
    g.add_argument("--set", action="append", metavar="KEY=VALUE", help="preset override (repeat)")
    g.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    g.set_defaults(func=cmd_generate)

    i = sub.add_parser("import-deeplense", help="import Model_X/{axion,cdm,no_sub} or {no_sub,sub}")
    i.add_argument("src", help="folder holding the class folders, e.g. Model_II")
    i.add_argument("--out", required=True, help="dataset folder to create")
    i.add_argument(
        "--allow-pickle",
        action="store_true",
        help="load object arrays (axion [image, m_a] files) with pickle. UNSAFE for files you "
        "do not trust: unpickling can run arbitrary code",
    )
    i.add_argument(
        "--skip-bad",
        action="store_true",
        help="leave out unreadable/malformed files; they are listed in manifest.json",
    )
    i.add_argument("--seed", type=int, default=0)
    i.add_argument(
        "--split",
        default=fr,
        help=f"{_FRACTIONS_HELP}; with a test folder only train:val is used (default {fr})",
    )
    i.add_argument("--test-dir", help="test tree (default: the SRC_test sibling if present)")
    i.add_argument("--no-test", action="store_true", help="ignore any SRC_test sibling")
    i.add_argument(
        "--normalize",
        choices=("max", "none"),
        default="max",
        help="divide each image by its maximum, like the simulator (default max)",
    )
    i.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    i.set_defaults(func=cmd_import)

    n = sub.add_parser("info", help="summarise a dataset's manifest")
    n.add_argument("dir")
    n.add_argument("--verify", action="store_true", help="also check every file's digest")
    n.add_argument("--json", action="store_true", help="print the manifest as JSON")
    n.set_defaults(func=cmd_info)

    p = sub.add_parser("preview", help="save a labelled image grid per class")
    p.add_argument("dir")
    p.add_argument("--out", required=True, help="image file to write (png, pdf, ...)")
    p.add_argument("--split", choices=SPLITS, default="train")
    p.add_argument("--per-class", type=int, default=6)
    p.add_argument("--dpi", type=int, default=100)
    p.set_defaults(func=cmd_preview)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Run one command; expected failures print one line and exit with status 2."""
    from pipeline.data.deeplense import DeepLenseError
    from pipeline.data.shards import ShardError

    args = build_parser().parse_args(argv)
    try:
        args.func(args, Console(soft_wrap=True))
    except BrokenPipeError:  # `eqcvt-data info DIR --json | head`: the reader left, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(0) from None
    except (DeepLenseError, ShardError, ValueError, FileExistsError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        Console(stderr=True, soft_wrap=True).print(f"[red]error:[/] {escape(str(msg))}")
        raise SystemExit(2) from None


if __name__ == "__main__":
    main(sys.argv[1:])
