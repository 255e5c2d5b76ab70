"""Search-pipeline benchmark; prints JSON (no asserts on wall time).

- driver start-up: `run_search` called -> first trial started (Ray connect, data opened and put
  in the object store, MLflow parent run, Tuner built);
- per-trial overhead: the driver's trial start -> first report, less that first epoch's own
  training+validation time (actor start, imports, data from the object store, model build);
- search quality on one fixed small simulated task (`--preset`, binary, 32 px, a 2048-image
  validation split): random search (FIFO, every trial trains all `--epochs`) against ASHA +
  HyperOpt given more trials, for several searcher seeds. Both searches' best-so-far
  validation accuracy is followed over the epochs they spend (in report order); the JSON gives
  each one's best, ASHA + HyperOpt's best at half and at all of random search's epochs, and the
  epochs it needed to first reach random search's best. The goal is at most half.
  The two searches draw independently by default; `--asha-seed-offset 0` pairs them (ASHA's
  random start then re-draws random search's own configurations, so it measures what early
  stopping alone saves, and flatters ASHA).

The task's default preset is `model_ii_deeplense`, the DeepLense-faithful Model II whose ring
size gives the class away (see `pipeline/data/shortcut.py`). That is deliberate: this bench
measures searchers, which needs a task where configurations really differ (random trials'
best accuracies run from chance, 0.5, to about 0.98; the JSON gives their quartiles). On the
shortcut-free `model_ii` the models this small sit at chance within a CPU budget, so every
search "reaches" random search's best at its first epoch and the comparison says nothing.
Its accuracies are not a physics result.

`--reseed K` answers the same question without the luck of the draw. A search's best is
the maximum of its trials' noisy accuracies, so matching random search's best means matching
its luckiest seed. After each seed's searches it trains again, for the full epochs and with
K other `train.seed`s, the configuration each search would hand over if stopped there (that
of the trial holding its best): random search's at its whole budget, ASHA's at half and at
all of random search's epochs. The JSON's `reseeded` compares their re-trained mean
accuracies, per seed and as a median over seeds.

ASHA runs with `asha_hyperopt.yaml`'s `first_rung_quorum` (4; `--first-rung-quorum` sets
another): its first rung promotes no trial before that many have reached it. 0 is Ray's own
asynchronous ASHA, which promotes its first trials with nothing to compare them against (the
runs saved in bench/results without "quorum" in their names used it).

`--random-from JSON` takes random search's results from an earlier output on the same task and
seeds, and runs ASHA alone: a new ASHA setting against a saved baseline at about half the
cost. `bench/search_replay.py` replays ASHA over recorded learning curves, hundreds of seeds
in minutes, to choose the settings this bench then checks for real.

Ctrl-C stops the bench after Tune has saved the running search; the JSON then holds the
seeds that finished (`interrupted`: true). `--plot` draws the curves; `--plot-from` redraws
them from a printed JSON. Uses RAY_ADDRESS when set, else starts a local Ray. `--quick` makes
it a smoke run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# The task both searches run on, and random search's size: the defaults of this bench, of
# its --quick smoke run and of bench/search_replay.py. A saved baseline must match them all.
TASK: dict[str, Any] = {"trials": 8, "epochs": 9, "n_train": 1024, "n_val": 2048,
                        "img_size": 32, "preset": "model_ii_deeplense"}
QUICK_TASK: dict[str, Any] = {"trials": 2, "epochs": 2, "n_train": 128, "n_val": 128}
# ASHA's reduction factor and first-rung quorum: read from the shipped
# search_spaces/asha_hyperopt.yaml, so the bench runs ASHA as shipped. Its grace period is the
# bench's own: 1 of 9 epochs, where the shipped space has 4 of 40.
SHIPPED_ASHA: dict[str, Any] = yaml.safe_load(
    (ROOT / "search_spaces" / "asha_hyperopt.yaml").read_text())
FIRST_RUNG_QUORUM: int = SHIPPED_ASHA["first_rung_quorum"]
REDUCTION_FACTOR: float = float(SHIPPED_ASHA["reduction_factor"])
GRACE_PERIOD = 1


def task_space(kind: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """The fixed bench task and its search space, as a search-space YAML document.

    A realistic space: learning rate and weight decay over several decades, group and field
    count, token width and batch size, so a sizeable share of configurations train poorly.
    The validation split is large (`--n-val`) so the best accuracy is not mostly noise.
    """
    asha = kind == "asha_hyperopt"
    doc: dict[str, Any] = {
        "name": "bench",
        "scheduler": "asha" if asha else "fifo",
        "searcher": args.searcher if asha else "random",
        "metric": "val_acc",
        "mode": "max",
        "num_samples": args.asha_trials if asha else args.trials,
        "max_epochs": args.epochs,
        "seed": seed,
        "resources": {"cpus": 1, "gpus": 0},
        "params": {
            "data.source": "simulate",
            "data.preset": args.preset,
            "data.task": "binary",
            "data.n_train": args.n_train,
            "data.n_val": args.n_val,
            "data.n_test": 16,
            "data.img_size": args.img_size,
            "data.seed": 0,
            "model.name": "eqcvt_stem",
            "model.group": {"choice": [
                {"value": "C1", "params": {"model.fields": {"choice": [4, 8]}}},
                {"value": "C4", "params": {"model.fields": {"choice": [1, 2]}}},
                {"value": "D2", "params": {"model.fields": {"choice": [1, 2]}}},
                {"value": "C8", "params": {"model.fields": {"choice": [1, 2]}}},
            ]},
            "model.embed_dim": {"choice": [8, 16, 32]},
            "model.depth": 1,
            "model.heads": 1,
            "model.head_hidden": 16,
            "model.kernel_size": 3,
            "model.stem_blocks": 1,
            "train.batch_size": {"choice": [16, 32, 64, 128]},
            "train.lr": {"loguniform": [1.0e-5, 1.0e-1]},
            "train.weight_decay": {"loguniform": [1.0e-3, 0.3]},
            "train.num_threads": 1,
        },
    }
    if asha:
        doc.update(grace_period=args.grace_period, reduction_factor=args.reduction_factor,
                   first_rung_quorum=args.first_rung_quorum)
        if args.searcher != "random":
            doc["n_initial_points"] = args.n_initial
    return doc


def _search(kind: str, seed: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import yaml
    from rich.console import Console

    from pipeline import tune as ptune
    from pipeline.live import LiveView

    text = yaml.safe_dump(task_space(kind, seed, args), sort_keys=False)
    name = f"{kind}-{seed}-{int(time.time())}"
    req = ptune.SearchRequest(
        space_file=f"{kind}.yaml", space_text=text, experiment=name,
        storage_path=str(work / "results"), tracking_uri=f"sqlite:///{work / 'mlflow.db'}",
        max_failures=0,
    )
    view = LiveView("val_acc", "max", name, console=Console(file=open(os.devnull, "w")))  # noqa: SIM115
    t0 = time.time()
    out = ptune.run_search(req, view=view)
    wall = time.time() - t0
    starts = [t["start"] for t in out.timings.values() if "start" in t]
    best, curve = -math.inf, []  # (epochs spent so far, best so far), in report order
    trial_best: dict[str, float] = {}
    leaders: list[tuple[int, str]] = []  # (epochs spent, the trial that just took the lead)
    for i, (_, trial, _, value) in enumerate(sorted(out.results), 1):
        if not math.isnan(value):
            if value > best:
                leaders.append((i, trial))
            best = max(best, value)
            trial_best[trial] = max(trial_best.get(trial, -math.inf), value)
        curve.append((i, best))
    return {
        "wall_s": wall,
        "experiment_path": out.experiment_path,
        "driver_startup_s": (min(starts) - t0) if starts else None,
        "overheads_s": ptune.trial_overheads(out),
        "best_val_acc": best if best > -math.inf else None,
        "total_epochs": len(curve),
        "trials": len(out.statuses),
        "trial_bests": sorted(trial_best.values()),
        "curve": curve,
        "leaders": leaders,
        "configs": _trial_configs(Path(out.experiment_path), {t for _, t in leaders}),
        "statuses": sorted(set(out.statuses.values())),
        "interrupted": out.interrupted,
    }


def trial_rows(experiment: Path) -> list[list[dict[str, Any]]]:
    """Each trial's reported rows (with its config), from the result.json files of a Tune
    experiment folder, in folder order; a trial that reported nothing is left out."""
    rows = []
    for path in sorted(experiment.glob("*/result.json")):
        found = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if found:
            rows.append(found)
    return rows


def _trial_configs(experiment: Path, trials: set[str]) -> dict[str, dict[str, Any]]:
    """The flat sampled configuration of each of `trials`."""
    from pipeline.search import flatten_sampled

    return {rows[0]["trial_id"]: flatten_sampled(rows[0]["config"])
            for rows in trial_rows(experiment) if rows[0].get("trial_id") in trials}


def _pick(run: dict[str, Any], epochs: int) -> str | None:
    """The trial holding a search's best validation accuracy after `epochs` epochs: the
    configuration the search would hand over if it stopped there (selected on validation)."""
    held = [trial for e, trial in run["leaders"] if e <= epochs]
    return held[-1] if held else None


def retrain(config: dict[str, Any], seeds: int, label: str) -> dict[str, Any]:
    """Train `config` again with train.seed 1..`seeds` (searches train with seed 0): each
    run's best validation accuracy over its epochs, the statistic a search maximises, and its
    first epoch's (what a first rung sees). Their mean is the configuration's own quality,
    without the luck of the draw that made it a search's best."""
    from pipeline.config import RunConfig
    from pipeline.data.open import open_run_data
    from pipeline.engine import fit
    from pipeline.stats import spread

    cfg = RunConfig.from_flat(config)
    data = open_run_data(cfg)
    bests, firsts = [], []
    for seed in range(1, seeds + 1):
        history = fit(cfg.with_updates({"train.seed": seed}), data).history
        bests.append(max(h["val_acc"] for h in history))
        firsts.append(history[0]["val_acc"])
        print(f"{label}, seed {seed}: best val_acc {bests[-1]:.4f}", file=sys.stderr, flush=True)
    s = spread(bests)
    return {"bests": bests, "first_epochs": firsts, "mean": s.mean,
            "std": s.std if s.n > 1 else None, "n": s.n}


def _pick_record(run: dict[str, Any], epochs: int) -> dict[str, Any] | None:
    trial = _pick(run, epochs)
    if trial is None or trial not in run["configs"]:
        return None
    return {"trial": trial, "config": run["configs"][trial],
            "val_acc": _best_at(run["curve"], epochs)}


def _reseed_picks(rnd: dict[str, Any], asha: dict[str, Any], seeds: int, searcher_seed: int
                  ) -> dict[str, Any]:
    """Retrain the configurations the searches would hand over: random search's at its whole
    budget, ASHA's at half and at all of random search's epochs. The goal asks whether ASHA
    reaches random search's best in half the epochs; the best of a search is partly a lucky
    seed (the maximum of its trials' noisy accuracies), so this compares the picks' re-trained
    means."""
    budget = rnd["total_epochs"]
    runs = {"random": rnd, "asha": asha}
    picks = {"random": ("random", budget), "asha_at_half": ("asha", budget // 2),
             "asha_at_equal": ("asha", budget)}
    trained: dict[tuple[str, str], dict[str, Any]] = {}  # (search, trial): ASHA's may repeat
    out: dict[str, Any] = {}
    for name, (search, epochs) in picks.items():
        record = _pick_record(runs[search], epochs)
        if record is None:
            out[name] = None
            continue
        key = (search, record["trial"])
        if key not in trained:
            trained[key] = retrain(record["config"], seeds, f"seed {searcher_seed}: {name} pick")
        out[name] = {**record, **trained[key]}
    out["asha_at_half_minus_random"] = _gap(out["asha_at_half"], out["random"])
    out["asha_at_equal_minus_random"] = _gap(out["asha_at_equal"], out["random"])
    print(f"seed {searcher_seed}: re-trained, ASHA's pick at half minus random's: "
          f"{out['asha_at_half_minus_random']}", file=sys.stderr, flush=True)
    return out


def _gap(a: dict[str, Any] | None, b: dict[str, Any] | None) -> float | None:
    return None if a is None or b is None else a["mean"] - b["mean"]


def _reseed_summary(rows: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """Over searcher seeds: how far ASHA's pick at half of random search's epochs sits from
    random search's pick, re-trained means against re-trained means."""
    from pipeline.stats import spread

    rows = [r for r in rows if r is not None]
    if not rows:
        return None
    out: dict[str, Any] = {}
    for at in ("half", "equal"):
        gaps = [r[f"asha_at_{at}_minus_random"] for r in rows]
        # a search with no finite result at that point counts as never reaching it
        ranked = [-math.inf if g is None else g for g in gaps]
        finite = [g for g in gaps if g is not None]
        s = spread(finite) if finite else None
        out[f"asha_at_{at}"] = {
            "median_minus_random": _finite(statistics.median(ranked)),
            "seeds_at_least_random": sum(1 for g in ranked if g >= 0),
            "mean_minus_random": s.mean if s else None,
            "std": s.std if s and s.n > 1 else None, "n": len(rows),
        }
    out["goal_median_asha_at_half_at_least_random"] = (
        out["asha_at_half"]["median_minus_random"] is not None
        and out["asha_at_half"]["median_minus_random"] >= 0)
    return out


def _progress(label: str, run: dict[str, Any], random: dict[str, Any] | None = None) -> None:
    """One line on stderr per finished search: a 5-seed bench runs for an hour or more."""
    line = (f"{label}: best {run['best_val_acc']} over {run['total_epochs']} epochs, "
            f"{run['trials']} trials, {run['wall_s']:.0f} s")
    if random is not None and random["best_val_acc"] is not None:
        reach = _epochs_to_reach(run["curve"], random["best_val_acc"])
        line += ("; never reached random's best" if reach is None else
                 f"; reached random's best at {reach / random['total_epochs']:.3f} of its epochs")
    print(line, file=sys.stderr, flush=True)


def _saved_random(args: argparse.Namespace) -> dict[int, dict[str, Any]]:
    """Random search's per-seed results from a saved report, as `_search` returns them
    (without the timing breakdown). Refuses a report of another task or other seeds."""
    saved = json.loads(args.random_from.read_text())
    theirs = saved["settings"]
    differ = {k: (theirs.get(k), getattr(args, k)) for k in TASK
              if theirs.get(k) != getattr(args, k)}
    if differ:
        sys.exit(f"{args.random_from}: another task; (saved, now) differ for {differ}")
    first = theirs["first_seed"]
    out: dict[int, dict[str, Any]] = {}
    for i, s in enumerate(saved["asha_hyperopt_vs_random"]):
        curve = [(e, -math.inf if b is None else b) for e, b in saved["curves"]["random"][i]]
        out[first + i] = {
            "wall_s": saved["search_wall_s"]["random"][i], "driver_startup_s": None,
            "overheads_s": [], "best_val_acc": s["random_best"],
            "total_epochs": s["random_epochs"], "trials": s["random_trials"],
            "trial_bests": s["random_trial_bests"], "curve": curve,
            "statuses": ["TERMINATED"], "interrupted": False,
            "leaders": [], "configs": {},
        }
        pick = s.get("random_pick")
        if pick is not None:  # the one leader --reseed needs: the pick at the whole budget
            out[first + i].update(leaders=[(s["random_epochs"], pick["trial"])],
                                  configs={pick["trial"]: pick["config"]})
        elif args.reseed:
            sys.exit(f"{args.random_from}: no random_pick for seed {first + i} (saved by an "
                     "older bench/search.py); --reseed needs it")
    missing = [k for k in range(args.first_seed, args.first_seed + args.seeds) if k not in out]
    if missing:
        sys.exit(f"{args.random_from}: no random search for seeds {missing} "
                 f"(it has {sorted(out)})")
    return out


def _epochs_to_reach(curve: list[tuple[int, float]], target: float) -> int | None:
    for epochs, best in curve:
        if best >= target - 1e-9:
            return epochs
    return None


def _best_at(curve: list[tuple[int, float]], epochs: int) -> float | None:
    """Best value reached within the first `epochs` epochs of a search."""
    seen = [best for e, best in curve if e <= epochs and best > -math.inf]
    return seen[-1] if seen else None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: one seed, tiny budget")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--keep", action="store_true",
                   help="keep the Tune results and MLflow store (printed as work_dir)")
    p.add_argument("--trials", type=int, default=TASK["trials"], help="random-search trials")
    p.add_argument("--asha-trials", type=int, default=None,
                   help="ASHA + HyperOpt trials (default 4x --trials: ASHA stops most early, "
                        "and its curve is compared at random search's total epochs)")
    p.add_argument("--epochs", type=int, default=TASK["epochs"],
                   help="epochs of a full trial (ASHA max_t)")
    p.add_argument("--grace-period", type=int, default=GRACE_PERIOD,
                   help="ASHA's first rung, in epochs (the shipped 4 of 40, scaled to 9)")
    p.add_argument("--reduction-factor", type=float, default=REDUCTION_FACTOR,
                   help="ASHA's (default: that of search_spaces/asha_hyperopt.yaml)")
    p.add_argument("--first-rung-quorum", type=int, default=FIRST_RUNG_QUORUM,
                   help="trials that must reach ASHA's first rung before it promotes one "
                        "(0: Ray's ASHA, which promotes its first trials unopposed)")
    p.add_argument("--n-initial", type=int, default=None,
                   help="the model-based searcher's random trials before TPE (default: a "
                        "quarter of --asha-trials)")
    p.add_argument("--searcher", choices=("hyperopt", "optuna", "random"), default="hyperopt",
                   help="the searcher ASHA runs with (the JSON keys keep the name "
                        "asha_hyperopt); random: ASHA alone, to tell what the model adds")
    p.add_argument("--n-train", type=int, default=TASK["n_train"])
    p.add_argument("--n-val", type=int, default=TASK["n_val"])
    p.add_argument("--img-size", type=int, default=TASK["img_size"])
    p.add_argument("--asha-seed-offset", type=int, default=1000,
                   help="seed ASHA's searcher with seed + this (default 1000: independent "
                        "draws). 0 pairs the searches: ASHA's random start then re-draws "
                        "random search's own configurations, which measures early stopping "
                        "alone")
    p.add_argument("--plot", type=Path, default=None,
                   help="also draw both searches' best-so-far curves per seed to this PNG")
    p.add_argument("--plot-from", type=Path, default=None,
                   help="redraw --plot from a JSON this script printed, without searching")
    p.add_argument("--random-from", type=Path, default=None,
                   help="take random search's results from a JSON this script printed on the "
                        "same task (same seeds, trials, epochs, data), and run only ASHA: a "
                        "new ASHA setting against a saved baseline at half the cost")
    p.add_argument("--reseed", type=int, default=0, metavar="K",
                   help="after each seed's searches, train again with K other train.seeds "
                        "the configuration each search would hand over (random search's best "
                        "at its epochs, ASHA's best at half and at all of them) and compare "
                        "their mean accuracies: the goal without the luck of the draw")
    p.add_argument("--preset", default=TASK["preset"],
                   help="simulator preset of the task (see the module docstring for why the "
                        "default keeps the ring-size shortcut)")
    args = p.parse_args(argv)
    if args.reseed == 1 or args.reseed < 0:
        p.error("--reseed needs K >= 2 (a spread needs two) or 0 (off)")
    if args.quick:
        args.seeds, args.n_initial = 1, 2
        vars(args).update(QUICK_TASK)
    if args.asha_trials is None:
        args.asha_trials = 4 * args.trials
    if args.n_initial is None:
        args.n_initial = max(2, args.asha_trials // 4)
    if args.plot_from is not None:
        if args.plot is None:
            p.error("--plot-from needs --plot (the PNG to write)")
        saved = json.loads(args.plot_from.read_text())
        plot_curves(saved, args.plot)
        print(json.dumps(saved, indent=1))
        return saved

    from pipeline import tune as ptune

    baseline = _saved_random(args) if args.random_from is not None else {}
    work = Path(tempfile.mkdtemp(prefix="eqcvt-bench-search-"))
    t0 = time.time()
    ptune.connect(None)
    connect_s = time.time() - t0
    runs: dict[str, list[dict[str, Any]]] = {"asha_hyperopt": [], "random": []}
    reseeded: list[dict[str, Any] | None] = []
    interrupted = False
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        rnd = baseline[seed] if baseline else _search("random", seed, args, work)
        if rnd["interrupted"]:  # Ctrl-C: Tune saved and stopped; so does the bench
            interrupted = True
            break
        if not baseline:
            _progress(f"seed {seed}: random", rnd)
        asha = _search("asha_hyperopt", seed + args.asha_seed_offset, args, work)
        if asha["interrupted"]:
            interrupted = True
            break
        _progress(f"seed {seed}: asha_hyperopt", asha, rnd)
        runs["random"].append(rnd)
        runs["asha_hyperopt"].append(asha)
        if args.reseed:
            try:
                reseeded.append(_reseed_picks(rnd, asha, args.reseed, seed))
            except KeyboardInterrupt:  # the searches of this seed stay in the report
                reseeded.append(None)
                interrupted = True
                break
    ptune.shutdown()

    overheads = [o for rs in runs.values() for r in rs for o in r["overheads_s"]]
    startups = [r["driver_startup_s"] for rs in runs.values() for r in rs
                if r["driver_startup_s"] is not None]
    per_seed = []
    for i, (rnd, asha) in enumerate(zip(runs["random"], runs["asha_hyperopt"], strict=True)):
        target = rnd["best_val_acc"]
        reach = _epochs_to_reach(asha["curve"], target) if target is not None else None
        # binomial standard error of an accuracy near random's best on this val split
        se = math.sqrt(target * (1 - target) / args.n_val) if target is not None else None
        near = _epochs_to_reach(asha["curve"], target - se) if target is not None else None
        budget = rnd["total_epochs"]
        per_seed.append({
            "random_best": target, "random_epochs": budget, "random_trials": rnd["trials"],
            "random_trial_bests": rnd["trial_bests"],  # the spread of configurations
            "val_acc_standard_error": se,
            "asha_best_at_half_epochs": _best_at(asha["curve"], budget // 2),
            "asha_best_at_equal_epochs": _best_at(asha["curve"], budget),
            "asha_best": asha["best_val_acc"], "asha_epochs": asha["total_epochs"],
            "asha_trials": asha["trials"],
            "asha_epochs_to_reach_random_best": reach,
            "asha_fraction_of_random_epochs": reach / budget if reach is not None else None,
            # the same within one standard error of random's best (a tie on this split)
            "asha_fraction_within_one_se": near / budget if near is not None else None,
            # the model random search hands over (kept so --random-from can --reseed it)
            "random_pick": _pick_record(rnd, budget),
            "reseeded": reseeded[i] if i < len(reseeded) else None,
        })
    fractions = _fractions(per_seed, "asha_fraction_of_random_epochs")
    within_se = _fractions(per_seed, "asha_fraction_within_one_se")
    report = {
        "machine": {"cpus": os.cpu_count(), "ray_address": os.environ.get("RAY_ADDRESS")},
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "ray_connect_s": connect_s,
        "driver_startup_s": {"first_search": startups[0] if startups else None,
                             "median": statistics.median(startups) if startups else None},
        "per_trial_overhead_s": {
            "median": statistics.median(overheads) if overheads else None,
            "p90": _quantile(overheads, 0.9), "max": max(overheads) if overheads else None,
            "n": len(overheads),
        },
        "asha_hyperopt_vs_random": per_seed,
        "summary": {
            # how much configurations differ: each random trial's best, pooled over seeds
            "random_trial_best_quartiles": _quartiles(
                [v for r in runs["random"] for v in r["trial_bests"]]),
            "mean_random_best": _mean([s["random_best"] for s in per_seed]),
            "mean_asha_best_at_equal_epochs": _mean(
                [s["asha_best_at_equal_epochs"] for s in per_seed]),
            "mean_asha_best": _mean([s["asha_best"] for s in per_seed]),
            "mean_random_epochs": _mean([s["random_epochs"] for s in per_seed]),
            "mean_asha_epochs": _mean([s["asha_epochs"] for s in per_seed]),
            "seeds_where_asha_reached_random_best_with_half_the_epochs": sum(
                1 for f in fractions if f <= 0.5),
            # never reaching random search's best counts as an infinite fraction
            # null: in most seeds it never got there
            "median_asha_fraction_of_random_epochs": _finite(statistics.median(fractions)),
            "goal_median_fraction_at_most_half": statistics.median(fractions) <= 0.5,
            "paired": args.asha_seed_offset == 0,
            "median_asha_fraction_within_one_se": _finite(statistics.median(within_se)),
            "reseeded": _reseed_summary([s["reseeded"] for s in per_seed]),
        },
        "search_wall_s": {k: [r["wall_s"] for r in v] for k, v in runs.items()},
        # (epochs spent, best so far) per seed; null before the first finite value
        "curves": {k: [[[e, b if b > -math.inf else None] for e, b in r["curve"]] for r in v]
                   for k, v in runs.items()},
        "interrupted": interrupted,  # the seeds above are the complete ones
    }
    if args.keep:
        report["work_dir"] = str(work)
    print(json.dumps(report, indent=1))
    if args.plot is not None:
        plot_curves(report, args.plot)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return report


def plot_curves(report: dict[str, Any], path: Path) -> None:
    """Best-so-far validation accuracy against epochs spent, one panel per searcher seed:
    random search, ASHA + the model-based searcher, and half of random search's epochs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves, seeds = report["curves"], report["asha_hyperopt_vs_random"]
    n = len(seeds)
    fig, axes = plt.subplots(1, max(n, 1), figsize=(3.2 * max(n, 1), 3.0), sharey=True,
                             squeeze=False)
    searcher = report["settings"].get("searcher", "hyperopt")
    for i, (ax, s) in enumerate(zip(axes[0], seeds, strict=False)):
        for kind, label, colour in (("random", "random (FIFO)", "tab:blue"),
                                    ("asha_hyperopt", f"ASHA + {searcher}", "tab:orange")):
            pts = [(e, b) for e, b in curves[kind][i] if b is not None]
            if pts:
                ax.step(*zip(*pts, strict=True), where="post", color=colour, label=label)
        ax.axvline(s["random_epochs"] / 2, color="grey", ls=":", lw=1, label="half of random")
        _plot_reseeded(ax, s)
        ax.axhline(s["random_best"], color="tab:blue", ls="--", lw=0.8)
        reach = s["asha_epochs_to_reach_random_best"]
        reached = (f"reached at {reach / s['random_epochs']:.2f} of random's epochs" if reach
                   else "random's best not reached")
        ax.set_title(f"seed {report['settings']['first_seed'] + i}: {reached}", fontsize=8)
        ax.set_xlabel("epochs spent")
    axes[0][0].set_ylabel("best val_acc so far")
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_reseeded(ax: Any, seed: dict[str, Any]) -> None:
    """The picks' re-trained mean +- sample std (--reseed), where each search stood when
    it would have handed them over."""
    again = seed.get("reseeded")
    if not again:
        return
    budget = seed["random_epochs"]
    for name, x, colour, marker in (("random", budget, "tab:blue", "s"),
                                    ("asha_at_half", budget // 2, "tab:orange", "o"),
                                    ("asha_at_equal", budget, "tab:orange", "o")):
        pick = again.get(name)
        if pick is not None:
            ax.errorbar([x], [pick["mean"]], yerr=[pick["std"] or 0.0], color=colour,
                        marker=marker, ms=4, capsize=3, lw=1,
                        label="picks re-trained" if name == "random" else None)


def _quantile(xs: list[float], q: float) -> float | None:
    """Nearest-rank quantile (works with inf, unlike statistics.quantiles)."""
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))]


def _fractions(per_seed: list[dict[str, Any]], key: str) -> list[float]:
    """Per-seed fractions; never reaching the target counts as infinite."""
    return [math.inf if s[key] is None else s[key] for s in per_seed] or [math.inf]


def _quartiles(xs: list[float]) -> list[float] | None:
    """min, lower quartile, median, upper quartile, max (nearest rank)."""
    if not xs:
        return None
    return [min(xs), *(_quantile(xs, q) for q in (0.25, 0.5, 0.75)), max(xs)]


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _mean(xs: list[Any]) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


if __name__ == "__main__":
    main()
