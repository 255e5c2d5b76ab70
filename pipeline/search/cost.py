"""What a configuration costs, counted before it trains: trainable parameters and forward
FLOPs per image (`eqcvt.forward_flops`: torch's flop counter on one image, eval mode).

The searchers check `constraints` with it on the driver when a configuration is sampled, and
each trial counts its own FLOPs once at start to report them every epoch. The model is built
the way the engine builds it (`engine.build_model` on the data's shapes, as preflight does);
escnn cannot build on the meta device, so it is built on the CPU, once per architecture.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from ..config import RunConfig
from .preflight import arch_key, shape_bundle
from .spec import Bound

REJECTED_FILE = "rejected_configs.json"  # on the search's MLflow run: configs never trained


@dataclass(frozen=True)
class Cost:
    num_params: float
    flops: float  # forward FLOPs of one image

    def as_dict(self) -> dict[str, float]:
        return {"num_params": self.num_params, "flops": self.flops}


def model_cost(model: Any, image_shape: tuple[int, ...]) -> Cost:
    """Count a built model: parameters, and FLOPs of one zero image through it in eval mode."""
    import torch

    import eqcvt

    device = next(iter(model.parameters())).device
    flops = eqcvt.forward_flops(model, torch.zeros(1, *image_shape, device=device))
    return Cost(float(eqcvt.count_params(model)), flops)


def config_cost(cfg: RunConfig, bundle: Any) -> Cost:
    """Build the config's model on the CPU for the bundle's shapes and count it."""
    from ..engine import build_model

    return model_cost(build_model(cfg, bundle), tuple(bundle.image_shape))


def violations(constraints: Mapping[str, Bound], cost: Cost) -> dict[str, float]:
    """The constrained costs out of their bounds (empty: the configuration is feasible)."""
    values = cost.as_dict()
    return {k: values[k] for k, b in constraints.items() if b.violated_by(values[k])}


class CostMeter:
    """Costs of sampled flat configs on the driver, one model build per architecture."""

    def __init__(self, source: str = "<search>", pinned: Collection[str] = ()) -> None:
        self.source, self.pinned = source, tuple(pinned)
        self._cache: dict[Any, Cost] = {}

    def measure(self, flat: Mapping[str, Any]) -> Cost:
        cfg = RunConfig.from_flat(dict(flat))
        bundle = shape_bundle(cfg.data, self.source, self.pinned)
        key = arch_key(cfg, bundle)
        if key not in self._cache:
            self._cache[key] = config_cost(cfg, bundle)
        return self._cache[key]

    @property
    def models_built(self) -> int:
        return len(self._cache)
