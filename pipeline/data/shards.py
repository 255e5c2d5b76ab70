"""Parquet shards: the format shared by the writer and the reader, and the manifest.

Layout of a dataset folder::

    DIR/manifest.json      classes, image shape, counts, source, seed, file digests
    DIR/train.parquet      one row per image (see COLUMNS below)
    DIR/val.parquet
    DIR/test.parquet

The image column is a fixed-size binary of C*H*W little-endian float32 values, stored
uncompressed and without dictionary, so Arrow reads it straight out of the memory-mapped file
and loading a split costs one hash pass and one copy into a torch tensor. Other columns:
``label`` int64, ``class_name`` string, ``split`` string, ``index`` int64 (the image's global
index in its source), ``target_<name>`` float32, ``param_<name>`` (int64, float32 or float64 as
given: simulation seeds stay exact) and, for imported data,
``source_file`` string.

Writes go to a hidden temporary folder next to DIR that is renamed to DIR only after every file
and the manifest are on disk, so a crash never leaves a folder that reads as a complete dataset.
A writer killed before the rename leaves its hidden folder behind; the next writer to the same
DIR removes it once the process that owned it (named in the folder) has gone from this host.

Writing: `pipeline.data.shard_writer` (ShardWriter, write_shards); reading:
`pipeline.data.shard_reader` (load_shards, load_columns, verify_shards). This module holds the
format constants, the file digest and content hash, and `read_manifest`.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.data.splits import SPLITS

FORMAT = "eqcvt-shards"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TARGET_PREFIX = "target_"
PARAM_PREFIX = "param_"
HASH_BLOCK = 4 << 20
HASH_ALGORITHM = "sha256 of 4MiB-block sha256s"


class ShardError(ValueError):
    """A dataset folder that is missing, incomplete, tampered with or inconsistent."""


def param_type(arr: np.ndarray) -> pa.DataType:
    """int/bool parameters stay exact (int64), float64 stays float64, other floats float32."""
    if arr.dtype.kind in "iub":
        return pa.int64()
    if arr.dtype.kind == "f":
        return pa.float64() if arr.dtype.itemsize == 8 else pa.float32()
    raise ValueError(f"simulation parameters must be numeric, got dtype {arr.dtype}")


def file_digest(path: str | Path, workers: int | None = None) -> str:
    """HASH_ALGORITHM of a file: sha256 over the sha256 digests of its 4 MiB blocks.

    Blocks are hashed on a thread pool straight from the mapped file (hashlib releases the
    GIL), so verifying a large shard scales with cores instead of running at one core's speed.
    """
    digests: list[bytes] = []
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size:
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                view = memoryview(mm)
                blocks = [view[i : i + HASH_BLOCK] for i in range(0, size, HASH_BLOCK)]
                try:
                    n = min(len(blocks), workers or os.cpu_count() or 1)
                    if n <= 1:
                        digests = [hashlib.sha256(b).digest() for b in blocks]
                    else:
                        with ThreadPoolExecutor(n) as pool:
                            digests = list(pool.map(lambda b: hashlib.sha256(b).digest(), blocks))
                finally:
                    for b in blocks:
                        b.release()
                    view.release()
    return hashlib.sha256(b"".join(digests)).hexdigest()


def content_hash(files: Mapping[str, Mapping[str, Any]]) -> str:
    """One identifier for the dataset: sha256 over the per-split file digests, in split order."""
    h = hashlib.sha256()
    for split in sorted(files, key=lambda s: (SPLITS.index(s) if s in SPLITS else 99, s)):
        h.update(f"{split}:{files[split]['digest']}\n".encode())
    return "sha256:" + h.hexdigest()


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """manifest.json in `folder`, on disk (fsync'd) before the caller publishes the folder."""
    with open(folder / MANIFEST, "w") as f:
        json.dump(manifest, f, indent=2, default=_json_default)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if isinstance(obj, (np.ndarray, tuple, set)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def read_manifest(data_dir: str | Path) -> dict[str, Any]:
    """The manifest of a complete dataset folder; a clear error for anything else."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise ShardError(f"{data_dir}: no such dataset folder")
    path = data_dir / MANIFEST
    if not path.is_file():
        raise ShardError(
            f"{data_dir}: no {MANIFEST}; not a complete eqcvt dataset (an interrupted write "
            "never publishes its folder; rerun the command that makes it)"
        )
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ShardError(f"{path}: unreadable manifest ({e})") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ShardError(f"{path}: not an {FORMAT} manifest")
    if manifest.get("version") != FORMAT_VERSION:
        raise ShardError(
            f"{path}: format version {manifest.get('version')}, this code reads {FORMAT_VERSION}"
        )
    for key in ("classes", "image_shape", "files", "counts", "content_hash", "targets"):
        if key not in manifest:
            raise ShardError(f"{path}: manifest lacks {key!r}")
    if manifest.get("hash_algorithm") != HASH_ALGORITHM:
        raise ShardError(f"{path}: unknown hash_algorithm {manifest.get('hash_algorithm')!r}")
    if content_hash(manifest["files"]) != manifest["content_hash"]:
        raise ShardError(f"{path}: content_hash does not match the file hashes it lists")
    return manifest
