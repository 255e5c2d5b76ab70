"""`eqcvt-search report`: a markdown leaderboard of a search's trials and final runs.

Everything comes from MLflow (so it works after the cluster is gone): per trial the sampled
values, best value of the search metric, invariance metrics, parameter count and cost
(epochs, training time); per final model the test metrics as mean and spread over seeds.
Plots (learning curves, metric against size, final test bars) are written beside the file,
then the trade-off sections (pipeline/report_tradeoff.py): Pareto fronts against parameters
and FLOPs with hypervolumes, parameter importance, parallel coordinates, rejected configs.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any

from . import tracking
from .config import flat_keys
from .experiments import select_search
from .final import parse_params
from .live import fmt, fmt_count
from .report_tradeoff import tradeoff_sections


def _fmt(x: Any) -> str:
    return fmt(x, sci_from=1e5)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def varying_keys(runs: list[dict[str, Any]]) -> list[str]:
    """Config keys whose value differs between trials (what the search sampled)."""
    keys = [k for k in flat_keys() if k not in ("train.seed",)]
    out = []
    for k in keys:
        values = {r["params"].get(k) for r in runs}
        if len(values) > 1:
            out.append(k)
    return out


def write_report(experiment: str, *, tracking_uri: str | None = None,
                 out: str | Path | None = None) -> Path:
    """Report of one search: `experiment` names a search, or an MLflow experiment (its
    latest search; see pipeline.experiments)."""
    from . import plots

    sel = select_search(experiment, tracking_uri)
    tracker, searches = sel.tracker, [sel.search]
    metric, mode = sel.metric, sel.mode
    trials = sel.trials()
    finals = sel.finals(trials)
    out_path = Path(out) if out else Path(f"report_{experiment}.md")
    plot_dir = out_path.parent / f"{out_path.stem}_plots"
    key = f"best_{metric}"
    ranked = sorted(
        trials,
        key=lambda r: (math.isnan(r["metrics"].get(key, math.nan)),
                       -r["metrics"].get(key, 0.0) if mode == "max" else
                       r["metrics"].get(key, 0.0)),
    )
    keys = varying_keys(trials)[:10]
    lines = [f"# Search report: {sel.name}", "",
             f"MLflow experiment `{tracker.experiment}`", ""]
    for s in searches:
        p = s["params"]
        lines.append(
            f"- search run `{s['run_id']}` ({s['status']}): {p.get('search.name', '')}, "
            f"scheduler {p.get('search.scheduler', '')}, searcher {p.get('search.searcher', '')}, "
            f"{p.get('search.num_samples', '?')} trials x <= {p.get('search.max_epochs', '?')} "
            f"epochs, metric {metric} ({mode}); git {s['tags'].get(tracking.TAG_GIT, '?')}"
        )
    counts: dict[str, int] = {}
    for r in trials:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    lines += ["", f"Trials: {len(trials)} ({', '.join(f'{n} {s}' for s, n in counts.items())})",
              "", "## Trials", ""]
    other = "val_mae" if any("val_mae" in r["metrics"] for r in trials) else "val_auc_micro"
    cost = cost_columns(trials)
    header = ["#", "trial", "status", f"best {metric}", f"{other} (last)", "epochs",
              "invariance err", "rot. logit std", *cost.values(), "train time [s]",
              *[k.split('.', 1)[1] for k in keys]]
    rows = []
    for i, r in enumerate(ranked, 1):
        m, values = r["metrics"], parse_params(r["params"])
        rows.append([
            i, r["tags"].get(tracking.TAG_TRIAL_ID, r["run_id"][:8]), r["status"],
            m.get(key), m.get(other), int(m.get("epoch", 0)), m.get("invariance_error"),
            m.get("rotation_logit_std"), *[fmt_count(m.get(c, math.nan)) for c in cost],
            m.get("time_total_s"), *[values.get(k, "") for k in keys],
        ])
    lines.append(_table(header, rows))

    name_of = metric.removeprefix("val_")
    val_metric, test_metric = f"val_{name_of}", f"test_{name_of}"
    if finals:
        lines += ["", "## Final runs (mean ± sample std (n) over seeds)", "",
                  f"Ranked by {val_metric} (what selected the registered model); the test "
                  "split was read once per trained model, after that selection.", ""]
        fh = ["trial", "status", val_metric, test_metric, f"{test_metric} 95% CI",
              "test_auc_micro", "test_mae", "invariance err", "params", "train time [s]",
              "registered"]
        frows = []
        sign = -1.0 if mode == "max" else 1.0
        for r in sorted(finals, key=lambda r: sign * r["metrics"].get(
                f"{val_metric}_mean", -sign * math.inf)):
            m = r["metrics"]
            frows.append([
                r["tags"].get(tracking.TAG_TRIAL_ID, ""), r["status"], _pm(m, val_metric),
                _pm(m, test_metric), _ci(m, test_metric), _pm(m, "test_auc_micro"),
                _pm(m, "test_mae"), _pm(m, "invariance_error"),
                _int(m.get("num_params_mean")), m.get("train_time_s_mean"),
                r["tags"].get("eqcvt.registered", ""),
            ])
        lines.append(_table(fh, frows))

    lines += ["", "## Plots", ""]
    curves = {}
    for r in ranked[:12]:
        with contextlib.suppress(Exception):
            curves[r["tags"].get(tracking.TAG_TRIAL_ID, r["run_id"][:8])] = tracker.metric_history(
                r["run_id"], metric)
    if curves:
        p = plots.curves_png(curves, metric, plot_dir / "curves.png")
        lines.append(f"![{metric} per epoch]({p.relative_to(out_path.parent)})")
    sized = [(r["metrics"]["num_params"], r["metrics"][key]) for r in trials
             if "num_params" in r["metrics"] and key in r["metrics"]]
    if sized:
        xs, ys = zip(*sized, strict=True)
        p = plots.scatter_png(xs, ys, "trainable parameters", f"best {metric}",
                              plot_dir / "size.png", log_x=True)
        lines.append(f"![best {metric} vs size]({p.relative_to(out_path.parent)})")
    if finals:
        vals = {r["tags"].get(tracking.TAG_TRIAL_ID, r["run_id"][:8]):
                r["metrics"].get(f"{test_metric}_mean", math.nan) for r in finals}
        errs = {r["tags"].get(tracking.TAG_TRIAL_ID, r["run_id"][:8]):
                r["metrics"].get(f"{test_metric}_std", 0.0) for r in finals}
        p = plots.bar_png(vals, errs, test_metric, plot_dir / "final.png")
        lines.append(f"![final {test_metric}]({p.relative_to(out_path.parent)})")
    lines += tradeoff_sections(tracker, sel.run_id, trials, metric, mode, plot_dir,
                               lambda p: p.relative_to(out_path.parent), _table)
    lines += ["", f"MLflow: `mlflow ui --backend-store-uri {tracker.uri}`", ""]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text("\n".join(lines))
    return out_path


def cost_columns(runs: list[dict[str, Any]]) -> dict[str, str]:
    """Metric key -> column title: the parameter count always, FLOPs once trials log a
    `flops` metric (nothing measures them yet; this is where they appear)."""
    cols = {"num_params": "params"}
    if any("flops" in r["metrics"] for r in runs):
        cols["flops"] = "FLOPs"
    return cols


def _pm(m: dict[str, float], key: str) -> str:
    """mean ± std (n), with n where the run logged it."""
    mean, std, n = m.get(f"{key}_mean"), m.get(f"{key}_std"), m.get(f"{key}_n")
    if mean is None or math.isnan(mean):
        return "-"
    count = f" (n={int(n)})" if n is not None and math.isfinite(n) else ""
    return f"{_fmt(mean)} ± {_fmt(std)}{count}"


def _ci(m: dict[str, float], key: str) -> str:
    low, high = m.get(f"{key}_ci_low"), m.get(f"{key}_ci_high")
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return "-"
    return f"[{_fmt(low)}, {_fmt(high)}]"


def _int(x: Any) -> Any:
    return int(x) if isinstance(x, float) and math.isfinite(x) else x
