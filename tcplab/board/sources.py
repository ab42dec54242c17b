"""Records from outside the board's own runs (trio shells).

- :func:`datagrams`: the compose containers send each JSON line as one
  datagram to a Unix socket on their shared volume (:mod:`core.recordsink`).
- :func:`follow_file`: a hand-made lab's background proxy logs to a file.
- :func:`watcher`: ``python -m daemons.watch`` in one of a hand-made lab's
  namespaces, its records told as that side's.

Each line that is not a record is counted and skipped: a container's
traceback must not stop the board.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import trio

from core.events import Record, parse_record
from core.proc import child_env
from core.recordsink import split_datagram
from tcplab.daemon_io import read_lines

MAX_DATAGRAM = 64 * 1024
FOLLOW_POLL_S = 0.02
"""How often a followed log file is read again when it had nothing new."""


class Unparsed:
    """Lines that were not records, counted (the board's counters show it)."""

    def __init__(self) -> None:
        self.count = 0


def _feed(raw: bytes, push: Callable[[Record], None], unparsed: Unparsed, side: str | None) -> None:
    record = parse_record(raw)
    if record is None:
        if raw.strip():
            unparsed.count += 1
        return
    if side is not None:
        record = dataclasses.replace(record, component=side)
    push(record)


async def datagrams(
    path: str,
    push: Callable[[Record], None],
    unparsed: Unparsed,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Bind a datagram socket at ``path`` and push each line received."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    with sock:
        await sock.bind(path)
        os.chmod(path, 0o666)  # the lab's containers run as other users, perhaps
        task_status.started()
        try:
            while True:
                data = await sock.recv(MAX_DATAGRAM)
                for line in split_datagram(data):
                    _feed(line, push, unparsed, None)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)


async def follow_file(path: Path, push: Callable[[Record], None], unparsed: Unparsed) -> None:
    """Each line appended to ``path`` from now on (as ``tail -f``)."""
    with open(path, "rb") as fh:  # noqa: ASYNC230 - a local log file; reads never wait
        fh.seek(0, os.SEEK_END)
        partial = b""
        while True:
            chunk = fh.read(65536)
            if not chunk:
                await trio.sleep(FOLLOW_POLL_S)
                continue
            lines = (partial + chunk).split(b"\n")
            partial = lines.pop()
            for line in lines:
                _feed(line, push, unparsed, None)


async def watcher(
    netns: str, side: str, push: Callable[[Record], None], unparsed: Unparsed
) -> None:
    """Watch every socket in ``netns``; its records are ``side``'s."""
    argv = [sys.executable, "-m", "daemons.watch", "--netns", netns, "--log-format", "json"]
    proc = await trio.lowlevel.open_process(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        env=child_env(),
    )
    assert proc.stdout is not None
    try:
        await read_lines(proc.stdout, lambda raw: _feed(raw, push, unparsed, side))
    finally:
        if proc.returncode is None:
            # SIGINT: the watcher removes its ftrace instance as it stops
            proc.send_signal(signal.SIGINT)
            with trio.CancelScope(shield=True):
                with trio.move_on_after(2) as slow:
                    await proc.wait()
            if slow.cancelled_caught:
                proc.kill()
