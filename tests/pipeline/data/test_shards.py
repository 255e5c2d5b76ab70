"""Shard format: round trip through writer and reader, manifest checks, file digests."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipeline.data.shard_reader import load_columns, load_shards
from pipeline.data.shards import ShardError, read_manifest
from pipeline.data.splits import SPLITS
from tests.pipeline.data._shard_data import CLASSES, sample_data, write_sample


def test_round_trip_and_manifest(tmp_path):
    images, labels, targets, params = sample_data()
    m = write_sample(tmp_path / "ds")
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


def test_edited_manifest_is_refused(tmp_path):
    write_sample(tmp_path / "ds")
    mpath = tmp_path / "ds" / "manifest.json"
    m = json.loads(mpath.read_text())
    m["files"]["train"]["digest"] = "0" * 64
    mpath.write_text(json.dumps(m))
    with pytest.raises(ShardError, match="content_hash"):
        read_manifest(tmp_path / "ds")
    m = write_sample(tmp_path / "ds2")
    m["files"]["train"]["rows"] += 1
    (tmp_path / "ds2" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ShardError, match="rows, manifest says"):
        load_shards(tmp_path / "ds2", verify=False)
    (tmp_path / "ds2" / "manifest.json").write_text("{not json")
    with pytest.raises(ShardError, match="unreadable manifest"):
        read_manifest(tmp_path / "ds2")


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
