"""The DeepLense reader and importer on fake trees: layouts, pickle opt-in, every bad input."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest

from pipeline.data.deeplense import (
    BadFileError,
    DeepLenseError,
    find_test_sibling,
    import_deeplense,
    infer_task,
    read_deeplense,
    scan_tree,
)
from pipeline.data.shard_reader import load_columns, load_shards
from tests.pipeline.data._fakes import (
    CLASSES,
    lens_image,
    make_image_tree,
    make_model_tree,
    save_axion,
)


@pytest.fixture
def model_ii(tmp_path):
    return make_model_tree(tmp_path / "Model_II", masses=[1e-24, 1e-23, 1e-22, 3e-23, 5e-24])


def test_scan_sorts_classes_and_files(model_ii):
    (model_ii / "cdm" / "README.txt").write_text("not data")
    (model_ii / ".hidden").mkdir()
    tree = scan_tree(model_ii)
    assert tree.layout == "npy"
    assert tree.classes == CLASSES
    assert [tree.classes[lab] for lab in tree.labels] == sorted(
        tree.classes[lab] for lab in tree.labels
    )
    assert len(tree.files) == 15
    assert [p.name for p in tree.ignored] == ["README.txt"]


def test_object_arrays_need_allow_pickle(model_ii):
    with pytest.raises(DeepLenseError, match=r"axion_sim_0\.npy.*--allow-pickle"):
        read_deeplense(model_ii)
    # skip_bad never silently drops files for want of the pickle opt-in
    with pytest.raises(DeepLenseError, match="allow-pickle"):
        read_deeplense(model_ii, skip_bad=True)


def test_reads_images_and_axion_masses(model_ii):
    data = read_deeplense(model_ii, allow_pickle=True)
    assert data.classes == CLASSES
    assert data.images.shape == (15, 12, 12) and data.images.dtype == np.float32
    np.testing.assert_allclose(data.images.max(axis=(1, 2)), 1.0, rtol=1e-6)
    assert np.bincount(data.labels).tolist() == [5, 5, 5]
    axion = data.labels == 0
    np.testing.assert_allclose(
        data.log10_m_a[axion], [-24, -23, -22, math.log10(3e-23), math.log10(5e-24)], rtol=1e-6
    )
    assert np.isnan(data.log10_m_a[~axion]).all()
    assert data.files[0] == "axion/axion_sim_0.npy"
    raw = read_deeplense(model_ii, allow_pickle=True, normalize="none")
    assert raw.images.max() > 1.0


def test_binary_image_folder_layout(tmp_path):
    root = make_image_tree(tmp_path / "lenses")
    data = read_deeplense(root)
    assert data.layout == "images" and data.classes == ("no_sub", "sub")
    assert data.images.shape == (8, 13, 13)
    assert infer_task(data.classes) == "binary"
    np.testing.assert_allclose(data.images.max(axis=(1, 2)), 1.0)


def test_jpg_and_rgb_images_read_as_grayscale(tmp_path):
    from PIL import Image

    root = make_image_tree(tmp_path / "lenses", per_class=2, suffix=".jpg")
    rgb = np.zeros((13, 13, 3), np.uint8)
    rgb[4:8, 4:8] = 200
    Image.fromarray(rgb).save(root / "sub" / "rgb.png")
    data = read_deeplense(root)
    assert data.images.shape == (5, 13, 13)


def _bad_cases():
    def garbage(p):
        p.write_bytes(b"\x93NUMPY garbage, not an array")

    def wrong_shape(p):
        np.save(p, np.ones((4, 12, 12)))

    def one_d(p):
        np.save(p, np.ones(144))

    def nan(p):
        img = lens_image(np.random.default_rng(0))
        img[3, 3] = np.nan
        np.save(p, img)

    def inf(p):
        img = lens_image(np.random.default_rng(0))
        img[0, 0] = np.inf
        np.save(p, img)

    def mixed(p):
        np.save(p, lens_image(np.random.default_rng(0), size=10))

    def zeros(p):
        np.save(p, np.zeros((12, 12)))

    def truncated(p):
        np.save(p, lens_image(np.random.default_rng(0)))
        p.write_bytes(p.read_bytes()[:100])

    return {
        "garbage": (garbage, "unreadable"),
        "wrong_shape": (wrong_shape, "wrong shape"),
        "one_d": (one_d, "wrong shape"),
        "nan": (nan, "NaN or inf"),
        "inf": (inf, "NaN or inf"),
        "mixed": (mixed, "mixed sizes"),
        "zeros": (zeros, "maximum"),
        "truncated": (truncated, "unreadable"),
    }


@pytest.mark.parametrize("case", list(_bad_cases()))
def test_bad_file_is_an_error_naming_it_or_skipped(model_ii, case):
    make, reason = _bad_cases()[case]
    bad = model_ii / "cdm" / "zz_bad.npy"
    make(bad)
    with pytest.raises(BadFileError, match=rf"zz_bad\.npy.*{reason}") as info:
        read_deeplense(model_ii, allow_pickle=True)
    assert info.value.path == bad
    data = read_deeplense(model_ii, allow_pickle=True, skip_bad=True)
    assert len(data.images) == 15
    assert [s["file"] for s in data.skipped] == [str(bad)]
    assert reason in data.skipped[0]["reason"]


@pytest.mark.parametrize(
    ("mass", "reason"),
    [(-1e-23, "positive finite"), (float("nan"), "positive finite"), ("heavy", "not a number")],
)
def test_bad_axion_mass(model_ii, mass, reason):
    save_axion(model_ii / "axion" / "zz_bad.npy", lens_image(np.random.default_rng(0)), mass)
    with pytest.raises(BadFileError, match=rf"zz_bad\.npy.*{reason}"):
        read_deeplense(model_ii, allow_pickle=True)


def test_object_array_of_wrong_length(model_ii):
    arr = np.empty(3, dtype=object)
    arr[:] = [lens_image(np.random.default_rng(0)), 1e-23, "extra"]
    np.save(model_ii / "axion" / "zz_bad.npy", arr, allow_pickle=True)
    with pytest.raises(BadFileError, match=r"zz_bad\.npy.*expected \[image, m_a\]"):
        read_deeplense(model_ii, allow_pickle=True)


def test_corrupt_image_file(tmp_path):
    root = make_image_tree(tmp_path / "lenses")
    (root / "sub" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but then nothing")
    with pytest.raises(BadFileError, match=r"broken\.png.*unreadable image"):
        read_deeplense(root)
    assert len(read_deeplense(root, skip_bad=True).skipped) == 1


def test_empty_class_folder_is_an_error_even_with_skip_bad(model_ii):
    (model_ii / "empty").mkdir()
    for skip in (False, True):
        with pytest.raises(DeepLenseError, match=r"empty.*empty class folder"):
            read_deeplense(model_ii, allow_pickle=True, skip_bad=skip)


def test_class_with_only_bad_files(model_ii):
    (model_ii / "zz").mkdir()
    (model_ii / "zz" / "a.npy").write_bytes(b"junk")
    with pytest.raises(DeepLenseError, match="every file in this class folder was bad"):
        read_deeplense(model_ii, allow_pickle=True, skip_bad=True)


def test_not_a_tree(tmp_path):
    with pytest.raises(DeepLenseError, match="not a folder"):
        scan_tree(tmp_path / "missing")
    (tmp_path / "flat").mkdir()
    with pytest.raises(DeepLenseError, match="no class folders"):
        scan_tree(tmp_path / "flat")
    (tmp_path / "flat" / "a").mkdir()
    (tmp_path / "flat" / "a" / "x.txt").write_text("")
    with pytest.raises(DeepLenseError, match="no .npy or image files"):
        scan_tree(tmp_path / "flat")


# -- import into shards -------------------------------------------------------------------
def test_import_uses_test_sibling(model_ii, tmp_path):
    make_model_tree(tmp_path / "Model_II_test", per_class=2, seed=1)
    assert find_test_sibling(model_ii) == tmp_path / "Model_II_test"
    out = tmp_path / "shards"
    manifest = import_deeplense(model_ii, out, allow_pickle=True, seed=3)
    assert manifest["task"] == "multiclass" and manifest["classes"] == list(CLASSES)
    assert manifest["source"]["test_path"] == str(tmp_path / "Model_II_test")
    assert manifest["counts"]["test"]["per_class"] == dict.fromkeys(CLASSES, 2)
    assert manifest["counts"]["train"]["total"] + manifest["counts"]["val"]["total"] == 15
    assert manifest["counts"]["val"]["total"] > 0
    splits, _ = load_shards(out)
    test = splits["test"]
    assert test.images.shape == (6, 1, 12, 12)
    axion = test.labels == 0
    assert bool(test.targets[axion].isfinite().all()) and bool(test.targets[~axion].isnan().all())
    files = load_columns(out, "test", ["source_file"])["source_file"]
    assert all(f.startswith("Model_II_test/") for f in files)


def test_import_without_sibling_splits_by_seed(model_ii, tmp_path):
    m1 = import_deeplense(model_ii, tmp_path / "a", allow_pickle=True, seed=0)
    m2 = import_deeplense(model_ii, tmp_path / "b", allow_pickle=True, seed=0)
    m3 = import_deeplense(
        model_ii, tmp_path / "c", allow_pickle=True, seed=1, fractions=(0.6, 0.2, 0.2)
    )
    assert m1["source"]["test_path"] is None
    assert m1["content_hash"] == m2["content_hash"]
    assert m1["content_hash"] != m3["content_hash"]
    assert m3["counts"]["test"]["per_class"] == dict.fromkeys(CLASSES, 1)
    f1 = load_columns(tmp_path / "a", "train", ["source_file"])["source_file"]
    f3 = load_columns(tmp_path / "c", "train", ["source_file"])["source_file"]
    assert set(f1) != set(f3)


def test_import_skip_bad_records_files(model_ii, tmp_path):
    (model_ii / "no_sub" / "zz_bad.npy").write_bytes(b"junk")
    with pytest.raises(BadFileError, match=r"zz_bad\.npy"):
        import_deeplense(model_ii, tmp_path / "out", allow_pickle=True)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["Model_II"]  # no partial folders left
    m = import_deeplense(model_ii, tmp_path / "out", allow_pickle=True, skip_bad=True)
    assert m["n_skipped"] == 1
    assert m["skipped"][0]["file"] == "Model_II/no_sub/zz_bad.npy"
    assert sum(m["counts"][s]["total"] for s in m["counts"]) == 15


def test_import_refuses_mismatched_test_tree(model_ii, tmp_path):
    test = make_model_tree(tmp_path / "Model_II_test", per_class=1)
    shutil.rmtree(test / "cdm")
    with pytest.raises(DeepLenseError, match="differ from the training set"):
        import_deeplense(model_ii, tmp_path / "out", allow_pickle=True)


def test_import_mixed_sizes_across_train_and_test(model_ii, tmp_path):
    make_model_tree(tmp_path / "Model_II_test", per_class=1, size=10)
    with pytest.raises(BadFileError, match="mixed sizes"):
        import_deeplense(model_ii, tmp_path / "out", allow_pickle=True)


def test_import_image_layout(tmp_path):
    root = make_image_tree(tmp_path / "lenses", per_class=5)
    m = import_deeplense(root, tmp_path / "out", seed=0)
    assert m["task"] == "binary" and m["targets"] == [] and m["image_shape"] == [1, 13, 13]
    splits, _ = load_shards(tmp_path / "out")
    assert sum(len(s) for s in splits.values()) == 10


def test_infer_task_matches_simulator_task_classes():
    from pipeline.data import simulate as sim

    for task in ("binary", "multiclass"):
        assert infer_task(sim.TASK_CLASSES[task]) == task
