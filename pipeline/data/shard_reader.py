"""Reading Parquet shards: whole splits into torch tensors, single columns, hash checks.

Images are read straight out of the memory-mapped file and copied once into a tensor, while a
second thread checks the file's digest (format: `pipeline.data.shards`).
"""

from __future__ import annotations

import contextlib
import mmap
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from pipeline.data.shards import (
    TARGET_PREFIX,
    ShardError,
    file_digest,
    read_manifest,
)
from pipeline.data.splits import SPLITS, Split

HUGE_ALLOC_BYTES = 32 << 20


def _check_file(data_dir: Path, manifest: dict[str, Any], split: str) -> Path:
    entry = manifest["files"].get(split)
    if entry is None:
        raise ShardError(
            f"{data_dir}: manifest has no split {split!r} (has {list(manifest['files'])})"
        )
    path = data_dir / entry["path"]
    if not path.is_file():
        raise ShardError(f"{path}: listed in the manifest but missing")
    size = path.stat().st_size
    if size != entry["bytes"]:
        raise ShardError(
            f"{path}: {size} bytes, manifest says {entry['bytes']} (changed or truncated)"
        )
    return path


def _verify_hash(path: Path, expected: str) -> None:
    got = file_digest(path)
    if got != expected:
        raise ShardError(
            f"{path}: digest {got[:16]}... does not match the manifest's {expected[:16]}... "
            "(the file changed after it was written)"
        )


def _read_table(path: Path, columns: Sequence[str] | None) -> pa.Table:
    try:
        return pq.read_table(
            path, columns=list(columns) if columns else None, memory_map=True, use_threads=False
        )
    except (pa.ArrowException, OSError) as e:
        raise ShardError(f"{path}: unreadable Parquet ({e})") from e


def _empty_float32(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised float32 tensor; large ones on transparent huge pages where Linux offers
    them, since first-touch page faults otherwise cost more than the copy that fills them."""
    nbytes = int(np.prod(shape)) * 4
    if nbytes < HUGE_ALLOC_BYTES or not hasattr(mmap, "MADV_HUGEPAGE"):
        return torch.empty(shape, dtype=torch.float32)
    buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    with contextlib.suppress(OSError):
        buf.madvise(mmap.MADV_HUGEPAGE)
    return torch.frombuffer(buf, dtype=torch.float32).view(shape)  # the tensor keeps buf alive


def _decode_split(path: Path, manifest: dict[str, Any], entry: dict[str, Any]) -> Split:
    targets = [TARGET_PREFIX + t for t in manifest["targets"]]
    table = _read_table(path, ["image", "label", *targets])
    shape = tuple(int(s) for s in manifest["image_shape"])
    width = int(np.prod(shape)) * 4
    if table.schema.field("image").type != pa.binary(width):
        raise ShardError(
            f"{path}: image column is {table.schema.field('image').type}, "
            f"manifest shape {shape} needs fixed_size_binary[{width}]"
        )
    n = table.num_rows
    if n != entry["rows"]:
        raise ShardError(f"{path}: {n} rows, manifest says {entry['rows']}")
    images = _empty_float32((n, *shape))
    flat = images.numpy().reshape(n, width // 4)  # a view: the copy below fills the tensor in place
    row = 0
    for chunk in table.column("image").chunks:
        k = len(chunk)
        if k == 0:
            continue
        src = np.frombuffer(
            chunk.buffers()[1], dtype="<f4", count=k * width // 4, offset=chunk.offset * width
        )
        flat[row : row + k] = src.reshape(k, -1)
        row += k
    labels = torch.from_numpy(table.column("label").to_numpy().astype(np.int64, copy=True))
    if n and (int(labels.min()) < 0 or int(labels.max()) >= len(manifest["classes"])):
        raise ShardError(f"{path}: labels outside [0, {len(manifest['classes'])})")
    if targets:
        tg = np.stack([table.column(t).to_numpy(zero_copy_only=False) for t in targets], axis=1)
        tgt = torch.from_numpy(np.ascontiguousarray(tg, dtype=np.float32))
    else:
        tgt = torch.zeros((n, 0), dtype=torch.float32)
    return Split(images, labels, tgt)


def _load_split(data_dir: Path, manifest: dict[str, Any], split: str, verify: bool) -> Split:
    path = _check_file(data_dir, manifest, split)
    entry = manifest["files"][split]
    if not verify:
        return _decode_split(path, manifest, entry)
    # Hash on a second thread while Arrow decodes: both read the same mapped pages once.
    errors: list[BaseException] = []

    def _hash() -> None:
        try:
            _verify_hash(path, entry["digest"])
        except BaseException as e:  # re-raised on the caller's thread
            errors.append(e)

    hasher = threading.Thread(target=_hash, daemon=True)
    hasher.start()
    try:
        result = _decode_split(path, manifest, entry)
    except BaseException as e:
        hasher.join()
        if errors:  # a tampered file explains a decode failure better than the decoder does
            raise errors[0] from e
        raise
    hasher.join()
    if errors:
        raise errors[0]
    return result


def load_shards(
    data_dir: str | Path,
    splits: Sequence[str] = SPLITS,
    *,
    verify: bool = True,
) -> tuple[dict[str, Split], dict[str, Any]]:
    """Load splits into CPU tensors; targets (N, T) follow manifest["targets"] order.

    verify=True (default) checks every file's digest against the manifest, in parallel with
    decoding; verify=False still checks the manifest, file sizes, row counts and schema.
    """
    data_dir = Path(data_dir)
    manifest = read_manifest(data_dir)
    out = {s: _load_split(data_dir, manifest, s, verify) for s in splits}
    return out, manifest


def load_columns(
    data_dir: str | Path, split: str, columns: Sequence[str], *, verify: bool = False
) -> dict[str, np.ndarray]:
    """Selected non-image columns of one split as numpy arrays (for previews and reports)."""
    data_dir = Path(data_dir)
    manifest = read_manifest(data_dir)
    path = _check_file(data_dir, manifest, split)
    if verify:
        _verify_hash(path, manifest["files"][split]["digest"])
    table = _read_table(path, columns)
    return {c: table.column(c).to_numpy(zero_copy_only=False) for c in columns}


def verify_shards(data_dir: str | Path) -> dict[str, Any]:
    """Check the manifest, sizes and hashes of every file without decoding images."""
    data_dir = Path(data_dir)
    manifest = read_manifest(data_dir)
    for split, entry in manifest["files"].items():
        path = _check_file(data_dir, manifest, split)
        _verify_hash(path, entry["digest"])
        rows = pq.ParquetFile(path).metadata.num_rows
        if rows != entry["rows"]:
            raise ShardError(f"{path}: {rows} rows, manifest says {entry['rows']}")
    return manifest
