"""EqCvT: rotation-equivariant convolutional vision transformers on escnn."""

from . import _compat  # noqa: F401  (patch escnn before any kernel basis is built)
from .config import ModelConfig, StageConfig
from .groups import parse_group
from .registry import create_model, list_models, register_model

__all__ = [
    "ModelConfig",
    "StageConfig",
    "create_model",
    "list_models",
    "parse_group",
    "register_model",
]
