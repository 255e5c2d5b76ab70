"""`study-<name>.md` from MLflow alone: per-dataset tables (mean ± std (n) over seeds), ROC
curves, accuracy against parameters with the Pareto front, the train-on/test-on matrix, the
new-class curve, and the published numbers in a table of their own."""

from __future__ import annotations

import json
import re
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from .. import tracking
from ..stats import spread
from . import figures

KIND_STUDY, KIND_PARENT = "study", "study_parent"  # as pipeline.tune.study writes them
TAG_STUDY, TAG_MODEL, TAG_DATASET, TAG_SEED = ("eqcvt.study", "eqcvt.study.model",
                                                "eqcvt.study.dataset", "eqcvt.study.seed")
CLASSIFICATION = ("test_acc", "test_auc_micro", "test_auc_macro", "val_acc")
REGRESSION = ("test_mse", "test_mae", "val_mse")
FIXED = ("num_params", "flops_per_image")
COST = ("num_params", "flops_per_image", "train_time_s", "images_per_s", "best_epoch")
INVARIANCE = ("rotation_logit_std", "invariance_error")

# SCIENCE.md: other data (their own simulations, the abstract's 10k binary set), other protocol
# (mostly best-epoch validation accuracy, one seed). Not comparable with this study's numbers.
REFERENCE = [
    ("EqCvT abstract (EqCvT, 64.8k params)", "binary, 10k images", "best-epoch val acc",
     "97.1%"),
    ("EqCvT abstract (CvT, 463k params)", "binary, 10k images", "best-epoch val acc", "98.1%"),
    ("EqCvT abstract, rotation logit std", "one val image, 8 x 45 deg", "EqCvT / CvT",
     "0.48 / 0.96"),
    ("CvT, Models I/II/III", "DeepLense 3-class", "best-epoch val acc", "91.54 / 99.41 / 99.04%"),
    ("steerable CNN (C4), Models I/II/III", "DeepLense 3-class, official test", "final epoch",
     "94.67 / 99.02 / 99.29%"),
    ("ResNet18, Models I/II/III", "DeepLense 3-class, official test", "final epoch",
     "94.48 / 99.13 / 99.09%"),
    ("equivariant CNNs C4/C8/D4/D8", "PyAutoLens set A", "micro AUC",
     "0.9969 / 0.9984 / 0.9982 / 0.9979"),
    ("axion-mass regression, Models I/II/III", "log10 m_a, test MAE (dex)", "best",
     "0.2737 / 0.2162 / 0.1262 (mean predictor 0.5)"),
]


def study_runs(tracker: tracking.Tracker, study: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(latest parent run, its finished child runs) of study `study`."""
    parents = [r for r in tracker.runs(kind=KIND_PARENT) if r["tags"].get(TAG_STUDY) == study]
    if not parents:
        raise ValueError(f"no study {study!r} in MLflow experiment {tracker.experiment!r} "
                         f"at {tracker.uri}")
    parent = max(parents, key=lambda r: r["start_time"] or 0)
    children = [r for r in tracker.runs(kind=KIND_STUDY)
                if r["tags"].get(tracking.TAG_PARENT) == parent["run_id"] and r["status"] == tracking.FINISHED]
    return parent, children


def _fixed(values: list[float]) -> str:
    """A value every seed shares (parameters, FLOPs): shown once."""
    distinct = sorted(set(values))
    return f"{distinct[0]:,.0f}" if len(distinct) == 1 else _cell(values)


def _interval(values: list[float]) -> str:
    """The 95% t-interval of the mean over seeds (needs n >= 2)."""
    s = spread(values)
    return f"[{s.low:.4g}, {s.high:.4g}]" if s.n >= 2 else "-"


def _cell(values: list[float], digits: int = 4) -> str:
    return spread(values).text(digits)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _by(children: list[dict[str, Any]], *tags: str) -> dict[tuple[str, ...], list[dict]]:
    out: dict[tuple[str, ...], list[dict]] = defaultdict(list)
    for r in children:
        out[tuple(r["tags"].get(t, "?") for t in tags)].append(r)
    return dict(sorted(out.items()))


def _vals(runs: list[dict[str, Any]], key: str) -> list[float]:
    return [r["metrics"][key] for r in runs if key in r["metrics"]]


def write_study_report(study: str, *, experiment: str | None = None,
                       tracking_uri: str | None = None, out: str | Path | None = None) -> Path:
    """Write the report (and its plots folder beside it); returns the markdown path."""
    experiment = experiment or f"study-{study}"
    tracker = tracking.Tracker(tracking_uri, experiment)
    parent, children = study_runs(tracker, study)
    out = Path(out or f"study-{study}.md")
    plots = out.with_name(out.stem + "_plots")
    plots.mkdir(parents=True, exist_ok=True)
    parts = [f"# Study `{study}`", "",
             f"MLflow experiment `{experiment}`, parent run `{parent['run_id']}`; "
             f"seeds {parent['params'].get('study.seeds', '?')}, budget "
             f"{parent['params'].get('study.budget', '?')}, {len(children)} finished trials "
             f"of {parent['params'].get('study.cells', '?')}.", "",
             "Protocol: each trial keeps its best validation epoch; the held-out test split is "
             "read once, after selection. Cells show mean ± sample std (n seeds).", ""]
    by_ds = _by(children, TAG_DATASET)
    for (ds,), runs in by_ds.items():
        regression = any("test_mse" in r["metrics"] for r in runs)
        keys = [*(REGRESSION if regression else CLASSIFICATION), *INVARIANCE, *COST]
        rows = []
        for (model,), mruns in _by(runs, TAG_MODEL).items():
            devices = sorted({r["tags"].get("eqcvt.device", "?") for r in mruns})
            rows.append([model, *(_fixed(_vals(mruns, k)) if k in FIXED else _cell(_vals(mruns, k))
                                  for k in keys), _interval(_vals(mruns, keys[0])),
                         ", ".join(devices)])
        parts += [f"## Dataset `{ds}`", "",
                  _table(["model", *keys, f"{keys[0]} 95% CI", "device"], rows), ""]
        if not regression:
            parts += _roc_section(tracker, runs, ds, plots, out)
        parts += _pareto_section(runs, ds, "test_mse" if regression else "test_acc", plots, out)
    parts += _generalisation_section(children)
    parts += _new_class_section(children, plots, out)
    parts += ["## Published reference numbers (other data, other protocol)", "",
              "From SCIENCE.md. Not comparable with the tables above: different images, "
              "mostly best-epoch validation accuracy, one seed.", "",
              _table(["work", "data", "protocol", "result"], [list(r) for r in REFERENCE]), ""]
    out.write_text("\n".join(parts))
    return out


def _rel(path: Path, out: Path) -> str:
    return f"{path.parent.name}/{path.name}" if path.parent != out.parent else path.name


def _roc_section(tracker: tracking.Tracker, runs: list[dict], ds: str, plots: Path, out: Path
                 ) -> list[str]:
    curves: dict[str, list[dict]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp:
        for r in runs:
            if "roc.json" not in tracker.list_artifacts(r["run_id"]):
                continue
            p = tracker.download(r["run_id"], "roc.json", Path(tmp) / r["run_id"])
            curves[r["tags"].get(TAG_MODEL, "?")].append(json.loads(Path(p).read_text()))
    if not curves:
        return []
    png = figures.roc_plot(curves, f"ROC on {ds} (test)", plots / f"roc_{_safe(ds)}.png")
    return [f"![ROC curves on {ds}]({_rel(png, out)})", ""]


def _pareto_section(runs: list[dict], ds: str, key: str, plots: Path, out: Path) -> list[str]:
    pts = {}
    for (model,), mruns in _by(runs, TAG_MODEL).items():
        s, params = spread(_vals(mruns, key)), _vals(mruns, "num_params")
        if s.n and params:
            pts[model] = (params[0], s.mean, s.std)
    if not pts:
        return []
    higher = not key.endswith(("mse", "mae"))
    png = figures.pareto_plot(pts, f"{key} against parameters on {ds}", key,
                              plots / f"pareto_{_safe(ds)}.png", higher_is_better=higher)
    names = sorted(pts)
    sign = 1 if higher else -1
    front = figures.pareto_front([(pts[n][0], sign * pts[n][1]) for n in names])
    return [f"![{key} against parameters on {ds}]({_rel(png, out)})", "",
            "Pareto front (fewest parameters for the accuracy): "
            + ", ".join(f"`{names[i]}`" for i in front), ""]


_AT = re.compile(r"^test_(acc|mse|mae):(.+)$")


def _generalisation_section(children: list[dict]) -> list[str]:
    """Rows: model / trained on; columns: tested on (its own test split is the diagonal)."""
    tested: set[str] = set()
    cells: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in children:
        model, ds = r["tags"].get(TAG_MODEL, "?"), r["tags"].get(TAG_DATASET, "?")
        metric = "acc" if "test_acc" in r["metrics"] else "mae"
        own = r["metrics"].get(f"test_{metric}")
        if own is not None:
            cells[(model, ds)][ds].append(own)
            tested.add(ds)
        for k, v in r["metrics"].items():
            m = _AT.match(k)
            if m and m.group(1) == metric:
                cells[(model, ds)][m.group(2)].append(v)
                tested.add(m.group(2))
    if not any(len(v) > 1 for v in cells.values()):
        return []
    cols = sorted(tested - {"shifted"}) + (["shifted"] if "shifted" in tested else [])
    rows = [[f"{model} / {ds}", *(_cell(cells[(model, ds)].get(c, [])) for c in cols)]
            for (model, ds) in sorted(cells)]
    return ["## Generalisation (train on row, test on column; acc, or MAE for regression)", "",
            _table(["model / trained on", *cols], rows), ""]


_K = re.compile(r"^new_class_acc_k(\d+)$")


def _new_class_section(children: list[dict], plots: Path, out: Path) -> list[str]:
    per: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in children:
        name = f"{r['tags'].get(TAG_MODEL, '?')} / {r['tags'].get(TAG_DATASET, '?')}"
        for k, v in r["metrics"].items():
            if m := _K.match(k):
                per[name][int(m.group(1))].append(v)
    if not per:
        return []
    ks = sorted({k for d in per.values() for k in d})
    rows = [[name, *(_cell(d.get(k, [])) for k in ks)] for name, d in sorted(per.items())]
    png = figures.k_plot({n: [(k, spread(v).mean) for k, v in d.items()] for n, d in per.items()},
                         "new class: fine-tuned with k images per class",
                         plots / "new_class.png")
    return ["## New class (pre-trained without one class, fine-tuned with k per class)", "",
            _table(["model / dataset", *(f"k={k}" for k in ks)], rows), "",
            f"![accuracy against k]({_rel(png, out)})", ""]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)
