"""The only training loop: trials, PBT exploits and final training all call `fit`.

Per epoch: train, evaluate on the validation split, write a checkpoint directory (model,
optimiser, scheduler, epoch, history, RNG states, flat config), then hand metrics and the
checkpoint to the callbacks (Tune reporting, MLflow logging). Resuming from such a directory
continues exactly where the uninterrupted run would have been.

The pieces live beside it: `checkpoints` (directories, RNG state), `optim` (optimiser and lr
schedule), `augment` (batch augmentation), `evaluation` (predict and metrics), and
`data.open` (the caller opens the data once and passes it in).
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn as nn

from .augment import augment_batch
from .checkpoints import (
    check_compatible,
    load_checkpoint,
    load_model_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
)
from .config import RunConfig
from .device import (
    StepSettings,
    device_name,
    precision_name,
    resolve_device,
    step_settings,
)
from .evaluation import evaluate, task_kind
from .feed import TrainFeed, open_feed
from .optim import apply_optimizer_overrides, build_optimizer, build_scheduler, optimizer_step

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
    """What one `fit` call trained, and the figures a benchmark reports about it.

    best_*: the best epoch of the whole history by `best_metric` (keep_best's metric, else
    val_acc (max) for classification and val_loss (min) for regression); best_checkpoint_dir
    is kept only with keep_best. Timing covers the epochs this call trained: train_time_s is
    optimiser steps only (validation excluded), images_per_s = images_seen / train_time_s.
    """

    model: nn.Module
    history: list[dict[str, float]]
    metrics: dict[str, float]  # the last epoch's
    epoch: int
    checkpoint_dir: Path | None
    stopped: bool
    num_params: int
    task: str
    data: Any
    best_epoch: int | None = None
    best_checkpoint_dir: Path | None = None
    best_metric: str = ""
    best_value: float | None = None
    final_val: dict[str, float] = field(default_factory=dict)  # last epoch's val_* metrics
    train_time_s: float = 0.0
    images_seen: int = 0
    images_per_s: float = 0.0
    device: str = ""  # e.g. "cpu", "cuda:0 (NVIDIA H200)"
    precision: str = "fp32"  # the resolved train.precision of the training step
    feed: str = "pageable"  # the resolved train.feed ("stream" for on-the-fly data)


# ----------------------------------------------------------------------------- model


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


# ----------------------------------------------------------------------------- one epoch


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
    bundle: Any, feed: TrainFeed | None, bs: int, steps: int, first_step: int,
    gen: torch.Generator,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    if feed is None:
        if bundle.stream is None:
            raise ValueError("data bundle has neither a train split nor a stream")
        for i in range(steps):
            yield bundle.stream(first_step + i, bs)
        return
    n = len(feed.train)
    passes = max(1, math.ceil(steps * bs / n))
    order = torch.cat([torch.randperm(n, generator=gen) for _ in range(passes)])
    for i in range(steps):
        yield feed.batch(order[i * bs : (i + 1) * bs])


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
    feed: TrainFeed | None,
    cfg: RunConfig,
    *,
    task: str,
    epoch: int,
    steps: int,
    global_step: int,
    device: torch.device,
    step: StepSettings,
) -> tuple[float, int, float]:
    """One epoch of optimiser steps -> (mean train loss, images seen, lr of the last step)."""
    tc = cfg.train
    model.train()
    gen = _epoch_generator(tc.seed, epoch)
    loss_sum = torch.zeros((), device=device)
    pending: list[torch.Tensor] = []
    n_seen, lr = 0, float(optimizer.param_groups[0]["lr"])
    batches = _batches(bundle, feed, tc.batch_size, steps, global_step, gen)
    for i, (images, labels, targets) in enumerate(batches, start=1):
        images = augment_batch(images.to(device, non_blocking=True).float(), tc.augment, gen)
        if tc.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        lr = float(optimizer.param_groups[0]["lr"])
        loss = optimizer_step(
            model, optimizer, step, images, labels.to(device, non_blocking=True),
            targets.to(device, non_blocking=True), task=task,
            label_smoothing=tc.label_smoothing, grad_clip=tc.grad_clip,
        )
        scheduler.step()
        detached = loss.detach()
        pending.append(detached)
        loss_sum += detached * len(images)
        n_seen += len(images)
        if len(pending) == _NONFINITE_CHECK_EVERY:
            _check_finite(pending, i - len(pending) + 1, epoch)
            pending = []
    _check_finite(pending, steps - len(pending) + 1, epoch)
    return float(loss_sum.item()) / max(1, n_seen), n_seen, lr


def _is_better(value: float | None, best: float | None, mode: str) -> bool:
    if value is None or math.isnan(value):
        return False
    return best is None or (value > best if mode == "max" else value < best)


def _best_of(history: list[dict[str, float]], metric: str, mode: str
             ) -> tuple[int | None, float | None]:
    """(epoch, value) of the best entry of `history` by `metric` (first one on ties)."""
    best_epoch, best_value = None, None
    for h in history:
        if _is_better(h.get(metric), best_value, mode):
            best_epoch, best_value = int(h["epoch"]), float(h[metric])
    return best_epoch, best_value


# ----------------------------------------------------------------------------- the loop


def fit(
    cfg: RunConfig,
    data: Any,
    callbacks: Sequence[Callback] = (),
    *,
    resume_from: str | Path | None = None,
    run_until_stopped: bool = False,
    checkpoint_root: str | Path | None = None,
    keep_checkpoints: int | None = 1,
    keep_best: tuple[str, str] | None = None,
    init_from: str | Path | None = None,
) -> FitResult:
    """Train `cfg` on `data` epoch by epoch (see the module docstring).

    data: the DataBundle, opened once by the caller (`pipeline.data.open.open_run_data`).
    resume_from: continue a checkpoint (all state), then apply cfg's optimiser values.
    run_until_stopped: ignore cfg.train.epochs as an end (PBT); a callback stops the run.
    keep_checkpoints: newest epoch dirs kept by this call (None = all); keep_best=(metric,
    "max"|"min") also keeps the best epoch's dir. init_from: load model weights only.
    """
    import eqcvt

    tc = cfg.train
    if data is None:
        raise TypeError("fit needs its data: open it with pipeline.data.open.open_run_data(cfg)")
    if keep_checkpoints is not None and keep_checkpoints < 1:
        raise ValueError("keep_checkpoints must be >= 1 or None")
    if tc.num_threads:
        torch.set_num_threads(tc.num_threads)
    device = resolve_device(tc.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # training only: evaluation turns it off
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = tc.cudnn_benchmark
    bundle = data
    feed = (open_feed(tc.feed, bundle.train, bundle.val, device)
            if bundle.train is not None else None)
    val_split = feed.val if feed is not None else bundle.val
    task = task_kind(bundle.task)
    seed_everything(tc.seed)
    kwargs = model_kwargs(cfg, bundle)
    model = build_model(cfg, bundle).to(device)
    if tc.channels_last:
        model = model.to(memory_format=torch.channels_last)
    step = step_settings(model, tc, device)
    num_params = eqcvt.count_params(model)
    optimizer = build_optimizer(model, tc)
    steps = _steps_per_epoch(cfg, bundle)
    scheduler = build_scheduler(optimizer, tc, steps)
    epoch, global_step, history = 0, 0, []
    last_ckpt: Path | None = None

    if init_from is not None:
        load_model_state(model, load_checkpoint(init_from)["model"])
    if resume_from is not None:
        state = load_checkpoint(resume_from)  # CPU; load_state_dict moves tensors over
        check_compatible(state, cfg.model.name, kwargs, tc.optimizer, resume_from)
        load_model_state(model, state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        epoch, global_step = int(state["epoch"]), int(state["global_step"])
        history = list(state["history"])
        set_rng_state(state["rng"])
        if step.scaler is not None and "scaler" in state:
            step.scaler.load_state_dict(state["scaler"])
        apply_optimizer_overrides(
            optimizer, scheduler, lr=tc.lr, weight_decay=tc.weight_decay, momentum=tc.momentum
        )
        last_ckpt = Path(resume_from)

    root = Path(checkpoint_root) if checkpoint_root else Path(tempfile.mkdtemp(prefix="eqcvt-fit-"))
    root.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    best_value, best_dir = None, None
    stopped = False
    classes = tuple(bundle.classes)
    train_time_total, seen_total = 0.0, 0

    while run_until_stopped or epoch < tc.epochs:
        epoch += 1
        t0 = time.perf_counter()
        train_loss, n_seen, lr = _train_epoch(
            model, optimizer, scheduler, bundle, feed, cfg, task=task, epoch=epoch, steps=steps,
            global_step=global_step, device=device, step=step,
        )
        global_step += steps
        train_time = time.perf_counter() - t0  # loss .item() above synchronised the device
        train_time_total += train_time
        seen_total += n_seen
        val = evaluate(model, val_split, task, tc.eval_batch_size, classes=classes,
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
            global_step=global_step, history=history, scaler=step.scaler,
        )
        written.append(ckpt)
        last_ckpt = ckpt
        if keep_best is not None and _is_better(metrics.get(keep_best[0]), best_value,
                                                keep_best[1]):
            best_value, best_dir = metrics[keep_best[0]], ckpt
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
    select = keep_best or (("val_loss", "min") if task == "regression" else ("val_acc", "max"))
    best_epoch, best_of_history = _best_of(history, *select)
    last = dict(history[-1]) if history else {}
    return FitResult(
        model=model,
        history=history,
        metrics=last,
        epoch=epoch,
        checkpoint_dir=last_ckpt,
        stopped=stopped,
        num_params=num_params,
        task=task,
        data=bundle,
        best_epoch=best_epoch,
        best_checkpoint_dir=best_dir,
        best_metric=select[0],
        best_value=best_of_history,
        final_val={k: v for k, v in last.items() if k.startswith("val_")},
        train_time_s=train_time_total,
        images_seen=seen_total,
        images_per_s=seen_total / train_time_total if train_time_total > 0 else 0.0,
        device=device_name(device),
        precision=precision_name(step.dtype),
        feed=feed.mode if feed is not None else "stream",
    )
