"""tcplab's echo client: a scripted conversation, then a close you pick.

``python -m daemons.client --netns tl…-cli --connect 198.51.100.1:7007 --send hello --close active``

For each connection: connect, send every ``--send`` message as a line, read
each echo back and check it equals what was sent, then end the connection by
the *close policy*:

``active``    close at once: the client does the active close (FIN_WAIT1,
              FIN_WAIT2, TIME_WAIT).
``shutdown``  shut down writing (FIN) and keep reading until the server's
              FIN: a half-close; whatever the server still sends is logged.
``passive``   wait for the server's FIN, then close (pairs with a server that
              closes first).
``abort``     close with SO_LINGER 0: RST, no FIN, no TIME_WAIT.
``never``     keep the socket open until the client exits.

``--keepalive-idle D``, ``--keepalive-interval D``, ``--keepalive-count N``
(any of them) turn keepalive on: a silent server is probed, and after the last
unanswered probe the kernel resets the connection and the blocked read
fails with ETIMEDOUT.  ``--user-timeout D`` (TCP_USER_TIMEOUT) makes the
kernel give up, also with ETIMEDOUT, on data unacknowledged that long.

``--send-bytes N`` replaces the conversation with one bulk write: N bytes
without a newline, written as fast as the kernel takes them, nothing read
back, then the close policy.  Against a server that does not read, the
bytes its receive window cannot take stay in the client's send queue, and
an ``active`` close queues the FIN behind them (FIN_WAIT1 with data unsent).

``--count N`` connections, ``--concurrency M`` at a time.  Failures are
reported with the errno name (ECONNREFUSED, ETIMEDOUT, ECONNRESET,
EADDRNOTAVAIL…), and the exit status is 1 if any conversation failed.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
import time
from typing import Any

import trio

from core import events, options
from core.events import App, ConversationDone, DaemonDone, DaemonReady, emit
from daemons import closing, common
from daemons.common import app_error, send_logged
from daemons.lines import LineReader, MessageTooLong
from daemons.matching import TraceConfig, trace_filters
from daemons.observer import Observer
from daemons.options import ClientOptions


class ConversationError(Exception):
    def __init__(self, op: str, how: str, detail: str) -> None:
        super().__init__(f"{op}: {how}: {detail}")
        self.op, self.how, self.detail = op, how, detail


class Client:
    def __init__(self, args: ClientOptions, log: Any) -> None:
        self.args = args
        self.log = log
        host, port = args.connect
        self.observer = Observer(
            log,
            match=lambda key: key[3] == port and key[2] == host,
            interval=args.observe_interval,
            trace=TraceConfig(args.trace, trace_filters(host)) if args.trace else None,
        )
        self.kept: list[tuple[trio.socket.SocketType, common.Key]] = []
        self.ok = 0
        self.failed = 0

    async def run_all(self) -> None:
        limiter = trio.CapacityLimiter(self.args.concurrency)
        async with trio.open_nursery() as nursery:
            for number in range(1, self.args.count + 1):
                await limiter.acquire_on_behalf_of(number)
                nursery.start_soon(self._one, number, limiter)

    async def _one(self, number: int, limiter: trio.CapacityLimiter) -> None:
        try:
            await self.conversation(number)
            self.ok += 1
        except ConversationError as exc:
            self.failed += 1
            emit(
                self.log,
                ConversationDone(
                    ts=time.time(),
                    number=number,
                    ok=False,
                    op=exc.op,
                    how=exc.how,
                    detail=exc.detail,
                ),
            )
        else:
            emit(self.log, ConversationDone(ts=time.time(), number=number, ok=True))
        finally:
            limiter.release_on_behalf_of(number)

    async def conversation(self, number: int) -> None:
        host, port = self.args.connect
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        raw = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        set_timeouts(raw, self.args)
        sock = trio.socket.from_stdlib_socket(raw)
        keep = False
        gone = False
        key: common.Key | None = None
        conn: str | None = None
        log = self.log
        try:
            started = time.time()
            try:
                with trio.fail_after(self.args.connect_timeout):
                    key = await self._connect(raw, (host, port), number)
            except trio.TooSlowError:
                raise ConversationError(
                    "connect", "ETIMEDOUT", f"no answer within {self.args.connect_timeout:g}s"
                ) from None
            except OSError as exc:
                name = common.errno_name(exc)
                failed = time.time()
                emit(
                    log,
                    App(
                        kind=events.APP_ERROR,
                        ts=failed,
                        op="connect",
                        how=name,
                        peer=events.endpoint(host, port),
                        detail=exc.strerror or str(exc),
                        took_ms=round((failed - started) * 1000, 3),
                    ),
                )
                raise ConversationError("connect", name, exc.strerror or str(exc)) from None
            conn = events.conn_id(*key)
            self.observer.note(key)
            keep = await self._talk(sock, key, log, conn)
        except ConversationError as exc:
            gone = exc.op == "io" and closing.ends_connection(exc.how)
            raise
        finally:
            if not keep:
                self._close(sock, key, log, conn, gone=gone)

    async def _connect(
        self, raw: socket.socket, address: tuple[str, int], number: int
    ) -> common.Key:
        """connect() in two halves, as trio does it.  The syscall returns at
        once (EINPROGRESS) with the port the kernel picked: ``app_connect``
        is logged then, stamped before the call, and the observer is told
        the four-tuple (``Observer.connecting``); then wait for the
        handshake's outcome."""
        started = time.time()
        code = raw.connect_ex(address)
        returned = time.time()
        if code not in (0, errno.EINPROGRESS):
            raise OSError(code, os.strerror(code))
        local = raw.getsockname()
        key = (local[0], local[1], address[0], address[1])
        self.observer.connecting(key)
        emit(
            self.log,
            App(
                kind=events.APP_CONNECT,
                ts=started,
                returned_ts=returned,
                conn=events.conn_id(*key),
                number=number,
            ),
        )
        if code == errno.EINPROGRESS:
            await trio.lowlevel.wait_writable(raw)
        code = raw.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            raise OSError(code, os.strerror(code))
        return key

    async def _talk(
        self, sock: trio.socket.SocketType, key: common.Key, log: Any, conn: str
    ) -> bool:
        """The scripted exchange (or the one bulk write of ``--send-bytes``) and
        the close policy; True if the socket is kept."""
        reader = LineReader(self.args.max_message)
        policy = self.args.close
        try:
            with trio.fail_after(self.args.reply_timeout):
                bulk = self.args.send_bytes
                if bulk is not None:
                    # one write and no conversation: nothing is read back
                    await send_logged(sock, BULK_BYTE * bulk, log, conn)
                for text in self.args.send if bulk is None else ():
                    line = text.encode() + b"\n"
                    await send_logged(sock, line, log, conn)
                    echo = await self._read_line(sock, reader, log, key, conn)
                    if echo is None:
                        raise ConversationError("recv", "EOF", "server closed before echoing")
                    if echo != line:
                        raise ConversationError(
                            "recv", "MISMATCH", f"sent {line!r}, got back {echo!r}"
                        )
                if policy == "shutdown":
                    common.shutdown_logged(sock, log, conn)
                    self.observer.note(key, "snd_fin")
                    while await self._read_line(sock, reader, log, key, conn) is not None:
                        pass
                elif policy == "passive":
                    while await self._read_line(sock, reader, log, key, conn) is not None:
                        pass
                elif policy == "never":
                    self.kept.append((sock, key))
                    emit(
                        log,
                        App(
                            kind=events.APP_CLOSE,
                            ts=time.time(),
                            conn=conn,
                            how="never",
                            detail="socket kept open",
                        ),
                    )
                    return True
        except trio.TooSlowError:
            raise ConversationError(
                "recv", "ETIMEDOUT", f"no reply within {self.args.reply_timeout:g}s"
            ) from None
        except MessageTooLong:
            raise ConversationError("recv", "EMSGSIZE", "reply line too long") from None
        except OSError as exc:
            name = common.errno_name(exc)
            if closing.ends_connection(name):
                self.observer.note(key, "reset")
            app_error(log, conn, "io", name, exc.strerror or str(exc))
            raise ConversationError("io", name, exc.strerror or str(exc)) from None
        return False

    async def _read_line(
        self,
        sock: trio.socket.SocketType,
        reader: LineReader,
        log: Any,
        key: common.Key,
        conn: str,
    ) -> bytes | None:
        """The next line, or None at EOF (the server's FIN)."""
        while True:
            line = reader.pop_line()
            if line is not None:
                return line
            data = await sock.recv(65536)
            received = time.time()
            if not data:
                emit(log, App(kind=events.APP_RECV, ts=received, conn=conn, bytes=0, eof=True))
                self.observer.note(key, "rcv_fin")
                return None
            emit(log, App(kind=events.APP_RECV, ts=received, conn=conn, bytes=len(data)))
            reader.buf += data

    def _close(
        self,
        sock: trio.socket.SocketType,
        key: common.Key | None,
        log: Any,
        conn: str | None,
        *,
        gone: bool = False,
    ) -> None:
        if key is None:
            sock.close()
            return
        close = closing.client_close(self.args.close, gone=gone)
        common.close_logged(sock, log, conn, close.how, abort=close.abort)
        self.observer.note(key, *close.facts)


BULK_BYTE = b"x"
"""What ``--send-bytes`` writes, N times over: no newline, so an echo server
would answer none of it."""


def set_timeouts(sock: socket.socket, args: ClientOptions) -> None:
    """Keepalive (SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT) and
    TCP_USER_TIMEOUT, as the options say, before connect()."""
    if args.keepalive:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if args.keepalive_idle is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, int(args.keepalive_idle))
        if args.keepalive_interval is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, int(args.keepalive_interval))
        if args.keepalive_count is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, args.keepalive_count)
    if args.user_timeout is not None:
        millis = round(args.user_timeout * 1000)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, millis)


def parse_args(argv: list[str] | None) -> ClientOptions:
    return options.from_argv(
        ClientOptions, argv, prog="python -m daemons.client", description=__doc__.split("\n")[0]
    )


async def amain(args: ClientOptions, log: Any) -> int:
    client = Client(args, log)

    async def work() -> None:
        emit(
            log,
            DaemonReady(ts=time.time(), connect=events.endpoint(*args.connect), policy=args.close),
        )
        await client.run_all()

    status = await common.lifecycle(
        log, client.observer, work, observe_for=args.observe_for, kept=lambda: list(client.kept)
    )
    if client.failed and status == "ok":
        status = "failed"
    emit(log, DaemonDone(ts=time.time(), status=status, ok=client.ok, failed=client.failed))
    return 0 if client.failed == 0 and status == "ok" else 1


def main(argv: list[str] | None = None) -> int:
    return common.run_main("client", parse_args(argv), amain)


if __name__ == "__main__":
    sys.exit(main())
