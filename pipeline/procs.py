"""Leftovers of killed processes: a killed writer cannot clean up, so the next one does.

Folders carry their owner's host and PID in their name; a folder is removed only when that
owner ran on this host and is gone, so a writer alive elsewhere on a shared file system, or
still running here, is never touched.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
from collections.abc import Callable, Iterable
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists on this host (it may belong to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def host_tag() -> str:
    """This host's name, reduced to characters that are safe in a file name and hold no '-'."""
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"


def owner_token() -> str:
    """`<host>-<pid>`: put it in a folder name so `owner_of` can read the owner back."""
    return f"{host_tag()}-{os.getpid()}"


def owner_of(token: str) -> tuple[str, int] | None:
    """(host, pid) from a name that starts with `owner_token()`'s text; None if it does not."""
    host, _, rest = token.partition("-")
    pid = rest.split("-", 1)[0]
    return (host, int(pid)) if host and pid.isdigit() else None


def remove_orphans(dirs: Iterable[Path], token_of: Callable[[Path], str]) -> list[Path]:
    """Delete each folder whose owner (`token_of(path)` -> owner token text) ran on this host
    and has exited; returns the folders removed. This process's own folders are kept."""
    removed = []
    here = host_tag()
    for d in dirs:
        owner = owner_of(token_of(d))
        if owner is None or owner[0] != here or owner[1] == os.getpid() or pid_alive(owner[1]):
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    return removed
