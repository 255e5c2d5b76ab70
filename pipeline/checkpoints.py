"""Checkpoint directories and the RNG state they carry.

A checkpoint is a directory: state.pt (model, optimiser, scheduler, epoch, global step,
history, RNG states), config.json (the flat RunConfig), model.json (registry name + kwargs,
enough to rebuild the network without data) and metrics.json (the last epoch's metrics).

Writing is crash-safe: the new directory is written beside the old one (`<name>.tmp`), the old
one is moved aside (`<name>.old`), the new one renamed into place, and only then is the old one
removed. At every instant one complete checkpoint is readable; `load_checkpoint` reads the
moved-aside one if a crash came between the two renames, and the next save repairs the pair.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

STATE_FILE = "state.pt"
CONFIG_FILE = "config.json"
MODEL_FILE = "model.json"
METRICS_FILE = "metrics.json"


# ----------------------------------------------------------------------------- RNG state


def seed_everything(seed: int) -> None:
    """Seed the global Python, NumPy and torch generators (model init, dropout)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every global generator's state, as tensors and plain values (weights_only loadable)."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
        "numpy": {
            "key": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["key"].cpu().numpy().astype(np.uint32), n["pos"], n["has_gauss"],
         n["cached_gaussian"])
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


# ----------------------------------------------------------------------------- model state


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict in train mode: escnn's cached eval filters are not part of the checkpoint."""
    if not model.training:
        model.train()
    return model.state_dict()


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    model.train()  # same key set as when saved (escnn drops its cached filters in train mode)
    model.load_state_dict(state)


# ----------------------------------------------------------------------------- directories


def _sibling(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _complete(d: Path) -> bool:
    return (d / STATE_FILE).is_file() and (d / MODEL_FILE).is_file()


def readable_checkpoint(path: str | Path) -> Path:
    """The complete directory behind `path`: itself, or its moved-aside previous version if a
    crash interrupted a save between its two renames. Reads only; changes nothing."""
    path = Path(path)
    if _complete(path):
        return path
    old = _sibling(path, ".old")
    if not path.exists() and _complete(old):
        return old
    return path


def _repair(path: Path) -> None:
    """Undo an interrupted swap (the previous version goes back) or drop a stale `.old`."""
    old = _sibling(path, ".old")
    if not old.exists():
        return
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)  # the swap completed; only the cleanup was lost
    else:
        old.rename(path)


def _sync_files(d: Path) -> None:
    """Flush the written files to disk before the rename makes them the checkpoint."""
    for f in d.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())


def save_checkpoint(
    path: Path,
    *,
    cfg: Any,
    model_name: str,
    kwargs: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    epoch: int,
    global_step: int,
    history: list[dict[str, float]],
    scaler: Any = None,
) -> Path:
    """Write one checkpoint directory; the previous one at `path` stays readable until the new
    one is complete and in place (see the module docstring). `cfg` is a RunConfig; `scaler`
    the fp16 gradient scaler, whose loss scale a resumed run continues from."""
    path = Path(path)
    tmp, old = _sibling(path, ".tmp"), _sibling(path, ".old")
    _repair(path)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save(
        {
            "model": model_state(model),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": epoch,
            "global_step": global_step,
            "history": history,
            "rng": rng_state(),
            **({"scaler": scaler.state_dict()} if scaler is not None else {}),
        },
        tmp / STATE_FILE,
    )
    (tmp / CONFIG_FILE).write_text(json.dumps(cfg.to_flat(), indent=1))
    (tmp / MODEL_FILE).write_text(json.dumps({"name": model_name, "kwargs": kwargs}, indent=1))
    (tmp / METRICS_FILE).write_text(json.dumps(history[-1] if history else {}, indent=1))
    _sync_files(tmp)
    if path.exists():
        path.rename(old)  # the previous checkpoint, whole, under another name
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)
    return path


def load_checkpoint(checkpoint_dir: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """state.pt contents plus "config" (flat dict) and "model_spec" ({"name", "kwargs"})."""
    d = readable_checkpoint(checkpoint_dir)
    if not (d / STATE_FILE).is_file():
        raise FileNotFoundError(f"no {STATE_FILE} in checkpoint directory {d}")
    state = torch.load(d / STATE_FILE, map_location=map_location, weights_only=True)
    state["config"] = json.loads((d / CONFIG_FILE).read_text())
    state["model_spec"] = json.loads((d / MODEL_FILE).read_text())
    return state


def load_model(checkpoint_dir: str | Path, device: Any = "cpu") -> nn.Module:
    """Rebuild the model of a checkpoint (no data needed), weights loaded, eval mode."""
    import eqcvt

    state = load_checkpoint(checkpoint_dir)
    spec = state["model_spec"]
    model = eqcvt.create_model(spec["name"], **spec["kwargs"]).to(device)
    load_model_state(model, state["model"])
    return model.eval()


def check_compatible(
    state: dict[str, Any], model_name: str, kwargs: dict[str, Any], optimizer: str,
    path: str | Path,
) -> None:
    """Weights only move between identical architectures and optimiser types."""
    spec = state["model_spec"]
    if spec["name"] != model_name or spec["kwargs"] != kwargs:
        raise ValueError(
            f"checkpoint {path} holds model {spec['name']} {spec['kwargs']}, but the config "
            f"builds {model_name} {kwargs}; resume needs the same architecture"
        )
    saved_opt = state["config"].get("train.optimizer")
    if saved_opt != optimizer:
        raise ValueError(
            f"checkpoint {path} was trained with optimizer {saved_opt!r}, config has "
            f"{optimizer!r}"
        )
