"""open_data: shard-backed and simulated bundles, on-the-fly streams, crops, task checks."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pipeline.data.bundle import DataBundle, Split, center_crop, open_data
from pipeline.data.shard_writer import write_shards
from pipeline.data.splits import assign_splits

CLASSES = ("axion", "cdm", "no_sub")


def cfg(**kw):
    """Duck-typed DataConfig: the bundle reads attributes only."""
    base = dict(
        source="shards",
        path="",
        preset="model_ii",
        task="multiclass",
        n_train=24,
        n_val=6,
        n_test=6,
        seed=0,
        on_the_fly=False,
        img_size=0,
        randomize_einstein_radius=None,
        mass_conserving=None,
        randomize_orientation=None,
    )
    base.update(kw)
    return SimpleNamespace(**base)


@pytest.fixture
def shards(tmp_path):
    rng = np.random.default_rng(0)
    n = 45
    labels = np.arange(n) % 3
    mass = np.where(labels == 0, rng.uniform(-24, -22, n), np.nan).astype(np.float32)
    write_shards(
        tmp_path / "ds",
        images=rng.random((n, 1, 10, 10), dtype=np.float32),
        labels=labels,
        classes=CLASSES,
        split=assign_splits(labels, (0.6, 0.2, 0.2), 0),
        task="multiclass",
        seed=0,
        source={"kind": "test"},
        targets={"log10_m_a": mass},
    )
    return tmp_path / "ds"


def test_shards_classification(shards):
    b = open_data(cfg(path=str(shards)))
    assert isinstance(b, DataBundle) and b.task == "multiclass" and b.classes == CLASSES
    assert b.image_shape == (1, 10, 10) and b.num_outputs == 3 and b.stream is None
    assert (len(b.train), len(b.val), len(b.test)) == (27, 9, 9)
    assert b.train.targets.shape == (27, 0) and b.manifest["content_hash"].startswith("sha256:")


def test_shards_regression_selects_axion_rows(shards):
    b = open_data(cfg(path=str(shards), task="regression"))
    assert b.classes == ("axion",) and b.num_outputs == 1
    assert (len(b.train), len(b.val), len(b.test)) == (9, 3, 3)
    assert b.train.targets.shape == (9, 1) and bool(torch.isfinite(b.train.targets).all())
    assert int(b.train.labels.abs().sum()) == 0
    assert float(b.train.targets.min()) >= -24 and float(b.train.targets.max()) <= -22


def test_shards_crop(shards):
    b = open_data(cfg(path=str(shards), img_size=6))
    assert b.image_shape == (1, 6, 6) and b.val.images.is_contiguous()
    full = open_data(cfg(path=str(shards)))
    assert torch.equal(b.val.images, full.val.images[..., 2:8, 2:8])
    with pytest.raises(ValueError, match="img_size 12 does not fit"):
        open_data(cfg(path=str(shards), img_size=12))


def test_shards_errors(shards, tmp_path):
    with pytest.raises(ValueError, match="task is 'multiclass'.*asks 'binary'"):
        open_data(cfg(path=str(shards), task="binary"))
    with pytest.raises(ValueError, match="needs data.path"):
        open_data(cfg(path=""))
    with pytest.raises(ValueError, match="on_the_fly"):
        open_data(cfg(path=str(shards), on_the_fly=True))
    with pytest.raises(ValueError, match="data.source"):
        open_data(cfg(source="disk"))
    with pytest.raises(ValueError, match="data.task"):
        open_data(cfg(path=str(shards), task="segmentation"))
    with pytest.raises(TypeError, match="lacks field 'img_size'"):
        open_data(SimpleNamespace(source="shards", task="binary", path=str(shards)))
    rng = np.random.default_rng(0)
    write_shards(
        tmp_path / "bin",
        images=rng.random((8, 1, 4, 4), dtype=np.float32),
        labels=np.arange(8) % 2,
        classes=("no_sub", "sub"),
        split=np.array([0] * 6 + [1, 2]),
        task="binary",
        seed=0,
        source={},
    )
    with pytest.raises(ValueError, match="regression needs axion images"):
        open_data(cfg(path=str(tmp_path / "bin"), task="regression"))
    assert open_data(cfg(path=str(tmp_path / "bin"), task="binary")).num_outputs == 2


def test_shards_with_pipeline_data_config(shards):
    config = pytest.importorskip("pipeline.config")
    b = open_data(config.DataConfig(source="shards", path=str(shards), task="multiclass"))
    assert len(b.val) == 9


def test_split_validates_shapes():
    with pytest.raises(ValueError, match="images must be"):
        Split(torch.zeros(2, 4, 4), torch.zeros(2, dtype=torch.int64), torch.zeros(2, 0))
    with pytest.raises(ValueError, match="labels"):
        Split(torch.zeros(2, 1, 4, 4), torch.zeros(3, dtype=torch.int64), torch.zeros(2, 0))
    with pytest.raises(ValueError, match="targets"):
        Split(torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.int64), torch.zeros(2))


def test_center_crop_odd_margin():
    x = torch.arange(25.0).reshape(1, 1, 5, 5)
    assert center_crop(x, 0) is x
    assert center_crop(x, 2).flatten().tolist() == [6.0, 7.0, 11.0, 12.0]


# -- simulated (need pipeline.data.simulate) ----------------------------------------------
@pytest.fixture
def simulate_mod():
    from pipeline.data import simulate

    return simulate


def _small(**kw):
    base = dict(source="simulate", task="binary", n_train=4, n_val=2, n_test=2, seed=3)
    return cfg(**{**base, **kw})


def test_simulated_bundle(simulate_mod):
    b = open_data(_small())
    assert b.classes == tuple(simulate_mod.TASK_CLASSES["binary"]) and b.num_outputs == 2
    assert (len(b.train), len(b.val), len(b.test)) == (4, 2, 2)
    assert b.train.images.dtype == torch.float32 and b.train.images.shape[1] == 1
    assert b.image_shape == tuple(b.val.images.shape[1:])
    assert b.train.labels.tolist() == [0, 1, 0, 1]
    again = open_data(_small())
    assert torch.equal(b.train.images, again.train.images)
    assert torch.equal(b.test.images, again.test.images)
    # separate seed streams: no image is shared between splits
    assert not torch.equal(b.train.images[:2], b.val.images)
    assert not torch.equal(b.val.images, b.test.images)
    other = open_data(_small(seed=4))
    assert not torch.equal(b.train.images, other.train.images)


def test_simulated_on_the_fly_stream(simulate_mod):
    fixed = open_data(_small())
    b = open_data(_small(on_the_fly=True))
    assert b.train is None and b.stream is not None
    x, y, t = b.stream(0, 2)
    assert x.shape == (2, *b.image_shape) and y.dtype == torch.int64 and t.shape == (2, 0)
    # batch k = images [k*B, (k+1)*B) of the train stream (equal to float rounding)
    torch.testing.assert_close(x, fixed.train.images[:2], rtol=0, atol=1e-5)
    x1, y1, _ = b.stream(1, 2)
    torch.testing.assert_close(x1, fixed.train.images[2:4], rtol=0, atol=1e-5)
    assert torch.equal(y1, fixed.train.labels[2:4])
    assert torch.equal(b.stream(1, 2)[0], x1)
    assert torch.equal(b.val.images, fixed.val.images)
    assert open_data(_small(on_the_fly=True, n_train=0)).train is None


def test_simulated_regression_and_crop(simulate_mod):
    b = open_data(_small(task="regression", img_size=32))
    assert b.classes == ("axion",) and b.num_outputs == 1
    assert b.train.targets.shape == (4, 1) and bool(torch.isfinite(b.train.targets).all())
    assert b.image_shape == (1, 32, 32)
    with pytest.raises(ValueError, match="does not fit"):
        open_data(_small(img_size=4096))


def test_simulated_with_pipeline_data_config(simulate_mod):
    config = pytest.importorskip("pipeline.config")
    dc = dataclasses.replace(config.DataConfig(), n_train=3, n_val=2, n_test=0, task="multiclass")
    b = open_data(dc)
    assert len(b.train) == 3 and len(b.test) == 0 and b.num_outputs == 3
    with pytest.raises(ValueError, match="n_train must be > 0"):
        open_data(_small(n_train=0))


def test_simulated_lens_knobs_reach_the_preset(simulate_mod):
    """data.preset names the lens (default: no ring-size shortcut); data.* knobs override it."""
    config = pytest.importorskip("pipeline.config")
    params = open_data(config.DataConfig(n_train=2, n_val=2, n_test=0)).manifest["preset_params"]
    assert params["randomize_einstein_radius"] and params["mass_conserving"]
    assert params["randomize_orientation"]
    faithful = open_data(_small(preset="model_ii_deeplense")).manifest["preset_params"]
    assert faithful["name"] == "model_ii_deeplense"
    assert not any(faithful[k] for k in ("randomize_einstein_radius", "mass_conserving",
                                         "randomize_orientation"))
    flat = config.RunConfig.from_flat({
        "data.n_train": 2, "data.n_val": 2, "data.n_test": 0, "data.mass_conserving": False,
        "data.randomize_einstein_radius": False, "data.randomize_orientation": False,
    })
    mixed = open_data(flat.data).manifest["preset_params"]
    assert mixed["name"] == "model_ii" and not mixed["mass_conserving"]
    assert not mixed["randomize_einstein_radius"] and not mixed["randomize_orientation"]
