"""tcplab's echo server: a real kernel socket whose closing behaviour you pick.

``python -m daemons.server --netns tl…-srv --listen 198.51.100.1:7007 --close immediate``

Messages are lines (``\\n``-terminated); each complete line is echoed back.
How the server ends a connection is its *close policy*:

``immediate``   on the client's FIN (read returns EOF), close at once — Linux
                then often sends its FIN on the ACK of the client's FIN.
``linger:D``    on the client's FIN, stay in CLOSE_WAIT for D, then close.
``never``       on the client's FIN, never close: CLOSE_WAIT until the server
                exits (a leak, as an operator meets it in ``ss``).
``abort``       on the client's FIN, close with SO_LINGER 0: RST, no FIN.
``first[:N]``   after echoing N messages (default 1; 0: at once, on accept),
                close first: the server does the active close and gets
                TIME_WAIT.
``half[:N]``    after echoing N messages (0: at once), shut down writing only
                (FIN) and keep reading until the client's FIN, then close.

``--farewell TEXT`` sends TEXT after the client's FIN and before closing:
data flowing from CLOSE_WAIT, the reason a teardown needs four segments.

``--unread D`` reads nothing: D after accepting, the server closes with the
client's bytes still in its receive queue, and Linux answers that close()
with RST instead of FIN (RFC 2525 §2.17).  ``--no-reuseaddr`` leaves
SO_REUSEADDR off the listener, so a restart fails with EADDRINUSE while a
TIME_WAIT socket holds the port.  ``--no-accept`` listens but never calls
accept(): the kernel still completes handshakes into the accept queue (up to
``--backlog``), and those connections wait there, established, until the
server is stopped (SIGTERM) and its listener closes.

The server survives clients that reset, vanish (``--idle-timeout``) or send
garbage (lines over ``--max-message`` bytes end the connection with an
``app_error``).  The observer runs beside it for the listening port
(``--no-observer``: the echo server alone, to measure what observing costs).

Thousands of clients at once (``benchmarks/echo_load.py``): the listen
backlog is the namespace's ``net.core.somaxconn`` unless ``--backlog`` says
otherwise (with 128, a burst of connects overflows the accept queue, the
kernel drops SYNs and the clients retry after 1 s, 3 s…); each time the
listener is readable everything waiting is accepted; the open-files limit is
raised to its hard limit; the event lines are written in batches.
"""

from __future__ import annotations

import socket
import sys
import time
from typing import Any

import trio

from core import events, options
from core.events import App, DaemonDone, DaemonReady, emit
from core.policies import ClosePolicy
from daemons import closing, common
from daemons.common import app_error, send_logged
from daemons.inference import Fact
from daemons.lines import LineReader, MessageTooLong
from daemons.matching import TraceConfig, local_filter, trace_filters
from daemons.observer import Observer
from daemons.options import ServerOptions


class Server:
    def __init__(self, args: ServerOptions, log: Any) -> None:
        self.args = args
        self.log = log
        self.policy: ClosePolicy = args.close
        self.at_eof = closing.at_eof(self.policy, farewell=args.farewell is not None)
        self.leaked: list[tuple[socket.socket, common.Key]] = []
        self.handled = 0
        self.done = trio.Event()
        self.listener: socket.socket | None = None
        host, port = args.listen
        self.observer: Observer | None = None
        if getattr(args, "observer", True):
            self.observer = Observer(
                log,
                match=local_filter(host, port),
                passive_ports=[port],
                interval=args.observe_interval,
                trace=TraceConfig(args.trace, trace_filters(host, port)) if args.trace else None,
            )

    def kept(self) -> list[tuple[socket.socket, common.Key]]:
        """The connections the ``never`` policy kept open."""
        return list(self.leaked)

    def bind(self) -> bool:
        """The listening socket, bound (SO_REUSEADDR first, unless
        ``--no-reuseaddr``); False, with an ``app_error``, if bind() failed."""
        host, port = self.args.listen
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setblocking(False)
        if self.args.reuseaddr:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        started = time.time()
        try:
            listener.bind((host, port))
        except OSError as exc:
            listener.close()
            emit(
                self.log,
                App(
                    kind=events.APP_ERROR,
                    ts=started,
                    op="bind",
                    local=events.endpoint(host, port),
                    how=common.errno_name(exc),
                    detail=str(exc),
                ),
            )
            return False
        self.listener = listener
        return True

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listener = self.listener
        if listener is None:
            raise RuntimeError("serve() before bind()")
        local = events.endpoint(*self.args.listen)
        backlog = self.args.backlog or common.default_backlog()
        common.call_logged(
            self.log,
            events.APP_LISTEN,
            lambda: listener.listen(backlog),
            local=local,
            backlog=backlog,
        )
        task_status.started()
        async with trio.open_nursery() as nursery:
            try:
                if self.args.no_accept:
                    # the handshakes complete in the kernel; the program never
                    # takes a connection off the accept queue
                    await trio.sleep_forever()
                await self._accept_all(listener, backlog, nursery)
            finally:
                common.call_logged(
                    self.log, events.APP_CLOSE, listener.close, local=local, how="listener"
                )
        self.done.set()

    async def _accept_all(self, listener: socket.socket, burst: int, nursery: trio.Nursery) -> None:
        """Accept until ``--max-conns``.  Each time the listener is readable,
        everything waiting is taken off the accept queue (up to ``burst``
        before letting other tasks run), one task per connection: with
        thousands of tasks busy, accepting one connection per turn of the
        event loop would leave the queue full and the kernel dropping SYNs.
        A failed accept() is logged; out of descriptors, the server waits a
        moment instead of spinning."""
        limit = self.args.max_conns
        taken = 0
        while limit is None or self.handled < limit:
            try:
                conn, peer = listener.accept()
            except BlockingIOError:
                taken = 0
                await trio.lowlevel.wait_readable(listener)
                continue
            except OSError as exc:
                name = common.errno_name(exc)
                app_error(self.log, None, "accept", name, str(exc))
                await trio.sleep(ACCEPT_PAUSE_S if name in _NO_RESOURCES else 0)
                continue
            accepted = time.time()
            conn.setblocking(False)
            self.handled += 1
            nursery.start_soon(self.handle, conn, peer, accepted)
            taken += 1
            if taken >= burst:
                taken = 0
                await trio.lowlevel.checkpoint()

    async def handle(self, sock: socket.socket, peer: tuple[str, int], accepted: float) -> None:
        """One connection, on its non-blocking socket (the calls that find
        their data waiting return at once; the rest wait for the kernel to
        say the socket is ready, which is where cancellation and the idle
        timeout come in).  What to do next is :mod:`daemons.closing`'s to
        say; this is the doing."""
        # The peer may already have reset the connection (getpeername would
        # fail): take its address from accept().
        local = sock.getsockname()
        key = (local[0], local[1], peer[0], peer[1])
        conn = events.conn_id(peer[0], peer[1], local[0], local[1])
        log = self.log
        emit(log, App(kind=events.APP_ACCEPT, ts=accepted, conn=conn))
        self._note(key)
        keep = False
        reset = False
        try:
            with trio.fail_after(self.args.idle_timeout) as idle:
                if await self._echo(sock, key, conn, idle):
                    # The client's FIN has arrived: we are in CLOSE_WAIT.
                    keep = await self._after_eof(sock, key, conn)
        except MessageTooLong as exc:
            app_error(log, conn, "recv", "EMSGSIZE", f"line over {exc} bytes")
        except trio.TooSlowError:
            app_error(log, conn, "recv", "idle", "idle timeout")
        except OSError as exc:
            name = common.errno_name(exc)
            if closing.is_reset(name):
                # the connection is gone; the close below looks, once
                reset = True
                self._note(key, "reset", look=False)
            app_error(log, conn, "io", name, str(exc))
        finally:
            if not keep:
                self._close(sock, key, log, conn, reset=reset)

    async def _echo(
        self, sock: socket.socket, key: common.Key, conn: str, idle: trio.CancelScope
    ) -> bool:
        """Echo lines until the client's FIN (True) or until the policy
        closes first (False).  Every read pushes the ``idle`` deadline on."""
        log = self.log
        policy = self.policy
        if self.args.unread is not None:
            # read nothing: what the client sends stays in the receive queue
            await trio.sleep(self.args.unread)
            return False
        first = closing.at_accept(policy)
        if first == "close":
            return False
        if first == "shutdown":
            self._shutdown(sock, key, log, conn)
        reader = LineReader(self.args.max_message)
        echoed = 0
        while True:
            data = await _recv(sock)
            received = time.time()
            idle.deadline = trio.current_time() + self.args.idle_timeout
            if not data:
                emit(log, App(kind=events.APP_RECV, ts=received, conn=conn, bytes=0, eof=True))
                self._note(key, "rcv_fin", look=self.at_eof.look)
                return True
            emit(log, App(kind=events.APP_RECV, ts=received, conn=conn, bytes=len(data)))
            for line in reader.feed(data):
                step = closing.on_line(policy, echoed)
                if not step.echo:
                    continue
                await send_logged(sock, line, log, conn)
                echoed += 1
                if step.then == "close":
                    return False
                if step.then == "shutdown":
                    self._shutdown(sock, key, log, conn)

    async def _after_eof(self, sock: socket.socket, key: common.Key, conn: str) -> bool:
        """In CLOSE_WAIT: the farewell, then linger or keep the socket, as the
        policy says; True if the socket is kept open (``never``)."""
        step = self.at_eof
        if step.farewell and self.args.farewell is not None:
            line = self.args.farewell.encode() + b"\n"
            await send_logged(sock, line, self.log, conn, farewell=True)
        if step.then == "linger":
            await trio.sleep(step.linger_s)
        elif step.then == "keep":
            self.leaked.append((sock, key))
            emit(
                self.log,
                App(
                    kind=events.APP_CLOSE,
                    ts=time.time(),
                    conn=conn,
                    how="never",
                    detail="socket kept open: CLOSE_WAIT",
                ),
            )
            return True
        return False

    def _note(self, key: common.Key, *facts: Fact, look: bool = True) -> None:
        if self.observer is not None:
            self.observer.note(key, *facts, look=look)

    def _shutdown(self, sock: socket.socket, key: common.Key, log: Any, conn: str) -> None:
        """Shut down writing: our FIN, and we go on reading."""
        common.shutdown_logged(sock, log, conn)
        self._note(key, "snd_fin")

    def _close(
        self, sock: socket.socket, key: common.Key, log: Any, conn: str, *, reset: bool = False
    ) -> None:
        """Close (abortively under ``abort``); after a reset the kernel has
        closed the connection already, and close() sends nothing."""
        close = closing.server_close(self.policy, reset=reset, unread=self._unread(sock))
        common.close_logged(sock, log, conn, close.how, abort=close.abort)
        self._note(key, *close.facts)

    def _unread(self, sock: socket.socket) -> bool:
        """Under ``--unread``: whether bytes wait unread (close() then resets)."""
        if self.args.unread is None:
            return False
        try:
            return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except OSError:
            return False


ACCEPT_PAUSE_S = 0.1
"""After accept() failed for want of descriptors or memory: wait this long."""
_NO_RESOURCES = frozenset({"EMFILE", "ENFILE", "ENOBUFS", "ENOMEM"})


async def _recv(sock: socket.socket, size: int = 65536) -> bytes:
    """recv() on a non-blocking socket: wait until the kernel says it is
    readable (a checkpoint: cancellation, the idle timeout), unless data
    was waiting already — then one checkpoint after it, so a client that
    keeps sending cannot starve the others.  (trio's own socket takes two
    trips through the scheduler per call, whether it waits or not.)"""
    waited = False
    while True:
        try:
            data = sock.recv(size)
        except BlockingIOError:
            await trio.lowlevel.wait_readable(sock)
            waited = True
            continue
        if not waited:
            await trio.lowlevel.checkpoint()
        return data


def parse_args(argv: list[str] | None) -> ServerOptions:
    return options.from_argv(
        ServerOptions, argv, prog="python -m daemons.server", description=__doc__.split("\n")[0]
    )


async def amain(args: ServerOptions, log: Any) -> int:
    server = Server(args, log)
    if not server.bind():
        # nothing was opened, so there is nothing to observe
        emit(log, DaemonDone(ts=time.time(), status="failed", connections=0))
        return 1

    async def work() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            emit(
                log,
                DaemonReady(
                    ts=time.time(), listen=events.endpoint(*args.listen), policy=args.close.kind
                ),
            )
            await server.done.wait()
            nursery.cancel_scope.cancel()

    status = await common.lifecycle(
        log, server.observer, work, observe_for=args.observe_for, kept=server.kept
    )
    emit(log, DaemonDone(ts=time.time(), status=status, connections=server.handled))
    return 0


def main(argv: list[str] | None = None) -> int:
    common.raise_nofile()
    return common.run_main("server", parse_args(argv), amain)


if __name__ == "__main__":
    sys.exit(main())
