"""The training device named by `train.device`, resolved in one place."""

from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    """"auto" -> CUDA when present, else CPU; a CUDA name without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"train.device={name!r} but CUDA is not available")
    return torch.device(name)


def device_name(device: torch.device) -> str:
    """Readable hardware name for reports, e.g. "cuda:0 (NVIDIA H200)" or "cpu"."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(device)
