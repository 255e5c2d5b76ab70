"""Writing Parquet shards: `ShardWriter` (incremental, atomic) and `write_shards` (in one go).

Rows go to a hidden temporary folder next to the dataset folder, renamed into place only after
every file and the manifest are on disk (format: `pipeline.data.shards`).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import secrets
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from pipeline.data.shards import (
    FORMAT,
    FORMAT_VERSION,
    HASH_ALGORITHM,
    PARAM_PREFIX,
    TARGET_PREFIX,
    content_hash,
    file_digest,
    param_type,
    write_manifest,
)
from pipeline.data.splits import SPLITS
from pipeline.procs import owner_token, remove_orphans

ROW_GROUP_BYTES = 64 << 20  # image bytes per Parquet row group


def _as_numpy(x: Any, dtype: Any) -> np.ndarray:
    """CPU numpy copy-or-view of a tensor/array; dtype None keeps the input's."""
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu").numpy()
    return np.ascontiguousarray(np.asarray(x), dtype=dtype)


def _fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable; a best effort where directories cannot be synced."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class ShardWriter:
    """Streams images into per-split Parquet files; `commit()` publishes the folder atomically.

    Use as a context manager: an exception inside the block removes the temporary folder and
    leaves ``out_dir`` untouched; a clean exit commits. Columns are fixed by the first `add`.
    """

    def __init__(
        self,
        out_dir: str | Path,
        *,
        classes: Sequence[str],
        task: str,
        seed: int | None,
        source: Mapping[str, Any],
        preset: str | None = None,
        fractions: Sequence[float] | None = None,
        overwrite: bool = False,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.out_dir = Path(out_dir).absolute()
        out = self.out_dir
        if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
            raise FileExistsError(f"{out} already exists; pass overwrite=True to replace it")
        if not classes or len(set(classes)) != len(classes):
            raise ValueError(f"classes must be non-empty and unique, got {tuple(classes)}")
        self.classes = tuple(str(c) for c in classes)
        self.task = task
        self.seed = seed
        self.source = dict(source)
        self.preset = preset
        self.fractions = None if fractions is None else [float(f) for f in fractions]
        self.overwrite = overwrite
        self.extra = dict(extra or {})
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        partial = f".{self.out_dir.name}.partial-"
        remove_orphans(self.out_dir.parent.glob(f"{partial}*"), lambda d: d.name[len(partial):])
        self.tmp_dir = self.out_dir.parent / f"{partial}{owner_token()}-{secrets.token_hex(4)}"
        self.tmp_dir.mkdir()
        self._writers: dict[str, pq.ParquetWriter] = {}
        self._pending: dict[str, list[pa.Table]] = {sp: [] for sp in SPLITS}
        self._group_rows = 1
        self._schema: pa.Schema | None = None
        self._image_shape: tuple[int, int, int] | None = None
        self._targets: tuple[str, ...] = ()
        self._params: tuple[str, ...] = ()
        self._param_types: dict[str, pa.DataType] = {}
        self._has_files = False
        self._counts = {s: np.zeros(len(self.classes), dtype=np.int64) for s in SPLITS}
        self._skipped: list[dict[str, str]] = []
        self._done = False

    # -- schema ---------------------------------------------------------------------------
    def _init_schema(
        self,
        shape: tuple[int, int, int],
        targets: Sequence[str],
        params: Mapping[str, np.ndarray],
        files: bool,
    ) -> None:
        self._image_shape = shape
        self._targets, self._params, self._has_files = tuple(targets), tuple(sorted(params)), files
        self._param_types = {k: param_type(params[k]) for k in self._params}
        fields = [
            pa.field("image", pa.binary(int(np.prod(shape)) * 4)),
            pa.field("label", pa.int64()),
            pa.field("class_name", pa.string()),
            pa.field("split", pa.string()),
            pa.field("index", pa.int64()),
        ]
        fields += [pa.field(TARGET_PREFIX + t, pa.float32()) for t in self._targets]
        fields += [pa.field(PARAM_PREFIX + p, self._param_types[p]) for p in self._params]
        if files:
            fields.append(pa.field("source_file", pa.string()))
        meta = {"eqcvt.image_shape": json.dumps(list(shape)), "eqcvt.image_dtype": "float32<"}
        self._schema = pa.schema(fields, metadata=meta)
        # Row groups of a size fixed by the image shape alone: the bytes written (and so the
        # content hash) do not depend on how the caller batched its `add` calls.
        self._group_rows = max(1, ROW_GROUP_BYTES // (int(np.prod(shape)) * 4))

    def _flush(self, split: str, final: bool = False) -> None:
        pending = self._pending[split]
        rows = sum(t.num_rows for t in pending)
        full = rows if final else rows - rows % self._group_rows
        if full == 0:
            return
        table = pa.concat_tables(pending)
        self._writer(split).write_table(table.slice(0, full), row_group_size=self._group_rows)
        self._pending[split] = [table.slice(full)] if full < rows else []

    def _writer(self, split: str) -> pq.ParquetWriter:
        if split not in self._writers:
            assert self._schema is not None
            small = [f.name for f in self._schema if f.name != "image"]
            self._writers[split] = pq.ParquetWriter(
                self.tmp_dir / f"{split}.parquet",
                self._schema,
                compression={"image": "none", **{n: "zstd" for n in small}},
                use_dictionary=["class_name", "split", "source_file"],
                write_statistics=small,
            )
        return self._writers[split]

    # -- public API -----------------------------------------------------------------------
    def add(
        self,
        split: str,
        images: Any,
        labels: Any,
        *,
        targets: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        index: Any = None,
        source_file: Sequence[str] | None = None,
    ) -> None:
        """Append rows to one split. images (N, C, H, W) or (N, H, W), any float dtype."""
        if self._done:
            raise RuntimeError("ShardWriter already committed or aborted")
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        img = _as_numpy(images, np.float32)
        if img.ndim == 3:
            img = img[:, None]
        if img.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W) or (N, H, W), got {img.shape}")
        n = img.shape[0]
        lab = _as_numpy(labels, np.int64).reshape(-1)
        if lab.shape != (n,):
            raise ValueError(f"labels must have {n} entries, got {lab.shape}")
        if n and (lab.min() < 0 or lab.max() >= len(self.classes)):
            raise ValueError(
                f"labels must lie in [0, {len(self.classes)}), got {lab.min()}..{lab.max()}"
            )
        if not np.isfinite(img).all():
            raise ValueError("images contain NaN or inf")
        targets = dict(targets or {})
        params = {k: _as_numpy(v, None).reshape(-1) for k, v in (params or {}).items()}
        shape = tuple(int(s) for s in img.shape[1:])
        if self._schema is None:
            self._init_schema(shape, sorted(targets), params, source_file is not None)
        if shape != self._image_shape:
            raise ValueError(f"image shape {shape} differs from the dataset's {self._image_shape}")
        if tuple(sorted(targets)) != self._targets or tuple(sorted(params)) != self._params:
            raise ValueError(
                f"targets/params {sorted(targets)}/{sorted(params)} differ from the first batch's "
                f"{list(self._targets)}/{list(self._params)}"
            )
        if (source_file is not None) != self._has_files:
            raise ValueError("source_file must be given for every batch or for none")
        idx = np.arange(n, dtype=np.int64) if index is None else _as_numpy(index, np.int64)
        cols: dict[str, pa.Array] = {
            "image": pa.FixedSizeBinaryArray.from_buffers(
                pa.binary(int(np.prod(shape)) * 4),
                n,
                [None, pa.py_buffer(np.ascontiguousarray(img, dtype="<f4"))],
            ),
            "label": pa.array(lab),
            "class_name": pa.array(np.asarray(self.classes, dtype=object)[lab], pa.string()),
            "split": pa.array([split] * n, pa.string()),
            "index": pa.array(idx.reshape(-1)),
        }
        for name in self._targets:
            cols[TARGET_PREFIX + name] = pa.array(_as_numpy(targets[name], np.float32).reshape(-1))
        for name in self._params:
            cols[PARAM_PREFIX + name] = pa.array(params[name], self._param_types[name])
        if source_file is not None:
            cols["source_file"] = pa.array([str(s) for s in source_file], pa.string())
        for key, col in cols.items():
            if len(col) != n:
                raise ValueError(f"column {key!r} has {len(col)} rows, expected {n}")
        table = pa.Table.from_pydict(cols, schema=self._schema)
        self._pending[split].append(table)
        if sum(t.num_rows for t in self._pending[split]) >= self._group_rows:
            self._flush(split)
        self._counts[split] += np.bincount(lab, minlength=len(self.classes))

    def skip(self, file: str, reason: str) -> None:
        """Record an input file left out of the dataset (listed in the manifest)."""
        self._skipped.append({"file": str(file), "reason": reason})

    @property
    def n_skipped(self) -> int:
        return len(self._skipped)

    def commit(self) -> dict[str, Any]:
        """Close the files, write manifest.json and rename the folder into place."""
        if self._done:
            raise RuntimeError("ShardWriter already committed or aborted")
        try:
            if self._schema is None:
                raise ValueError("no images were written; refusing to publish an empty dataset")
            for split in SPLITS:
                self._flush(split, final=True)
                self._writer(split)  # an empty split still gets a (schema-only) file
            for w in self._writers.values():
                w.close()
            manifest = self._manifest()
            for split in SPLITS:
                with open(self.tmp_dir / f"{split}.parquet", "rb+") as f:
                    os.fsync(f.fileno())
            write_manifest(self.tmp_dir, manifest)
            _fsync_dir(self.tmp_dir)
            self._publish()
        except BaseException:
            self.abort()
            raise
        self._done = True
        return manifest

    def abort(self) -> None:
        """Drop everything written so far; out_dir is left as it was."""
        for w in self._writers.values():
            with contextlib.suppress(Exception):
                w.close()
        self._writers.clear()
        self._pending = {sp: [] for sp in SPLITS}
        shutil.rmtree(self.tmp_dir, ignore_errors=True)
        self._done = True

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._done:
            return
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    # -- internals ------------------------------------------------------------------------
    def _manifest(self) -> dict[str, Any]:
        files = {}
        for split in SPLITS:
            path = self.tmp_dir / f"{split}.parquet"
            files[split] = {
                "path": path.name,
                "rows": int(self._counts[split].sum()),
                "bytes": path.stat().st_size,
                "digest": file_digest(path),
            }
        counts = {
            split: {
                "total": int(self._counts[split].sum()),
                "per_class": {
                    c: int(k) for c, k in zip(self.classes, self._counts[split], strict=True)
                },
            }
            for split in SPLITS
        }
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "task": self.task,
            "classes": list(self.classes),
            "image_shape": list(self._image_shape or ()),
            "dtype": "float32",
            "preset": self.preset,
            "source": self.source,
            "seed": self.seed,
            "split_fractions": self.fractions,
            "counts": counts,
            "targets": list(self._targets),
            "params": list(self._params),
            "hash_algorithm": HASH_ALGORITHM,
            "files": files,
            "content_hash": content_hash(files),
            "n_skipped": len(self._skipped),
            "skipped": self._skipped,
            **self.extra,
        }

    def _publish(self) -> None:
        old = None
        if self.out_dir.exists():
            if not self.overwrite and (not self.out_dir.is_dir() or any(self.out_dir.iterdir())):
                raise FileExistsError(f"{self.out_dir} appeared while writing; not replacing it")
            if self.overwrite:
                old = self.out_dir.parent / f".{self.out_dir.name}.old-{secrets.token_hex(4)}"
                os.rename(self.out_dir, old)
            else:
                self.out_dir.rmdir()  # empty folder: replace it
        os.rename(self.tmp_dir, self.out_dir)
        _fsync_dir(self.out_dir.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def write_shards(
    out_dir: str | Path,
    *,
    images: Any,
    labels: Any,
    classes: Sequence[str],
    split: Any,
    task: str,
    seed: int | None,
    source: Mapping[str, Any],
    targets: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    index: Any = None,
    preset: str | None = None,
    fractions: Sequence[float] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write in-memory arrays as a dataset; `split` holds a split name or code (0/1/2) per row.

    Returns the manifest. For data that does not fit in memory, use ShardWriter directly.
    """
    img = _as_numpy(images, np.float32)
    n = img.shape[0]
    split_arr = np.asarray(split)
    if split_arr.shape != (n,):
        raise ValueError(f"split must have one entry per image ({n}), got shape {split_arr.shape}")
    if split_arr.dtype.kind in "iu":
        codes = split_arr.astype(np.int64)
    else:
        lookup = {s: i for i, s in enumerate(SPLITS)}
        try:
            codes = np.array([lookup[str(s)] for s in split_arr], dtype=np.int64)
        except KeyError as e:
            raise ValueError(f"unknown split name {e.args[0]!r}; expected {SPLITS}") from None
    lab = _as_numpy(labels, np.int64)
    idx = np.arange(n, dtype=np.int64) if index is None else _as_numpy(index, np.int64)
    tg = {k: _as_numpy(v, np.float32) for k, v in (targets or {}).items()}
    pr = {k: _as_numpy(v, None) for k, v in (params or {}).items()}
    with ShardWriter(
        out_dir,
        classes=classes,
        task=task,
        seed=seed,
        source=source,
        preset=preset,
        fractions=fractions,
        overwrite=overwrite,
    ) as w:
        for code, name in enumerate(SPLITS):
            rows = np.flatnonzero(codes == code)
            if rows.size:
                w.add(
                    name,
                    img[rows],
                    lab[rows],
                    index=idx[rows],
                    targets={k: v[rows] for k, v in tg.items()},
                    params={k: v[rows] for k, v in pr.items()},
                )
        return w.commit()

