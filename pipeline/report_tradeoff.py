"""The report's trade-off sections: Pareto fronts of the search metric against parameters
and FLOPs with their hypervolumes, fANOVA parameter importance, a parallel-coordinates plot
of the sampled values, and the configurations the constraints rejected before training.

Everything from MLflow: trial runs' params and metrics, and the search run's
`request.json` (its domains, for importance) and `rejected_configs.json`.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .final import parse_params
from .live import fmt_count
from .pareto import front_2d
from .search.cost import REJECTED_FILE
from .tracking.tags import TAG_TRIAL_ID

COSTS = (("num_params", "parameters"), ("flops", "FLOPs per image"))


def search_spec(tracker: Any, search_run_id: str) -> Any:
    """The search's SearchSpec, rebuilt from the request saved on its run (None if absent)."""
    from .search import SearchRequest

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = tracker.download(search_run_id, "request.json", tmp)
            return SearchRequest.from_json(Path(path).read_text()).spec()
        except Exception:  # noqa: BLE001 - an older search, or a file edited since
            return None


def tradeoff_sections(tracker: Any, search_run_id: str, trials: list[dict[str, Any]],
                      metric: str, mode: str, plot_dir: Path,
                      rel: Callable[[Path], Path],
                      table: Callable[[list[str], list[list[Any]]], str]) -> list[str]:
    """Markdown lines; `rel` makes a plot path relative to the report, `table` renders."""
    from . import plots

    key = f"best_{metric}"
    done = [r for r in trials if math.isfinite(r["metrics"].get(key, math.nan))]
    lines: list[str] = []
    fronts = []
    for cost, title in COSTS:
        rows = [r for r in done if math.isfinite(r["metrics"].get(cost, math.nan))]
        if len(rows) < 2:
            continue
        xs = [r["metrics"][cost] for r in rows]
        ys = [r["metrics"][key] for r in rows]
        front = front_2d(xs, ys, mode)
        png = plots.pareto_png(xs, ys, front.indices, title, f"best {metric}",
                               plot_dir / f"pareto_{cost}.png", front.reference)
        fronts.append((cost, title, rows, front, png))
    if fronts:
        lines += ["", "## Pareto fronts", ""]
        for cost, title, rows, front, png in fronts:
            rc, rv = front.reference
            lines += [
                f"Best {metric} against {title}: {len(front.indices)} of {len(rows)} trials on "
                f"the front; hypervolume {front.hypervolume:.4g} ({title} x {metric}), measured "
                f"from the reference point ({title} = {fmt_count(rc)}, {metric} = {rv:.4g}): "
                f"1.1 x the largest {title} and the worst {metric} of the trials.", "",
                table(["trial", title, f"best {metric}"],
                      [[rows[i]["tags"].get(TAG_TRIAL_ID, rows[i]["run_id"][:8]),
                        fmt_count(rows[i]["metrics"][cost]), rows[i]["metrics"][key]]
                       for i in front.indices]),
                "", f"![Pareto front, {title}]({rel(png)})", "",
            ]
    spec = search_spec(tracker, search_run_id)
    if spec is not None and done:
        lines += _importance(spec, done, key, metric, mode, plot_dir, rel, table)
    lines += _rejected(tracker, search_run_id, table)
    return lines


def _importance(spec: Any, done: list[dict[str, Any]], key: str, metric: str, mode: str,
                plot_dir: Path, rel: Callable[[Path], Path],
                table: Callable[[list[str], list[list[Any]]], str]) -> list[str]:
    from . import plots
    from .importance import param_importance
    from .search import Domain, walk_params

    flats = [parse_params(r["params"]) for r in done]
    values = [r["metrics"][key] for r in done]
    lines: list[str] = []
    imp = param_importance(spec.trial_params(), list(zip(flats, values, strict=True)), mode)
    if imp:
        png = plots.bar_png(imp, None, f"importance for {metric}",
                            plot_dir / "importance.png")
        lines += ["", f"## Parameter importance (fANOVA, {metric})", "",
                  table(["parameter", "importance"], [[k, v] for k, v in imp.items()]),
                  "", f"![parameter importance]({rel(png)})", ""]
    sampled = [k for k, p in walk_params(spec.params) if isinstance(p, Domain)]
    sampled += list(spec.hyperparam_mutations)
    keys = [k for k in dict.fromkeys(sampled) if any(k in f for f in flats)]
    if keys:
        png = plots.parallel_png(flats, keys, values, f"best {metric}",
                                 plot_dir / "parallel.png")
        lines += ["", "## Sampled values against the metric", "",
                  f"![parallel coordinates]({rel(png)})", ""]
    return lines


def _rejected(tracker: Any, search_run_id: str,
              table: Callable[[list[str], list[list[Any]]], str]) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            rows = json.loads(Path(tracker.download(search_run_id, REJECTED_FILE, tmp))
                              .read_text())
        except Exception:  # noqa: BLE001 - no constraints in this search
            return []
    lines = ["", "## Rejected before training (constraints)", "",
             f"{len(rows)} sampled configurations broke a constraint and never started a trial."]
    if rows:
        keys = list(dict.fromkeys(k for r in rows for k in r["params"]))
        lines += ["", table(["violated", "params", "FLOPs", *[k.split(".", 1)[-1] for k in keys]],
                            [[", ".join(r["violated"]), fmt_count(r["num_params"]),
                              fmt_count(r["flops"]), *[r["params"].get(k, "") for k in keys]]
                             for r in rows])]
    return [*lines, ""]
