"""The training device and precision named by `train.device` / `train.precision`, resolved in
one place, and the fp32 context every evaluation runs in."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


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


def _cuda_bf16(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """`train.precision` -> the autocast dtype of the training step (None = plain fp32).

    "auto" is bf16 on a CUDA device that supports it and fp32 elsewhere (CPU included: bf16
    autocast works there but is slower than fp32 on most CPUs). "fp16" needs CUDA: CPU
    autocast in fp16 is slow or unsupported for many ops, so it is refused rather than
    silently changed; "bf16" on a CUDA device without bf16 is refused too.
    """
    if name == "auto":
        return torch.bfloat16 if _cuda_bf16(device) else None
    if name not in _DTYPES:
        raise ValueError(f"train.precision must be one of auto, {', '.join(_DTYPES)}; "
                         f"got {name!r}")
    if name == "fp16" and device.type != "cuda":
        raise ValueError(
            f"train.precision=fp16 needs a CUDA device (got {device.type}); use bf16 or fp32"
        )
    if name == "bf16" and device.type == "cuda" and not _cuda_bf16(device):
        raise ValueError("train.precision=bf16 but this GPU has no bf16; use fp16 or fp32")
    return _DTYPES[name]


def precision_name(dtype: torch.dtype | None) -> str:
    """The resolved precision as a config word ("fp32", "bf16", "fp16")."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast to `dtype` on `device` (a no-op context for fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextlib.contextmanager
def exact_fp32() -> Iterator[None]:
    """Full fp32 for evaluation: no autocast, TF32 off (restored on exit).

    TF32 alone moves logits by ~1e-3 on an Ampere+ GPU, which would swamp the invariance
    figure; metrics and equivariance are therefore measured like on a CPU.
    """
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.autocast("cpu", enabled=False))
            if torch.cuda.is_available():
                stack.enter_context(torch.autocast("cuda", enabled=False))
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = cudnn


@dataclass
class StepSettings:
    """How the training step runs: the forward callable (the model, or its torch.compile'd
    wrapper sharing the same parameters), the autocast dtype (None = fp32) and, for fp16,
    the gradient scaler."""

    forward: Any
    dtype: torch.dtype | None
    scaler: Any = None


def step_settings(model: torch.nn.Module, train: Any, device: torch.device) -> StepSettings:
    """The `StepSettings` of a TrainConfig on `device`: precision resolved once, here.

    compile wraps the whole model; dynamo breaks the graph where escnn code cannot be traced
    and compiles the plain-torch parts (the CvT stages, the head) around it. Checkpoints and
    evaluation keep using the uncompiled module, so saved state dicts do not change.
    """
    dtype = resolve_precision(train.precision, device)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    forward = torch.compile(model) if train.compile else model
    return StepSettings(forward=forward, dtype=dtype, scaler=scaler)
