"""Shipped search spaces (`eqcvt-search run --space NAME`); `studies/` holds the shipped studies
(`eqcvt-search study NAME`). One lookup serves both: a path, else a shipped file's name."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def shipped_names(package: str = "search_spaces") -> list[str]:
    """Names of the YAML files shipped in `package`, without `.yaml`."""
    return sorted(p.name[:-5] for p in resources.files(package).iterdir()
                  if p.name.endswith(".yaml"))


def find_shipped(name: str, package: str = "search_spaces", what: str = "search space") -> Path:
    """`name` as a path to a file, else the shipped `<package>/<name>.yaml`."""
    path = Path(name)
    if path.is_file():
        return path
    stem = path.name[:-5] if path.name.endswith(".yaml") else path.name
    shipped = resources.files(package) / f"{stem}.yaml"
    if shipped.is_file():
        return Path(str(shipped))
    raise FileNotFoundError(
        f"{what} {name!r} not found (shipped: {', '.join(shipped_names(package))})")
