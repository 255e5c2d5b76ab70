"""EqCvT: rotation-equivariant convolutional vision transformers on escnn."""

from . import _compat  # noqa: F401  (patch escnn before any kernel basis is built)
from .config import ModelConfig, StageConfig
from .groups import parse_group
from .presets import build_model  # importing presets registers every model
from .registry import create_model, list_models, register_model
from .utils import FlopCount, count_params, forward_flops

__all__ = [
    "FlopCount",
    "ModelConfig",
    "StageConfig",
    "build_model",
    "count_params",
    "create_model",
    "forward_flops",
    "list_models",
    "parse_group",
    "register_model",
]
