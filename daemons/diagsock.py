"""A NETLINK_SOCK_DIAG socket in a namespace: dumps and exact lookups.

The codec is :mod:`daemons.sockdiag` (pure); this is the I/O.  Each
:class:`DiagSocket` has its own receive buffer and sequence numbers, so two of
them can be used from two threads at once (the observer dumps in a worker
thread and looks single sockets up on its event loop).

A socket belongs to the namespace it was created in, for its whole life:
:meth:`DiagSocket.open` creates it inside ``netns`` and the caller may go on
from anywhere.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable, Iterable
from typing import TypeVar

from core import netns
from daemons import sockdiag
from daemons.sockdiag import ALL_STATES, DiagError, Ident, SockInfo

NETLINK_SOCK_DIAG = 4
RECV_BUFFER = 1 << 20
_T = TypeVar("_T")


class DiagSocket:
    """One sock_diag socket, its buffer and its sequence numbers."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = bytearray(RECV_BUFFER)
        self._seq = 0

    @classmethod
    def open(cls, netns_name: str | None = None) -> DiagSocket:
        """A socket in namespace ``netns_name`` (None: ours)."""
        with netns.inside(netns_name):
            sock = socket.socket(
                socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG
            )
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)
            sock.bind((0, 0))
        except OSError:
            sock.close()
            raise
        return cls(sock)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> DiagSocket:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        return self._seq

    def _recv(self) -> memoryview:
        while True:
            try:
                n = self.sock.recv_into(self._buffer)
            except InterruptedError:
                continue
            except OSError as exc:
                raise DiagError(exc.errno or errno.EIO, f"sock_diag recv: {exc}") from None
            return memoryview(self._buffer)[:n]

    def dump(
        self,
        families: Iterable[int] = (socket.AF_INET, socket.AF_INET6),
        states: int = ALL_STATES,
    ) -> list[SockInfo]:
        """Every TCP socket of ``families`` in the socket's namespace."""
        return self._dump(families, states, sockdiag.parse_messages)

    def dump_idents(
        self,
        families: Iterable[int] = (socket.AF_INET, socket.AF_INET6),
        states: int = ALL_STATES,
    ) -> list[tuple[Ident, int]]:
        """Every TCP socket as ``(ident, expires_ms)`` — the observer's fast path."""
        return self._dump(families, states, sockdiag.scan_messages)

    def _dump(
        self,
        families: Iterable[int],
        states: int,
        decode: Callable[[memoryview, int], tuple[list[_T], bool]],
    ) -> list[_T]:
        """One dump request per family; decode each reply datagram until NLMSG_DONE."""
        out: list[_T] = []
        for family in families:
            seq = self._next_seq()
            self.sock.send(sockdiag.build_dump_request(family, states, seq))
            done = False
            while not done:
                found, done = decode(self._recv(), seq)
                out.extend(found)
        return out

    def lookup(self, key: tuple[str, int, str, int]) -> SockInfo | None:
        """The socket with exactly this four-tuple (local side first), or None.
        One round trip, whatever the number of sockets in the namespace."""
        family = socket.AF_INET6 if ":" in key[0] else socket.AF_INET
        seq = self._next_seq()
        self.sock.send(sockdiag.build_lookup_request(family, key, seq))
        try:
            infos, _done = sockdiag.parse_messages(self._recv(), seq)
        except DiagError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise
        # without an exact match the kernel answers with the port's listener
        return next((info for info in infos if info.key == key), None)
