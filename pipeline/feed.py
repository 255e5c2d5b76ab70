"""Training batches onto the training device, as `train.feed` says.

A fixed split lives on the host (`pipeline.data.open`). Indexing it per batch makes a pageable
tensor, whose copy to a GPU is synchronous: the GPU idles while the host gathers and copies,
which is where several packed trials lose most. Three ways out, one per `train.feed` value:

- "device": the train and validation splits are copied to the GPU once; batches are gathered
  there (no host work per step). Best when the splits fit.
- "pinned": the splits stay on the host in pinned (page-locked) memory; each batch is gathered
  into one of two pinned staging buffers and copied asynchronously, so the gather of batch k+1
  overlaps the copy and compute of batch k.
- "pageable": index and copy, as plain PyTorch does (the baseline bench/gpu.py compares with).

"auto" picks "device" when both splits take at most `RESIDENT_SHARE` of the GPU's memory (room
for eight packed trials and their activations), else "pinned". On a CPU, host memory is the
device's memory and every value feeds the same way ("pinned" is refused: it needs CUDA).
Batches are the same tensors whatever the feed: only where the gather runs changes.
"""

from __future__ import annotations

from typing import Any

import torch

from pipeline.config import FEEDS
from pipeline.data.splits import Split

RESIDENT_SHARE = 1 / 32  # of the GPU's memory, for the train + val splits of one trial
_SLOTS = 2  # staging buffers: one being filled while the other's copy is in flight


def split_bytes(*splits: Split | None) -> int:
    """Host bytes of the splits' tensors."""
    return sum(t.numel() * t.element_size() for s in splits if s is not None
               for t in (s.images, s.labels, s.targets))


def resolve_feed(name: str, device: torch.device, nbytes: int,
                 device_memory: int | None = None) -> str:
    """`train.feed` on `device` for splits of `nbytes` -> "device" | "pinned" | "pageable".

    device_memory: the GPU's total bytes (default: asked from CUDA); only "auto" needs it.
    """
    if name not in FEEDS:
        raise ValueError(f"train.feed must be one of {', '.join(FEEDS)}; got {name!r}")
    if device.type != "cuda":
        if name == "pinned":
            raise ValueError(f"train.feed=pinned needs a CUDA device (got {device.type}); "
                             "use auto, device or pageable")
        return "pageable"  # the host is the device: nothing to copy
    if name != "auto":
        return name
    if device_memory is None:
        device_memory = torch.cuda.get_device_properties(device).total_memory
    return "device" if nbytes <= device_memory * RESIDENT_SHARE else "pinned"


class TrainFeed:
    """Gathers training batches of a fixed split onto the device; holds the validation split
    where evaluation should read it from."""

    def __init__(self, train: Split, val: Split, device: torch.device, mode: str) -> None:
        if mode not in FEEDS[1:]:
            raise ValueError(f"TrainFeed mode must be one of {FEEDS[1:]}, got {mode!r}")
        self.mode, self.device = mode, device
        if mode == "device":
            train, val = train.to(device), val.to(device)
        elif mode == "pinned":
            train, val = train.pin_memory(), val.pin_memory()
        self.train, self.val = train, val
        self._buffers: list[tuple[torch.Tensor, ...] | None] = [None] * _SLOTS
        self._copied: list[Any] = [None] * _SLOTS  # CUDA event: that slot's copy is done
        self._next = 0

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(images, labels, targets) of rows `idx` (a CPU index tensor), on the device."""
        src = (self.train.images, self.train.labels, self.train.targets)
        if self.mode == "device":
            idx = idx.to(self.device)
            return src[0][idx], src[1][idx], src[2][idx]
        if self.mode == "pageable":
            return tuple(t[idx].to(self.device, non_blocking=True) for t in src)  # type: ignore[return-value]
        return self._staged(src, idx)

    def _staged(self, src: tuple[torch.Tensor, ...], idx: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        slot = self._next
        self._next = (slot + 1) % _SLOTS
        if self._copied[slot] is not None:
            self._copied[slot].synchronize()  # the copy that last read this buffer is done
        bufs = self._buffers[slot]
        if bufs is None or len(bufs[0]) < len(idx):
            bufs = tuple(torch.empty((len(idx), *t.shape[1:]), dtype=t.dtype, pin_memory=True)
                         for t in src)
            self._buffers[slot] = bufs
        out = []
        for t, buf in zip(src, bufs, strict=True):
            view = buf[: len(idx)]
            torch.index_select(t, 0, idx, out=view)
            out.append(view.to(self.device, non_blocking=True))
        event = torch.cuda.Event()
        event.record()
        self._copied[slot] = event
        return out[0], out[1], out[2]


def open_feed(name: str, train: Split, val: Split, device: torch.device) -> TrainFeed:
    """The `TrainFeed` `train.feed` = `name` asks for on `device`."""
    return TrainFeed(train, val, device, resolve_feed(name, device, split_bytes(train, val)))
