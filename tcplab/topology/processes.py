"""Processes inside a network namespace: find them (like ``ip netns pids``)
and stop them."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from core import netns as tlnetns


def _ns_inode(name: str) -> int | None:
    try:
        return os.stat(tlnetns.path_of(name)).st_ino
    except OSError:
        return None


def pids_in(name: str) -> list[int]:
    """Processes whose network namespace is ``name`` (like ``ip netns pids``)."""
    inode = _ns_inode(name)
    if inode is None:
        return []
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.stat(entry / "ns" / "net").st_ino == inode:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def kill_all_in(name: str, grace_s: float = 1.0) -> int:
    """SIGTERM everything in namespace ``name``, SIGKILL what is left after
    ``grace_s``.  Returns how many processes were found."""
    pids = pids_in(name)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    remaining = pids
    while remaining and time.monotonic() < deadline:
        time.sleep(0.02)
        remaining = [p for p in remaining if alive(p)]
    for pid in remaining:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is dead for our purposes
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"
