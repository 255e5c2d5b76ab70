"""What the training engine consumes: `open_data(cfg, device) -> DataBundle`.

Two sources: "simulate" makes every split with the torch simulator on `device` (nothing is
cached on disk; train/val/test use separate seed streams, so no image is in two splits), and
"shards" loads a Parquet dataset folder written by `pipeline.data.shard_writer`. With
``on_the_fly=True`` the bundle has no fixed train split but a `stream(step, batch_size)` that
simulates each training batch on the device, deterministic in (step, batch_size).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from pipeline.data.splits import SPLITS, Split, stream_seed

__all__ = ["DataBundle", "Split", "center_crop", "open_data"]

TASKS = ("binary", "multiclass", "regression")
REGRESSION_TARGET = "log10_m_a"
_SIM_CHUNK = 1024

StreamFn = Callable[[int, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class DataBundle:
    """Everything one training run needs; val/test are fixed, train may be a stream."""

    task: str
    classes: tuple[str, ...]
    image_shape: tuple[int, int, int]
    train: Split | None
    val: Split
    test: Split
    stream: StreamFn | None
    manifest: dict[str, Any]

    @property
    def num_outputs(self) -> int:
        """Logits for classification, regression targets (T) for regression."""
        return int(self.val.targets.shape[1]) if self.task == "regression" else len(self.classes)


def center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """Centre crop (N, C, H, W) to (N, C, size, size); size 0 keeps the native size."""
    if size == 0:
        return images
    h, w = images.shape[-2:]
    if size < 0 or size > min(h, w):
        raise ValueError(f"img_size {size} does not fit the data's native {h}x{w} (crop only)")
    top, left = (h - size) // 2, (w - size) // 2
    return images[..., top : top + size, left : left + size]


def _get(cfg: Any, name: str) -> Any:
    try:
        return getattr(cfg, name)
    except AttributeError:
        raise TypeError(f"data config {type(cfg).__name__} lacks field {name!r}") from None


def open_data(cfg: Any, device: str | torch.device = "cpu") -> DataBundle:
    """Build the bundle a `pipeline.config.DataConfig` (or any object with its fields) names."""
    task = _get(cfg, "task")
    if task not in TASKS:
        raise ValueError(f"data.task must be one of {TASKS}, got {task!r}")
    source = _get(cfg, "source")
    if source == "simulate":
        return _open_simulated(cfg, torch.device(device))
    if source == "shards":
        return _open_shards(cfg, torch.device(device))
    raise ValueError(f"data.source must be 'simulate' or 'shards', got {source!r}")


# -- simulated ----------------------------------------------------------------------------
LENS_KNOBS = ("randomize_einstein_radius", "mass_conserving", "randomize_orientation")


def _sim_preset(cfg: Any) -> Any:
    """The named preset with the config's lens knobs applied (None keeps the preset's)."""
    from pipeline.data.simulate import get_preset

    knobs = {k: bool(v) for k in LENS_KNOBS if (v := _get(cfg, k)) is not None}
    return get_preset(_get(cfg, "preset"), **knobs)


def _simulate(
    preset: Any, task: str, seed: int, start: int, count: int, device: torch.device, size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images, labels, targets) for indices [start, start+count) of one seed stream."""
    from pipeline.data.simulate import simulate

    imgs, labels, targets = [], [], []
    for s in range(start, start + count, _SIM_CHUNK):
        b = simulate(preset, task, s, min(_SIM_CHUNK, start + count - s), seed, device=device)
        imgs.append(center_crop(b.images.to(device, torch.float32), size))
        if task == "regression":
            labels.append(torch.zeros(len(b.labels), dtype=torch.int64, device=device))
            targets.append(b.targets[REGRESSION_TARGET].to(device, torch.float32).reshape(-1, 1))
        else:
            labels.append(b.labels.to(device, torch.int64))
            targets.append(torch.zeros((len(b.labels), 0), dtype=torch.float32, device=device))
    if len(imgs) == 1:
        return imgs[0].contiguous(), labels[0], targets[0]
    return torch.cat(imgs), torch.cat(labels), torch.cat(targets)


def _empty_like(split: Split) -> Split:
    return Split(split.images[:0], split.labels[:0], split.targets[:0])


def _open_simulated(cfg: Any, device: torch.device) -> DataBundle:
    from pipeline.data.simulate import TASK_CLASSES

    task, seed, size = cfg.task, int(_get(cfg, "seed")), int(_get(cfg, "img_size"))
    on_the_fly = bool(_get(cfg, "on_the_fly"))
    counts = {s: int(_get(cfg, f"n_{s}")) for s in SPLITS}
    if any(n < 0 for n in counts.values()):
        raise ValueError(f"data.n_train/n_val/n_test must be >= 0, got {counts}")
    if counts["val"] == 0:
        raise ValueError("data.n_val must be > 0")
    if counts["train"] == 0 and not on_the_fly:
        raise ValueError("data.n_train must be > 0 (or set data.on_the_fly)")
    preset = _sim_preset(cfg)
    seeds = {s: stream_seed(seed, s) for s in SPLITS}
    val = Split(*_simulate(preset, task, seeds["val"], 0, counts["val"], device, size))
    splits = {"val": val}
    for s in ("train", "test"):
        if s == "train" and on_the_fly:
            continue
        n = counts[s]
        splits[s] = (
            Split(*_simulate(preset, task, seeds[s], 0, n, device, size)) if n else _empty_like(val)
        )
    stream: StreamFn | None = None
    if on_the_fly:

        def stream(step: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            """Training batch `step`: images [step*B, (step+1)*B) of the train seed stream."""
            if step < 0 or batch_size <= 0:
                raise ValueError(
                    f"stream needs step >= 0 and batch_size > 0, got {step}, {batch_size}"
                )
            return _simulate(
                preset, task, seeds["train"], step * batch_size, batch_size, device, size
            )

    classes = tuple(TASK_CLASSES[task])
    manifest = {
        "source": {"kind": "simulate", "preset": cfg.preset, "on_the_fly": on_the_fly},
        "preset": cfg.preset,
        "preset_params": _jsonable(dataclasses.asdict(preset)),
        "task": task,
        "classes": list(classes),
        "image_shape": list(val.images.shape[1:]),
        "seed": seed,
        "stream_seeds": seeds,
        "targets": [REGRESSION_TARGET] if task == "regression" else [],
        "counts": {s: {"total": len(sp)} for s, sp in splits.items()},
    }
    return DataBundle(
        task=task,
        classes=classes,
        image_shape=tuple(int(d) for d in val.images.shape[1:]),  # type: ignore[arg-type]
        train=splits.get("train"),
        val=val,
        test=splits["test"],
        stream=stream,
        manifest=manifest,
    )


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (bool, int, float, str)) or obj is None:
        return obj
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return obj.item()
    return str(obj)


# -- shards -------------------------------------------------------------------------------
def _open_shards(cfg: Any, device: torch.device) -> DataBundle:
    from pipeline.data.shard_reader import load_shards

    path, task, size = _get(cfg, "path"), cfg.task, int(_get(cfg, "img_size"))
    if not path:
        raise ValueError("data.source 'shards' needs data.path (a folder made by eqcvt-data)")
    if _get(cfg, "on_the_fly"):
        raise ValueError(
            "data.on_the_fly streams from the simulator; it needs data.source 'simulate'"
        )
    splits, manifest = load_shards(path)
    classes = tuple(manifest["classes"])
    if task == "regression":
        if "axion" not in classes or REGRESSION_TARGET not in manifest["targets"]:
            raise ValueError(
                f"{path}: regression needs axion images with a {REGRESSION_TARGET} target; "
                f"this dataset has classes {list(classes)} and targets {manifest['targets']}"
            )
        axion, col = classes.index("axion"), manifest["targets"].index(REGRESSION_TARGET)
        out = {}
        for s, sp in splits.items():
            keep = sp.labels == axion
            y = sp.targets[keep][:, col : col + 1].contiguous()
            if not torch.isfinite(y).all():
                bad = int((~torch.isfinite(y)).sum())
                raise ValueError(f"{path}: {bad} axion images of split {s!r} have no axion mass")
            out[s] = Split(sp.images[keep], torch.zeros(len(y), dtype=torch.int64), y)
        splits, classes = out, ("axion",)
    else:
        from pipeline.data.deeplense import infer_task

        have = manifest.get("task") or infer_task(classes)
        if have != task:
            raise ValueError(
                f"{path}: dataset task is {have!r} (classes {list(classes)}), config asks {task!r}"
            )
        splits = {s: Split(sp.images, sp.labels, sp.targets[:, :0]) for s, sp in splits.items()}
    for s in ("train", "val"):
        if len(splits[s]) == 0:
            raise ValueError(f"{path}: split {s!r} is empty")
    splits = {
        s: Split(center_crop(sp.images, size).contiguous(), sp.labels, sp.targets).to(device)
        for s, sp in splits.items()
    }
    return DataBundle(
        task=task,
        classes=classes,
        image_shape=tuple(int(d) for d in splits["val"].images.shape[1:]),  # type: ignore[arg-type]
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        stream=None,
        manifest=manifest,
    )
