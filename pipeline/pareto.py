"""Pareto fronts of finished trials: which trials no other trial beats on every objective,
the 2-D hypervolume of a front, and the Pareto set `eqcvt-search final --pareto` retrains.

Plain numbers in; no MLflow, no Optuna.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


def _dominates(a: Sequence[float], b: Sequence[float], modes: Sequence[str]) -> bool:
    """a is no worse than b on every objective and better on one."""
    better = False
    for x, y, m in zip(a, b, modes, strict=True):
        if (x < y) if m == "max" else (x > y):
            return False
        if x != y:
            better = True
    return better


def pareto_indices(points: Sequence[Sequence[float]], modes: Sequence[str]) -> list[int]:
    """Indices of the non-dominated points (NaN points never belong); ties all kept."""
    ok = [i for i, p in enumerate(points) if all(math.isfinite(v) for v in p)]
    return [i for i in ok
            if not any(_dominates(points[j], points[i], modes) for j in ok if j != i)]


@dataclass(frozen=True)
class Front:
    """A 2-D front: cost (minimised) against a metric, with its hypervolume."""

    indices: list[int]  # into the points given, sorted by cost
    hypervolume: float
    reference: tuple[float, float]  # (cost, metric) the hypervolume is measured from


def reference_point(costs: Sequence[float], values: Sequence[float], mode: str
                    ) -> tuple[float, float]:
    """1.1 x the largest cost, and the worst metric value among the trials."""
    cs = [c for c in costs if math.isfinite(c)]
    vs = [v for v in values if math.isfinite(v)]
    worst = min(vs) if mode == "max" else max(vs)
    return 1.1 * max(cs), worst


def hypervolume_2d(points: Sequence[tuple[float, float]], reference: tuple[float, float],
                   mode: str) -> float:
    """Area dominated by the points (cost minimised, metric by `mode`) up to the reference."""
    rc, rv = reference
    sign = 1.0 if mode == "max" else -1.0
    pts = sorted((c, sign * v) for c, v in points if c <= rc and sign * v >= sign * rv)
    area, best = 0.0, sign * rv
    for i, (c, v) in enumerate(pts):  # sweep by cost: each step adds the new best's strip
        nxt = pts[i + 1][0] if i + 1 < len(pts) else rc
        best = max(best, v)
        area += (nxt - c) * (best - sign * rv)
    return area


def front_2d(costs: Sequence[float], values: Sequence[float], mode: str) -> Front:
    """The front of (cost min, metric `mode`) and its hypervolume w.r.t. reference_point."""
    pts = list(zip(costs, values, strict=True))
    idx = sorted(pareto_indices(pts, ("min", mode)), key=lambda i: costs[i])
    ref = reference_point(costs, values, mode)
    return Front(idx, hypervolume_2d([pts[i] for i in idx], ref, mode), ref)


def objective_values(run: dict[str, Any], objectives: Sequence[tuple[str, str]]
                     ) -> list[float]:
    """A trial run's value of each objective: the first (the search metric) at its best
    epoch, the others (costs, or other metrics) as last logged."""
    m = run["metrics"]
    first, *rest = objectives
    out = [float(m.get(f"best_{first[0]}", math.nan))]
    out += [float(m.get(name, math.nan)) for name, _ in rest]
    return out


def pareto_trials(runs: Sequence[dict[str, Any]], objectives: Sequence[tuple[str, str]]
                  ) -> list[dict[str, Any]]:
    """The runs on the Pareto front of the objectives (one objective: of it against the
    parameter count), best first by the first objective."""
    objs = list(objectives) if len(objectives) > 1 else [*objectives, ("num_params", "min")]
    points = [objective_values(r, objs) for r in runs]
    chosen = [runs[i] for i in pareto_indices(points, [m for _, m in objs])]
    key = f"best_{objs[0][0]}"
    return sorted(chosen, key=lambda r: r["metrics"][key], reverse=objs[0][1] == "max")


def search_objectives(search_params: dict[str, str]) -> list[tuple[str, str]]:
    """(metric, mode) of each objective of a search run (params `search.objectives`, else
    the one `search.metric`)."""
    import json

    raw = search_params.get("search.objectives")
    if raw:
        return [(str(m), str(d)) for m, d in json.loads(raw)]
    return [(search_params.get("search.metric", "val_acc"),
             search_params.get("search.mode", "max"))]


def search_pareto_set(selection: Any) -> list[dict[str, Any]]:
    """The finished trials of a search (pipeline.experiments.SearchSelection) on its Pareto
    front: `eqcvt-search final --pareto`."""
    objectives = search_objectives(selection.search["params"])
    key = f"best_{objectives[0][0]}"
    runs = [r for r in selection.trials() if r["status"] in ("FINISHED", "KILLED")
            and math.isfinite(r["metrics"].get(key, math.nan))]
    return pareto_trials(runs, objectives)
