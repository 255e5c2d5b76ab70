"""Study YAML -> `StudySpec`, validated in full on the driver before Ray starts.

    name: quick
    seeds: 2                       # or a list [0, 1, 2]
    budget: {epochs: 2}            # or {images: 20000}: images seen per model, any batch size
    train: {lr: 1.0e-3}            # shared train.* values; a model's own `train` wins
    models:
      - {label: eqcvt, model: {name: eqcvt_stem, fields: 2}, train: {batch_size: 8}}
      - {from_search: {experiment: my-search, top_k: 2}}
    datasets:
      - {label: model_ii, data: {preset: model_ii, task: multiclass}, shifted: {preset: model_iii}}
    generalisation: true           # test every model on every compatible dataset, and shifted
    new_class: {k: [16, 64, 256], hold_out: axion, datasets: [model_ii]}   # or false

Unknown keys are errors naming the key and the file (StudySpecError, exit 2).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import RunConfig, split_key

TOP = {"name", "description", "seeds", "budget", "train", "models", "datasets",
       "generalisation", "new_class"}
MODEL_KEYS = {"label", "model", "train", "from_search"}
SEARCH_KEYS = {"experiment", "top_k", "tracking_uri"}
DATA_KEYS = {"label", "data", "shifted"}
NEW_CLASS_KEYS = {"k", "hold_out", "datasets", "epochs"}
DEFAULT_K = (16, 64, 256)
_LABEL = re.compile(r"^[A-Za-z0-9_.:-]+$")


class StudySpecError(ValueError):
    """A study file that cannot run; the message names the file and the key."""


@dataclass(frozen=True)
class ModelEntry:
    label: str
    flat: dict[str, Any]  # model.* and train.* dotted keys


@dataclass(frozen=True)
class DatasetEntry:
    label: str
    flat: dict[str, Any]  # data.* dotted keys
    shifted: dict[str, Any] | None = None  # data.* keys of the shifted copy (None = none)


@dataclass(frozen=True)
class NewClassSpec:
    k: tuple[int, ...] = DEFAULT_K
    hold_out: str | None = None  # class left out of pre-training (None = the last class)
    datasets: tuple[str, ...] = ()  # dataset labels ((): every classification dataset)
    epochs: int | None = None  # fine-tuning epochs (None = the budget's)


@dataclass(frozen=True)
class StudySpec:
    name: str
    path: str
    seeds: tuple[int, ...]
    budget: dict[str, int]
    train: dict[str, Any]
    models: tuple[ModelEntry, ...]
    datasets: tuple[DatasetEntry, ...]
    generalisation: bool = True
    new_class: NewClassSpec | None = None
    text: str = field(default="", repr=False)

    def run_config(self, model: ModelEntry, dataset: DatasetEntry, seed: int) -> RunConfig:
        """The RunConfig of one (model, dataset, seed) cell, budget applied."""
        flat = {**self.train, **model.flat, **dataset.flat, "train.seed": int(seed)}
        cfg = RunConfig.from_flat(flat)
        return cfg.with_updates({"train.epochs": self.epochs_for(cfg)})

    def epochs_for(self, cfg: RunConfig) -> int:
        if "epochs" in self.budget:
            return int(self.budget["epochs"])
        return max(1, math.ceil(self.budget["images"] / max(1, cfg.data.n_train)))


def _err(path: str, msg: str) -> StudySpecError:
    return StudySpecError(f"{path}: {msg}")


def _keys(path: str, where: str, obj: Any, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(obj, Mapping):
        raise _err(path, f"{where} must be a mapping, got {obj!r}")
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise _err(path, f"unknown key {where}.{unknown[0]} (allowed: {', '.join(sorted(allowed))})")
    return dict(obj)


def _section(path: str, where: str, obj: Any, section: str) -> dict[str, Any]:
    """{lr: 1e-3} under `section` -> {"train.lr": 1e-3}, each key checked against the config."""
    if obj is None:
        return {}
    if not isinstance(obj, Mapping):
        raise _err(path, f"{where} must be a mapping of {section}.* values, got {obj!r}")
    out = {}
    for k, v in obj.items():
        key = f"{section}.{k}"
        try:
            split_key(key)
        except ValueError as err:
            raise _err(path, f"{where}: {err}") from None
        out[key] = v
    return out


def parse_study(text: str, path: str = "<study>", resolve_search: Any = None) -> StudySpec:
    """Parse and validate; `resolve_search(experiment, top_k, uri)` -> [(label, flat)] expands
    `from_search` entries (default: read the trials from MLflow)."""
    import yaml

    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise _err(path, f"not valid YAML: {err}") from None
    raw = _keys(path, "study", raw, TOP)
    name = raw.get("name") or Path(path).stem
    seeds = raw.get("seeds", 3)
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            raise _err(path, f"seeds must be >= 1, got {seeds}")
        seeds = list(range(seeds))
    if not isinstance(seeds, list) or not seeds or not all(
            isinstance(s, int) and s >= 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise _err(path, f"seeds must be a count or a list of distinct ints >= 0, got {seeds!r}")
    budget = _keys(path, "budget", raw.get("budget", {"epochs": 10}), {"epochs", "images"})
    if len(budget) != 1 or not all(isinstance(v, int) and v >= 1 for v in budget.values()):
        raise _err(path, f"budget needs exactly one of epochs or images (an int >= 1), got {budget}")
    shared = _section(path, "train", raw.get("train"), "train")
    if "train.epochs" in shared:
        raise _err(path, "train.epochs: the budget sets the epochs of every model (budget.epochs)")

    models: list[ModelEntry] = []
    for i, m in enumerate(raw.get("models") or []):
        where = f"models[{i}]"
        m = _keys(path, where, m, MODEL_KEYS)
        if "from_search" in m:
            fs = _keys(path, f"{where}.from_search", m["from_search"], SEARCH_KEYS)
            if "experiment" not in fs:
                raise _err(path, f"{where}.from_search.experiment is required")
            resolve = resolve_search or _trials_of_search
            for label, flat in resolve(fs["experiment"], int(fs.get("top_k", 1)),
                                       fs.get("tracking_uri")):
                models.append(ModelEntry(label, {**flat, **_section(
                    path, f"{where}.train", m.get("train"), "train")}))
            continue
        mflat = _section(path, f"{where}.model", m.get("model"), "model")
        if "model.name" not in mflat:
            raise _err(path, f"{where}.model.name is required (a registered model)")
        tflat = _section(path, f"{where}.train", m.get("train"), "train")
        if "train.epochs" in tflat:
            raise _err(path, f"{where}.train.epochs: the budget is shared (budget.epochs)")
        models.append(ModelEntry(str(m.get("label") or mflat["model.name"]), {**mflat, **tflat}))
    datasets: list[DatasetEntry] = []
    for i, d in enumerate(raw.get("datasets") or []):
        where = f"datasets[{i}]"
        d = _keys(path, where, d, DATA_KEYS)
        dflat = _section(path, f"{where}.data", d.get("data"), "data")
        shifted = d.get("shifted")
        sflat = None if shifted is None else _section(path, f"{where}.shifted", shifted, "data")
        label = str(d.get("label") or dflat.get("data.preset") or f"dataset{i}")
        datasets.append(DatasetEntry(label, dflat, sflat))
    for kind, entries in (("models", models), ("datasets", datasets)):
        bad = [e.label for e in entries if not _LABEL.match(e.label)]
        if bad:
            raise _err(path, f"{kind}: label {bad[0]!r} may use only letters, digits, _ - . "
                             "and : (it becomes part of MLflow metric names)")
        if not entries:
            raise _err(path, f"{kind}: at least one entry is needed")
        labels = [e.label for e in entries]
        if len(set(labels)) != len(labels):
            raise _err(path, f"{kind}: labels must be unique, got {labels}")

    new_class = None
    nc = raw.get("new_class", False)
    if nc not in (False, None):
        nc = _keys(path, "new_class", {} if nc is True else nc, NEW_CLASS_KEYS)
        ks = nc.get("k", list(DEFAULT_K))
        if not isinstance(ks, list) or not ks or not all(isinstance(k, int) and k >= 1 for k in ks):
            raise _err(path, f"new_class.k must be a list of ints >= 1, got {ks!r}")
        on = nc.get("datasets") or []
        missing = sorted(set(on) - {d.label for d in datasets})
        if missing:
            raise _err(path, f"new_class.datasets: unknown dataset label {missing[0]!r}")
        new_class = NewClassSpec(tuple(ks), nc.get("hold_out"), tuple(on), nc.get("epochs"))

    spec = StudySpec(name=str(name), path=path, seeds=tuple(seeds), budget=budget, train=shared,
                     models=tuple(models), datasets=tuple(datasets),
                     generalisation=bool(raw.get("generalisation", True)),
                     new_class=new_class, text=text)
    for model in spec.models:  # every cell's config must build (types, ranges, names)
        for ds in spec.datasets:
            try:
                cfg = spec.run_config(model, ds, spec.seeds[0])
                if ds.shifted is not None:
                    cfg.with_updates(ds.shifted)
            except ValueError as err:
                raise _err(path, f"model {model.label!r} on dataset {ds.label!r}: {err}") from None
    return spec


def _trials_of_search(experiment: str, top_k: int, uri: str | None
                      ) -> list[tuple[str, dict[str, Any]]]:
    """The top-K trials of a search experiment, as model.* + train.* keys (data is the study's)."""
    from .. import tracking
    from ..experiments import select_search
    from ..final import best_trials, parse_params

    search = select_search(experiment, uri)  # one search, as `final` picks it
    out = []
    for run in best_trials(search.tracker, search.metric, search.mode, top_k,
                           parent=search.run_id):
        flat = {k: v for k, v in parse_params(run["params"]).items()
                if k.startswith(("model.", "train.")) and k not in ("train.epochs", "train.seed")}
        tid = run["tags"].get(tracking.TAG_TRIAL_ID, run["run_id"][:8])
        out.append((f"{experiment}:{tid}", flat))
    if not out:
        raise StudySpecError(f"search experiment {experiment!r} has no finished trials")
    return out


def study_path(name: str) -> Path:
    """A study by path, or by the name of a shipped study (search_spaces/studies/NAME.yaml)."""
    from search_spaces import find_shipped

    return find_shipped(name, "search_spaces.studies", what="study")


def load_study(name: str) -> StudySpec:
    path = study_path(name)
    return parse_study(path.read_text(), str(path))
