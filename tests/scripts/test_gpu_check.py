"""scripts/gpu_check.sh's staging: parts carried one per command, nothing run until all are in.

The install and the runs themselves need the GPU machine's image (rehearsed by hand with CPU=1
and a Python 3.12 like it, see the script's header); what is tested here is the bookkeeping
that decides, command by command, which bundle parts are still to be carried.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _check(cwd: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "WHEELS": str(tmp / "wheels"),
           "SITE": str(tmp / "site"), "OUT": str(tmp / "out")}
    return subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=60)


def _carry(cwd: Path, part: str | None, manifest: dict | None) -> None:
    """Lay out cwd/gpu_bundle as a device command that carries `part` (and the manifest) sees."""
    bundle = cwd / "gpu_bundle"
    subprocess.run(["rm", "-rf", str(bundle)], check=True)
    bundle.mkdir(parents=True)
    if manifest is not None:
        (bundle / "manifest.json").write_text(json.dumps(manifest))
        if part:
            (bundle / part).mkdir()
            for name in manifest["parts"][int(part.split("_")[1]) - 1]:
                (bundle / part / name).write_bytes(b"wheel")


def test_parts_are_staged_command_by_command(tmp_path):
    cwd = tmp_path / "checkout"
    manifest = {"parts": [["a-1-py3-none-any.whl", "b-1-py3-none-any.whl"],
                          ["c-1-py3-none-any.whl"]]}
    _carry(cwd, None, None)
    proc = _check(cwd, tmp_path, "stage")
    assert proc.returncode == 1 and "carry gpu_bundle/manifest.json" in proc.stderr

    _carry(cwd, "part_1", manifest)
    proc = _check(cwd, tmp_path, "stage")
    assert proc.returncode == 0, proc.stderr
    assert "2 of 3 wheels staged; still to carry: part_2" in proc.stdout

    _carry(cwd, None, manifest)  # a run before the last part came: refused, nothing installed
    proc = _check(cwd, tmp_path, "run", "tests")
    assert proc.returncode == 1 and "still to carry: part_2" in proc.stdout
    assert not (tmp_path / "site").exists()

    _carry(cwd, "part_2", manifest)
    proc = _check(cwd, tmp_path, "stage")
    assert proc.returncode == 0 and "3 of 3 wheels staged" in proc.stdout
    assert sorted(p.name for p in (tmp_path / "wheels").glob("*.whl")) == sorted(
        n for part in manifest["parts"] for n in part)


def test_unknown_command_is_refused(tmp_path):
    proc = _check(tmp_path, tmp_path, "install")
    assert proc.returncode == 2 and "usage" in proc.stderr


def test_what_comes_back_is_json_markdown_and_one_log_archive(tmp_path):
    """The device returns at most 8 files: logs and plots leave in one archive."""
    out = tmp_path / "out"
    (out / "report_plots").mkdir(parents=True)
    for name in ("gpu_models.json", "gpu.md", "search.log", "pip.log", "report_plots/a.png"):
        (out / name).write_text(name)
    _carry(tmp_path / "checkout", None, None)
    proc = _check(tmp_path / "checkout", tmp_path, "run", "bench")  # refused: no manifest
    assert proc.returncode == 1
    assert sorted(p.name for p in out.iterdir()) == ["gpu.md", "gpu_models.json", "logs.tar.gz"]
    with tarfile.open(out / "logs.tar.gz") as tar:
        names = set(tar.getnames())
        assert tar.extractfile("search.log").read() == b"search.log"
    assert {"pip.log", "report_plots/a.png"} <= names
