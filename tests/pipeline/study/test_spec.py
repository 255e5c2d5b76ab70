"""Study YAML: every shipped study parses, unknown keys and bad values name file and key,
and the CLI refuses them with exit 2 before Ray starts."""

from __future__ import annotations

from importlib import resources

import pytest

from pipeline.cli import main
from pipeline.study.cells import build_cells
from pipeline.study.spec import StudySpecError, load_study, parse_study

BASE = """
name: t
seeds: [0, 3]
budget: {epochs: 2}
train: {lr: 0.01}
models:
  - {label: a, model: {name: eqcvt_stem, fields: 2}, train: {batch_size: 8}}
  - {model: {name: cvt_baseline}}
datasets:
  - {label: m2, data: {preset: model_ii, task: multiclass}, shifted: {preset: model_iii}}
  - {label: m3, data: {preset: model_iii, task: multiclass, n_train: 100}}
new_class: {k: [4], datasets: [m2]}
"""


def test_parse_builds_one_cell_per_model_dataset_seed():
    spec = parse_study(BASE, "t.yaml")
    assert [m.label for m in spec.models] == ["a", "cvt_baseline"]
    cells = build_cells(spec)
    assert len(cells) == 2 * 2 * 2
    c = next(c for c in cells if c["model"] == "a" and c["dataset"] == "m2" and c["seed"] == 3)
    assert c["config"]["train.seed"] == 3 and c["config"]["train.batch_size"] == 8
    assert c["config"]["train.lr"] == 0.01 and c["config"]["train.epochs"] == 2
    assert set(c["generalise"]) == {"m3", "shifted"}
    assert c["generalise"]["shifted"]["data.preset"] == "model_iii"
    assert c["new_class"] == {"k": [4], "hold_out": None, "epochs": None}
    assert all(c["new_class"] is None for c in cells if c["dataset"] == "m3")


def test_budget_in_images_is_the_same_for_every_batch_size():
    spec = parse_study(BASE.replace("{epochs: 2}", "{images: 1000}"), "t.yaml")
    by = {(c["model"], c["dataset"]): c["config"]["train.epochs"] for c in build_cells(spec)}
    assert by[("a", "m2")] == by[("cvt_baseline", "m2")] == 4  # 1000 / 256 train images
    assert by[("a", "m3")] == 10


@pytest.mark.parametrize("edit, needle", [
    (("seeds: [0, 3]", "seeds: [0, 3]\nbogus: 1"), "unknown key study.bogus"),
    (("train: {lr: 0.01}", "train: {lrr: 0.01}"), "train.lrr"),
    (("fields: 2}", "fields: 2, colour: red}"), "model.colour"),
    (("{label: m3, data:", "{label: m3, extra: 1, data:"), "datasets[1].extra"),
    (("train: {lr: 0.01}", "train: {lr: 0.01, epochs: 3}"), "budget"),
    (("{epochs: 2}", "{epochs: 2, images: 5}"), "exactly one"),
    (("k: [4]", "k: [0]"), "new_class.k"),
    (("datasets: [m2]", "datasets: [m9]"), "m9"),
    (("task: multiclass, n_train", "task: triclass, n_train"), "data.task"),
])
def test_errors_name_the_file_and_the_key(edit, needle):
    with pytest.raises(StudySpecError) as err:
        parse_study(BASE.replace(*edit), "my/study.yaml")
    assert "my/study.yaml" in str(err.value) and needle in str(err.value)


SHIPPED = sorted(p.name[:-5] for p in resources.files("search_spaces.studies").iterdir()
                 if p.name.endswith(".yaml"))


def test_the_three_studies_are_shipped():
    assert {"quick", "seed_abstract", "deeplense"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_study_parses(name):
    spec = load_study(name)
    assert spec.name == name and len(build_cells(spec)) >= 2


def test_cli_refuses_a_bad_study_before_ray(tmp_path, capsys, monkeypatch):
    import sys

    bad = tmp_path / "bad.yaml"
    bad.write_text(BASE.replace("name: eqcvt_stem", "name: eqcvt_stm"))
    monkeypatch.chdir(tmp_path)
    assert main(["study", str(bad), "--tracking-uri", f"sqlite:///{tmp_path}/m.db"]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "eqcvt_stm" in err
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()
    assert main(["study", "no_such_study"]) == 2


def test_models_from_the_top_trials_of_a_search(tmp_path):
    from pipeline import tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tr = tracking.Tracker(uri, "srch")
    s = tr.start_run("srch", kind="search", params={"search.metric": "val_acc",
                                                    "search.mode": "max"})
    for tid, acc, fields in (("t1", 0.6, 2), ("t2", 0.9, 3), ("t3", 0.7, 4)):
        r = tr.start_run(tid, kind="trial", parent=s, tags={tracking.TAG_TRIAL_ID: tid},
                         params={"model.name": "eqcvt_stem", "model.fields": fields,
                                 "train.lr": 0.01, "train.epochs": 7, "data.n_train": 9})
        tr.log_metrics(r, {"best_val_acc": acc}, step=0, skip_logged=False)
        tr.end_run(r)
    tr.end_run(s)
    text = BASE.replace("  - {model: {name: cvt_baseline}}",
                        f"  - {{from_search: {{experiment: srch, top_k: 2, tracking_uri: '{uri}'}},"
                        " train: {batch_size: 4}}")
    spec = parse_study(text, "t.yaml")
    assert [m.label for m in spec.models] == ["a", "srch:t2", "srch:t3"]
    t2 = spec.models[1].flat
    assert t2["model.fields"] == 3 and t2["train.batch_size"] == 4 and t2["train.lr"] == 0.01
    assert "train.epochs" not in t2 and "data.n_train" not in t2  # budget and data: the study's
