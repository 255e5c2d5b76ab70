"""Parquet shards: one file per split plus manifest.json, written atomically, read in one pass.

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
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import mmap
import os
import secrets
import shutil
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from pipeline.data.splits import SPLITS, Split
from pipeline.procs import owner_token, remove_orphans

FORMAT = "eqcvt-shards"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TARGET_PREFIX = "target_"
PARAM_PREFIX = "param_"
HASH_BLOCK = 4 << 20
HUGE_ALLOC_BYTES = 32 << 20
HASH_ALGORITHM = "sha256 of 4MiB-block sha256s"
ROW_GROUP_BYTES = 64 << 20  # image bytes per Parquet row group


class ShardError(ValueError):
    """A dataset folder that is missing, incomplete, tampered with or inconsistent."""


def _as_numpy(x: Any, dtype: Any) -> np.ndarray:
    """CPU numpy copy-or-view of a tensor/array; dtype None keeps the input's."""
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu").numpy()
    return np.ascontiguousarray(np.asarray(x), dtype=dtype)


def _param_type(arr: np.ndarray) -> pa.DataType:
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


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if isinstance(obj, (np.ndarray, tuple, set)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
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
        if (
            self.out_dir.exists()
            and not overwrite
            and (not self.out_dir.is_dir() or any(self.out_dir.iterdir()))
        ):
            raise FileExistsError(
                f"{self.out_dir} already exists; pass overwrite=True to replace it"
            )
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
        self._param_types = {k: _param_type(params[k]) for k in self._params}
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
            with open(self.tmp_dir / MANIFEST, "w") as f:
                json.dump(manifest, f, indent=2, default=_json_default)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
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


# -- reading ------------------------------------------------------------------------------
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
