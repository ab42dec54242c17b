"""Enter a named network namespace (``/run/netns/NAME``), for the whole
process or for one block of code on the calling thread.

The kernel binds a socket to the namespace of the thread that created it, for
the socket's whole life.  So a process can open a socket *inside* a lab
namespace and keep using it after switching back: that is how ``tcplab watch``
and the benchmarks get a sock_diag socket bound to a lab namespace without
running in it.

``setns(2)`` changes only the calling thread.  :func:`enter` is for a daemon's
main thread before it starts any other thread (threads inherit it);
:func:`inside` switches and always switches back.

Python 3.11 has no ``os.setns``, so this calls libc through ctypes.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
from collections.abc import Iterator
from pathlib import Path

NETNS_RUN_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000  # include/uapi/linux/sched.h

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class NetnsError(OSError):
    """The namespace does not exist, or we may not enter it."""


def path_of(name: str) -> Path:
    """/run/netns/NAME; NetnsError for a name that is not one (a path, empty,
    longer than a file name may be)."""
    # a leading "-" would read as an option to `ip netns` and to argparse
    bad = not name or name.startswith("-") or name in (".", "..")
    if bad or "/" in name or len(name) > 255 or "\0" in name:
        shown = name if len(name) <= 40 else name[:37] + "..."
        raise NetnsError(f"bad network namespace name {shown!r}")
    return NETNS_RUN_DIR / name


def _setns_fd(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NetnsError(err, f"setns: {os.strerror(err)}")


def enter(name: str) -> None:
    """Move the calling thread into namespace ``name`` for good."""
    path = path_of(name)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NetnsError(f"no network namespace {name!r} (no {path})") from None
    try:
        _setns_fd(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def inside(name: str | None) -> Iterator[None]:
    """Run the block with the calling thread in namespace ``name`` (None: stay)."""
    if name is None:
        yield
        return
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        enter(name)
        try:
            yield
        finally:
            _setns_fd(home)
    finally:
        os.close(home)


def exists(name: str) -> bool:
    return path_of(name).exists()
