"""StudySpec -> the grid of cells (model x dataset x seed), each a plain dict a Ray trial can
carry: its flat RunConfig, the datasets to test it on, and its new-class settings."""

from __future__ import annotations

from typing import Any

from ..config import RunConfig
from .spec import StudySpec, StudySpecError


def data_flat(cfg: RunConfig) -> dict[str, Any]:
    return {k: v for k, v in cfg.to_flat().items() if k.startswith("data.")}


def build_cells(spec: StudySpec) -> list[dict[str, Any]]:
    cells = []
    for ds in spec.datasets:
        for model in spec.models:
            for seed in spec.seeds:
                cfg = spec.run_config(model, ds, seed)
                generalise: dict[str, Any] = {}
                if spec.generalisation:
                    for other in spec.datasets:
                        if other.label != ds.label:
                            generalise[other.label] = data_flat(
                                spec.run_config(model, other, seed))
                    if ds.shifted is not None:
                        generalise["shifted"] = data_flat(cfg.with_updates(ds.shifted))
                nc = spec.new_class
                use_nc = (nc is not None and cfg.data.task == "multiclass"
                          and (not nc.datasets or ds.label in nc.datasets))
                cells.append({
                    "model": model.label, "dataset": ds.label, "seed": int(seed),
                    "config": cfg.to_flat(), "generalise": generalise,
                    "new_class": ({"k": list(nc.k), "hold_out": nc.hold_out,
                                   "epochs": nc.epochs} if use_nc else None),
                })
    return cells


def check_buildable(spec: StudySpec) -> None:
    """Every model builds on every dataset's image shape and classes (before Ray starts)."""
    from .protocol import build_model
    from .trial import open_test_only

    for ds in spec.datasets:
        cfg0 = spec.run_config(spec.models[0], ds, spec.seeds[0])
        flat = {**data_flat(cfg0), "data.n_val": 1, "data.n_test": 1}
        try:
            bundle = open_test_only(flat)
        except (ValueError, FileNotFoundError) as err:
            raise StudySpecError(f"{spec.path}: dataset {ds.label!r}: {err}") from None
        nc = spec.new_class
        if nc is not None and ds.label in nc.datasets and (
                len(bundle.classes) < 3 or (nc.hold_out and nc.hold_out not in bundle.classes)):
            raise StudySpecError(
                f"{spec.path}: new_class on dataset {ds.label!r} needs >= 3 classes including "
                f"hold_out {nc.hold_out!r}; it has {list(bundle.classes)}")
        for model in spec.models:
            cfg = spec.run_config(model, ds, spec.seeds[0])
            try:
                build_model(cfg, bundle)
            except (ValueError, TypeError, RuntimeError) as err:
                raise StudySpecError(
                    f"{spec.path}: model {model.label!r} cannot be built for dataset "
                    f"{ds.label!r} {bundle.image_shape}: {err}") from None
