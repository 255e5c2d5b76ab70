"""`eqcvt-search` (run / resume / final / report / predict / cluster-check) and `eqcvt-data`.

`eqcvt-search` with no arguments runs search_spaces/default.yaml on simulated data on this
machine. Ray is imported only by the commands that need a cluster (run, resume).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXIT_INTERRUPTED = 130
EXIT_USAGE = 2
EXIT_FAILED = 1  # the search ran but failed: no trial finished, or stopped on one error
DEFAULT_SPACE = "default"


def shipped_space(name: str) -> Path:
    """A search space by path, or by the name of a shipped file ("default", "pbt")."""
    from search_spaces import find_shipped

    return find_shipped(name)


def shipped_names() -> list[str]:
    from search_spaces import shipped_names as names

    return names()


def default_storage() -> str:
    return str(Path.cwd() / "ray_results")


def parse_sets(items: Sequence[str]) -> dict[str, Any]:
    """KEY=VALUE pins (1e-3, true, C8), typed by the config key (`config.parse_value`)."""
    from .config import parse_value

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE (e.g. data.n_train=64), got {item!r}")
        out[key] = parse_value(key, value)  # unknown key or bad value: ValueError naming it
    return out


# ----------------------------------------------------------------------------- parser


def _add_cluster(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", default=None,
                   help="Ray cluster address (default: RAY_ADDRESS, else a local cluster)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: sqlite:///<cwd>/mlflow.db)")


_SELECT_HELP = ("a search's name (printed at the end of `run`): that search; or an MLflow "
                "experiment (e.g. eqcvt-default): its latest search. Trials of different "
                "searches are never ranked together")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eqcvt-search",
        description="Search EqCvT architectures with Ray Tune, track them in MLflow.",
    )
    sub = parser.add_subparsers(dest="command")

    run = sub.add_parser("run", help="start a search")
    run.add_argument("--space", default=DEFAULT_SPACE,
                     help=f"search-space YAML, or a shipped name ({DEFAULT_SPACE}, pbt, ...)")
    src = run.add_mutually_exclusive_group()
    src.add_argument("--data", metavar="DIR", help="Parquet dataset folder (eqcvt-data)")
    src.add_argument("--simulate", metavar="PRESET",
                     help="simulated data of this preset (model_i, model_ii, model_iii)")
    run.add_argument("--experiment", default=None,
                     help="name of the search, its Tune folder and its MLflow experiment "
                          "(default: search <space>-<timestamp> in MLflow experiment "
                          "eqcvt-default, beside the user's other searches)")
    run.add_argument("--storage-path", default=None, help="Tune results (default ./ray_results)")
    run.add_argument("--num-samples", type=int, default=None, help="trials (overrides YAML)")
    run.add_argument("--epochs", type=int, default=None,
                     help="max epochs per trial (overrides max_epochs)")
    run.add_argument("--cpus-per-trial", type=float, default=None)
    run.add_argument("--gpus-per-trial", type=float, default=None,
                     help="fraction allowed: 0.25 packs four trials on a GPU")
    run.add_argument("--max-failures", type=int, default=3,
                     help="retries of a failed trial from its last checkpoint")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="pin a config key for every trial (e.g. data.n_train=64)")
    run.add_argument("--warm-start", metavar="EXPERIMENT", default=None,
                     help="start the searcher (optuna) from the finished trials of an earlier "
                          "search: " + _SELECT_HELP)
    _add_cluster(run)

    res = sub.add_parser("resume", help="finish an interrupted search")
    res.add_argument("target", nargs="?", default=None,
                     help="experiment name or path (default: the latest)")
    res.add_argument("--storage-path", default=None)
    _add_cluster(res)

    fin = sub.add_parser("final", help="train the best trials longer and register the best")
    fin.add_argument("--experiment", required=True, help=_SELECT_HELP)
    fin.add_argument("--top-k", type=int, default=3)
    fin.add_argument("--pareto", action="store_true",
                     help="retrain the search's Pareto set (its objectives, or the metric "
                          "against parameters) instead of the top K")
    fin.add_argument("--epochs", type=int, required=True)
    fin.add_argument("--seeds", type=int, default=3, help="training seeds per model")
    fin.add_argument("--model-name", default=None,
                     help="registered model name (default eqcvt-<experiment>)")
    fin.add_argument("--from-checkpoint", action="store_true",
                     help="start from the trial's best weights instead of from scratch")
    fin.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    fin.add_argument("--tracking-uri", default=None)

    rep = sub.add_parser("report", help="leaderboard of trials and final runs (markdown)")
    rep.add_argument("--experiment", default=None, help=_SELECT_HELP)
    rep.add_argument("--study", default=None, help="the report of this study, from MLflow")
    rep.add_argument("--out", default=None, help="report.md (plots are written beside it)")
    rep.add_argument("--tracking-uri", default=None)

    pred = sub.add_parser("predict", help="predict with a registered model")
    pred.add_argument("--model", required=True, help="NAME or NAME/VERSION")
    src = pred.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", metavar="DIR")
    src.add_argument("--simulate", metavar="PRESET")
    pred.add_argument("--split", default=None, choices=("train", "val", "test"),
                      help="predict only this split (default: every image of --data; "
                      "the test split of --simulate)")
    pred.add_argument("--n", type=int, default=None, help="images to predict (simulate)")
    pred.add_argument("--out", default=None, help="write predictions as CSV")
    pred.add_argument("--tracking-uri", default=None)

    _add_study_parser(sub)

    cc = sub.add_parser("cluster-check", help="validate Ray cluster launcher files offline")
    cc.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


# ----------------------------------------------------------------------------- commands


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True, width=None if sys.stderr.isatty() else 150)


def cmd_run(args: argparse.Namespace) -> int:
    from . import tracking
    from .experiments import DEFAULT_EXPERIMENT
    from .search import SearchRequest
    from .search.preflight import preflight

    space = shipped_space(args.space)
    fixed = parse_sets(args.set)
    if args.simulate:
        fixed.update({"data.source": "simulate", "data.preset": args.simulate})
    if args.data:
        fixed.update({"data.source": "shards", "data.path": str(Path(args.data).resolve())})
    # without --experiment: a unique search (and Tune folder) name in the shared experiment
    mlflow_experiment = args.experiment or DEFAULT_EXPERIMENT
    storage = args.storage_path or default_storage()
    if "://" not in storage:
        storage = str(Path(storage).resolve())
    uri = tracking.resolve_tracking_uri(args.tracking_uri)
    request = SearchRequest(
        space_file=str(space), space_text=space.read_text(), experiment=args.experiment or "",
        storage_path=storage, tracking_uri=uri, fixed=fixed, max_epochs=args.epochs,
        num_samples=args.num_samples, cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial, max_failures=args.max_failures,
        address=args.address, mlflow_experiment=mlflow_experiment,
        warm_start=args.warm_start,
    )
    spec = request.spec()  # the one parse: YAML, pins and budget, before Ray starts
    experiment = request.experiment = (
        args.experiment or f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    console = _console()
    # every sampled model built once, with the CLI pins, before Ray is even imported
    checked = preflight(spec, pinned=set(fixed))
    console.print(f"preflight: {checked.configs} sampled configurations, {checked.models} "
                  f"models built in {checked.seconds:.1f} s")
    warm = None
    if args.warm_start:
        from .warm_start import warm_trials

        start = warm_trials(args.warm_start, spec, uri)
        warm = start.trials
        console.print(f"warm start: {len(warm)} finished trials of {start.search} "
                      f"({start.skipped} outside this search space or its constraints, skipped)")

    from . import tune as ptune  # run_search checks the tracking server before Ray starts

    console.print(f"[bold]eqcvt-search[/] {experiment}: {space} -> {request.experiment_path}")
    console.print(f"MLflow: {uri} (experiment {mlflow_experiment})")
    extra = {"warm": warm} if warm is not None else {}
    rc = _report_outcome(ptune.run_search(request, spec=spec, **extra), console)
    if rc == 0:
        print_next_commands(console, uri, experiment, mlflow_experiment,
                            epochs=2 * (args.epochs or spec.max_epochs))
    return rc


def print_next_commands(console: Any, uri: str, search: str, mlflow_experiment: str,
                        epochs: int) -> None:
    """What to do after a search, with the real names; the search's name selects this
    search in `final` and `report` even inside the shared MLflow experiment."""
    console.print(f"next (the search is run {search!r} of MLflow experiment "
                  f"{mlflow_experiment!r}):")
    if not uri.startswith("sqlite:"):  # _report_outcome already printed the SQLite one
        console.print(f"  MLflow UI: {uri}")
    console.print(f"  eqcvt-search final --experiment {search} --epochs {epochs} --top-k 3")
    console.print(f"  eqcvt-search report --experiment {search} --out report_{search}.md")


def cmd_resume(args: argparse.Namespace) -> int:
    from . import tune as ptune
    from .search.storage import join

    storage = args.storage_path or default_storage()
    target = args.target
    if target is None:
        path = ptune.latest_experiment(storage)
    elif "://" in target or os.sep in target or Path(target).exists():
        path = target if "://" in target else str(Path(target).resolve())
    else:
        path = join(storage, target)
    console = _console()
    console.print(f"[bold]eqcvt-search resume[/] {path}")
    outcome = ptune.resume_search(path, address=args.address, tracking_uri=args.tracking_uri)
    return _report_outcome(outcome, console)


def _report_outcome(outcome: Any, console: Any) -> int:
    from rich.console import Console

    outcome.view.print_leaderboard(
        Console(file=sys.stdout, width=None if sys.stdout.isatty() else 150))
    counts: dict[str, int] = {}
    for s in outcome.statuses.values():
        counts[s] = counts.get(s, 0) + 1
    console.print("trials: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    if outcome.failure:
        console.print(f"[red]{outcome.failure}[/]")
        return EXIT_FAILED
    if outcome.interrupted:
        console.print(f"[yellow]interrupted; state saved. Continue with:[/] "
                      f"eqcvt-search resume {outcome.experiment_path}")
        return EXIT_INTERRUPTED
    if outcome.tracking_pending:
        return 1
    console.print(f"done: {outcome.experiment_path}")
    if outcome.tracking_uri.startswith("sqlite:"):
        console.print(f"MLflow UI: mlflow ui --backend-store-uri {outcome.tracking_uri}")
    return 0


def cmd_final(args: argparse.Namespace) -> int:
    from .final import final_training

    summary = final_training(
        experiment=args.experiment, top_k=args.top_k, epochs=args.epochs, seeds=args.seeds,
        tracking_uri=args.tracking_uri, model_name=args.model_name,
        from_checkpoint=args.from_checkpoint, overrides=parse_sets(args.set),
        console=_console(), pareto=args.pareto,
    )
    print(summary.to_json())
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    if args.study:
        from .study.report import write_study_report

        out = write_study_report(args.study, experiment=args.experiment,
                                 tracking_uri=args.tracking_uri,
                                 out=args.out or f"study-{args.study}.md")
        print(f"wrote {out}", file=sys.stderr)
        return 0
    if not args.experiment:
        raise ValueError("report needs --experiment (a search) or --study NAME")
    from .report import write_report

    out = write_report(args.experiment, tracking_uri=args.tracking_uri, out=args.out)
    if args.out is None:
        print(out.read_text())
    else:
        print(f"wrote {out}", file=sys.stderr)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .predict import predict_registered

    result = predict_registered(
        args.model, tracking_uri=args.tracking_uri, data_dir=args.data, preset=args.simulate,
        split=args.split, n=args.n, out=args.out,
    )
    print(result.to_json())
    return 0


def _add_study_parser(sub: Any) -> None:
    st = sub.add_parser("study", help="benchmark study: models x datasets x seeds, one protocol")
    st.add_argument("spec", help="study YAML, or a shipped study name (quick, seed_abstract, ...)")
    st.add_argument("--experiment", default=None, help="MLflow experiment (default study-<name>)")
    st.add_argument("--storage-path", default=None, help="Tune results (default ./ray_results)")
    st.add_argument("--cpus-per-trial", type=float, default=1.0)
    st.add_argument("--gpus-per-trial", type=float, default=0.0,
                    help="fraction allowed: 0.25 packs four trials on a GPU")
    st.add_argument("--max-failures", type=int, default=0, help="retries of a failed trial")
    st.add_argument("--out", default=None, help="report path (default ./study-<name>.md)")
    _add_cluster(st)


def cmd_study(args: argparse.Namespace) -> int:
    """Validate the study in full (names file and key, builds every model), then run it."""
    from . import tracking
    from .study.cells import check_buildable
    from .study.report import write_study_report
    from .study.spec import load_study

    spec = load_study(args.spec)
    check_buildable(spec)
    experiment = args.experiment or f"study-{spec.name}"
    uri = tracking.resolve_tracking_uri(args.tracking_uri)
    tracking.check_server(uri)
    storage = args.storage_path or default_storage()
    if "://" not in storage:
        storage = str(Path(storage).resolve())
    console = _console()
    from .tune.study import run_study

    outcome = run_study(spec, experiment=experiment, tracking_uri=uri, storage_path=storage,
                        address=args.address, cpus_per_trial=args.cpus_per_trial,
                        gpus_per_trial=args.gpus_per_trial, max_failures=args.max_failures,
                        say=console.print)
    for key, err in outcome.errors.items():
        console.print(f"[red]trial {key} failed[/]: {err.splitlines()[-1] if err else ''}")
    out = write_study_report(spec.name, experiment=experiment, tracking_uri=uri,
                             out=args.out or f"study-{spec.name}.md")
    console.print(f"report: {out}")
    print(out.read_text())
    return 0 if outcome.ok else 1


COMMANDS = {
    "run": cmd_run, "resume": cmd_resume, "final": cmd_final, "report": cmd_report,
    "predict": cmd_predict, "study": cmd_study,
}


def search_main(argv: Sequence[str] | None = None) -> None:
    raise SystemExit(main(argv))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "cluster-check":
        from .cluster import main as cluster_main

        return int(cluster_main(argv[1:]) or 0)
    parser = build_parser()
    args = parser.parse_args(argv or ["run"])
    from . import tracking
    from .search import SearchSpaceError

    if args.command in ("run", "resume"):
        _sigterm_interrupts()
    try:
        return COMMANDS[args.command](args)
    except (SearchSpaceError, tracking.TrackingUnavailable, FileNotFoundError, ValueError) as err:
        print(f"eqcvt-search: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("eqcvt-search: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _sigterm_interrupts() -> None:
    """SIGTERM outside Tune's loop stops the driver like Ctrl-C (runs end KILLED); inside
    the loop pipeline.tune turns it into SIGINT, which Tune answers by saving its state."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def data_main() -> None:
    from pipeline.data.cli import main

    main()


if __name__ == "__main__":
    search_main()
