"""Processes that end with the process that started them.

A run starts its daemons (and ``verify`` its runs) as child processes.  If
the parent is killed outright (SIGKILL, a crashed laptop), its children must
not live on.  The parent names itself in the child's environment
(:data:`PARENT_ENV`); the child watches that process and, when it is gone,
signals itself (:func:`die_with_parent`).

Why not ``prctl(PR_SET_PDEATHSIG)``: it follows the parent *thread*, and
trio starts processes from a worker thread that exits after 10 s idle — the
children would be killed while their parent is alive.  A pidfd (Linux 5.3)
follows the process: it becomes readable when the process exits.

The namespaces and files a killed run leaves are removed by the next
``tcplab`` command (``cli.reap_orphans``).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
import time
from collections.abc import Mapping

PARENT_ENV = "TCPLAB_PARENT_PID"
POLL_S = 0.2
"""How often to look when the kernel has no pidfd (before Linux 5.3)."""


def child_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a child that must end with this process."""
    env = dict(os.environ if base is None else base)
    env[PARENT_ENV] = str(os.getpid())
    return env


def die_with_parent(signum: int = signal.SIGKILL) -> None:
    """If the environment names a parent, send ``signum`` to ourselves the
    moment it is gone (at once if it already is).  A thread of its own waits
    on the parent's pidfd, so this works whatever the process does."""
    wanted = os.environ.get(PARENT_ENV)
    if not wanted or not wanted.isdigit():
        return
    parent = int(wanted)
    try:
        fd: int | None = os.pidfd_open(parent)
    except ProcessLookupError:
        os.kill(os.getpid(), signum)
        return
    except (OSError, AttributeError):
        fd = None  # no pidfd: poll getppid()
    if os.getppid() != parent:  # gone (and reaped) before we looked
        if fd is not None:
            os.close(fd)
        os.kill(os.getpid(), signum)
        return

    def watch() -> None:
        if fd is not None:
            with contextlib.suppress(OSError):
                select.select([fd], [], [])
        else:
            while os.getppid() == parent:
                time.sleep(POLL_S)
        os.kill(os.getpid(), signum)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()
