"""Run configuration: the one source of truth for training, data and model-choice defaults.

A Tune trial receives a flat dict with dotted keys ("model.group", "train.lr", "data.preset");
`RunConfig.from_flat` converts it at the boundary (type coercion, validation) and past that
line nothing reads `config.get("x", default)`.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np

OPTIMIZERS: tuple[str, ...] = ("adamw", "adam", "sgd")
SCHEDULERS: tuple[str, ...] = ("cosine", "constant")
AUGMENTS: tuple[str, ...] = ("none", "flips", "rot90", "rot90_flips", "rotate")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
FEEDS: tuple[str, ...] = ("auto", "device", "pinned", "pageable")
DATA_SOURCES: tuple[str, ...] = ("simulate", "shards")
DATA_TASKS: tuple[str, ...] = ("binary", "multiclass", "regression")
_CUDA_INDEX = re.compile(r"^cuda:\d+$")


@dataclass(frozen=True)
class ModelSection:
    """Which registered model to build, plus optional overrides of its preset.

    Every override is None by default, meaning "the preset's value"; only non-None values reach
    `eqcvt.create_model`. The stage knobs (embed_dim, depth, heads, mlp_ratio, kv_stride,
    head_dim) apply to every CvT stage. in_channels/img_size/classes/targets come from the
    data, not from here. There is no `variant`: the name fixes the architecture family
    (RETIRED_KEYS).
    """

    name: str = "eqcvt_stem"
    group: str | None = None
    field_type: str | None = None
    fields: int | None = None
    kernel_size: int | None = None
    stem_blocks: int | None = None
    head_hidden: int | None = None
    dropout: float | None = None
    embed_dim: int | None = None
    depth: int | None = None
    heads: int | None = None
    mlp_ratio: float | None = None
    kv_stride: int | None = None
    head_dim: int | None = None  # 0 = embed_dim // heads

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("model.name must be a registered model name, got ''")
        if self.group is not None:
            from eqcvt.groups import parse_group  # lazy: keeps `import pipeline.config` light

            parse_group(self.group)
        for name in ("fields", "kernel_size", "head_hidden", "embed_dim", "depth", "heads",
                     "kv_stride"):
            _check(self, name, lambda v: v >= 1, ">= 1")
        _check(self, "stem_blocks", lambda v: v >= 0, ">= 0")
        _check(self, "head_dim", lambda v: v >= 0, ">= 0")
        _check(self, "kernel_size", lambda v: v % 2 == 1, "odd")
        _check(self, "dropout", lambda v: 0.0 <= v < 1.0, "in [0, 1)")
        _check(self, "mlp_ratio", lambda v: v > 0, "> 0")
        if self.embed_dim is not None and self.heads is not None and self.embed_dim % self.heads:
            raise ValueError(
                f"model.embed_dim={self.embed_dim} is not divisible by model.heads={self.heads}"
            )

    def overrides(self) -> dict[str, Any]:
        """The non-None overrides, as keyword arguments for `eqcvt.create_model`."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name != "name" and getattr(self, f.name) is not None
        }


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation values of one training run (a trial or a final training).

    `epochs` is the budget of a normal run; a PBT trial runs until Tune stops it (see
    `engine.fit(run_until_stopped=True)`). `steps_per_epoch` = 0 means one pass over the train
    split, or n_train // batch_size batches in the on-the-fly mode. `grad_clip` = 0 disables
    clipping; `num_threads` = 0 leaves torch's thread count alone. `optimizer` "adam" adds
    weight decay to the gradient (L2, the published recipe), "adamw" decouples it. `augment`
    "rotate" is the published continuous rotation, uniform in [-180, 180] degrees.
    `precision` is the training step's autocast dtype ("auto": bf16 on a CUDA device that
    supports it, else fp32; resolved by `pipeline.device.resolve_precision`); evaluation always
    runs in fp32. `compile` runs the training forward through torch.compile; `channels_last`
    and `cudnn_benchmark` are GPU layout/autotuning switches, off until bench/gpu.py shows
    they pay. `feed` is how training batches of a fixed split reach a GPU ("auto": the splits
    resident on the GPU when they fit, else pinned host memory; see `pipeline.feed`).
    """

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    optimizer: str = "adamw"
    momentum: float = 0.9  # SGD momentum; Adam/AdamW beta1
    scheduler: str = "cosine"
    warmup_epochs: int = 0
    grad_clip: float = 0.0
    augment: str = "none"
    label_smoothing: float = 0.0
    seed: int = 0
    device: str = "auto"
    num_threads: int = 0
    steps_per_epoch: int = 0
    eval_batch_size: int = 256
    precision: str = "auto"
    compile: bool = False
    channels_last: bool = False
    cudnn_benchmark: bool = False
    feed: str = "auto"

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size"):
            _check(self, name, lambda v: v >= 1, ">= 1")
        for name in ("warmup_epochs", "seed", "num_threads", "steps_per_epoch", "weight_decay",
                     "grad_clip"):
            _check(self, name, lambda v: v >= 0, ">= 0")
        _check(self, "lr", lambda v: v > 0 and np.isfinite(v), "a finite number > 0")
        _check(self, "momentum", lambda v: 0.0 <= v < 1.0, "in [0, 1)")
        _check(self, "label_smoothing", lambda v: 0.0 <= v < 1.0, "in [0, 1)")
        _check_in(self, "optimizer", OPTIMIZERS)
        _check_in(self, "scheduler", SCHEDULERS)
        _check_in(self, "augment", AUGMENTS)
        _check_in(self, "precision", PRECISIONS)
        _check_in(self, "feed", FEEDS)
        if self.device not in DEVICES and not _CUDA_INDEX.match(self.device):
            raise ValueError(
                f"train.device must be one of {DEVICES} or 'cuda:N', got {self.device!r}"
            )


@dataclass(frozen=True)
class DataConfig:
    """Where images come from; consumed by `pipeline.data.bundle.open_data`.

    n_* count images per split in total (simulate). `on_the_fly` streams train batches from the
    simulator on the training device, val/test stay fixed. `img_size` 0 = the preset's size.
    The lens knobs override the simulator preset (None = the preset's value): the presets
    model_i/ii/iii draw the lens mass per image (randomize_einstein_radius), take the
    substructure mass out of the main lens (mass_conserving) and turn the lens, shear and
    source axes at random (randomize_orientation), so the ring size does not give the class
    away; model_i/ii/iii_deeplense keep the DeepLense lens (all three off).
    """

    source: str = "simulate"
    path: str = ""
    preset: str = "model_ii"
    task: str = "binary"
    n_train: int = 256
    n_val: int = 128
    n_test: int = 128
    seed: int = 0
    on_the_fly: bool = False
    img_size: int = 0
    randomize_einstein_radius: bool | None = None
    mass_conserving: bool | None = None
    randomize_orientation: bool | None = None

    def __post_init__(self) -> None:
        _check_in(self, "source", DATA_SOURCES)
        _check_in(self, "task", DATA_TASKS)
        if self.source == "shards" and not self.path:
            raise ValueError("data.path (the shard folder) is required when data.source='shards'")
        if not self.preset:
            raise ValueError("data.preset must name a simulator preset, got ''")
        for name in ("n_train", "n_test", "seed", "img_size"):
            _check(self, name, lambda v: v >= 0, ">= 0")
        _check(self, "n_val", lambda v: v >= 1, ">= 1")


SECTIONS: dict[str, type] = {"model": ModelSection, "train": TrainConfig, "data": DataConfig}
# Keys that existed once, and why they are gone. A None value (how older runs recorded "the
# preset's value") is dropped by from_flat, so their saved configs still load.
RETIRED_KEYS: dict[str, str] = {
    "model.variant": "a registered model name fixes its architecture family; choose another "
    "model.name instead (eqcvt.list_models())",
}


@dataclass(frozen=True)
class RunConfig:
    """Everything one training run needs; flat dotted dicts at the Tune/MLflow boundary."""

    model: ModelSection = field(default_factory=ModelSection)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)

    @classmethod
    def from_flat(cls, flat: Mapping[str, Any]) -> RunConfig:
        """Build from {"model.group": "C8", "train.lr": 1e-3, ...}; missing keys = defaults.

        Unknown keys and values of the wrong type are a ValueError naming the key; integral
        floats (e.g. from quniform) become ints.
        """
        per_section: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
        for key, value in flat.items():
            if key in RETIRED_KEYS and value is None:
                continue
            section, name = split_key(key)
            per_section[section][name] = coerce_value(key, value)
        built = {}
        for section, kwargs in per_section.items():
            try:
                built[section] = SECTIONS[section](**kwargs)
            except (TypeError, ValueError) as err:
                raise ValueError(f"invalid {section} config: {err}") from err
        return cls(**built)

    def to_flat(self) -> dict[str, Any]:
        """Every field as {"section.field": value} (None = preset value); inverse of from_flat."""
        return {
            f"{section}.{f.name}": getattr(getattr(self, section), f.name)
            for section in SECTIONS
            for f in dataclasses.fields(SECTIONS[section])
        }

    def with_updates(self, updates: Mapping[str, Any]) -> RunConfig:
        """A copy with some dotted keys changed (e.g. longer final training)."""
        return RunConfig.from_flat({**self.to_flat(), **updates})


def flat_keys() -> list[str]:
    """Every valid dotted key."""
    return list(RunConfig().to_flat())


def split_key(key: str) -> tuple[str, str]:
    """"train.lr" -> ("train", "lr"); unknown section or field is a ValueError naming the key."""
    if key in RETIRED_KEYS:
        raise ValueError(f"config key {key!r} was removed: {RETIRED_KEYS[key]}")
    section, _, name = str(key).partition(".")
    cls = SECTIONS.get(section)
    if cls is None or not name:
        raise ValueError(
            f"unknown config key {key!r}: keys look like 'model.group', 'train.lr', "
            f"'data.preset' (sections: {', '.join(SECTIONS)})"
        )
    if name not in _field_types(cls):
        raise ValueError(
            f"unknown config key {key!r}; valid {section} keys: "
            f"{', '.join(sorted(_field_types(cls)))}"
        )
    return section, name


def key_type(key: str) -> tuple[type, bool]:
    """(base type, optional) of a dotted key, e.g. "model.fields" -> (int, True)."""
    section, name = split_key(key)
    return _field_types(SECTIONS[section])[name]


def coerce_value(key: str, value: Any) -> Any:
    """Convert a sampled/YAML value to the field's type, or raise a ValueError naming the key."""
    base, optional = key_type(key)
    if value is None:
        if optional:
            return None
        raise ValueError(f"{key} may not be None")
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, Mapping):
        raise ValueError(
            f"{key} got a nested mapping {value!r}: flatten HyperOpt's nested choices with "
            "pipeline.search.flatten_sampled first"
        )
    if base is bool:
        if isinstance(value, bool):
            return value
    elif base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif base is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif base is str and isinstance(value, str):
        return value
    raise ValueError(f"{key} expects {base.__name__}, got {value!r} ({type(value).__name__})")


_TRUE = ("true", "yes", "on")
_FALSE = ("false", "no", "off")


def parse_value(key: str, value: Any) -> Any:
    """The one value parser: a value for a dotted key from any source, typed by the key.

    Text comes from `--set KEY=VALUE`, MLflow params (always strings) and YAML strings
    (YAML 1.1 reads `1e-4` as one): "None"/"null" is None for an optional key, "true"/"False"
    a bool, "64" or "1e3" a number. Typed values (YAML, Tune samples) pass through
    `coerce_value`. A wrong value is a ValueError naming the key.
    """
    base, optional = key_type(key)
    if isinstance(value, str) and base is not str:
        value = _from_text(key, base, value.strip())
    elif isinstance(value, str) and optional and value in ("None", "null", "~"):
        value = None
    return coerce_value(key, value)


def _from_text(key: str, base: type, text: str) -> Any:
    if text in ("None", "null", "~", ""):
        return None  # coerce_value: fine for an optional key, else an error naming it
    if base is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError(f"{key} expects true or false, got {text!r}")
    if base is int:
        try:
            return int(text)
        except ValueError:
            pass  # "1e3", "2.0": through float; coerce_value keeps integral ones
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"{key} expects a number, got {text!r}") from None
    return number


@cache
def _field_types(cls: type) -> dict[str, tuple[type, bool]]:
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        args = typing.get_args(hint)
        if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
            (base,) = [a for a in args if a is not type(None)]
            out[f.name] = (base, True)
        else:
            out[f.name] = (hint, False)
    return out


def _check(obj: Any, name: str, ok, expect: str) -> None:
    value = getattr(obj, name)
    if value is not None and not ok(value):
        section = _section_name(obj)
        raise ValueError(f"{section}.{name} must be {expect}, got {value!r}")


def _check_in(obj: Any, name: str, allowed: tuple[str, ...]) -> None:
    value = getattr(obj, name)
    if value not in allowed:
        raise ValueError(
            f"{_section_name(obj)}.{name} must be one of {allowed}, got {value!r}"
        )


def _section_name(obj: Any) -> str:
    return next(s for s, cls in SECTIONS.items() if isinstance(obj, cls))
