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

``--count N`` connections, ``--concurrency M`` at a time.  Failures are
reported with the errno name (ECONNREFUSED, ETIMEDOUT, ECONNRESET,
EADDRNOTAVAIL…), and the exit status is 1 if any conversation failed.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from typing import Any

import trio

from daemons import common
from daemons.observer import Observer, observe_until_quiet
from daemons.server import LineReader, MessageTooLong, _sendall
from tcplab import events

POLICIES = ("active", "shutdown", "passive", "abort", "never")


class ConversationError(Exception):
    def __init__(self, op: str, how: str, detail: str) -> None:
        super().__init__(f"{op}: {how}: {detail}")
        self.op, self.how, self.detail = op, how, detail


class Client:
    def __init__(self, args: argparse.Namespace, log: Any) -> None:
        self.args = args
        self.log = log
        host, port = args.connect
        self.observer = Observer(
            log,
            match=lambda info: info.dport == port and info.dst == host,
            interval=args.observe_interval,
        )
        self.kept: list[trio.socket.SocketType] = []
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
            self.log.warning(
                events.CONVERSATION_DONE,
                number=number,
                ok=False,
                op=exc.op,
                how=exc.how,
                detail=exc.detail,
            )
        else:
            self.log.info(events.CONVERSATION_DONE, number=number, ok=True)
        finally:
            limiter.release_on_behalf_of(number)

    async def conversation(self, number: int) -> None:
        host, port = self.args.connect
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = trio.socket.socket(family, socket.SOCK_STREAM)
        keep = False
        key: common.Key | None = None
        log = self.log
        try:
            started = time.monotonic()
            try:
                with trio.fail_after(self.args.connect_timeout):
                    await sock.connect((host, port))
            except trio.TooSlowError:
                raise ConversationError(
                    "connect", "ETIMEDOUT", f"no answer within {self.args.connect_timeout:g}s"
                ) from None
            except OSError as exc:
                name = common.errno_name(exc)
                log.warning(
                    events.APP_ERROR,
                    op="connect",
                    how=name,
                    peer=events.endpoint(host, port),
                    detail=exc.strerror or str(exc),
                    took_ms=round((time.monotonic() - started) * 1000, 3),
                )
                raise ConversationError("connect", name, exc.strerror or str(exc)) from None
            key = common.sock_key(sock)
            log = self.log.bind(conn=events.conn_id(key[0], key[1], key[2], key[3]))
            log.info(
                events.APP_CONNECT,
                number=number,
                took_ms=round((time.monotonic() - started) * 1000, 3),
            )
            self.observer.note(key)
            keep = await self._talk(sock, key, log)
        finally:
            if not keep:
                self._close(sock, key, log)

    async def _talk(self, sock: trio.socket.SocketType, key: common.Key, log: Any) -> bool:
        """The scripted exchange and the close policy; True if the socket is kept."""
        reader = LineReader(self.args.max_message)
        policy = self.args.close
        try:
            with trio.fail_after(self.args.reply_timeout):
                for text in self.args.send:
                    line = text.encode() + b"\n"
                    await _sendall(sock, line)
                    log.info(events.APP_SEND, bytes=len(line))
                    echo = await self._read_line(sock, reader, log, key)
                    if echo is None:
                        raise ConversationError("recv", "EOF", "server closed before echoing")
                    if echo != line:
                        raise ConversationError(
                            "recv", "MISMATCH", f"sent {line!r}, got back {echo!r}"
                        )
                if policy == "shutdown":
                    sock.shutdown(socket.SHUT_WR)
                    log.info(events.APP_SHUTDOWN, how="write")
                    self.observer.note(key, "snd_fin")
                    while await self._read_line(sock, reader, log, key) is not None:
                        pass
                elif policy == "passive":
                    while await self._read_line(sock, reader, log, key) is not None:
                        pass
                elif policy == "never":
                    self.kept.append(sock)
                    log.info(events.APP_CLOSE, how="never", detail="socket kept open")
                    return True
        except trio.TooSlowError:
            raise ConversationError(
                "recv", "ETIMEDOUT", f"no reply within {self.args.reply_timeout:g}s"
            ) from None
        except MessageTooLong:
            raise ConversationError("recv", "EMSGSIZE", "reply line too long") from None
        except OSError as exc:
            name = common.errno_name(exc)
            if name in ("ECONNRESET", "EPIPE"):
                self.observer.note(key, "reset")
            log.warning(events.APP_ERROR, op="io", how=name, detail=exc.strerror or str(exc))
            raise ConversationError("io", name, exc.strerror or str(exc)) from None
        return False

    async def _read_line(
        self, sock: trio.socket.SocketType, reader: LineReader, log: Any, key: common.Key
    ) -> bytes | None:
        """The next line, or None at EOF (the server's FIN)."""
        while True:
            line = reader.pop_line()
            if line is not None:
                return line
            data = await sock.recv(65536)
            if not data:
                log.info(events.APP_RECV, bytes=0, eof=True)
                self.observer.note(key, "rcv_fin")
                return None
            log.info(events.APP_RECV, bytes=len(data))
            reader.buf += data

    def _close(self, sock: trio.socket.SocketType, key: common.Key | None, log: Any) -> None:
        if key is None:
            sock.close()
            return
        if self.args.close == "abort":
            common.set_abortive_close(sock)
            sock.close()
            log.info(events.APP_CLOSE, how="abort")
            self.observer.note(key, "reset", "closed")
        else:
            sock.close()
            log.info(events.APP_CLOSE, how="close")
            self.observer.note(key, "snd_fin", "closed")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m daemons.client", description=__doc__.split("\n")[0]
    )
    common.add_common(parser)
    parser.add_argument("--connect", type=common.address, default=("198.51.100.1", 7007))
    parser.add_argument(
        "--send",
        action="append",
        default=None,
        metavar="TEXT",
        help="a message to send and expect back (repeatable; default: hello)",
    )
    parser.add_argument("--count", type=common.positive_int, default=1, help="connections to make")
    parser.add_argument(
        "--concurrency", type=common.positive_int, default=1, help="connections at a time"
    )
    parser.add_argument("--close", choices=POLICIES, default="active")
    parser.add_argument(
        "--connect-timeout", type=common.duration, default=common.duration("10s"), metavar="D"
    )
    parser.add_argument(
        "--reply-timeout",
        type=common.duration,
        default=common.duration("10s"),
        metavar="D",
        help="the whole exchange on one connection must end within D",
    )
    parser.add_argument("--max-message", type=common.positive_int, default=65536, metavar="BYTES")
    args = parser.parse_args(argv)
    if args.send is None:
        args.send = ["hello"]
    for text in args.send:
        if "\n" in text:
            parser.error(f"--send {text!r}: a message is one line (no newline)")
    return args


async def amain(args: argparse.Namespace, log: Any) -> int:
    client = Client(args, log)
    status = "ok"
    async with trio.open_nursery() as nursery:
        await nursery.start(client.observer.run)
        with trio.open_signal_receiver(15) as signals:

            async def on_signal() -> None:
                nonlocal status
                async for _ in signals:
                    status = "terminated"
                    nursery.cancel_scope.cancel()

            nursery.start_soon(on_signal)
            log.info(events.DAEMON_READY, connect=events.endpoint(*args.connect), policy=args.close)
            await client.run_all()
            await observe_until_quiet(client.observer, args.observe_for)
            nursery.cancel_scope.cancel()
    if client.failed and status == "ok":
        status = "failed"
    log.info(events.DAEMON_DONE, status=status, ok=client.ok, failed=client.failed)
    return 0 if client.failed == 0 and status == "ok" else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log = common.setup("client", args)
    try:
        return trio.run(amain, args, log)
    except KeyboardInterrupt:
        log.info(events.DAEMON_DONE, status="interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
