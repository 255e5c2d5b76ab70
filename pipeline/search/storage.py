"""Where a search's files live: a local folder or a pyarrow URI (s3://, gs://)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

META_FILE = "eqcvt_search.json"  # in the Tune experiment folder: how to resume and track


def join(base: str, name: str) -> str:
    return f"{base.rstrip('/')}/{name}" if "://" in base else str(Path(base) / name)


def _fs(path: str) -> tuple[Any, str]:
    import pyarrow.fs as pafs

    if "://" in path:
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), str(Path(path).resolve())


def write_text(path: str, text: str) -> None:
    fs, p = _fs(path)
    fs.create_dir(p.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(p) as f:
        f.write(text.encode())


def read_text(path: str) -> str:
    fs, p = _fs(path)
    with fs.open_input_stream(p) as f:
        return f.read().decode()


def latest_experiment(storage_path: str) -> str:
    """The most recently started search under a local storage folder."""
    metas = sorted(Path(storage_path).glob(f"*/{META_FILE}"), key=lambda p: p.stat().st_mtime)
    if not metas:
        raise FileNotFoundError(f"no eqcvt-search experiment under {storage_path}")
    return str(metas[-1].parent)
