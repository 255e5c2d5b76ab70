from __future__ import annotations

import os
import subprocess
import sys

from pipeline.procs import host_tag, owner_of, owner_token, pid_alive, remove_orphans


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_owner_token_reads_back():
    assert owner_of(owner_token() + "-trial_0001-abc") == (host_tag(), os.getpid())
    assert owner_of("node_1.example.org-42-x") == ("node_1.example.org", 42)
    assert owner_of("garbage") is None and owner_of("host-notapid-x") is None
    assert "-" not in host_tag()


def test_pid_alive():
    assert pid_alive(os.getpid())
    assert not pid_alive(_dead_pid())


def test_remove_orphans_only_takes_dead_owners_on_this_host(tmp_path):
    dead = _dead_pid()
    names = {
        "dead": f"{host_tag()}-{dead}-a",
        "mine": f"{owner_token()}-b",
        "parent": f"{host_tag()}-{os.getppid()}-c",
        "elsewhere": f"otherhost-{dead}-d",
        "unnamed": "not-a-token",
    }
    for name in names.values():
        (tmp_path / name).mkdir()
    removed = remove_orphans(tmp_path.iterdir(), lambda d: d.name)
    assert [d.name for d in removed] == [names["dead"]]
    assert sorted(d.name for d in tmp_path.iterdir()) == sorted(
        v for k, v in names.items() if k != "dead")
