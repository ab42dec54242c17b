"""A lean sock_diag (inet_diag) client for TCP sockets.

What ``ss -tan`` does, in a few hundred microseconds for a handful of sockets:
send one ``SOCK_DIAG_BY_FAMILY`` dump request over a ``NETLINK_SOCK_DIAG``
socket and decode the ``inet_diag_msg`` replies.  pyroute2's DiagSocket does
the same through its generic message machinery, about 15 times slower than
``ss`` on 10,000 sockets, and cannot be bound to a namespace through its
constructor.  Here the socket is simply created inside the namespace
(:func:`open_diag_socket`) — a socket belongs to the namespace it was made in.

This module is the codec, pure (bytes in, values out); the socket that
speaks it is :class:`daemons.diagsock.DiagSocket`.

``inet_diag_msg`` (include/uapi/linux/inet_diag.h), 72 bytes::

    u8  family, state, timer, retrans
    inet_diag_sockid: be16 sport, be16 dport, be32 src[4], be32 dst[4],
                      u32 if, u32 cookie[2]
    u32 expires (ms), rqueue, wqueue, uid, inode

TIME_WAIT sockets come with ``timer`` 3 and ``expires`` = ms left; request
sockets (a SYN_RECV before the handshake ACK) with ``timer`` 1 and
``retrans`` = SYN-ACKs retransmitted; an orphaned FIN_WAIT2 past close is
reported as FIN_WAIT2.
"""

from __future__ import annotations

import dataclasses
import errno
import socket
import struct

# include/uapi/linux/netlink.h
NETLINK_SOCK_DIAG = 4
NLM_F_REQUEST = 0x01
NLM_F_MULTI = 0x02
NLM_F_ROOT = 0x100
NLM_F_MATCH = 0x200
NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH
NLMSG_ERROR = 2
NLMSG_DONE = 3
# include/uapi/linux/sock_diag.h
SOCK_DIAG_BY_FAMILY = 20
# include/net/tcp_states.h: every state, as a bit mask (TCPF_ALL)
ALL_STATES = 0xFFF

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
# struct inet_diag_req_v2: family, protocol, ext, pad, states, sockid (48 bytes)
_REQ_V2 = struct.Struct("=BBBBI48s")
# struct inet_diag_msg, with the ports and addresses in network order
_MSG = struct.Struct("=BBBB2H16s16sI8sIIIII")
_MSG_PORTS = struct.Struct("!HH")
_ERRNO = struct.Struct("=i")


class DiagError(OSError):
    """The kernel refused the request, or its reply could not be decoded."""


@dataclasses.dataclass(frozen=True, slots=True)
class SockInfo:
    """One TCP socket as sock_diag reports it."""

    family: int
    state: int
    timer: int
    retrans: int
    expires_ms: int
    src: str
    sport: int
    dst: str
    dport: int
    cookie: int = 0
    inode: int = 0
    uid: int = 0
    rqueue: int = 0
    wqueue: int = 0

    @property
    def key(self) -> tuple[str, int, str, int]:
        return (self.src, self.sport, self.dst, self.dport)


def build_dump_request(family: int, states: int = ALL_STATES, seq: int = 1, ext: int = 0) -> bytes:
    """A SOCK_DIAG_BY_FAMILY dump request for TCP sockets of ``family``."""
    body = _REQ_V2.pack(family, socket.IPPROTO_TCP, ext, 0, states, b"\0" * 48)
    header = _NLMSGHDR.pack(
        _NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, seq, 0
    )
    return header + body


# include/uapi/linux/inet_diag.h: a lookup without a cookie to match
INET_DIAG_NOCOOKIE = 0xFFFFFFFF


def build_lookup_request(
    family: int, key: tuple[str, int, str, int], seq: int = 1, ext: int = 0
) -> bytes:
    """An exact SOCK_DIAG_BY_FAMILY request for one TCP socket: ``key`` is
    (local address, local port, remote address, remote port).  The kernel
    answers from its connection hash without walking every socket
    (``inet_diag_find_one_icsk``): a full socket, a request socket or a
    timewait minisock — or, when none has that four-tuple, the listener on
    the local port, which :func:`lookup` throws away."""
    src = socket.inet_pton(family, key[0]).ljust(16, b"\0")
    dst = socket.inet_pton(family, key[2]).ljust(16, b"\0")
    sockid = (
        struct.pack("!HH", key[1], key[3])
        + src
        + dst
        + struct.pack("=III", 0, INET_DIAG_NOCOOKIE, INET_DIAG_NOCOOKIE)
    )
    body = _REQ_V2.pack(family, socket.IPPROTO_TCP, ext, 0, ALL_STATES, sockid)
    header = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, seq, 0)
    return header + body


def encode_inet_diag_msg(info: SockInfo, seq: int = 1) -> bytes:
    """One netlink message carrying ``info`` (the inverse of the decoder)."""
    size = 4 if info.family == socket.AF_INET else 16
    src = socket.inet_pton(info.family, info.src).ljust(16, b"\0")[:16]
    dst = socket.inet_pton(info.family, info.dst).ljust(16, b"\0")[:16]
    del size
    body = _MSG.pack(
        info.family,
        info.state,
        info.timer,
        info.retrans,
        socket.htons(info.sport),
        socket.htons(info.dport),
        src,
        dst,
        0,
        struct.pack("=Q", info.cookie),
        info.expires_ms,
        info.rqueue,
        info.wqueue,
        info.uid,
        info.inode,
    )
    header = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_MULTI, seq, 0)
    return header + body


def encode_done(seq: int = 1) -> bytes:
    return _NLMSGHDR.pack(_NLMSGHDR.size + 4, NLMSG_DONE, NLM_F_MULTI, seq, 0) + b"\0" * 4


def encode_error(code: int, seq: int = 1) -> bytes:
    request = build_dump_request(socket.AF_INET, seq=seq)[: _NLMSGHDR.size]
    body = _ERRNO.pack(-code) + request
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), NLMSG_ERROR, 0, seq, 0) + body


# The observer's fast path reads only a socket's "ident" — family, state,
# timer, retrans, ports and addresses as raw bytes — and its timer: while the
# ident is unchanged, nothing the observer reports about the socket changed
# (only the countdown), and it need not be decoded again.  One unpack per
# message: nlmsghdr, ident, if, cookie, expires.
_HEAD = struct.Struct("=IHHII40sI8sI")

Ident = bytes
"""The raw family/state/timer/retrans/ports/addresses of one socket."""


def scan_messages(
    data: bytes | memoryview, seq: int | None = None
) -> tuple[list[tuple[Ident, int]], bool]:
    """Like :func:`parse_messages`, but without decoding: ``(ident, expires)``
    per socket (see :func:`decode_ident`), and whether the dump ended.
    Anything but a plain inet_diag reply (the final NLMSG_DONE, an error,
    something malformed) is left to :func:`parse_messages`."""
    view = memoryview(data)
    end = len(view)
    offset = 0
    out: list[tuple[Ident, int]] = []
    append = out.append
    unpack = _HEAD.unpack_from
    need = _HEAD.size
    full = _NLMSGHDR.size + _MSG.size
    while end - offset >= need:
        length, kind, _flags, msg_seq, _pid, ident, _if, _cookie, expires = unpack(view, offset)
        if (
            kind != SOCK_DIAG_BY_FAMILY
            or length < full
            or offset + length > end
            or (seq is not None and msg_seq != seq)
        ):
            break
        append((ident, expires))
        offset += (length + 3) & ~3
    if offset == end:
        return out, False
    infos, done = parse_messages(view[offset:], seq)
    out.extend((ident_of(info), info.expires_ms) for info in infos)
    return out, done


def ident_of(info: SockInfo) -> Ident:
    """The ident :func:`scan_messages` gives for ``info``."""
    return encode_inet_diag_msg(info)[_NLMSGHDR.size : _NLMSGHDR.size + 40]


_IDENT = struct.Struct("=BBBB2H16s16s")


def decode_ident(ident: Ident, expires_ms: int = 0) -> SockInfo:
    """The socket behind an ident (cookie, inode, uid and queues left 0)."""
    family, state, timer, retrans, sport, dport, src, dst = _IDENT.unpack(ident)
    if family not in (socket.AF_INET, socket.AF_INET6):
        raise DiagError(errno.EBADMSG, f"unknown address family {family}")
    return SockInfo(
        family,
        state,
        timer,
        retrans,
        expires_ms,
        _addr(family, src),
        socket.ntohs(sport),
        _addr(family, dst),
        socket.ntohs(dport),
    )


_ntop_cache: dict[bytes, str] = {}


def _addr(family: int, raw: bytes) -> str:
    key = raw[:4] if family == socket.AF_INET else raw
    text = _ntop_cache.get(key if family == socket.AF_INET else b"6" + key)
    if text is None:
        text = socket.inet_ntop(family, key)
        if len(_ntop_cache) < 4096:
            _ntop_cache[key if family == socket.AF_INET else b"6" + key] = text
    return text


def parse_messages(data: bytes | memoryview, seq: int | None = None) -> tuple[list[SockInfo], bool]:
    """Decode a buffer of netlink messages: the sockets, and whether the dump
    ended (NLMSG_DONE).  Raises :class:`DiagError` for an error reply or
    anything malformed; never IndexError or struct.error."""
    view = memoryview(data)
    out: list[SockInfo] = []
    offset = 0
    end = len(view)
    hdr_size = _NLMSGHDR.size
    unpack_hdr = _NLMSGHDR.unpack_from
    unpack_msg = _MSG.unpack_from
    while offset < end:
        if end - offset < hdr_size:
            raise DiagError(errno.EBADMSG, f"truncated netlink header at byte {offset}")
        length, kind, _flags, msg_seq, _pid = unpack_hdr(view, offset)
        if length < hdr_size or offset + length > end:
            raise DiagError(errno.EBADMSG, f"bad netlink length {length} at byte {offset}")
        if seq is not None and msg_seq != seq:
            raise DiagError(errno.EBADMSG, f"reply for sequence {msg_seq}, expected {seq}")
        if kind == NLMSG_DONE:
            return out, True
        if kind == NLMSG_ERROR:
            if length < hdr_size + 4:
                raise DiagError(errno.EBADMSG, "truncated netlink error")
            (code,) = _ERRNO.unpack_from(view, offset + hdr_size)
            if code:
                raise DiagError(-code, f"sock_diag: {errno.errorcode.get(-code, -code)}")
        elif kind == SOCK_DIAG_BY_FAMILY:
            if length < hdr_size + _MSG.size:
                raise DiagError(errno.EBADMSG, f"short inet_diag_msg ({length} bytes)")
            (
                family,
                state,
                timer,
                retrans,
                sport,
                dport,
                src,
                dst,
                _if,
                cookie,
                expires,
                rqueue,
                wqueue,
                uid,
                inode,
            ) = unpack_msg(view, offset + hdr_size)
            if family not in (socket.AF_INET, socket.AF_INET6):
                raise DiagError(errno.EBADMSG, f"unknown address family {family}")
            out.append(
                SockInfo(
                    family,
                    state,
                    timer,
                    retrans,
                    expires,
                    _addr(family, src),
                    socket.ntohs(sport),
                    _addr(family, dst),
                    socket.ntohs(dport),
                    int.from_bytes(cookie, "little"),
                    inode,
                    uid,
                    rqueue,
                    wqueue,
                )
            )
        else:
            raise DiagError(errno.EBADMSG, f"unexpected netlink message type {kind}")
        offset += (length + 3) & ~3
    return out, False
