"""`eqcvt-search final`: the K best trials of a search, trained longer, tested, registered.

Each chosen trial's resolved config is read back from its MLflow run, trained with
`engine.fit` (the one training loop) for `--epochs` on its training data (the train split, or
the simulator's stream in on-the-fly mode), from scratch or from the trial's best weights, once
per seed. The honest protocol (`pipeline.study.protocol`): the checkpoint is the best
validation epoch, the seed kept and the model registered are the best on validation; the
held-out test split is read once per trained model, after selection, and never feeds back.
One MLflow run of kind "final" per model logs `val_<m>_mean/_std` and `test_<m>_mean/_std`
(sample std over seeds, 95% t-interval, n; `pipeline.stats`).
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

from . import tracking
from .config import RunConfig, flat_keys, parse_value
from .experiments import select_search
from .stats import aggregate, best_index
from .study import protocol


@dataclass
class FinalModel:
    trial_id: str
    trial_run_id: str
    run_id: str
    search_best: float
    test: dict[str, float]  # val_/test_<m>_mean/_std/_ci_low/_ci_high/_n, equivariance
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


def best_trials(tracker: tracking.Tracker, metric: str, mode: str, k: int,
                parent: str | None = None) -> list[dict[str, Any]]:
    """Trial runs ranked by their best value of `metric` (ended runs with a value only);
    `parent`: only the trials of that search run."""
    key = f"best_{metric}"
    extra = f"tags.`{tracking.TAG_PARENT}` = '{parent}'" if parent else ""
    runs = [r for r in tracker.runs(kind="trial", extra=extra)
            if r["status"] in (tracking.FINISHED, tracking.KILLED) and key in r["metrics"]
            and not math.isnan(r["metrics"][key])]
    runs.sort(key=lambda r: r["metrics"][key], reverse=(mode == "max"))
    return runs[:k]


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
    say = console.print if console is not None else (lambda *a, **k: None)
    search = select_search(experiment, tracking_uri)  # one search, never several mixed
    tracker, metric, mode = search.tracker, search.metric, search.mode
    name_of = metric.removeprefix("val_")
    val_metric, test_metric = f"val_{name_of}", f"test_{name_of}"
    if pareto:  # the Pareto set of the search's objectives instead of the top K
        from .pareto import search_pareto_set

        chosen = search_pareto_set(search)
    else:
        chosen = best_trials(tracker, metric, mode, top_k, parent=search.run_id)
    if not chosen:
        raise ValueError(f"no finished trials with best_{metric} in experiment {experiment!r}")
    summary = FinalSummary(experiment, metric, mode, [])
    work = Path(tempfile.mkdtemp(prefix="eqcvt-final-"))
    best_ckpts: dict[str, Path] = {}
    bundles: dict[str, Any] = {}  # shard datasets, opened once
    try:
        for rank, run in enumerate(chosen, 1):
            tid = run["tags"].get(tracking.TAG_TRIAL_ID, run["run_id"][:8])
            base = RunConfig.from_flat(parse_params(run["params"])).with_updates(
                {"train.epochs": epochs, **(overrides or {})}
            )
            trained_on = protocol.training_description(base.data)
            say(f"[bold]final {rank}/{len(chosen)}[/]: trial {tid} "
                f"(search best {metric} {run['metrics'][f'best_{metric}']:.4g}), "
                f"{epochs} epochs x {seeds} seeds on the {trained_on}")
            init = None
            if from_checkpoint:
                init = tracker.download(run["run_id"], "best_checkpoint", work / f"init_{tid}")
            per_seed, seed_dirs = [], []
            history0: list[dict[str, float]] = []
            for s in range(seeds):
                cfg = base.with_updates({"train.seed": base.train.seed + s})
                ckpt, out_dir, m, history = _train_one_seed(cfg, init, work / tid / f"s{s}",
                                                            bundles)
                per_seed.append(m)
                seed_dirs.append((ckpt, out_dir))
                if s == 0:
                    history0 = history
                say(f"  seed {s}: {val_metric} {m.get(val_metric, math.nan):.4g} (selects), "
                    f"{test_metric} {m.get(test_metric, math.nan):.4g}")
            agg = aggregate(per_seed)
            ref = tracker.start_run(
                f"final_{tid}", kind="final",
                tags={tracking.TAG_TRIAL_ID: tid, tracking.TAG_EXPERIMENT: experiment,
                      "eqcvt.trial_run_id": run["run_id"], tracking.TAG_GIT: tracking.git_commit(),
                      "eqcvt.final.from_checkpoint": str(from_checkpoint)},
                params={**{k: v for k, v in base.to_flat().items() if k != "train.seed"},
                        "final.seeds": ",".join(str(base.train.seed + s) for s in range(seeds)),
                        "final.data": trained_on,
                        "final.selection": f"best {val_metric} epoch, seed and model"},
            )
            for h in history0:
                tracker.log_metrics(ref, {f"seed0/{k}": v for k, v in h.items()},
                                    step=int(h["epoch"]), skip_logged=False)
            for s, m in enumerate(per_seed):
                tracker.log_metrics(ref, m, step=s, skip_logged=False)
            tracker.log_metrics(ref, agg, step=0, skip_logged=False)
            best_seed = select_seed(per_seed, val_metric, mode)
            ckpt, ev = seed_dirs[best_seed]
            tracker.set_tags(ref, {"eqcvt.final.selected_seed": str(base.train.seed + best_seed)})
            tracker.log_artifacts(ref, ev, "evaluation")
            tracker.log_artifacts(ref, ckpt, "checkpoint")
            tracker.log_dict(ref, per_seed, "per_seed.json")
            best_ckpts[ref.run_id] = Path(shutil.copytree(ckpt, work / f"keep_{tid}"))
            summary.models.append(FinalModel(tid, run["run_id"], ref.run_id,
                                             float(run["metrics"][f"best_{metric}"]),
                                             agg, per_seed))
            tracker.end_run(ref, tracking.FINISHED)
        winner = select_model(summary.models, val_metric, mode)
        name = model_name or f"eqcvt-{search.name}"
        ref = tracking.RunRef(run_id=winner.run_id, name=f"final_{winner.trial_id}")
        cfg_path = best_ckpts[winner.run_id] / "config.json"
        version = tracker.register_model(
            ref, best_ckpts[winner.run_id], name,
            config=json.loads(cfg_path.read_text()),
            description=f"trial {winner.trial_id} of {experiment}, chosen by {val_metric} "
                        f"{winner.test.get(val_metric + '_mean', math.nan):.4g}; held-out "
                        f"{test_metric} {winner.test.get(test_metric + '_mean', math.nan):.4g}",
        )
        tracker.set_tags(ref, {"eqcvt.registered": f"{name}/{version}"})
        summary.registered, summary.best_trial = f"{name}/{version}", winner.trial_id
        say(f"[green]registered[/] {name}/{version} (trial {winner.trial_id}, "
            f"best {val_metric} mean)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return summary


def _train_one_seed(cfg: RunConfig, init: Path | None, work: Path,
                    bundles: dict[str, Any] | None = None
                    ) -> tuple[Path, Path, dict[str, float], list[dict[str, float]]]:
    """Train one seed, keep its best validation epoch, then read val and (once) test."""
    # shard folders are the same for every seed: loaded once; simulated training images
    # differ per seed, so they are made afresh (not kept: one copy in memory at a time)
    key = json.dumps(asdict(cfg.data), sort_keys=True)
    if cfg.data.source == "shards" and bundles is not None and key in bundles:
        bundle = bundles[key]
    else:
        bundle = protocol.open_for_seed(cfg.data, cfg.train.seed, device=cfg.train.device)
        if cfg.data.source == "shards" and bundles is not None:
            bundles[key] = bundle
    res = protocol.train(cfg, bundle, work / "ckpt", init_from=init)
    model = protocol.best_model(res)
    val = protocol.evaluate_split(model, bundle.val, bundle.task, bundle.classes, "val")
    m = {k: v for k, v in val.items() if k.startswith("val_")}
    out_dir = work / "eval"
    m.update(protocol.evaluate_split(model, bundle.test, bundle.task, bundle.classes, "test",
                                     out_dir))
    m["best_epoch"] = float(res.best_epoch or res.epoch)
    m["train_time_s"] = float(sum(h.get("epoch_time_s", 0.0) for h in res.history))
    return protocol.best_checkpoint(res), out_dir, m, res.history


def select_seed(per_seed: list[dict[str, float]], val_metric: str, mode: str) -> int:
    """The seed whose model is registered: best validation value (test is never read)."""
    if not val_metric.startswith("val_"):
        raise ValueError(f"seeds are selected on validation metrics, got {val_metric!r}")
    i = best_index([m.get(val_metric, math.nan) for m in per_seed], mode)
    return 0 if i is None else i


def select_model(models: list[FinalModel], val_metric: str, mode: str) -> FinalModel:
    """The model to register: best mean validation value over seeds (test is never read)."""
    if not val_metric.startswith("val_"):
        raise ValueError(f"models are selected on validation metrics, got {val_metric!r}")
    i = best_index([m.test.get(f"{val_metric}_mean", math.nan) for m in models], mode)
    return models[0 if i is None else i]
