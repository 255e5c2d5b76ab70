"""`eqcvt-search final`: the K best trials of a search, trained longer, tested, registered.

Each chosen trial's resolved config is read back from its MLflow run, trained with
`engine.fit` (the one training loop) for `--epochs` on train+val, from scratch or from the
trial's best weights, once per seed; the held-out test split is evaluated for each seed and
reported as mean and spread. One MLflow run of kind "final" per model; the best model (by the
search metric on test) is registered in the Model Registry with its config.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import tracking as T
from .config import RunConfig, flat_keys, parse_value
from .experiments import select_search


@dataclass
class FinalModel:
    trial_id: str
    trial_run_id: str
    run_id: str
    search_best: float
    test: dict[str, float]  # test_<m>_mean / test_<m>_std and equivariance means
    per_seed: list[dict[str, float]] = field(default_factory=list)


@dataclass
class FinalSummary:
    experiment: str
    metric: str
    mode: str
    models: list[FinalModel]
    registered: str | None = None  # "NAME/VERSION"
    best_trial: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, default=_jsonable)


def _jsonable(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return str(x)


def parse_params(params: Mapping[str, str]) -> dict[str, Any]:
    """MLflow params (strings) of a trial run -> the typed flat RunConfig dict."""
    return {key: parse_value(key, params[key]) for key in flat_keys() if key in params}


def search_settings(tracker: T.Tracker) -> tuple[str, str]:
    """(metric, mode) of the experiment's latest search run."""
    searches = sorted(tracker.runs(kind="search"), key=lambda r: r["start_time"] or 0)
    if not searches:
        raise ValueError(f"no search runs in MLflow experiment {tracker.experiment!r} "
                         f"at {tracker.uri}")
    params = searches[-1]["params"]
    return params.get("search.metric", "val_acc"), params.get("search.mode", "max")


def best_trials(tracker: T.Tracker, metric: str, mode: str, k: int,
                parent: str | None = None) -> list[dict[str, Any]]:
    """Trial runs ranked by their best value of `metric` (ended runs with a value only);
    `parent`: only the trials of that search run."""
    key = f"best_{metric}"
    extra = f"tags.`{T.TAG_PARENT}` = '{parent}'" if parent else ""
    runs = [r for r in tracker.runs(kind="trial", extra=extra)
            if r["status"] in (T.FINISHED, T.KILLED) and key in r["metrics"]
            and not math.isnan(r["metrics"][key])]
    runs.sort(key=lambda r: r["metrics"][key], reverse=(mode == "max"))
    return runs[:k]


def merge_train_val(bundle: Any) -> Any:
    """Final training sees train+val; val stays as the per-epoch monitor, test is untouched."""
    import dataclasses

    import torch

    from .data.bundle import Split

    if bundle.train is None:  # on-the-fly: the stream is already unlimited training data
        return bundle
    t, v = bundle.train, bundle.val
    merged = Split(torch.cat([t.images, v.images]), torch.cat([t.labels, v.labels]),
                   torch.cat([t.targets, v.targets]))
    return dataclasses.replace(bundle, train=merged)


def final_training(
    experiment: str,
    top_k: int,
    epochs: int,
    seeds: int = 3,
    *,
    tracking_uri: str | None = None,
    model_name: str | None = None,
    from_checkpoint: bool = False,
    overrides: Mapping[str, Any] | None = None,
    console: Any = None,
    pareto: bool = False,
) -> FinalSummary:
    from .data.bundle import open_data
    from .engine import fit
    from .evaluation import evaluate_model

    say = console.print if console is not None else (lambda *a, **k: None)
    search = select_search(experiment, tracking_uri)  # one search, never several mixed
    tracker, metric, mode = search.tracker, search.metric, search.mode
    test_metric = "test_" + metric.removeprefix("val_")
    # -- selection hook (pareto branch): --pareto retrains the Pareto set, not the top K
    if pareto:
        from .pareto import search_pareto_set

        chosen = search_pareto_set(search)
    else:
        chosen = best_trials(tracker, metric, mode, top_k, parent=search.run_id)
    # -- end of selection hook
    if not chosen:
        raise ValueError(f"no finished trials with best_{metric} in experiment {experiment!r}")
    summary = FinalSummary(experiment, metric, mode, [])
    work = Path(tempfile.mkdtemp(prefix="eqcvt-final-"))
    best_ckpts: dict[str, Path] = {}
    bundles: dict[str, Any] = {}
    try:
        for rank, run in enumerate(chosen, 1):
            tid = run["tags"].get(T.TAG_TRIAL_ID, run["run_id"][:8])
            base = RunConfig.from_flat(parse_params(run["params"])).with_updates(
                {"train.epochs": epochs, **(overrides or {})}
            )
            say(f"[bold]final {rank}/{len(chosen)}[/]: trial {tid} "
                f"(search best {metric} {run['metrics'][f'best_{metric}']:.4g}), "
                f"{epochs} epochs x {seeds} seeds")
            key = json.dumps(asdict(base.data), sort_keys=True)
            if key not in bundles:
                bundles[key] = merge_train_val(open_data(base.data, device="cpu"))
            bundle = bundles[key]
            init = None
            if from_checkpoint:
                init = tracker.download(run["run_id"], "best_checkpoint", work / f"init_{tid}")
            per_seed, seed_dirs = [], []
            history0: list[dict[str, float]] = []
            for s in range(seeds):
                cfg = base.with_updates({"train.seed": base.train.seed + s})
                res = fit(cfg, data=bundle, init_from=init,
                          checkpoint_root=work / tid / f"seed{s}", keep_checkpoints=1)
                out_dir = work / tid / f"eval{s}"
                m = evaluate_model(res.model, res.data.test, res.data.task, res.data.classes,
                                   out_dir, prefix="test")
                m["train_time_s"] = float(sum(h.get("epoch_time_s", 0.0) for h in res.history))
                per_seed.append(m)
                seed_dirs.append((res.checkpoint_dir, out_dir))
                if s == 0:
                    history0 = res.history
                say(f"  seed {s}: {test_metric} {m.get(test_metric, math.nan):.4g}")
            agg = _aggregate(per_seed)
            ref = tracker.start_run(
                f"final_{tid}", kind="final",
                tags={T.TAG_TRIAL_ID: tid, T.TAG_EXPERIMENT: experiment,
                      "eqcvt.trial_run_id": run["run_id"], T.TAG_GIT: T.git_commit(),
                      "eqcvt.final.from_checkpoint": str(from_checkpoint)},
                params={**{k: v for k, v in base.to_flat().items() if k != "train.seed"},
                        "final.seeds": ",".join(str(base.train.seed + s) for s in range(seeds)),
                        "final.data": "train+val"},
            )
            for h in history0:
                tracker.log_metrics(ref, {f"seed0/{k}": v for k, v in h.items()},
                                    step=int(h["epoch"]), skip_logged=False)
            for s, m in enumerate(per_seed):
                tracker.log_metrics(ref, m, step=s, skip_logged=False)
            tracker.log_metrics(ref, agg, step=0, skip_logged=False)
            best_seed = _best_seed(per_seed, test_metric, mode)
            ckpt, ev = seed_dirs[best_seed]
            tracker.log_artifacts(ref, ev, "evaluation")
            tracker.log_artifacts(ref, ckpt, "checkpoint")
            tracker.log_dict(ref, per_seed, "per_seed.json")
            best_ckpts[ref.run_id] = Path(shutil.copytree(ckpt, work / f"keep_{tid}"))
            summary.models.append(FinalModel(tid, run["run_id"], ref.run_id,
                                             float(run["metrics"][f"best_{metric}"]),
                                             agg, per_seed))
            tracker.end_run(ref, T.FINISHED)
        winner = _winner(summary, test_metric)
        name = model_name or f"eqcvt-{search.name}"
        ref = T.RunRef(run_id=winner.run_id, name=f"final_{winner.trial_id}")
        cfg_path = best_ckpts[winner.run_id] / "config.json"
        version = tracker.register_model(
            ref, best_ckpts[winner.run_id], name,
            config=json.loads(cfg_path.read_text()),
            description=f"trial {winner.trial_id} of {experiment}: {test_metric} "
                        f"{winner.test.get(test_metric + '_mean', math.nan):.4g}",
        )
        tracker.set_tags(ref, {"eqcvt.registered": f"{name}/{version}"})
        summary.registered, summary.best_trial = f"{name}/{version}", winner.trial_id
        say(f"[green]registered[/] {name}/{version} (trial {winner.trial_id})")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return summary


def _aggregate(per_seed: list[dict[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key in per_seed[0]:
        vals = np.array([m.get(key, math.nan) for m in per_seed], dtype=np.float64)
        out[f"{key}_mean"] = float(np.nanmean(vals)) if np.isfinite(vals).any() else math.nan
        out[f"{key}_std"] = float(np.nanstd(vals)) if np.isfinite(vals).any() else math.nan
    return out


def _best_seed(per_seed: list[dict[str, float]], metric: str, mode: str) -> int:
    vals = [m.get(metric, math.nan) for m in per_seed]
    finite = [(v, i) for i, v in enumerate(vals) if not math.isnan(v)]
    if not finite:
        return 0
    return (max(finite) if mode == "max" else min(finite))[1]


def _winner(summary: FinalSummary, test_metric: str) -> FinalModel:
    key = f"{test_metric}_mean"
    scored = [m for m in summary.models if not math.isnan(m.test.get(key, math.nan))]
    if not scored:
        return summary.models[0]
    pick = max if summary.mode == "max" else min
    return pick(scored, key=lambda m: m.test[key])
