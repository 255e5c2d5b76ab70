"""Parquet shards: round trip, manifest, seeded splits, atomic writes, hash checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from pipeline.data.shards import (
    ShardError,
    ShardWriter,
    load_columns,
    load_shards,
    read_manifest,
    verify_shards,
    write_shards,
)
from pipeline.data.splits import SPLITS, assign_splits, parse_fractions, stream_seed
from pipeline.procs import host_tag, owner_of

CLASSES = ("axion", "cdm", "no_sub")


def _data(n: int = 60, size: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.random((n, 1, size, size), dtype=np.float32)
    labels = np.arange(n) % 3
    mass = np.where(labels == 0, rng.uniform(-24, -22, n), np.nan).astype(np.float32)
    params = {
        "shear": rng.random(n).astype(np.float32),
        "mass": rng.uniform(1e11, 1e13, n),  # float64 stays float64
        "noise_seed": rng.integers(2**62, 2**63 - 1, n, dtype=np.int64),  # exact, not float
    }
    return images, labels, {"log10_m_a": mass}, params


def _write(path, seed: int = 0, fractions=(0.8, 0.1, 0.1), **kw):
    images, labels, targets, params = _data()
    split = assign_splits(labels, fractions, seed)
    return write_shards(
        path,
        images=images,
        labels=labels,
        classes=CLASSES,
        split=split,
        task="multiclass",
        seed=seed,
        source={"kind": "test"},
        targets=targets,
        params=params,
        preset="model_ii",
        fractions=fractions,
        **kw,
    )


def test_round_trip_and_manifest(tmp_path):
    images, labels, targets, params = _data()
    m = _write(tmp_path / "ds")
    assert sorted(p.name for p in (tmp_path / "ds").iterdir()) == [
        "manifest.json",
        "test.parquet",
        "train.parquet",
        "val.parquet",
    ]
    assert m == json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert m["classes"] == list(CLASSES) and m["image_shape"] == [1, 8, 8]
    assert m["preset"] == "model_ii" and m["seed"] == 0 and m["source"] == {"kind": "test"}
    assert m["targets"] == ["log10_m_a"] and m["params"] == ["mass", "noise_seed", "shear"]
    assert m["counts"]["train"]["per_class"] == dict.fromkeys(CLASSES, 16)
    assert {s: m["counts"][s]["total"] for s in SPLITS} == {"train": 48, "val": 6, "test": 6}
    assert m["content_hash"].startswith("sha256:") and m["n_skipped"] == 0
    assert m["hash_algorithm"] == "sha256 of 4MiB-block sha256s"
    splits, m2 = load_shards(tmp_path / "ds")
    assert m2 == m
    seen = []
    for name, sp in splits.items():
        idx = load_columns(tmp_path / "ds", name, ["index"])["index"]
        seen += idx.tolist()
        assert sp.images.dtype == torch.float32 and sp.images.is_contiguous()
        assert sp.labels.dtype == torch.int64 and sp.targets.shape == (len(idx), 1)
        np.testing.assert_array_equal(sp.images.numpy(), images[idx])
        np.testing.assert_array_equal(sp.labels.numpy(), labels[idx])
        np.testing.assert_array_equal(sp.targets[:, 0].numpy(), targets["log10_m_a"][idx])
        names = ["param_shear", "param_mass", "param_noise_seed", "class_name", "split"]
        cols = load_columns(tmp_path / "ds", name, names)
        for p in params:
            assert cols[f"param_{p}"].dtype == params[p].dtype
            np.testing.assert_array_equal(cols[f"param_{p}"], params[p][idx])
        assert list(cols["class_name"]) == [CLASSES[i] for i in labels[idx]]
        assert set(cols["split"]) == {name}
        sp.images[0, 0, 0, 0] = 5.0  # writable, owned memory
    assert sorted(seen) == list(range(60))


def test_same_seed_same_bytes_other_seed_other_split(tmp_path):
    a, b, c = _write(tmp_path / "a"), _write(tmp_path / "b"), _write(tmp_path / "c", seed=1)
    assert a["content_hash"] == b["content_hash"]
    assert a["content_hash"] != c["content_hash"]
    assert a["counts"] == c["counts"]  # same stratified sizes, different members


def test_assign_splits_is_seeded_and_stratified():
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    a = assign_splits(labels, (0.8, 0.1, 0.1), 7)
    assert np.array_equal(a, assign_splits(labels, (0.8, 0.1, 0.1), 7))
    assert not np.array_equal(a, assign_splits(labels, (0.8, 0.1, 0.1), 8))
    for c, n in enumerate([50, 30, 20]):
        counts = np.bincount(a[labels == c], minlength=3)
        assert counts.sum() == n and counts[1] == round(n * 0.1) and counts[2] == round(n * 0.1)
    tiny = assign_splits(np.zeros(3, int), (0.8, 0.1, 0.1), 0)
    assert sorted(tiny.tolist()) == [0, 1, 2]  # every split gets an image when it can
    assert assign_splits(np.zeros(1, int), (0.8, 0.1, 0.1), 0).tolist() == [0]
    assert set(assign_splits(labels, (1, 0, 0), 0).tolist()) == {0}


@pytest.mark.parametrize("bad", ["0.8,0.1", "a,b,c", "0.5,0.5,0.5", "1.2,-0.1,-0.1"])
def test_parse_fractions_errors(bad):
    with pytest.raises(ValueError, match="fractions"):
        parse_fractions(bad)


def test_stream_seeds_differ():
    seeds = {stream_seed(0, s) for s in SPLITS} | {stream_seed(1, s) for s in SPLITS}
    assert len(seeds) == 6 and all(0 <= s < 2**31 for s in seeds)


def test_empty_splits_load_with_the_right_shape(tmp_path):
    _write(tmp_path / "ds", fractions=(1.0, 0.0, 0.0))
    splits, m = load_shards(tmp_path / "ds")
    assert m["counts"]["val"]["total"] == 0
    assert splits["val"].images.shape == (0, 1, 8, 8) and splits["val"].targets.shape == (0, 1)


def test_exception_while_writing_leaves_nothing(tmp_path):
    images, labels, _, _ = _data()
    with (
        pytest.raises(RuntimeError, match="boom"),
        ShardWriter(tmp_path / "ds", classes=CLASSES, task="multiclass", seed=0, source={}) as w,
    ):
        w.add("train", images[:10], labels[:10])
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_killed_writer_leaves_no_complete_looking_dataset(tmp_path):
    """A process killed between two batches: no DIR, and its partial folder is not loadable."""
    script = textwrap.dedent(f"""
        import os, numpy as np
        from pipeline.data.shards import ShardWriter
        w = ShardWriter({str(tmp_path / "ds")!r}, classes=("a", "b"), task="binary", seed=0,
                        source={{}})
        w.add("train", np.ones((4, 1, 8, 8), np.float32), np.array([0, 1, 0, 1]))
        os._exit(9)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr
    assert not (tmp_path / "ds").exists()
    (partial,) = tmp_path.iterdir()
    assert partial.name.startswith(".ds.partial-")
    with pytest.raises(ShardError, match="not a complete eqcvt dataset"):
        load_shards(partial)

    # The next writer to the same DIR removes the dead writer's folder, and only that one:
    # a live writer's (this process's parent) and one from another host stay.
    live = tmp_path / f".ds.partial-{host_tag()}-{os.getppid()}-0000"
    foreign = tmp_path / f".ds.partial-otherhost-{_owner_pid(partial)}-0000"
    live.mkdir()
    foreign.mkdir()
    _write(tmp_path / "ds")
    assert not partial.exists() and live.exists() and foreign.exists()
    load_shards(tmp_path / "ds")


def _owner_pid(partial):
    """The owner PID written into a partial folder's name."""
    return owner_of(partial.name.split(".partial-", 1)[1])[1]


def test_tampered_shard_fails_the_hash_check(tmp_path):
    _write(tmp_path / "ds")
    path = tmp_path / "ds" / "train.parquet"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # same size, one bit pattern changed inside the image data
    path.write_bytes(bytes(raw))
    with pytest.raises(ShardError, match=r"train\.parquet: digest .* does not match"):
        load_shards(tmp_path / "ds")
    with pytest.raises(ShardError, match="digest"):
        verify_shards(tmp_path / "ds")
    load_shards(tmp_path / "ds", ["val", "test"])  # untouched splits still load


def test_truncated_or_missing_shard(tmp_path):
    _write(tmp_path / "ds")
    path = tmp_path / "ds" / "val.parquet"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ShardError, match="truncated"):
        load_shards(tmp_path / "ds", verify=False)
    path.unlink()
    with pytest.raises(ShardError, match="missing"):
        load_shards(tmp_path / "ds")


def test_edited_manifest_is_refused(tmp_path):
    _write(tmp_path / "ds")
    mpath = tmp_path / "ds" / "manifest.json"
    m = json.loads(mpath.read_text())
    m["files"]["train"]["digest"] = "0" * 64
    mpath.write_text(json.dumps(m))
    with pytest.raises(ShardError, match="content_hash"):
        read_manifest(tmp_path / "ds")
    m = _write(tmp_path / "ds2")
    m["files"]["train"]["rows"] += 1
    (tmp_path / "ds2" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ShardError, match="rows, manifest says"):
        load_shards(tmp_path / "ds2", verify=False)
    (tmp_path / "ds2" / "manifest.json").write_text("{not json")
    with pytest.raises(ShardError, match="unreadable manifest"):
        read_manifest(tmp_path / "ds2")


def test_overwrite(tmp_path):
    _write(tmp_path / "ds")
    with pytest.raises(FileExistsError, match="overwrite"):
        _write(tmp_path / "ds", seed=1)
    m = _write(tmp_path / "ds", seed=1, overwrite=True)
    assert read_manifest(tmp_path / "ds")["content_hash"] == m["content_hash"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    (tmp_path / "empty").mkdir()
    _write(tmp_path / "empty")  # an existing empty folder is fine


def test_writer_rejects_bad_rows(tmp_path):
    images, labels, _, _ = _data(6)
    with ShardWriter(tmp_path / "ds", classes=CLASSES, task="multiclass", seed=0, source={}) as w:
        with pytest.raises(ValueError, match="NaN"):
            bad = images.copy()
            bad[0, 0, 0, 0] = np.nan
            w.add("train", bad, labels)
        with pytest.raises(ValueError, match="labels must lie"):
            w.add("train", images, labels + 3)
        with pytest.raises(ValueError, match="unknown split"):
            w.add("holdout", images, labels)
        w.add("train", torch.from_numpy(images), torch.from_numpy(labels))
        with pytest.raises(ValueError, match="differs from the dataset"):
            w.add("val", images[:, :, :4, :4], labels)
        with pytest.raises(ValueError, match="targets/params"):
            w.add("val", images, labels, targets={"x": np.zeros(6)})
    assert read_manifest(tmp_path / "ds")["counts"]["train"]["total"] == 6


def test_nothing_written_is_an_error(tmp_path):
    w = ShardWriter(tmp_path / "ds", classes=CLASSES, task="multiclass", seed=0, source={})
    with pytest.raises(ValueError, match="no images"):
        w.commit()
    assert list(tmp_path.iterdir()) == []


def test_image_column_is_plain_uncompressed_float32(tmp_path):
    _write(tmp_path / "ds")
    meta = pq.ParquetFile(tmp_path / "ds" / "train.parquet").metadata
    col = meta.row_group(0).column(0)
    assert col.path_in_schema == "image" and col.compression == "UNCOMPRESSED"
    assert "PLAIN" in col.encodings and "RLE_DICTIONARY" not in col.encodings


def test_bytes_do_not_depend_on_batching_and_row_groups_read_back(tmp_path, monkeypatch):
    import pipeline.data.shards as shards

    monkeypatch.setattr(shards, "ROW_GROUP_BYTES", 5 * 8 * 8 * 4)  # 5 images per row group
    images, labels, targets, params = _data(23)
    hashes = []
    for k, batch in enumerate((23, 4, 7)):
        with ShardWriter(
            tmp_path / f"ds{k}", classes=CLASSES, task="multiclass", seed=0, source={}
        ) as w:
            for s in range(0, 23, batch):
                sl = slice(s, s + batch)
                w.add(
                    "train",
                    images[sl],
                    labels[sl],
                    index=np.arange(23)[sl],
                    targets={n: v[sl] for n, v in targets.items()},
                    params={n: v[sl] for n, v in params.items()},
                )
            hashes.append(w.commit()["content_hash"])
    assert len(set(hashes)) == 1
    assert pq.ParquetFile(tmp_path / "ds1" / "train.parquet").metadata.num_row_groups == 5
    splits, _ = load_shards(tmp_path / "ds1", ["train"])
    np.testing.assert_array_equal(splits["train"].images.numpy(), images)
    np.testing.assert_array_equal(splits["train"].targets[:, 0].numpy(), targets["log10_m_a"])


def test_file_digest_is_the_same_on_any_number_of_threads(tmp_path, monkeypatch):
    import hashlib

    import pipeline.data.shards as shards

    monkeypatch.setattr(shards, "HASH_BLOCK", 1000)
    path = tmp_path / "blob"
    data = np.random.default_rng(0).bytes(10_500)
    path.write_bytes(data)
    expected = hashlib.sha256(
        b"".join(hashlib.sha256(data[i : i + 1000]).digest() for i in range(0, len(data), 1000))
    ).hexdigest()
    assert shards.file_digest(path, workers=1) == shards.file_digest(path, workers=4) == expected
    (tmp_path / "empty").write_bytes(b"")
    assert shards.file_digest(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()
