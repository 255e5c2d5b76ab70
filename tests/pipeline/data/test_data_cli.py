"""`eqcvt-data` end to end: import, info, preview, errors, and generate with the simulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline.data.cli import main
from pipeline.data.shard_reader import load_shards
from pipeline.data.shards import read_manifest
from tests.pipeline.data._fakes import make_model_tree

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def imported(tmp_path):
    src = make_model_tree(tmp_path / "Model_II", per_class=6)
    make_model_tree(tmp_path / "Model_II_test", per_class=2, seed=1)
    (src / "cdm" / "zz_bad.npy").write_bytes(b"junk")
    out = tmp_path / "ds"
    main(
        [
            "import-deeplense",
            str(src),
            "--out",
            str(out),
            "--allow-pickle",
            "--skip-bad",
            "--seed",
            "1",
        ]
    )
    return out


def test_import_info_preview(imported, tmp_path, capsys):
    m = read_manifest(imported)
    assert m["counts"]["test"]["total"] == 6 and m["n_skipped"] == 1
    assert m["skipped"][0]["file"] == "Model_II/cdm/zz_bad.npy"

    main(["info", str(imported)])
    out = capsys.readouterr().out
    assert "multiclass" in out and "images per split and class" in out and "sha256:" in out
    assert "no_sub" in out and "skipped 1 files: Model_II/cdm/zz_bad.npy" in out

    main(["info", str(imported), "--json"])
    assert json.loads(capsys.readouterr().out)["content_hash"] == m["content_hash"]

    main(["info", str(imported), "--verify"])
    assert "all files match" in capsys.readouterr().out

    grid = tmp_path / "grid.png"
    main(["preview", str(imported), "--out", str(grid), "--per-class", "3", "--split", "test"])
    from PIL import Image

    with Image.open(grid) as im:
        assert im.format == "PNG" and im.size[0] > 100


def test_errors_exit_2_with_one_line(tmp_path, capsys):
    src = make_model_tree(tmp_path / "Model_II", per_class=2)
    with pytest.raises(SystemExit) as e:
        main(["import-deeplense", str(src), "--out", str(tmp_path / "ds")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "allow-pickle" in err and "axion_sim_0.npy" in err
    assert not (tmp_path / "ds").exists()
    with pytest.raises(SystemExit) as e:
        main(["info", str(tmp_path / "nowhere")])
    assert e.value.code == 2 and "no such dataset" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["import-deeplense", str(src), "--out", str(tmp_path / "ds"), "--split", "1,2"])
    assert e.value.code == 2 and "fractions" in capsys.readouterr().err


def test_tampered_dataset_fails_info_verify(imported, capsys):
    path = imported / "test.parquet"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 3] ^= 0x01
    path.write_bytes(bytes(raw))
    main(["info", str(imported)])  # the manifest alone is intact
    with pytest.raises(SystemExit):
        main(["info", str(imported), "--verify"])
    assert "does not match" in capsys.readouterr().err


def test_console_entry_point_in_a_subprocess(imported):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from pipeline.cli import data_main; data_main()",
            "info",
            str(imported),
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["format"] == "eqcvt-shards"


# -- generate (needs pipeline.data.simulate) ----------------------------------------------
def test_generate_simulated_dataset(tmp_path, capsys):
    from pipeline.data import simulate as sim

    args = ["generate", "--preset", "model_ii", "--task", "multiclass", "--n-per-class", "3"]
    args += ["--seed", "5", "--chunk-size", "4"]
    main([*args, "--out", str(tmp_path / "a")])
    main([*args, "--out", str(tmp_path / "b")])
    a, b = read_manifest(tmp_path / "a"), read_manifest(tmp_path / "b")
    assert a["content_hash"] == b["content_hash"]  # same seed, same bytes
    assert a["classes"] == list(sim.TASK_CLASSES["multiclass"]) and a["preset"] == "model_ii"
    assert a["counts"]["test"]["per_class"] == dict.fromkeys(a["classes"], 1)
    assert "log10_m_a" in a["targets"] and a["params"] and a["preset_params"]
    splits, _ = load_shards(tmp_path / "a")
    assert sum(len(s) for s in splits.values()) == 9
    assert float(splits["train"].images.amax()) == pytest.approx(1.0)
    main([*args, "--chunk-size", "9", "--out", str(tmp_path / "c")])
    other, _ = load_shards(tmp_path / "c")  # the simulator promises equality to float rounding
    for name, split in splits.items():
        torch.testing.assert_close(other[name].images, split.images, rtol=0, atol=1e-5)
        torch.testing.assert_close(other[name].targets, split.targets, equal_nan=True)
    main(["preview", str(tmp_path / "a"), "--out", str(tmp_path / "g.png")])
    assert (tmp_path / "g.png").stat().st_size > 0


def test_generate_simulated_bad_preset(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(
            ["generate", "--preset", "model_iv", "--n-per-class", "1", "--out", str(tmp_path / "x")]
        )
    assert e.value.code == 2 and "model_iv" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
