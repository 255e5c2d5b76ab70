"""Build the offline wheel bundle for the GPU test machine, on a networked machine.

The GPU machine has Python 3.12, a CUDA build of torch, numpy 2 and many common packages
(scripts/gpu_image_packages.txt), no network, and takes at most 64 MiB of files per command,
the repository's own files included. This script:

  1. lists the project's runtime closure (pyproject dependencies, walked through the installed
     metadata of this environment, so versions match what the tests ran with), minus what the
     image already holds (torch, numpy, pandas, pyarrow, scipy, pytest, ...: their versions
     there are the image's own);
  2. downloads cp312 manylinux wheels of those versions (`pip download --no-deps`), and builds
     the sdist-only one (py3nj, Fortran: needs gfortran) with a Python 3.12 interpreter
     (--python312);
  3. recompiles, against numpy 2, the one lie_learn extension escnn imports
     (representations/SO3/irrep_bases, from the .pyx that ships in the wheel): PyPI's cp312
     lie_learn 0.0.2 is built against numpy 1.x and fails to import under numpy 2 ("numpy.core.
     multiarray failed to import"), and it has no 0.0.2 sdist. With it rebuilt, escnn and the
     project run on the image's numpy 2 (their tests pass under numpy 2.5), so no numpy 1.26
     is carried to shadow it, which the image's pandas or scipy might not run with;
  4. builds the project's own wheel;
  5. trims the Ray wheel (ray/jars and the dashboard client are not needed to run Tune);
  6. packs the wheels into part_N/ folders small enough to travel with the repository in one
     command (64 MiB minus what the checkout weighs; one carried per command, see
     scripts/gpu_check.sh) and writes manifest.json.

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
IMAGE_PACKAGES = ROOT / "scripts" / "gpu_image_packages.txt"
TARGET_HAS_PREFIXES = ("nvidia-",)  # CUDA libraries of the image's torch
SDIST_ONLY = {"py3nj"}  # no wheels on PyPI: built here for cp312 (checked: builds with 3.12)
RAY_DROP = ("ray/jars/", "ray/dashboard/client/")
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64",
             "manylinux_2_34_x86_64", "linux_x86_64")
# The lie_learn extension escnn imports (so3_utils -> wigner_d -> irrep_bases); the others
# (groups/SO3, spherical_quadrature, pinchon_hoggan) are never imported by escnn.
LIE_LEARN_REBUILD = ("lie_learn/representations/SO3/irrep_bases.pyx",)
TRAVEL_LIMIT_MIB = 64.0  # per command: the checkout and the carried part together
TRAVEL_MARGIN_MIB = 1.0  # for files added between building the bundle and using it
# The tracking client without the server; the sqlite store needs SQLAlchemy and alembic.
SKINNY_MLFLOW = ["mlflow-skinny", "sqlalchemy", "alembic"]
# To run the CUDA-only tests there (scripts/gpu_check.sh run tests).
TEST_ROOTS = ["pytest"]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def image_packages(path: Path = IMAGE_PACKAGES) -> set[str]:
    """Canonical names of the packages the GPU image holds (one a line, # comments)."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return {canonical(line) for line in lines if line}


def checkout_mib(root: Path = ROOT) -> float:
    """What travels with every device command besides a bundle part: the files git tracks and
    the untracked ones it does not ignore."""
    out = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others",
                          "--exclude-standard"], capture_output=True, check=True).stdout
    files = (root / n for n in out.decode().split("\0") if n)
    return sum(f.stat().st_size for f in files if f.is_file()) / 2**20


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


def to_carry(closure: dict[str, str], image: set[str] | None = None) -> dict[str, str]:
    image = image_packages() if image is None else image
    return {n: v for n, v in sorted(closure.items())
            if n not in image and not n.startswith(TARGET_HAS_PREFIXES)
            and n != "eqcvt-search"}


def trim_wheel(src: Path, dst: Path, drop: tuple[str, ...] = (),
               replace: dict[str, bytes] | None = None) -> int:
    """Copy wheel `src` to `dst` without members under `drop` and with the members named in
    `replace` given new contents, with a RECORD that matches. Returns the number dropped."""
    replace = replace or {}
    with zipfile.ZipFile(src) as z:
        missing = set(replace) - set(z.namelist())
    if missing:
        raise SystemExit(f"{src.name} has no {sorted(missing)} to replace")
    dropped = 0
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        record_name = next(n for n in zin.namelist() if n.endswith(".dist-info/RECORD"))
        rows = []
        for info in zin.infolist():
            if drop and info.filename.startswith(drop):
                dropped += 1
                continue
            if info.filename == record_name:
                continue
            data = replace[info.filename] if info.filename in replace else zin.read(info)
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


_BUILD_EXT = """
import sys, numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
exts = [Extension(p[:-4].replace("/", "."), [p], include_dirs=[numpy.get_include()])
        for p in sys.argv[1:]]
# language_level 2: lie_learn's sources are Python 2 Cython (print statements)
setup(name="rebuild", ext_modules=cythonize(exts, language_level=2, quiet=True),
      script_args=["build_ext", "--inplace"])
"""


def rebuild_extensions(wheel: Path, python: str,
                       sources: tuple[str, ...] = LIE_LEARN_REBUILD) -> list[str]:
    """Recompile the Cython `sources` inside `wheel` against numpy 2, in a throwaway venv of
    `python` (the wheel's own Python version), and rewrite the wheel in place. Returns the
    replaced members."""
    suffix = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))"],
        capture_output=True, text=True, check=True).stdout.strip()
    targets = [pyx[:-4] + suffix for pyx in sources]
    with zipfile.ZipFile(wheel) as z:
        absent = [t for t in targets if t not in z.namelist()]
    if absent:
        raise SystemExit(f"{wheel.name} has no {absent}: is {python} its Python version?")
    with tempfile.TemporaryDirectory() as tmp:
        env, src = Path(tmp) / "env", Path(tmp) / "src"
        subprocess.run([python, "-m", "venv", str(env)], check=True)
        env_python = str(env / "bin" / "python")
        _pip(env_python, "install", "-q", "numpy>=2", "cython>=3", "setuptools")
        with zipfile.ZipFile(wheel) as z:
            z.extractall(src)
        subprocess.run([env_python, "-c", _BUILD_EXT, *sources], cwd=src, check=True)
        replace = {t: (src / t).read_bytes() for t in targets}
        rebuilt = Path(tmp) / wheel.name
        trim_wheel(wheel, rebuilt, replace=replace)
        shutil.move(str(rebuilt), wheel)
    return sorted(replace)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "gpu_bundle")
    p.add_argument("--python312", default=None, help="a Python 3.12 to build sdist-only wheels")
    p.add_argument("--full-mlflow", dest="skinny", action="store_false",
                   help="carry mlflow with its server (flask, gunicorn...) instead of "
                   "mlflow-skinny + SQLAlchemy/alembic for the sqlite store")
    p.add_argument("--limit-mib", type=float, default=None,
                   help="largest part (default: 64 MiB minus the checkout, minus 1 MiB)")
    p.add_argument("--list", action="store_true", help="print the packages to carry and stop")
    args = p.parse_args(argv)

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    if args.skinny:
        deps = [d for d in deps if _requirement(d)[0] != "mlflow"] + SKINNY_MLFLOW
    packages = to_carry(runtime_closure(deps + TEST_ROOTS))
    if args.list:
        print(json.dumps(packages, indent=1))
        return
    limit = args.limit_mib
    if limit is None:
        limit = TRAVEL_LIMIT_MIB - checkout_mib() - TRAVEL_MARGIN_MIB
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp)
        built = download(packages, stage, args.python312)
        rebuilt = []
        for lie_learn in stage.glob("lie_learn-*.whl"):
            if not args.python312:
                raise SystemExit("lie_learn must be rebuilt for numpy 2: pass --python312")
            rebuilt += rebuild_extensions(lie_learn, args.python312)
        _pip(sys.executable, "wheel", "--no-deps", "-w", str(stage), str(ROOT))
        for ray_wheel in stage.glob("ray-*.whl"):
            trimmed = stage / f"trimmed-{ray_wheel.name}"
            trim_wheel(ray_wheel, trimmed, RAY_DROP)
            ray_wheel.unlink()
            trimmed.rename(ray_wheel)
        parts = split_parts(sorted(stage.glob("*.whl")), args.out, limit)
    manifest = {"packages": packages, "built_here": built, "rebuilt_for_numpy2": rebuilt,
                "limit_mib": round(limit, 2), "parts": parts}
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    print(f"{sum(map(len, parts))} wheels in {len(parts)} parts of at most {limit:.1f} MiB "
          f"under {args.out}")


if __name__ == "__main__":
    main()
