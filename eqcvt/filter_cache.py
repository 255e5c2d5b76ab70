"""Eval-mode filter cache for escnn layers, made safe for checkpoints.

escnn's R2Conv (and Linear, transposed and tensor-product layers) already expand their steerable
basis once when switched to eval mode (`train(False)`) and reuse the stored `filter` / `matrix`
and `expanded_bias` buffers on every later forward; `train()` discards them. Three sharp edges
come with it, and this module removes them:

1. The expansion runs with autograd on, so the cached buffers are non-leaf tensors: a deepcopy of
   an eval-mode model fails. `CachedFilters.train` expands under `torch.no_grad()`.
2. Whether the derived buffers appear in `state_dict()` depends on the mode (and a fresh layer
   holds zeros), so checkpoints saved in one mode do not load in the other. The hooks below drop
   them from `state_dict()` and ignore them on load: checkpoints hold parameters only.
3. Loading weights into an eval-mode model would leave a stale cache; the load hook re-expands.

`per_batch_filters(model)` switches the cache off temporarily (every forward re-expands the
basis, the rest of the model stays in eval mode): the reference for tests and benchmarks.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn

DERIVED_BUFFERS: tuple[str, ...] = ("filter", "matrix", "expanded_bias")
_HOOKED_ATTR = "_eqcvt_filter_cache_hooks"


def caching_modules(model: nn.Module) -> list[nn.Module]:
    """escnn layers that expand learned weights into a cached buffer when put in eval mode."""
    from escnn.nn import EquivariantModule

    return [
        m
        for m in model.modules()
        if isinstance(m, EquivariantModule)
        and callable(getattr(m, "expand_parameters", None))
        and any(name in m._buffers or hasattr(m, name) for name in ("filter", "matrix"))
    ]


def _drop_derived(module: nn.Module, state_dict: dict, prefix: str, local_metadata) -> None:
    for name in DERIVED_BUFFERS:
        state_dict.pop(prefix + name, None)


def _align_derived(
    module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
) -> None:
    # Make the derived keys match what the module holds now, so loading is a no-op for them.
    for name in DERIVED_BUFFERS:
        key = prefix + name
        buffer = module._buffers.get(name)
        if buffer is None:
            state_dict.pop(key, None)
        elif key not in state_dict:
            state_dict[key] = buffer


def _refresh_after_load(module: nn.Module, incompatible_keys) -> None:
    if not module.training:
        refresh(module)


def refresh(module: nn.Module) -> None:
    """Re-expand the cached filter of one eval-mode escnn layer from its current weights."""
    with torch.no_grad():
        module.training = True  # escnn only expands on a train -> eval transition
        module.train(False)


def install_filter_cache(model: nn.Module) -> nn.Module:
    """Register the checkpoint hooks on every caching escnn layer of `model` (idempotent)."""
    for m in caching_modules(model):
        if getattr(m, _HOOKED_ATTR, False):
            continue
        m.register_state_dict_post_hook(_drop_derived)
        m.register_load_state_dict_pre_hook(_align_derived)
        m.register_load_state_dict_post_hook(_refresh_after_load)
        setattr(m, _HOOKED_ATTR, True)
    return model


class CachedFilters(nn.Module):
    """Base for models holding escnn layers. Call `install_filter_cache(self)` at the end of
    `__init__`; `eval()` then expands every steerable filter once, without autograd history."""

    def train(self, mode: bool = True):
        with torch.no_grad():
            return super().train(mode)


@contextmanager
def per_batch_filters(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, escnn layers re-expand their filters on every forward, as in training,
    while everything else keeps its mode (BatchNorm running stats, dropout off in eval)."""
    switched = [m for m in caching_modules(model) if not m.training]
    for m in switched:
        m.training = True  # skips escnn's train(): the cached buffers stay untouched
    try:
        yield model
    finally:
        for m in switched:
            m.training = False
