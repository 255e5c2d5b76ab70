"""load_shards and verify_shards: empty splits, tampered, truncated and missing files."""

from __future__ import annotations

import pytest

from pipeline.data.shard_reader import load_shards, verify_shards
from pipeline.data.shards import ShardError
from tests.pipeline.data._shard_data import write_sample


def test_empty_splits_load_with_the_right_shape(tmp_path):
    write_sample(tmp_path / "ds", fractions=(1.0, 0.0, 0.0))
    splits, m = load_shards(tmp_path / "ds")
    assert m["counts"]["val"]["total"] == 0
    assert splits["val"].images.shape == (0, 1, 8, 8) and splits["val"].targets.shape == (0, 1)


def test_tampered_shard_fails_the_hash_check(tmp_path):
    write_sample(tmp_path / "ds")
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
    write_sample(tmp_path / "ds")
    path = tmp_path / "ds" / "val.parquet"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ShardError, match="truncated"):
        load_shards(tmp_path / "ds", verify=False)
    path.unlink()
    with pytest.raises(ShardError, match="missing"):
        load_shards(tmp_path / "ds")
