"""ShardWriter and write_shards: seeded bytes, atomic writes, killed writers, bad rows."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from pipeline.data.shard_reader import load_shards
from pipeline.data.shard_writer import ShardWriter
from pipeline.data.shards import ShardError, read_manifest
from pipeline.procs import host_tag, owner_of
from tests.pipeline.data._shard_data import CLASSES, sample_data, write_sample


def test_same_seed_same_bytes_other_seed_other_split(tmp_path):
    a, b, c = write_sample(tmp_path / "a"), write_sample(tmp_path / "b"), write_sample(tmp_path / "c", seed=1)
    assert a["content_hash"] == b["content_hash"]
    assert a["content_hash"] != c["content_hash"]
    assert a["counts"] == c["counts"]  # same stratified sizes, different members


def test_exception_while_writing_leaves_nothing(tmp_path):
    images, labels, _, _ = sample_data()
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
        from pipeline.data.shard_writer import ShardWriter
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
    write_sample(tmp_path / "ds")
    assert not partial.exists() and live.exists() and foreign.exists()
    load_shards(tmp_path / "ds")


def _owner_pid(partial):
    """The owner PID written into a partial folder's name."""
    return owner_of(partial.name.split(".partial-", 1)[1])[1]


def test_overwrite(tmp_path):
    write_sample(tmp_path / "ds")
    with pytest.raises(FileExistsError, match="overwrite"):
        write_sample(tmp_path / "ds", seed=1)
    m = write_sample(tmp_path / "ds", seed=1, overwrite=True)
    assert read_manifest(tmp_path / "ds")["content_hash"] == m["content_hash"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    (tmp_path / "empty").mkdir()
    write_sample(tmp_path / "empty")  # an existing empty folder is fine


def test_writer_rejects_bad_rows(tmp_path):
    images, labels, _, _ = sample_data(6)
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
    write_sample(tmp_path / "ds")
    meta = pq.ParquetFile(tmp_path / "ds" / "train.parquet").metadata
    col = meta.row_group(0).column(0)
    assert col.path_in_schema == "image" and col.compression == "UNCOMPRESSED"
    assert "PLAIN" in col.encodings and "RLE_DICTIONARY" not in col.encodings


def test_bytes_do_not_depend_on_batching_and_row_groups_read_back(tmp_path, monkeypatch):
    import pipeline.data.shard_writer as shard_writer

    monkeypatch.setattr(shard_writer, "ROW_GROUP_BYTES", 5 * 8 * 8 * 4)  # 5 images per row group
    images, labels, targets, params = sample_data(23)
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
