"""Preflight: every sampled model is built before Ray starts; refusals name the file and key."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline import cli
from pipeline.search import SearchSpaceError, load_search_space, parse_search_space
from pipeline.search.preflight import corner_rows, preflight, sampled_configs

REPO = Path(__file__).resolve().parents[3]
SHIPPED = sorted((REPO / "search_spaces").glob("*.yaml"))
TINY = {"name": "tiny", "scheduler": "asha", "searcher": "random", "metric": "val_acc",
        "mode": "max", "num_samples": 2, "max_epochs": 1}


def tiny_space(tmp_path: Path, params: dict) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({**TINY, "params": {
        "data.n_train": 8, "data.n_val": 4, "data.n_test": 4, **params}}))
    return path


def test_the_shipped_spaces_are_found():
    assert {p.stem for p in SHIPPED} >= {"default", "asha_hyperopt", "pbt", "baselines"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_space_builds_twenty_sampled_models(path):
    spec = load_search_space(path)
    result = preflight(spec, samples=20, corners=False)
    assert result.configs == 20
    assert result.models >= 1  # identical architectures are built once


def test_corner_rows_take_every_corner_of_every_branch():
    spec = load_search_space(REPO / "search_spaces" / "default.yaml")
    rows = corner_rows(spec.trial_params())
    groups = {r["model.group"]: set() for r in rows}
    for r in rows:
        groups[r["model.group"]].add(r["model.fields"])
    assert groups == {"C4": {4, 6}, "D2": {4, 6}, "C8": {2, 3}}
    assert {r["model.stem_blocks"] for r in rows} == {1, 2}  # randint [1, 3): high exclusive
    flats = list(sampled_configs(spec, samples=3))
    assert len(flats) == 3 + len(rows)
    assert flats[:3] == list(sampled_configs(spec, samples=3))[:3]  # deterministic


def test_unregistered_model_name_names_file_and_key(tmp_path):
    path = tiny_space(tmp_path, {"model.name": "eqcvt_stm"})
    with pytest.raises(SearchSpaceError) as err:
        preflight(load_search_space(path))
    msg = str(err.value)
    assert msg.startswith(f"{path}: model.name: 'eqcvt_stm' is not a registered model")
    assert "eqcvt_stem" in msg  # lists the registered names


def test_unregistered_name_inside_a_branch_is_found_without_sampling_it(tmp_path):
    path = tiny_space(tmp_path, {"model.name": {"choice": [
        {"value": "eqcvt_stem", "params": {"model.fields": 2}}, "nope_model"]}})
    with pytest.raises(SearchSpaceError, match="model.name: 'nope_model' is not a registered"):
        preflight(load_search_space(path), samples=0)


def test_a_combination_the_model_refuses_is_caught_at_its_corner(tmp_path):
    # ModelSection accepts stem_blocks >= 0, but a stem model needs at least one block; only
    # the low corner of randint [0, 3) hits it, so the random samples alone may miss it.
    path = tiny_space(tmp_path, {"model.name": "eqcvt_stem", "model.group": "C4",
                                 "model.fields": 2, "model.embed_dim": 8,
                                 "model.stem_blocks": {"randint": [0, 3]}})
    spec = load_search_space(path)
    with pytest.raises(SearchSpaceError) as err:
        preflight(spec, samples=0)
    msg = str(err.value)
    assert msg.startswith(f"{path}: model.stem_blocks: model 'eqcvt_stem' cannot be built")
    assert "needs stem_blocks >= 1" in msg


def test_an_image_size_the_data_cannot_give(tmp_path):
    path = tiny_space(tmp_path, {"data.preset": "model_ii", "data.img_size": 96,
                                 "model.fields": 2, "model.embed_dim": 8})
    with pytest.raises(SearchSpaceError, match=r"space.yaml: data.img_size: img_size 96 does "
                                               r"not fit the data's native 64x64"):
        preflight(load_search_space(path), samples=1)


def test_a_pinned_key_is_blamed_on_the_command_line(tmp_path):
    path = tiny_space(tmp_path, {"model.fields": 2, "model.embed_dim": 8})
    spec = load_search_space(path).with_fixed({"model.name": "eqcvt_stm"})
    with pytest.raises(SearchSpaceError, match="^command line: model.name: 'eqcvt_stm'"):
        preflight(spec, pinned={"model.name"})


def test_identical_architectures_are_built_once(tmp_path):
    path = tiny_space(tmp_path, {"model.group": "C4", "model.fields": 2, "model.embed_dim": 8,
                                 "train.lr": {"loguniform": [1e-4, 1e-2]}})
    result = preflight(parse_search_space(yaml.safe_load(path.read_text()), str(path)))
    assert result.configs > 20 and result.models == 1


def test_cli_refuses_an_unregistered_model_before_ray(tmp_path):
    """The reported case: `model.name: eqcvt_stm` started Ray and exited 0 after 116 s."""
    path = tiny_space(tmp_path, {"model.name": "eqcvt_stm"})
    code = ("import sys; from pipeline import cli; rc = cli.main(sys.argv[1:]); "
            "print('ray imported:', 'ray' in sys.modules); sys.exit(rc)")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", code, "run", "--space", str(path), "--storage-path",
         str(tmp_path / "results"), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    elapsed = time.monotonic() - t0
    assert proc.returncode == cli.EXIT_USAGE, proc.stderr
    assert f"{path}: model.name: 'eqcvt_stm' is not a registered model" in proc.stderr
    assert "ray imported: False" in proc.stdout
    assert not (tmp_path / "results").exists()
    assert elapsed < 90, elapsed  # imports (torch, escnn), not a cluster start and retries


def test_constraints_no_sampled_configuration_meets_are_refused_before_ray():
    doc = {"searcher": "optuna", "max_epochs": 1, "constraints": {"num_params": {"max": 100}},
           "params": {"data.source": "simulate", "data.task": "binary", "data.img_size": 32,
                      "model.name": "eqcvt_stem", "model.group": "C4", "model.fields": 1,
                      "model.embed_dim": {"choice": [8, 16]}, "model.depth": 1,
                      "model.heads": 1, "model.head_hidden": 8, "model.kernel_size": 3,
                      "model.stem_blocks": 1}}
    with pytest.raises(SearchSpaceError, match=r"tight\.yaml: constraints: none of the .* "
                                                r"2754 parameters"):
        preflight(parse_search_space(doc, "tight.yaml"), samples=4)
    doc["constraints"] = {"num_params": {"max": 4000}}  # embed_dim 8 fits
    assert preflight(parse_search_space(doc, "tight.yaml"), samples=4).models == 2
