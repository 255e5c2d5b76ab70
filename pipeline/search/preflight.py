"""Build the models a search will train, before any Ray process starts.

The YAML check (`pipeline.search.parse`) holds every value against the config dataclasses, but only
the model itself can refuse some choices: a name that is not registered, `stem_blocks: 0`
for a model that needs a stem, a field type or size it cannot take. Left to the trials, such
a search starts Ray and fails every trial once per retry. `preflight` samples configurations
(a deterministic stream plus every corner value of every domain), builds each distinct
architecture the way the engine does (`engine.build_model` on the data's shapes, read from
the simulator preset or the shard manifest, nothing simulated or loaded) and runs one image
through it; a failure is a `SearchSpaceError` naming the file and the key. With
`constraints`, a search none of whose sampled configurations meets them is refused too.
"""

from __future__ import annotations

import random
import time
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ..config import DataConfig, RunConfig
from .domains import Branch, Choice, Domain, walk_params
from .errors import SearchSpaceError
from .spec import SearchSpec, sample

DEFAULT_SAMPLES = 20  # the issue asks for at least 20 per search space
COMMAND_LINE = "command line"  # the "file" of a key pinned by --set / --data / --simulate
_DATA_KEYS = ("data.source", "data.path", "data.preset", "data.task", "data.img_size")


@dataclass(frozen=True)
class PreflightResult:
    configs: int  # sampled configurations checked (corners included)
    models: int  # distinct architectures built and run on one image
    seconds: float


def preflight(spec: SearchSpec, *, samples: int = DEFAULT_SAMPLES, seed: int = 0,
              corners: bool = True, pinned: Collection[str] = ()) -> PreflightResult:
    """Raise SearchSpaceError unless every sampled configuration's model builds and runs.

    `pinned` are the keys the command line set (their errors name the command line, not
    the file). Identical architectures are built once.
    """
    t0 = time.perf_counter()
    check_model_names(spec, pinned)
    built: dict[Any, Any] = {}  # architecture -> its Cost
    n = feasible = 0
    for flat in sampled_configs(spec, samples, seed, corners=corners):
        n += 1
        try:
            cfg = RunConfig.from_flat(flat)
        except ValueError as err:
            raise SearchSpaceError(spec.source, "params",
                                   f"a sampled config is invalid: {err}") from None
        bundle = shape_bundle(cfg.data, spec.source, pinned)
        try:
            key = arch_key(cfg, bundle)
            if key not in built:
                built[key] = build_and_run(cfg, bundle)
        except Exception as err:  # noqa: BLE001 - any refusal of the model is the user's to see
            raise _build_error(spec.source, cfg, flat, bundle, err, pinned) from None
        feasible += not _violations(spec, built[key])
    if spec.constraints and not feasible:
        costs = list(built.values())
        raise SearchSpaceError(
            spec.source, "constraints",
            f"none of the {n} sampled configurations meets them (the smallest model has "
            f"{min(c.num_params for c in costs):.0f} parameters and "
            f"{min(c.flops for c in costs):.4g} FLOPs per image)")
    return PreflightResult(n, len(built), time.perf_counter() - t0)


def _violations(spec: SearchSpec, cost: Any) -> dict[str, float]:
    from .cost import violations

    return violations(spec.constraints, cost)


# ----------------------------------------------------------------------------- checks


def check_model_names(spec: SearchSpec, pinned: Collection[str] = ()) -> None:
    """Every value `model.name` can take is a registered model (all branches, no sampling)."""
    import eqcvt

    registered = eqcvt.list_models()
    for key, p in walk_params(spec.params):
        if key != "model.name":
            continue
        for name in p.corner_values() if isinstance(p, Domain) else [p]:
            if name not in registered:
                raise SearchSpaceError(
                    _where(spec.source, key, pinned), key,
                    f"{name!r} is not a registered model (registered: {', '.join(registered)})",
                )


def build_and_run(cfg: RunConfig, bundle: Any) -> Any:
    """engine.build_model on the bundle's shapes, then one image forward in eval mode;
    returns the model's Cost (pipeline/search/cost.py), counted on that forward."""
    import torch

    import eqcvt

    from ..engine import build_model
    from .cost import Cost

    model = build_model(cfg, bundle).eval()
    c, h, w = bundle.image_shape
    with torch.no_grad(), eqcvt.FlopCount() as counter:
        out = model(torch.randn(1, c, h, w, generator=torch.Generator().manual_seed(0)))
    want = (1, bundle.num_outputs)
    if tuple(out.shape) != want:
        raise ValueError(f"the model maps one image to {tuple(out.shape)}, expected {want}")
    return Cost(float(eqcvt.count_params(model)), counter.total)


def _build_error(source: str, cfg: RunConfig, flat: Mapping[str, Any], bundle: Any,
                 err: BaseException, pinned: Collection[str]) -> SearchSpaceError:
    """Name the keys whose value breaks the build: reset one at a time to its default and
    keep those whose reset makes the model build (all model keys if none does)."""
    keys = [k for k in flat if (k.startswith("model.") and k != "model.name"
                                and flat[k] is not None) or (k == "data.img_size" and flat[k])]
    defaults = RunConfig().to_flat()
    blamed = []
    for k in keys:
        try:
            build_and_run(cfg.with_updates({k: defaults[k]}), shape_bundle(
                cfg.with_updates({k: defaults[k]}).data, source, pinned))
        except Exception:  # noqa: BLE001 - still broken without this key: not the culprit
            continue
        blamed.append(k)
    blamed = blamed or keys or ["model.name"]
    values = ", ".join(f"{k}={flat[k]!r}" for k in keys)
    return SearchSpaceError(
        _where(source, blamed[0], pinned), ", ".join(blamed),
        f"model {cfg.model.name!r} cannot be built with {values or 'its preset values'} "
        f"on {'x'.join(map(str, bundle.image_shape))} images: {type(err).__name__}: {err}",
    )


def _where(source: str, key: str, pinned: Collection[str]) -> str:
    return COMMAND_LINE if key in pinned else source


def arch_key(cfg: RunConfig, bundle: Any) -> tuple[Any, ...]:
    from ..engine import model_kwargs

    kwargs = model_kwargs(cfg, bundle)
    return (cfg.model.name, tuple(sorted(kwargs.items())))


# ----------------------------------------------------------------------------- data shapes

_SHAPES: dict[DataConfig, Any] = {}


def shape_bundle(data: DataConfig, source: str, pinned: Collection[str]) -> Any:
    """A DataBundle with the data's shapes and classes and no images (val/test empty)."""
    if data not in _SHAPES:
        _SHAPES[data] = _read_shapes(data, source, pinned)
    return _SHAPES[data]


def _read_shapes(data: DataConfig, source: str, pinned: Collection[str]) -> Any:
    import torch

    from ..data.bundle import DataBundle, Split, center_crop

    task = data.task
    if data.source == "simulate":
        from ..data.simulate import TASK_CLASSES, get_preset

        try:
            c, h, w = get_preset(data.preset).image_shape
        except KeyError as err:
            raise SearchSpaceError(_where(source, "data.preset", pinned), "data.preset",
                                   str(err).strip("'\"")) from None
        classes = TASK_CLASSES[task]
    else:
        from ..data.shards import read_manifest

        try:
            manifest = read_manifest(data.path)
        except Exception as err:  # noqa: BLE001 - ShardError, missing folder: name the key
            raise SearchSpaceError(_where(source, "data.path", pinned), "data.path",
                                   str(err)) from None
        c, h, w = (int(d) for d in manifest["image_shape"])
        classes = ("axion",) if task == "regression" else tuple(manifest["classes"])
    try:
        image = center_crop(torch.zeros(1, c, h, w), data.img_size)
    except ValueError as err:
        raise SearchSpaceError(_where(source, "data.img_size", pinned), "data.img_size",
                               str(err)) from None
    targets = 1 if task == "regression" else 0  # the bundle's one regression target
    empty = Split(image[:0], torch.zeros(0, dtype=torch.int64), torch.zeros(0, targets))
    return DataBundle(task=task, classes=tuple(classes),
                      image_shape=tuple(int(d) for d in image.shape[1:]),  # type: ignore[arg-type]
                      train=None, val=empty, test=empty, stream=None, manifest={})


# ----------------------------------------------------------------------------- sampling


def sampled_configs(spec: SearchSpec, samples: int = DEFAULT_SAMPLES, seed: int = 0,
                    corners: bool = True) -> Iterator[dict[str, Any]]:
    """`samples` flat configs from a seeded stream, then configs that together take every
    corner value of every domain (branch paths forced, the rest drawn with the same seed)."""
    rng = random.Random(seed)
    for _ in range(samples):
        yield sample(spec, rng)
    for forced in corner_rows(spec.trial_params()) if corners else []:
        yield sample(spec, random.Random(seed), forced)


def corner_rows(params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Forced values covering each corner of each domain at least once, in few rows.

    Row j gives every domain of a scope its corner j (mod its count); a conditional choice
    contributes one row per row of each branch, so every branch is walked. A key of a
    branch is only forced together with the choice value that enables it.
    """
    columns: list[list[dict[str, Any]]] = []
    for key, p in params.items():
        if not isinstance(p, Domain):
            continue
        if isinstance(p, Choice) and p.has_branches:
            col = []
            for o in p.options:
                if isinstance(o, Branch):
                    col += [{key: o.value, **sub} for sub in corner_rows(o.params) or [{}]]
                else:
                    col.append({key: o})
            columns.append(col)
        else:
            columns.append([{key: v} for v in p.corner_values()])
    if not columns:
        return []
    n = max(len(c) for c in columns)
    return [{k: v for c in columns for k, v in c[j % len(c)].items()} for j in range(n)]
