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

The server survives clients that reset, vanish (``--idle-timeout``) or send
garbage (lines over ``--max-message`` bytes end the connection with an
``app_error``).  The observer runs beside it for the listening port.
"""

from __future__ import annotations

import argparse
import dataclasses
import socket
import sys
import time
from typing import Any

import trio

from daemons import common
from daemons.observer import Observer, TraceConfig, local_filter, trace_filters
from tcplab import events
from tcplab.events import App, DaemonDone, DaemonReady, emit

POLICY_NAMES = ("immediate", "linger", "never", "abort", "first", "half")


@dataclasses.dataclass(frozen=True, slots=True)
class ClosePolicy:
    kind: str
    linger_s: float = 0.0
    after_messages: int = 1

    @classmethod
    def parse(cls, text: str) -> ClosePolicy:
        kind, _, arg = text.partition(":")
        if kind not in POLICY_NAMES:
            raise ValueError(f"unknown close policy {kind!r} (one of: {', '.join(POLICY_NAMES)})")
        if kind == "linger":
            if not arg:
                raise ValueError("linger needs a duration: linger:2s")
            return cls(kind, linger_s=common.duration(arg))
        if kind in ("first", "half"):
            # N = 0: at once, before any message
            return cls(kind, after_messages=common.count(arg) if arg else 1)
        if arg:
            raise ValueError(f"close policy {kind!r} takes no argument (got {text!r})")
        return cls(kind)


def close_policy(text: str) -> ClosePolicy:
    try:
        return ClosePolicy.parse(text)
    except (ValueError, argparse.ArgumentTypeError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class MessageTooLong(Exception):
    pass


class LineReader:
    """Splits a byte stream into lines, refusing lines over ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self.buf += data
        lines = []
        while True:
            end = self.buf.find(b"\n")
            if end < 0:
                break
            if end > self.limit:
                raise MessageTooLong(end)
            lines.append(bytes(self.buf[: end + 1]))
            del self.buf[: end + 1]
        if len(self.buf) > self.limit:
            raise MessageTooLong(len(self.buf))
        return lines

    def pop_line(self) -> bytes | None:
        """The next complete line already buffered, or None."""
        end = self.buf.find(b"\n")
        if end < 0:
            if len(self.buf) > self.limit:
                raise MessageTooLong(len(self.buf))
            return None
        if end > self.limit:
            raise MessageTooLong(end)
        line = bytes(self.buf[: end + 1])
        del self.buf[: end + 1]
        return line


class Server:
    def __init__(self, args: argparse.Namespace, log: Any) -> None:
        self.args = args
        self.log = log
        self.policy: ClosePolicy = args.close
        self.leaked: list[tuple[trio.socket.SocketType, common.Key]] = []
        self.handled = 0
        self.done = trio.Event()
        host, port = args.listen
        self.observer = Observer(
            log,
            match=local_filter(host, port),
            passive_ports=[port],
            interval=args.observe_interval,
            trace=TraceConfig(args.trace, trace_filters(host)) if args.trace else None,
        )

    def kept(self) -> list[tuple[trio.socket.SocketType, common.Key]]:
        """The connections the ``never`` policy kept open."""
        return list(self.leaked)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        host, port = self.args.listen
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = trio.socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        local = events.endpoint(host, port)
        started = time.time()
        try:
            await listener.bind((host, port))
        except OSError as exc:
            emit(
                self.log,
                App(
                    kind=events.APP_ERROR,
                    ts=started,
                    op="bind",
                    local=local,
                    how=common.errno_name(exc),
                    detail=str(exc),
                ),
            )
            raise SystemExit(1) from None
        started = time.time()
        listener.listen(self.args.backlog)
        emit(
            self.log,
            App(
                kind=events.APP_LISTEN,
                ts=started,
                returned_ts=time.time(),
                local=local,
                backlog=self.args.backlog,
            ),
        )
        task_status.started()
        async with trio.open_nursery() as nursery:
            try:
                while self.args.max_conns is None or self.handled < self.args.max_conns:
                    conn, peer = await listener.accept()
                    self.handled += 1
                    nursery.start_soon(self.handle, conn, peer, time.time())
            finally:
                started = time.time()
                listener.close()
                emit(
                    self.log,
                    App(
                        kind=events.APP_CLOSE,
                        ts=started,
                        returned_ts=time.time(),
                        local=local,
                        how="listener",
                    ),
                )
        self.done.set()

    async def handle(
        self, sock: trio.socket.SocketType, peer: tuple[str, int], accepted: float
    ) -> None:
        # The peer may already have reset the connection (getpeername would
        # fail): take its address from accept().
        local = sock.getsockname()
        key = (local[0], local[1], peer[0], peer[1])
        conn = events.conn_id(peer[0], peer[1], local[0], local[1])
        log = self.log
        emit(log, App(kind=events.APP_ACCEPT, ts=accepted, conn=conn))
        self.observer.note(key)
        reader = LineReader(self.args.max_message)
        echoed = 0
        policy = self.policy
        keep = False
        try:
            with trio.fail_after(self.args.idle_timeout) as idle:
                # first:0 and half:0 act before the first message
                if policy.kind == "first" and policy.after_messages == 0:
                    raise _CloseFirst
                if policy.kind == "half" and policy.after_messages == 0:
                    self._shutdown(sock, key, log, conn)
                while True:
                    data = await sock.recv(65536)
                    received = time.time()
                    idle.deadline = trio.current_time() + self.args.idle_timeout
                    if not data:
                        emit(
                            log,
                            App(kind=events.APP_RECV, ts=received, conn=conn, bytes=0, eof=True),
                        )
                        self.observer.note(key, "rcv_fin")
                        break
                    emit(log, App(kind=events.APP_RECV, ts=received, conn=conn, bytes=len(data)))
                    for line in reader.feed(data):
                        if policy.kind == "half" and echoed >= policy.after_messages:
                            continue  # write side is shut: read and drop
                        await _send_logged(sock, line, log, conn)
                        echoed += 1
                        if policy.kind == "first" and echoed >= policy.after_messages:
                            raise _CloseFirst
                        if policy.kind == "half" and echoed == policy.after_messages:
                            self._shutdown(sock, key, log, conn)
            # The client's FIN has arrived: we are in CLOSE_WAIT.
            if self.args.farewell is not None and policy.kind != "half":
                line = self.args.farewell.encode() + b"\n"
                await _send_logged(sock, line, log, conn, farewell=True)
            if policy.kind == "linger":
                await trio.sleep(policy.linger_s)
            elif policy.kind == "never":
                keep = True
                self.leaked.append((sock, key))
                emit(
                    log,
                    App(
                        kind=events.APP_CLOSE,
                        ts=time.time(),
                        conn=conn,
                        how="never",
                        detail="socket kept open: CLOSE_WAIT",
                    ),
                )
                return
        except _CloseFirst:
            pass
        except MessageTooLong as exc:
            _error(log, conn, "recv", "EMSGSIZE", f"line over {exc} bytes")
        except trio.TooSlowError:
            _error(log, conn, "recv", "idle", "idle timeout")
        except OSError as exc:
            name = common.errno_name(exc)
            if name in ("ECONNRESET", "EPIPE"):
                self.observer.note(key, "reset")
            _error(log, conn, "io", name, str(exc))
        finally:
            if not keep:
                self._close(sock, key, log, conn)

    def _shutdown(self, sock: trio.socket.SocketType, key: common.Key, log: Any, conn: str) -> None:
        """Shut down writing: our FIN, and we go on reading."""
        started = time.time()
        sock.shutdown(socket.SHUT_WR)
        emit(
            log,
            App(
                kind=events.APP_SHUTDOWN,
                ts=started,
                returned_ts=time.time(),
                conn=conn,
                how="write",
            ),
        )
        self.observer.note(key, "snd_fin")

    def _close(self, sock: trio.socket.SocketType, key: common.Key, log: Any, conn: str) -> None:
        abort = self.policy.kind == "abort"
        if abort:
            common.set_abortive_close(sock)
        started = time.time()
        sock.close()
        emit(
            log,
            App(
                kind=events.APP_CLOSE,
                ts=started,
                returned_ts=time.time(),
                conn=conn,
                how="abort" if abort else "close",
            ),
        )
        if abort:
            self.observer.note(key, "reset", "closed")
        else:
            self.observer.note(key, "snd_fin", "closed")


class _CloseFirst(Exception):
    """The policy says: close now, before the client does."""


async def _sendall(sock: trio.socket.SocketType, data: bytes) -> None:
    view = memoryview(data)
    while view:
        sent = await sock.send(view)
        view = view[sent:]


async def _send_logged(
    sock: trio.socket.SocketType, data: bytes, log: Any, conn: str, farewell: bool | None = None
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


def _error(log: Any, conn: str | None, op: str, how: str, detail: str) -> None:
    emit(log, App(kind=events.APP_ERROR, ts=time.time(), conn=conn, op=op, how=how, detail=detail))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m daemons.server", description=__doc__.split("\n")[0]
    )
    common.add_common(parser)
    parser.add_argument("--listen", type=common.address, default=("198.51.100.1", 7007))
    parser.add_argument(
        "--close",
        type=close_policy,
        default=ClosePolicy("immediate"),
        metavar="POLICY",
        help="immediate | linger:D | never | abort | first[:N] | half[:N]",
    )
    parser.add_argument(
        "--max-conns",
        type=common.positive_int,
        default=None,
        metavar="N",
        help="stop accepting after N connections (default: serve forever)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=common.duration,
        default=common.duration("30s"),
        metavar="D",
        help="drop a connection silent this long (default 30s)",
    )
    parser.add_argument(
        "--max-message",
        type=common.positive_int,
        default=65536,
        metavar="BYTES",
        help="longest line accepted (default 65536)",
    )
    parser.add_argument("--backlog", type=common.positive_int, default=128)
    parser.add_argument(
        "--farewell",
        default=None,
        metavar="TEXT",
        help="send TEXT after the client's FIN, before closing",
    )
    return parser.parse_args(argv)


async def amain(args: argparse.Namespace, log: Any) -> int:
    server = Server(args, log)

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
    args = parse_args(argv)
    log = common.setup("server", args)
    try:
        return trio.run(amain, args, log)
    except KeyboardInterrupt:
        emit(log, DaemonDone(ts=time.time(), status="interrupted"))
        return 130


if __name__ == "__main__":
    sys.exit(main())
