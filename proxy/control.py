"""Change the proxy's faults while traffic flows: the control socket's server.

A Unix socket speaking one JSON object per line each way; each request is
applied by a :class:`~proxy.controller.Controller`, which lists the
requests and what one may ask.  ``tcplab proxy rules|add|rm|release|clear|pace``
are clients of this socket.

Limits.  Whoever can open the socket can send anything, and nothing they
send may stop the proxy forwarding (one line of 60,000 ``[`` once did: a
RecursionError in ``json.loads``), so every resource the socket uses is
capped, and each cap answers with a clear error:

- a request line is at most :data:`MAX_REQUEST` bytes (a longer one is
  answered ``request too long`` and the connection closed, before any of it
  is parsed) and nests at most :data:`MAX_DEPTH` arrays or objects (checked
  by counting brackets before the line reaches the JSON parser);
- a string field, an ``nth`` list and the number of rules are capped by the
  :class:`~proxy.controller.Controller`;
- at most :data:`MAX_CONNECTIONS` connections are served at once; one more
  is answered ``{"ok": false, "busy": true, "error": "busy: …"}`` and closed
  (no request is read from it, so a client may simply retry);
- a line must be finished within :data:`LINE_DEADLINE` of its first byte, a
  connection with nothing pending is closed after :data:`IDLE_TIMEOUT`, and
  an answer the client does not read within :data:`SEND_DEADLINE` closes it;
- ``accept()`` failing for want of descriptors or memory (EMFILE, ENFILE,
  ENOBUFS, ENOMEM) backs off :data:`ACCEPT_BACKOFF` and goes on, as
  ``trio.serve_listeners`` does.

This module is the trio shell: the socket, the connections, the deadlines.
The socket lives on the filesystem (``/run/tcplab/<lab>.proxy.sock`` for a
lab), mode 0600: whoever may write there may change the faults.
:mod:`core.control` holds the framing (:class:`~core.control.LineBuffer`,
:data:`~core.control.MAX_DEPTH`) and the blocking client the CLI uses.
"""

from __future__ import annotations

import errno
import math
import os
import socket
import time
from pathlib import Path
from typing import Any

import trio

from core.control import MAX_REQUEST, RECEIVE_SIZE, LineBuffer, encode_answer
from core.events import LogMessage, emit
from proxy.controller import Controller

MAX_CONNECTIONS = 64
"""Control connections served at once; the CLI opens one per request and
closes it, so more means a misbehaving client."""
LINE_DEADLINE = 5.0
"""Seconds from the first byte of a request line to its newline."""
IDLE_TIMEOUT = 60.0
"""Seconds a connection may stay open with nothing pending."""
SEND_DEADLINE = 5.0
"""Seconds an answer may wait for the client to read it."""
BUSY_SEND_DEADLINE = 0.1
"""Seconds the one-line ``busy`` answer may take (it fits any socket buffer)."""
BACKLOG = 128
"""listen(2) backlog: connections the kernel queues before accept (the
traditional SOMAXCONN, include/linux/socket.h before Linux 5.4).  A burst of
CLI requests waits here instead of failing with EAGAIN."""
ACCEPT_BACKOFF = 0.1
"""Seconds to wait after accept(2) fails for want of resources (trio's
``serve_listeners`` waits the same)."""
ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
"""accept(2) errors that mean the process or system is out of descriptors or
memory, not that the listener is broken (accept(2); trio's serve_listeners)."""


def busy_answer(limit: int = MAX_CONNECTIONS) -> dict[str, Any]:
    """What a connection beyond the limit gets, before it is closed."""
    return {
        "ok": False,
        "busy": True,
        "error": f"busy: {limit} control connections are open already; try again",
    }


async def serve(
    path: str | Path,
    controller: Controller,
    *,
    max_connections: int = MAX_CONNECTIONS,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``path`` until cancelled; the socket file is removed on exit."""
    sock = await bind(path)
    task_status.started()
    await serve_socket(sock, path, controller, max_connections=max_connections)


async def bind(path: str | Path) -> trio.socket.SocketType:
    """The listening control socket at ``path`` (mode 0600; a stale socket
    file there is replaced).  Raises OSError if it cannot be made."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_socket():
        path.unlink()
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old_umask = os.umask(0o177)
        try:
            await sock.bind(str(path))
        finally:
            os.umask(old_umask)
        sock.listen(BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


async def serve_socket(
    sock: trio.socket.SocketType,
    path: str | Path,
    controller: Controller,
    *,
    max_connections: int = MAX_CONNECTIONS,
) -> None:
    """Serve connections on the listening ``sock`` until cancelled; closes
    it and removes ``path`` however this ends.  Sessions that fail are
    closed and logged; only an accept(2) error that is not about resources
    ends it (raised)."""
    try:
        listener = trio.SocketListener(sock)
        active = 0
        starved = False

        async def session(stream: trio.SocketStream) -> None:
            nonlocal active
            try:
                await _session(stream, controller)
            except Exception as exc:  # a bug: lose this connection, not the proxy
                controller.stats["internal_errors"] += 1
                _log(controller, f"control session failed: {exc!r}", "error")
            finally:
                active -= 1

        async with trio.open_nursery() as nursery:
            while True:
                try:
                    stream = await listener.accept()
                except OSError as exc:
                    if exc.errno not in ACCEPT_CAPACITY_ERRNOS:
                        raise
                    controller.stats["accept_errors"] += 1
                    if not starved:  # once per episode, not once per retry
                        _log(
                            controller,
                            f"control socket: accept failed ({errno.errorcode[exc.errno]}: "
                            f"{os.strerror(exc.errno)}); retrying every {ACCEPT_BACKOFF:g} s",
                        )
                    starved = True
                    await trio.sleep(ACCEPT_BACKOFF)
                    continue
                starved = False
                if active >= max_connections:
                    controller.stats["busy"] += 1
                    await _refuse(stream, max_connections)
                    continue
                active += 1
                nursery.start_soon(session, stream)
    finally:
        sock.close()
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _log(controller: Controller, message: str, level: str = "warning") -> None:
    if controller.log is not None:
        emit(
            controller.log,
            LogMessage(ts=time.time(), message=message, log_level=level, logger="proxy.control"),
        )


async def _refuse(stream: trio.SocketStream, limit: int) -> None:
    """Answer ``busy`` without reading anything, and close."""
    with trio.move_on_after(BUSY_SEND_DEADLINE):
        try:
            await stream.send_all(encode_answer(busy_answer(limit)))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
    await trio.aclose_forcefully(stream)


async def _send(stream: trio.SocketStream, answer: dict[str, Any]) -> bool:
    """Send one answer line; False if the client is gone or does not read."""
    with trio.move_on_after(SEND_DEADLINE):
        try:
            await stream.send_all(encode_answer(answer))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True
    return False


async def _session(stream: trio.SocketStream, controller: Controller) -> None:
    reader = LineBuffer()
    stats = controller.stats
    async with stream:
        idle_deadline = trio.current_time() + IDLE_TIMEOUT
        line_deadline = math.inf
        while True:
            deadline = line_deadline if reader.pending else idle_deadline
            data: bytes | None = None
            with trio.move_on_at(deadline):
                try:
                    data = await stream.receive_some(RECEIVE_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return
            if data is None:  # the deadline passed
                if reader.pending:
                    stats["timed_out"] += 1
                    error = f"request line unfinished {LINE_DEADLINE:g} s after it began"
                else:
                    stats["idle_closed"] += 1
                    error = f"no request for {IDLE_TIMEOUT:g} s; closing"
                await _send(stream, {"ok": False, "error": error})
                return
            if not data:
                return
            was_idle = not reader.pending
            lines = reader.feed(data)
            for line in lines:
                if not await _send(stream, controller.handle_line(line, time.time())):
                    return
            if reader.overflow:
                stats["too_long"] += 1
                await _send(
                    stream,
                    {"ok": False, "error": f"request too long (at most {MAX_REQUEST} bytes)"},
                )
                return
            now = trio.current_time()
            idle_deadline = now + IDLE_TIMEOUT
            if reader.pending and (lines or was_idle):
                line_deadline = now + LINE_DEADLINE  # a new line began
