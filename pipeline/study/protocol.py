"""The honest protocol shared by `final` and the study, behind thin call sites.

- A seed changes the weights' initialisation, the data order and, for simulated data, the
  training images; the validation and test images stay those of `data.seed`, so every seed and
  every model is compared on the same images.
- The checkpoint is the best validation epoch; seeds and models are ranked on validation only.
- The test split is read once per trained model, after selection, and never feeds back.

Every call of final and the study into the data, engine, checkpoint and evaluation modules
goes through this module (`open_for_seed`, `train`, `evaluate_split`, `predict`, ...), so a
move of those modules is re-pointed here alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..config import RunConfig


def selection_metric(task: str) -> tuple[str, str]:
    """(validation metric, mode) that picks checkpoints, seeds and models for a task."""
    return ("val_mse", "min") if task == "regression" else ("val_acc", "max")


def training_data_seed(data_seed: int, train_seed: int) -> int:
    """The simulator seed of the training images of run `train_seed` (val/test keep
    `data_seed`); stream seeds are hashed per split name, so no image is in two splits."""
    return int(data_seed) + int(train_seed)


def open_for_seed(data_cfg: Any, train_seed: int, device: str = "cpu") -> Any:
    """The bundle one seed trains on: fixed val/test, training images drawn for the seed."""
    from ..data.bundle import open_data

    stream_device = str(device_of(device)) if data_cfg.on_the_fly else "cpu"
    if data_cfg.source != "simulate" or train_seed == 0:
        return open_data(data_cfg, device=stream_device)
    # val/test from the data seed, training images from the seed's own stream; each open
    # simulates one throwaway image for the split it does not supply (the smallest valid size)
    base = open_data(dataclasses.replace(data_cfg, n_train=1), device=stream_device)
    seeded = dataclasses.replace(data_cfg, seed=training_data_seed(data_cfg.seed, train_seed),
                                 n_val=1, n_test=0)
    other = open_data(seeded, device=stream_device)
    counts = {**base.manifest["counts"], "train": other.manifest["counts"].get("train")}
    return dataclasses.replace(
        base, train=other.train, stream=other.stream,
        manifest={**base.manifest, "counts": {k: v for k, v in counts.items() if v},
                  "train_data_seed": seeded.seed})


def training_description(data_cfg: Any) -> str:
    """What a run trains on, in words (logged as `final.data`)."""
    if data_cfg.source == "simulate" and data_cfg.on_the_fly:
        return "simulated stream (fresh images every step; val/test fixed)"
    return "train split (val selects, test held out)"


def train(cfg: RunConfig, bundle: Any, checkpoint_root: str | Path, *,
          init_from: str | Path | None = None, callbacks: Sequence[Any] = ()) -> Any:
    """engine.fit keeping the best validation epoch; returns its FitResult."""
    from ..engine import fit

    metric, mode = selection_metric(bundle.task)
    return fit(cfg, bundle, callbacks, init_from=init_from,
               checkpoint_root=checkpoint_root, keep_checkpoints=1, keep_best=(metric, mode))


def best_model(result: Any, device: Any = "cpu") -> torch.nn.Module:
    """The model of the best validation epoch (the last epoch if none had a finite value)."""
    from ..checkpoints import load_model

    ckpt = result.best_checkpoint_dir or result.checkpoint_dir
    return load_model(ckpt, device=device)


def best_checkpoint(result: Any) -> Path:
    return Path(result.best_checkpoint_dir or result.checkpoint_dir)


def evaluate_split(model: torch.nn.Module, split: Any, task: str, classes: Sequence[str],
                   prefix: str, out_dir: str | Path | None = None) -> dict[str, float]:
    """Metrics `<prefix>_*` of one split (plots and evaluation.json with out_dir)."""
    from ..evaluation import evaluate_model

    return evaluate_model(model, split, task, classes, out_dir, prefix=prefix)


def predict(model: torch.nn.Module, images: torch.Tensor, batch_size: int, device: Any
            ) -> torch.Tensor:
    """Raw outputs (N, out) on the CPU, eval mode."""
    from ..evaluation import predict as evaluation_predict

    return evaluation_predict(model, images, batch_size, device)


def device_of(name: str) -> torch.device:
    """train.device ("auto", "cpu", "cuda:N") -> the torch device it means here."""
    from ..device import resolve_device

    return resolve_device(name)


def build_model(cfg: RunConfig, bundle: Any) -> torch.nn.Module:
    """The model `cfg` names, shaped for `bundle` (channels, size, classes or targets)."""
    from ..engine import build_model as engine_build

    return engine_build(cfg, bundle)


def load_weights(checkpoint_dir: str | Path) -> dict[str, torch.Tensor]:
    from ..checkpoints import load_checkpoint

    return load_checkpoint(checkpoint_dir)["model"]


def write_weights(dst: Path, cfg: RunConfig, bundle: Any, state: dict[str, torch.Tensor]
                  ) -> Path:
    """A weights-only checkpoint directory that `fit(init_from=...)` and `load_model` read."""
    import json

    from ..checkpoints import CONFIG_FILE, MODEL_FILE, STATE_FILE
    from ..engine import model_kwargs

    dst.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state}, dst / STATE_FILE)
    (dst / CONFIG_FILE).write_text(json.dumps(cfg.to_flat()))
    (dst / MODEL_FILE).write_text(json.dumps({"name": cfg.model.name,
                                              "kwargs": model_kwargs(cfg, bundle)}))
    return dst
