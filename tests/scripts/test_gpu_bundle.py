"""scripts/gpu_bundle.py without the network: what it carries, wheel trimming, size parts."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import subprocess
import sys
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


def test_carried_closure_has_escnn_and_ray_but_not_torch():
    closure = bundle.runtime_closure(["escnn", "ray[tune]", "hyperopt"])
    assert {"escnn", "lie-learn", "py3nj", "ray", "hyperopt", "torch"} <= set(closure)
    assert "pandas" in closure  # from ray's tune extra
    carried = bundle.to_carry(closure)
    assert "torch" not in carried and "numpy" not in carried
    assert not any(n.startswith("nvidia-") for n in carried)
    assert carried["escnn"] == closure["escnn"]


def test_the_bundle_carries_pytest_for_the_cuda_only_tests():
    carried = bundle.to_carry(bundle.runtime_closure(bundle.TEST_ROOTS))
    assert {"pytest", "pluggy", "iniconfig"} <= set(carried)
