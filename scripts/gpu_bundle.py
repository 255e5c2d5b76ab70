"""Build the offline wheel bundle for the GPU test machine, on a networked machine.

The GPU machine has Python 3.12, a CUDA build of torch and numpy 2, no network, and takes at
most 64 MiB of files per command. This script:

  1. lists the project's runtime closure (pyproject dependencies, walked through the installed
     metadata of this environment, so versions match what the tests ran with), minus what the
     target already has (torch and its own dependencies);
  2. downloads cp312 manylinux wheels of those versions (`pip download --no-deps`), and builds
     the sdist-only one (py3nj, Fortran: needs gfortran) with a Python 3.12 interpreter
     (--python312). numpy 1.26 for cp312 is carried too (unless --no-numpy1): the cp312
     lie_learn 0.0.2 wheel on PyPI is built against numpy 1.x and fails to import under
     numpy 2 ("numpy.core.multiarray failed to import", checked with numpy 2.3), and there is
     no 0.0.2 sdist to rebuild; the project pins numpy<2 for the same reason;
  3. builds the project's own wheel;
  4. trims the Ray wheel (ray/jars and the dashboard client are not needed to run Tune);
  5. packs the wheels into part_N/ folders of at most --limit-mib each (one carried per
     command: scripts/gpu_check.sh stage part_N) and writes manifest.json.

    python scripts/gpu_bundle.py --out gpu_bundle --python312 ~/.pyenv/versions/3.12.1/bin/python
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.metadata as md
import json
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
# Present on the target with its CUDA torch (or part of Python/pip there).
TARGET_HAS = {"torch", "numpy", "triton", "sympy", "mpmath", "networkx", "jinja2", "markupsafe",
              "filelock", "fsspec", "typing-extensions", "setuptools", "pip", "wheel"}
TARGET_HAS_PREFIXES = ("nvidia-",)
SDIST_ONLY = {"py3nj"}  # no wheels on PyPI: built here for cp312 (checked: builds with 3.12)
RAY_DROP = ("ray/jars/", "ray/dashboard/client/")
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64",
             "manylinux_2_34_x86_64", "linux_x86_64")
NUMPY1 = "numpy==1.26.4"
# The tracking client without the server; the sqlite store needs SQLAlchemy and alembic.
SKINNY_MLFLOW = ["mlflow-skinny", "sqlalchemy", "alembic"]
# To run the CUDA-only tests there (scripts/gpu_check.sh run tests).
TEST_ROOTS = ["pytest"]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement(text: str) -> tuple[str, set[str], str]:
    """(name, extras, marker) of a requirement string (enough of PEP 508 for metadata)."""
    from packaging.requirements import Requirement

    req = Requirement(text)
    return canonical(req.name), set(req.extras), str(req.marker) if req.marker else ""


def _marker_ok(marker: str, extras: set[str]) -> bool:
    """Does a requirement with `marker` apply on the target (py3.12, Linux x86_64) when the
    requiring package is installed with `extras`?"""
    if not marker:
        return True
    from packaging.markers import Marker

    env = {"python_version": "3.12", "python_full_version": "3.12.0", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
           "implementation_name": "cpython", "platform_python_implementation": "CPython"}
    m = Marker(marker)
    return any(m.evaluate({**env, "extra": e}) for e in (extras | {""}))


def runtime_closure(roots: list[str]) -> dict[str, str]:
    """{canonical name: installed version} of `roots` and everything they need at runtime."""
    seen: dict[str, str] = {}
    done: set[tuple[str, frozenset[str]]] = set()
    todo = [_requirement(r)[:2] for r in roots]
    while todo:
        name, extras = todo.pop()
        if (name, frozenset(extras)) in done:
            continue
        done.add((name, frozenset(extras)))
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            raise SystemExit(f"{name} is not installed here: install the project first") from None
        seen[name] = dist.version
        for text in dist.requires or []:
            dep, dep_extras, marker = _requirement(text)
            if _marker_ok(marker, extras):
                todo.append((dep, dep_extras))
    return seen


def to_carry(closure: dict[str, str]) -> dict[str, str]:
    return {n: v for n, v in sorted(closure.items())
            if n not in TARGET_HAS and not n.startswith(TARGET_HAS_PREFIXES)
            and n != "eqcvt-search"}


def trim_wheel(src: Path, dst: Path, drop: tuple[str, ...]) -> int:
    """Copy wheel `src` to `dst` without members under `drop`, with a RECORD that matches.
    Returns the number of members dropped."""
    dropped = 0
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        record_name = next(n for n in zin.namelist() if n.endswith(".dist-info/RECORD"))
        rows = []
        for info in zin.infolist():
            if info.filename.startswith(drop):
                dropped += 1
                continue
            if info.filename == record_name:
                continue
            data = zin.read(info)
            zout.writestr(info, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            rows.append(f"{info.filename},sha256={digest.decode()},{len(data)}")
        rows.append(f"{record_name},,")
        zout.writestr(record_name, "\n".join(rows) + "\n")
    return dropped


def split_parts(wheels: list[Path], out: Path, limit_mib: float) -> list[list[str]]:
    """Move wheels into out/part_1, part_2, ... each at most limit_mib (largest first)."""
    limit = limit_mib * 2**20
    parts: list[tuple[int, list[Path]]] = []
    for w in sorted(wheels, key=lambda p: p.stat().st_size, reverse=True):
        size = w.stat().st_size
        if size > limit:
            raise SystemExit(f"{w.name} is {size / 2**20:.1f} MiB, over the {limit_mib} MiB limit")
        for i, (used, files) in enumerate(parts):
            if used + size <= limit:
                parts[i] = (used + size, [*files, w])
                break
        else:
            parts.append((size, [w]))
    names = []
    for i, (_, files) in enumerate(parts, start=1):
        folder = out / f"part_{i}"
        folder.mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.move(str(f), folder / f.name)
        names.append([f.name for f in files])
    return names


def _pip(python: str, *args: str) -> None:
    subprocess.run([python, "-m", "pip", *args], check=True)


def download(packages: dict[str, str], dest: Path, python312: str | None) -> list[str]:
    """Fetch cp312 wheels (build sdist-only ones with python312); return what was built."""
    built = []
    tags = [a for p in PLATFORMS for a in ("--platform", p)]
    for name, version in packages.items():
        if name in SDIST_ONLY:
            if not python312:
                raise SystemExit(f"{name} has no wheels: pass --python312 to build it")
            _pip(python312, "wheel", "--no-deps", "-w", str(dest), f"{name}=={version}")
            built.append(name)
            continue
        _pip(sys.executable, "download", "--no-deps", "--only-binary=:all:", *tags,
             "--python-version", "3.12", "--implementation", "cp", "-d", str(dest),
             f"{name}=={version}")
    return built


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "gpu_bundle")
    p.add_argument("--python312", default=None, help="a Python 3.12 to build sdist-only wheels")
    p.add_argument("--no-numpy1", dest="numpy1", action="store_false",
                   help="rely on the target's numpy 2 (only if escnn + lie_learn import there)")
    p.add_argument("--full-mlflow", dest="skinny", action="store_false",
                   help="carry mlflow with its server (flask, gunicorn...) instead of "
                   "mlflow-skinny + SQLAlchemy/alembic for the sqlite store")
    p.add_argument("--limit-mib", type=float, default=60.0)
    p.add_argument("--list", action="store_true", help="print the packages to carry and stop")
    args = p.parse_args(argv)

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    if args.skinny:
        deps = [d for d in deps if _requirement(d)[0] != "mlflow"] + SKINNY_MLFLOW
    packages = to_carry(runtime_closure(deps + TEST_ROOTS))
    if args.list:
        print(json.dumps(packages, indent=1))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp)
        built = download(packages, stage, args.python312)
        if args.numpy1:
            _pip(sys.executable, "download", "--no-deps", "--only-binary=:all:",
                 "--platform", "manylinux2014_x86_64", "--python-version", "3.12",
                 "--implementation", "cp", "-d", str(stage), NUMPY1)
        _pip(sys.executable, "wheel", "--no-deps", "-w", str(stage), str(ROOT))
        for ray_wheel in stage.glob("ray-*.whl"):
            trimmed = stage / f"trimmed-{ray_wheel.name}"
            trim_wheel(ray_wheel, trimmed, RAY_DROP)
            ray_wheel.unlink()
            trimmed.rename(ray_wheel)
        parts = split_parts(sorted(stage.glob("*.whl")), args.out, args.limit_mib)
    manifest = {"packages": packages, "built_here": built, "numpy1": args.numpy1,
                "parts": parts}
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    print(f"{sum(map(len, parts))} wheels in {len(parts)} parts under {args.out}")


if __name__ == "__main__":
    main()
