"""scripts/gpu_bundle.py without the network: what it carries, wheel trimming, size parts."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("gpu_bundle", ROOT / "scripts" / "gpu_bundle.py")
bundle = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bundle)


def _wheel(path: Path, files: dict[str, bytes]) -> Path:
    dist = "fakeray-1.0.dist-info"
    files = {**files, f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\n"
             b"Root-Is-Purelib: true\nTag: py3-none-any\n",
             f"{dist}/METADATA": b"Metadata-Version: 2.1\nName: fakeray\nVersion: 1.0\n"}
    record = [f"{n},sha256=x,{len(d)}" for n, d in files.items()] + [f"{dist}/RECORD,,"]
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr(f"{dist}/RECORD", "\n".join(record) + "\n")
    return path


def test_trim_drops_members_and_rewrites_the_record(tmp_path):
    src = _wheel(tmp_path / "fakeray-1.0-py3-none-any.whl", {
        "ray/__init__.py": b"X = 1\n", "ray/jars/big.jar": b"j" * 5000,
        "ray/dashboard/client/build/index.html": b"<html/>", "ray/dashboard/keep.py": b"",
    })
    out = tmp_path / "out" / src.name
    out.parent.mkdir()
    assert bundle.trim_wheel(src, out, bundle.RAY_DROP) == 2
    with zipfile.ZipFile(out) as z:
        names = set(z.namelist())
        record = z.read("fakeray-1.0.dist-info/RECORD").decode().split()
        for row in record[:-1]:
            name, digest, size = row.split(",")
            data = z.read(name)
            want = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            assert digest == f"sha256={want.decode()}" and int(size) == len(data)
    assert "ray/jars/big.jar" not in names and "ray/dashboard/keep.py" in names
    assert not any(n.startswith("ray/dashboard/client/") for n in names)
    assert {r.split(",")[0] for r in record} == names  # every member listed, nothing else
    target = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index",
                           "--target", str(target), str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (target / "ray" / "__init__.py").read_text() == "X = 1\n"


def test_parts_respect_the_size_limit(tmp_path):
    sizes = {"a": 40, "b": 30, "c": 25, "d": 10, "e": 5}
    wheels = []
    for name, kib in sizes.items():
        w = tmp_path / f"{name}-1-py3-none-any.whl"
        w.write_bytes(b"0" * kib * 1024)
        wheels.append(w)
    parts = bundle.split_parts(wheels, tmp_path / "bundle", limit_mib=50 / 1024)
    assert sorted(n for p in parts for n in p) == sorted(w.name for w in wheels)
    for i, names in enumerate(parts, start=1):
        folder = tmp_path / "bundle" / f"part_{i}"
        assert sum((folder / n).stat().st_size for n in names) <= 50 * 1024
    assert len(parts) == 3  # 40+10, 30+5, 25 (largest first)
    huge = tmp_path / "huge-1-py3-none-any.whl"
    huge.write_bytes(b"0" * 60 * 1024)
    with pytest.raises(SystemExit, match="over the"):
        bundle.split_parts([huge], tmp_path / "b2", limit_mib=50 / 1024)


def test_carried_closure_has_escnn_and_ray_but_not_what_the_image_holds():
    closure = bundle.runtime_closure(["escnn", "ray[tune]", "hyperopt"])
    assert {"escnn", "lie-learn", "py3nj", "ray", "hyperopt", "torch", "pandas"} <= set(closure)
    carried = bundle.to_carry(closure)
    assert {"escnn", "lie-learn", "py3nj", "ray", "hyperopt"} <= set(carried)
    image = bundle.image_packages()
    assert {"torch", "numpy", "pandas", "pyarrow", "scipy", "pytest"} <= image
    assert not set(carried) & image  # the image's own versions are used there
    assert not any(n.startswith("nvidia-") for n in carried)
    assert carried["escnn"] == closure["escnn"]
    # the CUDA-only tests run on the image's pytest: nothing of it is carried
    assert not bundle.to_carry(bundle.runtime_closure(bundle.TEST_ROOTS))


def test_image_package_list_is_canonical_names(tmp_path):
    listing = tmp_path / "image.txt"
    listing.write_text("# a comment\nPyYAML\ntyping_extensions  # trailing\n\nruamel.yaml\n")
    assert bundle.image_packages(listing) == {"pyyaml", "typing-extensions", "ruamel-yaml"}
    closure = {"pyyaml": "6", "ruamel-yaml": "1", "ray": "2", "nvidia-cublas": "1"}
    assert bundle.to_carry(closure, bundle.image_packages(listing)) == {"ray": "2"}


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_checkout_size_counts_tracked_and_untracked_not_ignored(tmp_path):
    _git(tmp_path, "init", "-q")
    (tmp_path / ".gitignore").write_text("/gpu_bundle/\n")
    (tmp_path / "tracked.py").write_bytes(b"x" * 2**20)
    (tmp_path / "untracked.txt").write_bytes(b"y" * 2**19)
    (tmp_path / "gpu_bundle").mkdir()
    (tmp_path / "gpu_bundle" / "big.whl").write_bytes(b"z" * 2**22)  # carried, not counted
    _git(tmp_path, "add", ".gitignore", "tracked.py")
    size = bundle.checkout_mib(tmp_path)
    assert abs(size - (1.5 + len("/gpu_bundle/\n") / 2**20)) < 1e-9


def test_trim_wheel_replaces_members_and_refuses_absent_ones(tmp_path):
    src = _wheel(tmp_path / "fakeray-1.0-py3-none-any.whl",
                 {"ray/a.so": b"old", "ray/b.py": b"keep"})
    out = tmp_path / "out.whl"
    assert bundle.trim_wheel(src, out, replace={"ray/a.so": b"new bytes"}) == 0
    with zipfile.ZipFile(out) as z:
        assert z.read("ray/a.so") == b"new bytes" and z.read("ray/b.py") == b"keep"
        rows = dict(r.split(",", 1) for r in z.read("fakeray-1.0.dist-info/RECORD").decode().split())
    assert rows["ray/a.so"].endswith(f",{len(b'new bytes')}")
    with pytest.raises(SystemExit, match="no"):
        bundle.trim_wheel(src, tmp_path / "x.whl", replace={"ray/absent.so": b""})


@pytest.mark.slow
def test_rebuild_extensions_compiles_against_numpy2_and_the_wheel_imports(tmp_path):
    """The lie_learn fix on a small wheel: its compiled module is replaced by one built from the
    .pyx it ships, against numpy 2, and imports there (this uses PyPI for numpy and Cython)."""
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    pyx = "pkgx/inner.pyx"
    source = b"cimport numpy as cnp\nimport numpy as np\ncnp.import_array()\n" \
             b"def twice(x):\n    print 'py2 syntax compiles'\n    return np.asarray(x) * 2\n"
    src = _wheel(tmp_path / "fakeray-1.0-py3-none-any.whl",
                 {"pkgx/__init__.py": b"", pyx: source, f"pkgx/inner{suffix}": b"not an ELF"})
    replaced = bundle.rebuild_extensions(src, sys.executable, sources=(pyx,))
    assert replaced == [f"pkgx/inner{suffix}"]
    env = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    py = str(env / "bin" / "python")
    subprocess.run([py, "-m", "pip", "install", "-q", "numpy>=2"], check=True)
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target",
                    str(tmp_path / "site"), str(src)], check=True)
    out = subprocess.run([py, "-c", "import numpy, pkgx.inner as m; "
                          "print(numpy.__version__[0], m.twice([1, 2]).tolist())"],
                         env={"PYTHONPATH": str(tmp_path / "site")}, capture_output=True,
                         text=True, check=True).stdout.split("\n")
    assert out[-2] == "2 [2, 4]" and out[0] == "py2 syntax compiles"
    with pytest.raises(SystemExit, match="Python version"):
        bundle.rebuild_extensions(src, sys.executable, sources=("pkgx/absent.pyx",))
