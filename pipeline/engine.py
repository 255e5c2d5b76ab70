"""The only training loop: trials, PBT exploits and final training all call `fit`.

Per epoch: train, evaluate on the validation split, write a checkpoint directory (model,
optimiser, scheduler, epoch, history, RNG states, flat config), then hand metrics and the
checkpoint to the callbacks (Tune reporting, MLflow logging). Resuming from such a directory
continues exactly where the uninterrupted run would have been.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import metrics as M
from .config import AUGMENTS, RunConfig, TrainConfig

STATE_FILE = "state.pt"
CONFIG_FILE = "config.json"
MODEL_FILE = "model.json"
METRICS_FILE = "metrics.json"
_NONFINITE_CHECK_EVERY = 16  # steps between loss checks (each check syncs the device once)


class StopTraining(Exception):
    """Raised by a callback to end `fit` after the current epoch, normally."""


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; names where, so a search can log and go on."""

    def __init__(self, epoch: int, step: int, value: float) -> None:
        super().__init__(
            f"non-finite training loss {value} at epoch {epoch}, step {step} "
            f"(lower train.lr or set train.grad_clip)"
        )
        self.epoch, self.step, self.value = epoch, step, value

    def __reduce__(self):  # picklable, so Ray carries it from a trial to the driver
        return type(self), (self.epoch, self.step, self.value)


@runtime_checkable
class Callback(Protocol):
    """Called after each epoch's checkpoint is written. May raise StopTraining, or expose a
    truthy `should_stop` attribute after the call, to stop training."""

    def on_epoch_end(self, epoch: int, metrics: dict[str, float], checkpoint_dir: Path) -> None:
        ...


@dataclass
class FitResult:
    model: nn.Module
    history: list[dict[str, float]]
    metrics: dict[str, float]
    epoch: int
    checkpoint_dir: Path | None
    stopped: bool
    num_params: int
    task: str
    data: Any
    best_epoch: int | None = None
    best_checkpoint_dir: Path | None = None


# ----------------------------------------------------------------------------- building blocks


def task_kind(task: str) -> str:
    """Data task ("binary", "multiclass", "regression") -> "classification" | "regression"."""
    return "regression" if task == "regression" else "classification"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"train.device={name!r} but CUDA is not available")
    return torch.device(name)


def model_kwargs(cfg: RunConfig, bundle: Any) -> dict[str, Any]:
    """create_model keyword arguments: the config's overrides plus the data's shapes."""
    c, h, w = bundle.image_shape
    if h != w:
        raise ValueError(f"models expect square images, data has {h}x{w}")
    kwargs = cfg.model.overrides()
    kwargs.update(in_channels=int(c), img_size=int(h))
    if task_kind(bundle.task) == "regression":
        kwargs["targets"] = int(bundle.val.targets.shape[1])
    else:
        kwargs.update(classes=len(bundle.classes), targets=0)
    return kwargs


def build_model(cfg: RunConfig, bundle: Any) -> nn.Module:
    import eqcvt

    return eqcvt.create_model(cfg.model.name, **model_kwargs(cfg, bundle))


def build_optimizer(model: nn.Module, tc: TrainConfig) -> torch.optim.Optimizer:
    """AdamW or SGD; biases and normalisation parameters get no weight decay."""
    no_decay_ids = {
        id(p)
        for m in model.modules()
        if isinstance(m, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm))
        for p in m.parameters(recurse=False)
    }
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if name.endswith("bias") or id(p) in no_decay_ids else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": tc.weight_decay, "apply_decay": True},
        {"params": no_decay, "weight_decay": 0.0, "apply_decay": False},
    ]
    groups = [g for g in groups if g["params"]]
    if tc.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=tc.lr, momentum=tc.momentum)
    return torch.optim.AdamW(groups, lr=tc.lr, betas=(tc.momentum, 0.999))


def lr_factor(step: int, tc: TrainConfig, steps_per_epoch: int) -> float:
    """Multiplier of the base lr at optimiser step `step` (0-based): linear warm-up, then
    cosine to 0 at train.epochs (clamped there) or constant."""
    warm = tc.warmup_epochs * steps_per_epoch
    if step < warm:
        return (step + 1) / warm
    if tc.scheduler == "constant":
        return 1.0
    total = tc.epochs * steps_per_epoch
    progress = min(1.0, (step - warm) / max(1, total - warm))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, tc: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Stepped once per optimiser step."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, tc, steps_per_epoch)
    )


def apply_optimizer_overrides(
    optimizer: torch.optim.Optimizer,
    scheduler: Any = None,
    *,
    lr: float | None = None,
    weight_decay: float | None = None,
    momentum: float | None = None,
) -> None:
    """Set optimiser values in place, e.g. PBT's mutated values after loading a donor.

    `lr` is the base lr: with a LambdaLR the current lr becomes lr * the current schedule
    factor. `weight_decay` only touches groups that decay; `momentum` is SGD's momentum or
    AdamW's beta1.
    """
    for i, group in enumerate(optimizer.param_groups):
        if lr is not None:
            if scheduler is not None and hasattr(scheduler, "base_lrs"):
                lambdas = getattr(scheduler, "lr_lambdas", None)
                if lambdas is not None:
                    factor = lambdas[i](scheduler.last_epoch)
                else:
                    base = scheduler.base_lrs[i]
                    factor = group["lr"] / base if base else 1.0
                scheduler.base_lrs[i] = lr
                group["initial_lr"] = lr
                group["lr"] = lr * factor
            else:
                group["lr"] = lr
        if weight_decay is not None and group.get("apply_decay", True):
            group["weight_decay"] = weight_decay
        if momentum is not None:
            if "betas" in group:
                group["betas"] = (momentum, group["betas"][1])
            elif "momentum" in group:
                group["momentum"] = momentum
    if lr is not None and scheduler is not None and hasattr(scheduler, "_last_lr"):
        scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]


def augment_batch(x: torch.Tensor, mode: str, generator: torch.Generator) -> torch.Tensor:
    """Exact pixel-grid symmetries per image: random quarter turns and/or a mirror.

    Draws happen on `generator` (CPU), so a run is reproducible whatever the device.
    """
    if mode not in AUGMENTS:
        raise ValueError(f"unknown augment {mode!r}: expected one of {AUGMENTS}")
    if mode == "none":
        return x
    b = x.shape[0]
    out = x
    if mode in ("rot90", "rot90_flips"):
        if x.shape[-1] != x.shape[-2]:
            raise ValueError("rot90 augmentation needs square images")
        turns = torch.randint(0, 4, (b,), generator=generator).to(x.device)
        out = x.clone()
        for k in (1, 2, 3):
            sel = turns == k
            out[sel] = torch.rot90(x[sel], k, dims=(-2, -1))
    if mode in ("flips", "rot90_flips"):
        flip = torch.rand((b,), generator=generator).to(x.device) < 0.5
        out = torch.where(flip.view(-1, *([1] * (x.dim() - 1))), out.flip(-1), out)
    return out


# ----------------------------------------------------------------------------- evaluation


def predict(
    model: nn.Module, images: torch.Tensor, batch_size: int = 256, device: Any = None
) -> torch.Tensor:
    """Raw outputs (N, out) as CPU float32, in eval mode (escnn filters expanded once)."""
    device = torch.device(device) if device is not None else _model_device(model)
    was_training = model.training
    model.eval()  # outside inference_mode: escnn caches its expanded filters here
    outs = []
    try:
        with torch.inference_mode():
            for i in range(0, len(images), batch_size):
                batch = images[i : i + batch_size].to(device, non_blocking=True)
                outs.append(model(batch).float().cpu())
    finally:
        if was_training:
            model.train()
    if not outs:
        return torch.empty(0, 0)
    return torch.cat(outs)


def evaluate(
    model: nn.Module,
    split: Any,
    task: str,
    batch_size: int = 256,
    *,
    classes: Sequence[str] | None = None,
    device: Any = None,
) -> dict[str, float]:
    """Metrics on one split, keys without prefix: loss, acc, auc_micro, auc_macro,
    auc_<class> (classification) or loss, mse, mae (regression)."""
    out = predict(model, split.images, batch_size, device)
    if task_kind(task) == "regression":
        target = split.targets.float().cpu()
        res = M.regression_metrics(out, target)
        return {"loss": res["mse"], **res}
    labels = split.labels.long().cpu()
    loss = float(F.cross_entropy(out, labels).item()) if len(labels) else float("nan")
    return {"loss": loss, **M.classification_metrics(out, labels, classes)}


def _model_device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


# ----------------------------------------------------------------------------- checkpoints


def _rng_state() -> dict[str, Any]:
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


def _set_rng_state(state: dict[str, Any]) -> None:
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


def _model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict in train mode: escnn's cached eval filters are not part of the checkpoint."""
    if not model.training:
        model.train()
    return model.state_dict()


def _load_model_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    model.train()  # same key set as when saved (escnn drops its cached filters in train mode)
    model.load_state_dict(state)


def save_checkpoint(
    path: Path,
    *,
    cfg: RunConfig,
    model_name: str,
    kwargs: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    epoch: int,
    global_step: int,
    history: list[dict[str, float]],
) -> Path:
    """Write one checkpoint directory atomically (tmp dir, then rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save(
        {
            "model": _model_state(model),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": epoch,
            "global_step": global_step,
            "history": history,
            "rng": _rng_state(),
        },
        tmp / STATE_FILE,
    )
    (tmp / CONFIG_FILE).write_text(json.dumps(cfg.to_flat(), indent=1))
    (tmp / MODEL_FILE).write_text(json.dumps({"name": model_name, "kwargs": kwargs}, indent=1))
    (tmp / METRICS_FILE).write_text(json.dumps(history[-1] if history else {}, indent=1))
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
    return path


def load_checkpoint(checkpoint_dir: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """state.pt contents plus "config" (flat dict) and "model" ({"name", "kwargs"})."""
    d = Path(checkpoint_dir)
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
    _load_model_state(model, state["model"])
    return model.eval()


# ----------------------------------------------------------------------------- training


def _open_data(cfg: RunConfig, device: torch.device) -> Any:
    from .data.bundle import open_data

    return open_data(cfg.data, device=str(device) if cfg.data.on_the_fly else "cpu")


def _steps_per_epoch(cfg: RunConfig, bundle: Any) -> int:
    tc = cfg.train
    if tc.steps_per_epoch:
        return tc.steps_per_epoch
    if bundle.train is None:
        return max(1, cfg.data.n_train // tc.batch_size)
    n = len(bundle.train.labels)
    full, rest = divmod(n, tc.batch_size)
    return max(1, full + (1 if rest >= 2 else 0))  # a lone last image would break BatchNorm


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """Shuffling/augmentation randomness of one epoch: a function of (seed, epoch) only."""
    mixed = int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0])
    return torch.Generator().manual_seed(mixed & ((1 << 63) - 1))


def _batches(
    bundle: Any, bs: int, steps: int, first_step: int, gen: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    if bundle.train is None:
        if bundle.stream is None:
            raise ValueError("data bundle has neither a train split nor a stream")
        for i in range(steps):
            yield bundle.stream(first_step + i, bs)
        return
    split = bundle.train
    n = len(split.labels)
    passes = max(1, math.ceil(steps * bs / n))
    order = torch.cat([torch.randperm(n, generator=gen) for _ in range(passes)])
    for i in range(steps):
        idx = order[i * bs : (i + 1) * bs]
        yield split.images[idx], split.labels[idx], split.targets[idx]


def _check_finite(pending: list[torch.Tensor], first_step: int, epoch: int) -> None:
    if not pending:
        return
    losses = torch.stack(pending)
    if not bool(torch.isfinite(losses).all()):
        bad = int((~torch.isfinite(losses)).nonzero()[0, 0])
        raise NonFiniteLossError(epoch, first_step + bad, float(losses[bad]))


def _train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    bundle: Any,
    cfg: RunConfig,
    *,
    task: str,
    epoch: int,
    steps: int,
    global_step: int,
    device: torch.device,
) -> tuple[float, int, float]:
    """One epoch of optimiser steps -> (mean train loss, images seen, lr of the last step)."""
    tc = cfg.train
    model.train()
    gen = _epoch_generator(tc.seed, epoch)
    loss_sum = torch.zeros((), device=device)
    pending: list[torch.Tensor] = []
    n_seen, lr = 0, float(optimizer.param_groups[0]["lr"])
    batches = _batches(bundle, tc.batch_size, steps, global_step, gen)
    for step, (images, labels, targets) in enumerate(batches, start=1):
        images = augment_batch(images.to(device, non_blocking=True).float(), tc.augment, gen)
        out = model(images)
        if task == "regression":
            loss = F.mse_loss(out, targets.to(device, non_blocking=True).float())
        else:
            loss = F.cross_entropy(
                out, labels.to(device, non_blocking=True).long(),
                label_smoothing=tc.label_smoothing,
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if tc.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        lr = float(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
        detached = loss.detach()
        pending.append(detached)
        loss_sum += detached * len(images)
        n_seen += len(images)
        if len(pending) == _NONFINITE_CHECK_EVERY:
            _check_finite(pending, step - len(pending) + 1, epoch)
            pending = []
    _check_finite(pending, steps - len(pending) + 1, epoch)
    return float(loss_sum.item()) / max(1, n_seen), n_seen, lr


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _is_better(value: float, best: float | None, mode: str) -> bool:
    if value is None or math.isnan(value):
        return False
    return best is None or (value > best if mode == "max" else value < best)


def fit(
    cfg: RunConfig,
    callbacks: Sequence[Callback] = (),
    *,
    data: Any = None,
    resume_from: str | Path | None = None,
    run_until_stopped: bool = False,
    checkpoint_root: str | Path | None = None,
    keep_checkpoints: int | None = 1,
    keep_best: tuple[str, str] | None = None,
    init_from: str | Path | None = None,
) -> FitResult:
    """Train `cfg` epoch by epoch; see the module docstring and /work/notes/ENGINE_API.md.

    resume_from: continue a checkpoint (all state), then apply cfg's optimiser values.
    run_until_stopped: ignore cfg.train.epochs as an end (PBT); a callback stops the run.
    keep_checkpoints: newest epoch dirs kept by this call (None = all); keep_best=(metric,
    "max"|"min") also keeps the best epoch's dir. init_from: load model weights only.
    """
    tc = cfg.train
    if keep_checkpoints is not None and keep_checkpoints < 1:
        raise ValueError("keep_checkpoints must be >= 1 or None")
    if tc.num_threads:
        torch.set_num_threads(tc.num_threads)
    device = resolve_device(tc.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    bundle = data if data is not None else _open_data(cfg, device)
    task = task_kind(bundle.task)
    _seed_everything(tc.seed)
    kwargs = model_kwargs(cfg, bundle)
    model = build_model(cfg, bundle).to(device)
    num_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    optimizer = build_optimizer(model, tc)
    steps = _steps_per_epoch(cfg, bundle)
    scheduler = build_scheduler(optimizer, tc, steps)
    epoch, global_step, history = 0, 0, []
    last_ckpt: Path | None = None

    if init_from is not None:
        _load_model_state(model, load_checkpoint(init_from)["model"])
    if resume_from is not None:
        state = load_checkpoint(resume_from)  # CPU; load_state_dict moves tensors over
        _check_compatible(state, cfg, kwargs, resume_from)
        _load_model_state(model, state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        epoch, global_step = int(state["epoch"]), int(state["global_step"])
        history = list(state["history"])
        _set_rng_state(state["rng"])
        apply_optimizer_overrides(
            optimizer, scheduler, lr=tc.lr, weight_decay=tc.weight_decay, momentum=tc.momentum
        )
        last_ckpt = Path(resume_from)

    root = Path(checkpoint_root) if checkpoint_root else Path(tempfile.mkdtemp(prefix="eqcvt-fit-"))
    root.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    best_value, best_epoch, best_dir = None, None, None
    stopped = False
    classes = tuple(bundle.classes)

    while run_until_stopped or epoch < tc.epochs:
        epoch += 1
        t0 = time.perf_counter()
        train_loss, n_seen, lr = _train_epoch(
            model, optimizer, scheduler, bundle, cfg, task=task, epoch=epoch, steps=steps,
            global_step=global_step, device=device,
        )
        global_step += steps
        train_time = time.perf_counter() - t0  # loss .item() above synchronised the device
        val = evaluate(model, bundle.val, task, tc.eval_batch_size, classes=classes,
                       device=device)
        model.train()
        metrics = {"epoch": float(epoch), "train_loss": train_loss}
        metrics.update({f"val_{k}": float(v) for k, v in val.items()})
        metrics.update(
            lr=lr,
            images_per_s=n_seen / max(train_time, 1e-9),
            epoch_time_s=time.perf_counter() - t0,
            num_params=float(num_params),  # for the live leaderboard (trial results)
        )
        history.append(metrics)
        ckpt = save_checkpoint(
            root / f"epoch_{epoch:04d}", cfg=cfg, model_name=cfg.model.name, kwargs=kwargs,
            model=model, optimizer=optimizer, scheduler=scheduler, epoch=epoch,
            global_step=global_step, history=history,
        )
        written.append(ckpt)
        last_ckpt = ckpt
        if keep_best is not None and _is_better(metrics.get(keep_best[0]), best_value,
                                                keep_best[1]):
            best_value, best_epoch, best_dir = metrics[keep_best[0]], epoch, ckpt
        for cb in callbacks:
            try:
                cb.on_epoch_end(epoch, dict(metrics), ckpt)
            except StopTraining:
                stopped = True
            if getattr(cb, "should_stop", False):
                stopped = True
        if keep_checkpoints is not None:
            for old in written[:-keep_checkpoints]:
                if old != best_dir:
                    shutil.rmtree(old, ignore_errors=True)
            written = [p for p in written if p.exists()]
        if stopped:
            break

    model.eval()
    return FitResult(
        model=model,
        history=history,
        metrics=dict(history[-1]) if history else {},
        epoch=epoch,
        checkpoint_dir=last_ckpt,
        stopped=stopped,
        num_params=num_params,
        task=task,
        data=bundle,
        best_epoch=best_epoch,
        best_checkpoint_dir=best_dir,
    )


def _check_compatible(
    state: dict[str, Any], cfg: RunConfig, kwargs: dict[str, Any], path: str | Path
) -> None:
    """Weights only move between identical architectures and optimiser types."""
    spec = state["model_spec"]
    if spec["name"] != cfg.model.name or spec["kwargs"] != kwargs:
        raise ValueError(
            f"checkpoint {path} holds model {spec['name']} {spec['kwargs']}, but the config "
            f"builds {cfg.model.name} {kwargs}; resume needs the same architecture"
        )
    saved_opt = state["config"].get("train.optimizer")
    if saved_opt != cfg.train.optimizer:
        raise ValueError(
            f"checkpoint {path} was trained with optimizer {saved_opt!r}, config has "
            f"{cfg.train.optimizer!r}"
        )
