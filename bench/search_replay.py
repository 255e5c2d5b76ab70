"""Replay ASHA searches over recorded learning curves; prints JSON (no asserts).

`bench/search.py` runs real searches: minutes per searcher seed, so its median over 5 seeds
is mostly luck when the goal is a coin flip. This bench replays hundreds of seeds in seconds
to choose the scheduler and searcher settings, and `bench/search.py` then checks the chosen
ones for real.

- `--collect SEEDS --out FILE` records learning curves: random searches of `bench/search.py`'s
  task (same space, data and epochs), every trial's validation accuracy after every epoch,
  with its configuration.
- A replay draws random search's trials from those curves (they are random configurations,
  so this is random search exactly) and runs ASHA with the project's own searcher and
  scheduler (`pipeline.tune.build_search`, Ray's ASHAScheduler) on `--workers` simulated
  workers, one epoch per time step. A configuration the searcher suggests gets a recorded
  curve through a surrogate (the approximation: it knows only the recorded curves):
  `--oracle forest` (default) fits a random forest from configuration to curve and answers
  with one of its trees, drawn at random; fully grown trees answer with a recorded curve, or
  the mean of a few, chosen by splits on the keys that matter (a learned nearest neighbour,
  as in surrogate benchmarks of optimisers). `--oracle nearest` takes one of the
  `--neighbours` nearest recorded configurations, every key weighted alike. Keys are scaled
  to [0, 1]: log scale for loguniform, rank for a numeric choice; a categorical key is
  one-hot for the forest and 0/1 apart for the nearest look-up.
- As in `bench/search.py`: the epochs ASHA spends before its best-so-far first reaches random
  search's best, as a fraction of random search's epochs. The JSON gives per setting the
  median fraction, the share of seeds at or below one half, the probability that the median
  of 5 seeds is at most one half, and the share that never get there.

`--reseed K` checks the surrogate's one blind spot: it retrains the K best recorded
configurations with other `train.seed`s and reports how far each one's recorded best sits above
its re-trained mean. The best recordings are partly lucky draws, and an oracle that answers
with them makes a searcher that finds their region look better than it is.

Grid: `--grace-period`, `--reduction-factor`, `--n-initial`, `--first-rung-quorum` and
`--searcher` take comma lists. `--trials` sets random search's size (ASHA gets 4x the
trials and is judged at the same epochs), to see how the goal depends on the scale of the
search.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import math
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import search as bench_search  # noqa: E402

# the settings of bench/search.py that define the task the curves were recorded on
TASK_KEYS = tuple(k for k in bench_search.TASK if k != "trials")
DEFAULT_CURVES = ROOT / "bench" / "results" / "search-curves-model_ii_deeplense.json"


@dataclass(frozen=True)
class Curve:
    config: dict[str, Any]  # the flat sampled values
    val_acc: tuple[float, ...]  # after each epoch


def collect(seeds: list[int], task: Mapping[str, Any], out: Path) -> dict[str, Any]:
    """Run one random search of the bench task per seed and record every full trial's curve."""
    from pipeline import tune as ptune

    args = argparse.Namespace(trials=task["trials"], searcher="random",
                              **{k: task[k] for k in TASK_KEYS})
    work = Path(tempfile.mkdtemp(prefix="eqcvt-bench-replay-"))
    ptune.connect(None)
    curves = []
    try:
        for seed in seeds:
            result = bench_search._search("random", seed, args, work)
            if result["interrupted"]:
                break
            curves += read_curves(Path(result["experiment_path"]), args.epochs)
            print(f"seed {seed}: {len(curves)} curves", file=sys.stderr, flush=True)
    finally:
        ptune.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    doc = {"task": {k: getattr(args, k) for k in TASK_KEYS}, "seeds": seeds,
           "recorded": time.strftime("%Y-%m-%d"),
           "curves": [{"config": c.config, "val_acc": list(c.val_acc)} for c in curves]}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=0))
    return doc


def read_curves(experiment: Path, epochs: int) -> list[Curve]:
    """The full-length trials of a Tune experiment folder."""
    from pipeline.search import flatten_sampled

    return [Curve(flatten_sampled(rows[0]["config"]), tuple(r["val_acc"] for r in rows))
            for rows in bench_search.trial_rows(experiment) if len(rows) == epochs]


def reseed(curves: list[Curve], top: int, seeds: int) -> dict[str, Any]:
    """Retrain the `top` best recorded configurations with train.seed 1..`seeds` (the
    recordings used the default seed 0): the seed-to-seed spread the oracle cannot know."""
    rows = []
    for rank, curve in enumerate(sorted(curves, key=lambda c: -max(c.val_acc))[:top], 1):
        again = bench_search.retrain(curve.config, seeds, f"config {rank}/{top}")
        rows.append({
            "config": curve.config, "recorded_best": max(curve.val_acc),
            "recorded_first_epoch": curve.val_acc[0], "reseeded_best": again["bests"],
            "reseeded_first_epoch": again["first_epochs"],  # what a first rung at epoch 1 sees
            "reseeded_mean": again["mean"], "reseeded_std": again["std"], "n": again["n"],
            "recorded_minus_mean": max(curve.val_acc) - again["mean"],
        })
    return {"configs": rows, "mean_recorded_minus_mean": statistics.fmean(
        r["recorded_minus_mean"] for r in rows) if rows else None}


def load_curves(path: Path) -> tuple[dict[str, Any], list[Curve]]:
    doc = json.loads(path.read_text())
    curves = [Curve(c["config"], tuple(c["val_acc"])) for c in doc["curves"]]
    if not curves:
        sys.exit(f"{path}: no curves")
    return doc["task"], curves


def coordinates(spec: Any) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    """A map from a flat configuration to each sampled key's position in [0, 1] (a string
    for a categorical key), from the search space's domains."""
    from pipeline.search import Branch, Choice, Domain, LogUniform, walk_params

    scales: dict[str, Callable[[Any], Any]] = {}
    values: dict[str, set[Any]] = {}
    for key, p in walk_params(spec.params):
        if isinstance(p, Choice):
            opts = [o.value if isinstance(o, Branch) else o for o in p.options]
            values.setdefault(key, set()).update(opts)
        elif isinstance(p, Domain):
            lo, hi = p.corner_values()
            if isinstance(p, LogUniform):
                lo, hi = math.log(lo), math.log(hi)
                scales[key] = lambda v, lo=lo, hi=hi: (math.log(v) - lo) / (hi - lo)
            else:
                scales[key] = lambda v, lo=lo, hi=hi: (v - lo) / ((hi - lo) or 1)
    for key, opts in values.items():
        if all(isinstance(o, (int, float)) and not isinstance(o, bool) for o in opts):
            ranks = {v: i / max(1, len(opts) - 1) for i, v in enumerate(sorted(opts))}
            scales[key] = ranks.__getitem__
        else:
            scales[key] = str

    def position(config: Mapping[str, Any]) -> dict[str, Any]:
        return {k: f(config[k]) for k, f in scales.items() if k in config}

    return position


class Oracle:
    """Configuration -> learning curve, from the recorded curves only."""

    def __init__(self, curves: list[Curve], spec: Any, kind: str, neighbours: int,
                 seed: int) -> None:
        self.curves, self.kind, self.neighbours = curves, kind, neighbours
        self.position = coordinates(spec)
        self.recorded = [self.position(c.config) for c in curves]
        self.rng = random.Random(seed)
        if kind == "forest":
            from sklearn.ensemble import RandomForestRegressor

            keys = sorted({k for r in self.recorded for k in r})
            levels = {k: sorted({r[k] for r in self.recorded if isinstance(r.get(k), str)})
                      for k in keys}  # a categorical key's values; [] for a numeric key
            self.columns = ([(k, v) for k in keys for v in levels[k]]
                            + [(k, None) for k in keys if not levels[k]])
            self.forest = RandomForestRegressor(n_estimators=64, random_state=seed).fit(
                [self._features(r) for r in self.recorded], [c.val_acc for c in curves])

    def _features(self, pos: Mapping[str, Any]) -> list[float]:
        # a categorical column is one-hot; a key the configuration lacks (another branch) is -1
        return [float(pos.get(k) == v) if v is not None else float(pos.get(k, -1.0))
                for k, v in self.columns]

    def curve(self, config: Mapping[str, Any]) -> tuple[float, ...]:
        where = self.position(config)
        if self.kind == "forest":
            tree = self.forest.estimators_[self.rng.randrange(len(self.forest.estimators_))]
            return tuple(float(v) for v in tree.predict([self._features(where)])[0])
        near = sorted(range(len(self.curves)), key=lambda i: distance(where, self.recorded[i]))
        return self.curves[self.rng.choice(near[:self.neighbours])].val_acc


def distance(a: Mapping[str, Any], b: Mapping[str, Any]) -> float:
    total = 0.0
    for key in a.keys() | b.keys():
        x, y = a.get(key), b.get(key)
        if x is None or y is None or isinstance(x, str) or isinstance(y, str):
            total += 0.0 if x == y else 1.0
        else:
            total += (x - y) ** 2
    return math.sqrt(total)


@dataclass(frozen=True)
class Setting:
    searcher: str
    grace_period: int
    reduction_factor: float
    n_initial: int
    first_rung_quorum: int = 0


class _Trial:
    """What Ray's ASHAScheduler reads of a trial."""

    def __init__(self, trial_id: str) -> None:
        self.trial_id = trial_id


def replay_asha(curves: list[Curve], setting: Setting, seed: int, *, task: Mapping[str, Any],
                asha_trials: int, workers: int, budget: int, oracle: str = "forest",
                neighbours: int = 3) -> list[float]:
    """One ASHA search over the recorded curves: its validation accuracies in report order,
    up to `budget` epochs."""
    from pipeline.search import flatten_sampled, parse_search_space
    from pipeline.tune import build_search

    args = argparse.Namespace(searcher=setting.searcher, trials=asha_trials // 4,
                              asha_trials=asha_trials, grace_period=setting.grace_period,
                              reduction_factor=setting.reduction_factor,
                              n_initial=setting.n_initial,
                              first_rung_quorum=setting.first_rung_quorum, **task)
    spec = parse_search_space(bench_search.task_space("asha_hyperopt", seed, args))
    _, searcher, scheduler = build_search(spec)
    scheduler.set_search_properties(spec.metric, spec.mode)
    look_up = Oracle(curves, spec, oracle, neighbours, seed)
    running: list[tuple[int, int, str, int]] = []  # (time, worker, trial, epoch), a heap
    curve_of: dict[str, tuple[float, ...]] = {}
    started = itertools.count()

    def start(now: int, worker: int) -> None:
        n = next(started)
        if n >= asha_trials:
            return
        tid = f"t{n:04d}"
        curve_of[tid] = look_up.curve(flatten_sampled(searcher.suggest(tid)))
        scheduler.on_trial_add(None, _Trial(tid))
        heapq.heappush(running, (now + 1, worker, tid, 1))

    for w in range(workers):
        start(0, w)
    reports: list[float] = []
    while running and len(reports) < budget:
        now, worker, tid, epoch = heapq.heappop(running)
        value = curve_of[tid][epoch - 1]
        reports.append(value)
        result = {"training_iteration": epoch, spec.metric: value}
        if scheduler.on_trial_result(None, _Trial(tid), result) == "STOP":
            scheduler.on_trial_complete(None, _Trial(tid), result)
            searcher.on_trial_complete(tid, result)
            start(now, worker)
        else:
            heapq.heappush(running, (now + 1, worker, tid, epoch + 1))
    return reports


def fraction_to_reach(reports: list[float], target: float, budget: int) -> float:
    """As bench/search.py counts it: epochs until the best so far first reaches `target`."""
    best_so_far = list(enumerate(itertools.accumulate(reports, max), 1))
    reach = bench_search._epochs_to_reach(best_so_far, target)
    return math.inf if reach is None else reach / budget


def evaluate(curves: list[Curve], setting: Setting, args: argparse.Namespace,
             task: Mapping[str, Any]) -> dict[str, Any]:
    budget = args.trials * task["epochs"]  # random search's epochs
    fractions = []
    for seed in range(args.first_seed, args.first_seed + args.replays):
        draw = random.Random(seed).sample(range(len(curves)), args.trials)
        target = max(max(curves[i].val_acc) for i in draw)
        reports = replay_asha(curves, setting, seed + 1000, task=task,
                              asha_trials=4 * args.trials, workers=args.workers,
                              budget=budget, oracle=args.oracle, neighbours=args.neighbours)
        fractions.append(fraction_to_reach(reports, target, budget))
    p = sum(f <= 0.5 for f in fractions) / len(fractions)
    median = statistics.median(fractions)
    return {
        **vars(setting),
        "median_fraction": median if math.isfinite(median) else None,
        "share_at_most_half": p,
        # the chance that bench/search.py's 5-seed median meets the goal, seeds independent
        "p_median_of_5_at_most_half": sum(math.comb(5, k) * p ** k * (1 - p) ** (5 - k)
                                          for k in range(3, 6)),
        "share_never": sum(math.isinf(f) for f in fractions) / len(fractions),
    }


def _list(kind: type) -> Callable[[str], list[Any]]:
    return lambda text: [kind(v) for v in text.split(",")]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--curves", type=Path, default=DEFAULT_CURVES)
    p.add_argument("--collect", type=_list(int), default=None, metavar="SEEDS",
                   help="record curves from random searches with these seeds (comma list) "
                        "to --out instead of replaying")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--trials", type=int, default=bench_search.TASK["trials"],
                   help="random search's trials")
    p.add_argument("--searcher", type=_list(str), default=["hyperopt"])
    p.add_argument("--grace-period", type=_list(int), default=[bench_search.GRACE_PERIOD])
    p.add_argument("--reduction-factor", type=_list(float),
                   default=[bench_search.REDUCTION_FACTOR])
    p.add_argument("--first-rung-quorum", type=_list(int),
                   default=[bench_search.FIRST_RUNG_QUORUM],
                   help="trials that must reach ASHA's first rung before it promotes one")
    p.add_argument("--n-initial", type=_list(int), default=None,
                   help="default: a quarter of ASHA's trials, as bench/search.py")
    p.add_argument("--replays", type=int, default=100, help="searcher seeds per setting")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="trials at once (bench: 2 cores)")
    p.add_argument("--oracle", choices=("forest", "nearest"), default="forest",
                   help="how a suggested configuration gets a recorded curve (module doc)")
    p.add_argument("--neighbours", type=int, default=3,
                   help="--oracle nearest: one of this many nearest recorded configurations, "
                        "drawn at random")
    p.add_argument("--reseed", type=int, default=None, metavar="K",
                   help="retrain the K best recorded configurations with --reseed-seeds other "
                        "train.seeds instead of replaying (module doc)")
    p.add_argument("--reseed-seeds", type=int, default=4)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: a tiny recording (with --collect) or a few replays")
    args = p.parse_args(argv)
    if args.reseed is not None:
        if args.reseed < 1 or args.reseed_seeds < 2:
            p.error("--reseed needs K >= 1 and --reseed-seeds >= 2 (a spread needs two)")
        task, curves = load_curves(args.curves)
        t0 = time.time()
        found = reseed(curves, args.reseed, args.reseed_seeds)
        report = {"curves": {"file": str(args.curves), "n": len(curves), "task": task},
                  **found, "wall_s": time.time() - t0}
        print(json.dumps(report, indent=1))
        return report
    if args.collect is not None:
        if args.out is None:
            p.error("--collect needs --out")
        task = {**bench_search.TASK, "trials": args.trials}
        if args.quick:
            task.update(bench_search.QUICK_TASK)
        doc = collect(args.collect, task, args.out)
        summary = {"out": str(args.out), "task": doc["task"], "curves": len(doc["curves"])}
        print(json.dumps(summary, indent=1))
        return summary
    if args.quick:
        args.replays = 3
    if args.n_initial is None:
        args.n_initial = [max(2, args.trials)]
    task, curves = load_curves(args.curves)
    if args.trials > len(curves):
        p.error(f"--trials {args.trials} > the {len(curves)} recorded curves")
    t0 = time.time()
    settings = [Setting(*s) for s in itertools.product(
        args.searcher, args.grace_period, args.reduction_factor, args.n_initial,
        args.first_rung_quorum)]
    rows = []
    for i, setting in enumerate(settings, 1):  # minutes each: say where the grid is
        rows.append(evaluate(curves, setting, args, task))
        print(f"[{i}/{len(settings)}] {setting}: {rows[-1]['share_at_most_half']:.2f} of "
              f"seeds within half of random search's epochs ({time.time() - t0:.0f} s)",
              file=sys.stderr, flush=True)
    report = {
        "curves": {"file": str(args.curves), "n": len(curves), "task": task},
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "results": sorted(rows, key=lambda r: -r["p_median_of_5_at_most_half"]),
        "wall_s": time.time() - t0,
    }
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
