"""What the two endpoint daemons share: entering the namespace, logging
setup, socket helpers, sending and logging, and a daemon's lifecycle."""

from __future__ import annotations

import errno
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from core import events, logs, netns, proc
from core.events import App, DaemonDone, emit

if TYPE_CHECKING:
    from daemons.observer import Observer

Key = tuple[str, int, str, int]
T = TypeVar("T")


def setup(component: str, args: Any) -> Any:
    """Die with the process that started us (when it asks), enter the
    namespace (before any thread or socket exists) and configure logging;
    exits with status 2 and a clear message if the namespace is bad."""
    proc.die_with_parent()
    if args.netns:
        try:
            netns.enter(args.netns)
        except OSError as exc:
            print(
                f"{component}: cannot enter network namespace {args.netns!r}: {exc}",
                file=sys.stderr,
            )
            raise SystemExit(2) from None
    logs.configure(component, args.log_format)
    return logs.get_logger()


DEFAULT_BACKLOG = 4096
"""The listen backlog when ``net.core.somaxconn`` cannot be read (Linux's
own default since 5.4)."""


def run_main(component: str, args: Any, amain: Callable[[Any, Any], Awaitable[int]]) -> int:
    """A daemon's ``main``: set up (:func:`setup`), run ``amain(args, log)``
    under trio; Ctrl-C before trio handles it is logged as ``daemon_done``
    with status ``interrupted`` (exit status 130)."""
    log = setup(component, args)
    try:
        return trio.run(amain, args, log)
    except KeyboardInterrupt:
        emit(log, DaemonDone(ts=time.time(), status="interrupted"))
        return 130


def default_backlog() -> int:
    """The most the kernel allows a listener of this namespace to queue:
    ``net.core.somaxconn``, read in the namespace the process is in (the
    file resolves against it).  Connections that finished their handshake
    wait there until accept(); while it is full the kernel drops new SYNs,
    and a client retries after 1 s, then 3 s… — a burst of thousands of
    connects needs thousands of places."""
    try:
        with open("/proc/sys/net/core/somaxconn") as fh:
            value = int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return DEFAULT_BACKLOG
    return value if value > 0 else DEFAULT_BACKLOG


def raise_nofile() -> int:
    """Raise the soft limit on open files to the hard limit (one descriptor
    per connection: the usual 1024 is a ceiling on concurrent connections);
    returns the limit in force."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return int(soft)


def errno_name(exc: BaseException) -> str:
    """``ECONNREFUSED`` for a refused connect, ``ETIMEDOUT``…; the class name
    for errors without an errno."""
    code = getattr(exc, "errno", None)
    if isinstance(code, int) and code in errno.errorcode:
        return errno.errorcode[code]
    if isinstance(exc, TimeoutError):
        return "ETIMEDOUT"
    return type(exc).__name__


def sock_key(sock: Any) -> Key:
    """(local addr, local port, remote addr, remote port) as sock_diag reports it."""
    local = sock.getsockname()
    remote = sock.getpeername()
    return (local[0], local[1], remote[0], remote[1])


def set_abortive_close(sock: Any) -> None:
    """SO_LINGER on, 0 s: close() sends RST and skips FIN and TIME_WAIT."""
    import struct

    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def _sendall(sock: trio.socket.SocketType | socket.socket, data: bytes) -> None:
    view = memoryview(data)
    if isinstance(sock, socket.socket):
        # a plain non-blocking socket: send what fits, wait for room for the rest
        while view:
            try:
                sent = sock.send(view)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(sock)
                continue
            view = view[sent:]
        return
    while view:
        sent = await sock.send(view)
        view = view[sent:]


async def send_logged(
    sock: trio.socket.SocketType | socket.socket,
    data: bytes,
    log: Any,
    conn: str,
    farewell: bool | None = None,
) -> None:
    """Send all of ``data``; log ``app_send`` stamped before the call."""
    started = time.time()
    await _sendall(sock, data)
    emit(
        log,
        App(
            kind=events.APP_SEND,
            ts=started,
            returned_ts=time.time(),
            conn=conn,
            bytes=len(data),
            farewell=farewell,
        ),
    )


def call_logged(log: Any, kind: str, call: Callable[[], T], **fields: Any) -> T:
    """``call()`` (a socket call that does not block), logged as an ``app_*``
    record of ``kind`` stamped before the call, with ``returned_ts`` after
    it and ``fields`` (conn, how, …)."""
    started = time.time()
    result = call()
    emit(log, App(kind=kind, ts=started, returned_ts=time.time(), **fields))
    return result


def close_logged(
    sock: Any,
    log: Any,
    conn: str | None,
    how: str,
    *,
    abort: bool = False,
    detail: str | None = None,
) -> None:
    """close() the socket (abortively: SO_LINGER 0, so an RST), logged as
    ``app_close`` with the time before and after the call."""
    if abort:
        set_abortive_close(sock)
    call_logged(log, events.APP_CLOSE, sock.close, conn=conn, how=how, detail=detail)


def shutdown_logged(sock: Any, log: Any, conn: str | None) -> None:
    """shutdown(SHUT_WR): our FIN, and reading goes on; logged as
    ``app_shutdown`` with the time before and after the call."""
    call_logged(
        log, events.APP_SHUTDOWN, lambda: sock.shutdown(socket.SHUT_WR), conn=conn, how="write"
    )


def app_error(log: Any, conn: str | None, op: str, how: str, detail: str) -> None:
    """Log an ``app_error``: operation ``op`` failed with ``how`` (an errno name)."""
    emit(log, App(kind=events.APP_ERROR, ts=time.time(), conn=conn, op=op, how=how, detail=detail))


SHUTDOWN_OBSERVE_S = 0.3
"""After a SIGTERM: how long to go on observing before the last report."""
SETTLE_S = 0.5
"""At exit: how long to watch the sockets the program kept (a never-closed
CLOSE_WAIT) as the kernel closes them."""


async def lifecycle(
    log: Any,
    observer: Observer | None,
    work: Callable[[], Awaitable[None]],
    *,
    observe_for: float | None,
    kept: Callable[[], Iterable[tuple[Any, Key]]] = lambda: (),
) -> str:
    """A daemon's life: the observer starts; ``work`` runs (SIGTERM stops
    it); the observer watches until the sockets are gone or ``observe_for``
    passes, and reports what is left; then the sockets the program kept open
    are closed as its exit would close them (``app_close how=exit``) and the
    observer reports what the kernel does with them.  Returns the status:
    ``ok`` or ``terminated``.  A second SIGTERM stops at once.  Without an
    observer (``--no-observer``) only the work runs and the kept sockets are
    closed."""
    from daemons.observer import observe_until_quiet

    status = "ok"
    async with trio.open_nursery() as nursery:
        if observer is not None:
            await nursery.start(observer.run)
        working = trio.CancelScope()
        # lines are written in batches while SIGTERM is trio's to handle:
        # every exit from here passes the flush at the end of batched()
        with trio.open_signal_receiver(signal.SIGTERM) as signals, logs.batched():

            async def on_signal() -> None:
                nonlocal status
                async for _ in signals:
                    if status == "terminated":
                        nursery.cancel_scope.cancel()
                    status = "terminated"
                    working.cancel()

            nursery.start_soon(on_signal)
            with working:
                await work()
            grace = SHUTDOWN_OBSERVE_S if status == "terminated" else observe_for
            if observer is not None:
                await observe_until_quiet(observer, grace)
            closing = list(kept())
            for sock, key in closing:
                close_logged(
                    sock, log, _conn_of(observer, key), "exit",
                    detail="closed as the program exits",
                )  # fmt: skip
            if closing and observer is not None:
                with trio.move_on_after(SETTLE_S):
                    await observer.until_gone(key for _sock, key in closing)
                await observer.poll_once()
            nursery.cancel_scope.cancel()
    return status


def _conn_of(observer: Observer | None, key: Key) -> str:
    # only the server runs without an observer: its sockets are passive
    if observer is not None:
        return observer.tracker.conn(key)
    return events.conn_id(key[2], key[3], key[0], key[1])
