"""`eqcvt-search` command line: dispatch, validation before any cluster work, clear errors."""

from __future__ import annotations

import json
import socket
from types import SimpleNamespace

import pytest

from pipeline import cli


def test_no_arguments_runs_the_default_space(monkeypatch):
    seen = {}
    monkeypatch.setitem(cli.COMMANDS, "run", lambda args: seen.setdefault("args", args) and 0)
    assert cli.main([]) == 0
    args = seen["args"]
    assert args.command == "run" and args.space == "default" and args.address is None
    assert cli.shipped_space(args.space).name == "default.yaml"


def test_shipped_spaces_resolve_by_name():
    assert set(cli.shipped_names()) >= {"default", "asha_hyperopt", "pbt", "baselines"}
    assert cli.shipped_space("pbt.yaml").is_file()
    with pytest.raises(FileNotFoundError, match="shipped"):
        cli.shipped_space("nope")


def test_parse_sets_reads_yaml_scalars():
    assert cli.parse_sets(["train.lr=1e-3", "data.on_the_fly=true", "model.group=C8",
                           "data.n_train=64"]) == {
        "train.lr": 1e-3, "data.on_the_fly": True, "model.group": "C8", "data.n_train": 64}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        cli.parse_sets(["oops"])


def test_bad_yaml_is_rejected_with_file_and_key(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nscheduler: asha\nsearcher: random\nmetric: val_acc\n"
                   "params:\n  model.gruop: C4\n")
    assert cli.main(["run", "--space", str(bad)]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert str(bad) in err and "model.gruop" in err


def test_bad_set_key_is_rejected_before_ray(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", "--set", "train.nope=1"]) == cli.EXIT_USAGE
    assert "train.nope" in capsys.readouterr().err
    assert not (tmp_path / "ray_results").exists()


def test_unreachable_tracking_server_refuses_to_start(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    rc = cli.main(["run", "--tracking-uri", uri, "--storage-path", str(tmp_path / "r")])
    assert rc == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "not reachable" in err and uri in err
    assert not (tmp_path / "r").exists()


def test_resume_of_something_that_is_not_a_search(tmp_path, capsys):
    assert cli.main(["resume", str(tmp_path)]) == cli.EXIT_USAGE
    assert "not an eqcvt-search experiment" in capsys.readouterr().err


def test_cluster_check_is_forwarded(monkeypatch):
    import pipeline.cluster

    seen = {}
    monkeypatch.setattr(pipeline.cluster, "main", lambda argv: seen.setdefault("argv", argv)
                        and 0)
    assert cli.main(["cluster-check", "cluster.yaml", "--pyproject", "p.toml"]) == 0
    assert seen["argv"] == ["cluster.yaml", "--pyproject", "p.toml"]


def test_data_main_forwards_to_the_data_cli(monkeypatch):
    import pipeline.data.cli

    called = []
    monkeypatch.setattr(pipeline.data.cli, "main", lambda: called.append(True))
    cli.data_main()
    assert called == [True]


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("run", "resume", "final", "report", "predict", "cluster-check"):
        assert cmd in out


def test_run_parses_the_space_once_and_checks_the_server_once(tmp_path, monkeypatch):
    """One parse of the YAML (with the pins and budget) and one server check per command,
    all before Ray is joined."""
    pytest.importorskip("ray")
    import pipeline.search.parse as parse
    import pipeline.tracking as tracking
    import pipeline.tune.driver as driver

    calls = {"parse": 0, "check": 0}
    real_parse = parse.parse_search_space

    def counting_parse(*a, **k):
        calls["parse"] += 1
        return real_parse(*a, **k)

    def counting_check(*a, **k):
        calls["check"] += 1

    def no_ray(address):
        assert calls == {"parse": 1, "check": 1}, calls  # everything before Ray
        raise KeyboardInterrupt

    monkeypatch.setattr(parse, "parse_search_space", counting_parse)
    monkeypatch.setattr(tracking, "check_server", counting_check)
    monkeypatch.setattr(driver, "connect", no_ray)
    monkeypatch.chdir(tmp_path)
    rc = cli.main(["run", "--set", "data.n_train=16", "--epochs", "1",
                   "--storage-path", str(tmp_path / "r")])
    assert rc == cli.EXIT_INTERRUPTED
    assert calls == {"parse": 1, "check": 1}


def _fake_search(monkeypatch, tmp_path):
    """cmd_run up to run_search, which records the request instead of starting Ray."""
    import pipeline.tune as ptune
    from pipeline.live import LiveView

    seen = {}

    def run_search(request, spec=None):
        seen["request"] = request
        return SimpleNamespace(
            view=LiveView("val_acc", "max", "t"), statuses={"t1": "TERMINATED"},
            interrupted=False, failure=None, tracking_pending=0,
            experiment_path=request.experiment_path,
            tracking_uri=request.tracking_uri)

    monkeypatch.setattr(ptune, "run_search", run_search)
    space = tmp_path / "one.yaml"
    space.write_text("name: one\nscheduler: asha\nsearcher: random\nmetric: val_acc\n"
                     "params:\n  model.group: C4\n  model.fields: 2\n  model.embed_dim: 8\n"
                     "  train.lr: {loguniform: [1.0e-4, 1.0e-2]}\n")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return seen, ["run", "--space", str(space), "--storage-path", str(tmp_path / "r"),
                  "--tracking-uri", uri], uri


def test_searches_default_to_one_mlflow_experiment_and_print_next_commands(
        tmp_path, capsys, monkeypatch):
    seen, argv, uri = _fake_search(monkeypatch, tmp_path)
    assert cli.main(argv) == 0
    request = seen["request"]
    assert request.tracking_experiment == "eqcvt-default"
    assert request.experiment.startswith("one-") and request.experiment != "eqcvt-default"
    err = capsys.readouterr().err
    assert "preflight: " in err and "1 models built" in err
    assert f"mlflow ui --backend-store-uri {uri}" in err
    assert f"eqcvt-search final --experiment {request.experiment} --epochs 2" in err
    assert f"eqcvt-search report --experiment {request.experiment}" in err


def test_an_explicit_experiment_names_the_search_and_the_mlflow_experiment(
        tmp_path, capsys, monkeypatch):
    seen, argv, _ = _fake_search(monkeypatch, tmp_path)
    assert cli.main([*argv, "--experiment", "mine"]) == 0
    assert seen["request"].experiment == seen["request"].tracking_experiment == "mine"
    assert "eqcvt-search report --experiment mine" in capsys.readouterr().err


def test_requests_saved_before_the_default_experiment_resume_in_their_own():
    from pipeline.tune import SearchRequest

    old = SearchRequest(space_file="s.yaml", space_text="", experiment="old-search",
                        storage_path="/tmp", tracking_uri="sqlite:///x.db").to_json()
    data = json.loads(old)
    del data["mlflow_experiment"]
    assert SearchRequest.from_json(json.dumps(data)).tracking_experiment == "old-search"
