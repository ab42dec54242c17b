"""Ethernet, IPv4, IPv6 and TCP frames: parse, check and complete checksums (sans-IO).

The middlebox reads whole Ethernet frames off its ports.  This module turns
one into a :class:`Frame` — Ethernet header, IP header (v4 with options, v6
with its extension headers skipped), TCP header — without copying the
payload, and builds whole TCP frames for tests and for the RSTs the proxy
injects (each header's layout and builder is :mod:`proxy.headers`; the
checksum arithmetic is :mod:`proxy.checksum`).  The lab's endpoints have
TSO/GSO and TX checksum offload off, so one frame is one real segment with a
finished checksum; when a frame still arrives with its checksum left for
offload, :func:`complete_tcp_checksum` finishes it.

Anything that is not IP is returned with ``ip=None``; IP that is not TCP
(or a non-first fragment) with ``tcp=None``: the forwarder passes those
untouched.  Every malformed input raises :class:`FrameError` and nothing
else, with what was wrong and at which byte.
"""

from __future__ import annotations

import socket
import struct
from typing import NamedTuple

from proxy.checksum import internet_checksum, pseudo_header
from proxy.headers import (
    ETHERNET,
    IPPROTO_TCP,
    IPV4,
    IPV6,
    TCP,
    address_family,
    build_ethernet,
    build_ipv4,
    build_ipv6,
    build_tcp,
)

# include/uapi/linux/if_ether.h
ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8
ETH_P_IPV6 = 0x86DD
ETH_HLEN = 14

# RFC 8200 §4: extension headers skipped on the way to the upper layer
IPV6_HOP_BY_HOP = 0
IPV6_ROUTING = 43
IPV6_FRAGMENT = 44
IPV6_DEST_OPTS = 60
IPV6_AH = 51  # RFC 4302: length in 4-byte units, minus 2
_IPV6_EXTENSIONS = frozenset({IPV6_HOP_BY_HOP, IPV6_ROUTING, IPV6_DEST_OPTS, 135, 139, 140})

# RFC 9293 §3.1: TCP control bits
FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10
URG = 0x20
ECE = 0x40
CWR = 0x80
_FLAG_LETTERS = (
    (SYN, "S"),
    (FIN, "F"),
    (RST, "R"),
    (PSH, "P"),
    (ACK, "A"),
    (URG, "U"),
    (ECE, "E"),
    (CWR, "C"),
)

_H = struct.Struct("!H")


class FrameError(ValueError):
    """A frame that cannot be parsed: what was wrong, and at which byte."""


class Ethernet(NamedTuple):
    dst: bytes
    src: bytes
    ethertype: int
    """The payload's type (the inner one, after a VLAN tag)."""
    header_len: int


class IPv4(NamedTuple):
    src: str
    dst: str
    header_len: int
    total_len: int
    ttl: int
    proto: int
    ident: int
    flags_frag: int
    checksum: int
    offset: int
    """Where the IP header starts in the frame."""

    @property
    def l4_offset(self) -> int:
        return self.offset + self.header_len

    @property
    def payload_len(self) -> int:
        return self.total_len - self.header_len


class IPv6(NamedTuple):
    src: str
    dst: str
    payload_len: int
    hop_limit: int
    next_header: int
    """The upper-layer protocol, after the extension headers."""
    offset: int
    l4_offset: int

    @property
    def proto(self) -> int:
        return self.next_header


class Tcp(NamedTuple):
    src_port: int
    dst_port: int
    seq: int
    ack: int
    flags: int
    data_offset: int
    """Header length in bytes."""
    window: int
    checksum: int
    urgent: int
    options: bytes
    payload_len: int
    offset: int
    """Where the TCP header starts in the frame."""

    @property
    def syn(self) -> bool:
        return bool(self.flags & SYN)

    @property
    def fin(self) -> bool:
        return bool(self.flags & FIN)

    @property
    def rst(self) -> bool:
        return bool(self.flags & RST)

    @property
    def ack_flag(self) -> bool:
        return bool(self.flags & ACK)


class Frame(NamedTuple):
    eth: Ethernet
    ip: IPv4 | IPv6 | None = None
    tcp: Tcp | None = None

    @property
    def is_tcp(self) -> bool:
        return self.tcp is not None


def _flags_text(flags: int) -> str:
    return "".join(letter for bit, letter in _FLAG_LETTERS if flags & bit)


_FLAGS_TEXT = tuple(_flags_text(flags) for flags in range(256))
"""Every TCP flags byte's letters, made once: a segment's are looked up."""


def flags_text(flags: int) -> str:
    """``SA`` for SYN+ACK, ``FA``, ``PA``, ``R``… (letters in the order S F R P A U E C)."""
    return _FLAGS_TEXT[flags & 0xFF]


_V4_CACHE: dict[bytes, str] = {}
_V6_CACHE: dict[bytes, str] = {}


def _v4(raw: bytes) -> str:
    text = _V4_CACHE.get(raw)
    if text is None:
        text = socket.inet_ntop(socket.AF_INET, raw)
        if len(_V4_CACHE) < 4096:
            _V4_CACHE[raw] = text
    return text


def _v6(raw: bytes) -> str:
    text = _V6_CACHE.get(raw)
    if text is None:
        text = socket.inet_ntop(socket.AF_INET6, raw)
        if len(_V6_CACHE) < 4096:
            _V6_CACHE[raw] = text
    return text


def parse_frame(frame: bytes | bytearray | memoryview) -> Frame:
    """Parse one Ethernet frame.  Raises :class:`FrameError` only."""
    size = len(frame)
    if size < ETH_HLEN:
        raise FrameError(f"frame of {size} bytes is shorter than an Ethernet header")
    dst, src, ethertype = ETHERNET.unpack_from(frame, 0)
    offset = ETH_HLEN
    if ethertype in (ETH_P_8021Q, ETH_P_8021AD):
        if size < offset + 4:
            raise FrameError(f"VLAN tag cut short at byte {offset}")
        (ethertype,) = _H.unpack_from(frame, offset + 2)
        offset += 4
    eth = Ethernet(dst, src, ethertype, offset)
    if ethertype == ETH_P_IP:
        return _parse_ipv4(frame, eth, offset, size)
    if ethertype == ETH_P_IPV6:
        return _parse_ipv6(frame, eth, offset, size)
    return Frame(eth)


def _parse_ipv4(
    frame: bytes | bytearray | memoryview, eth: Ethernet, offset: int, size: int
) -> Frame:
    if size < offset + 20:
        raise FrameError(f"IPv4 header cut short at byte {offset} ({size - offset} bytes left)")
    vihl, _tos, total, ident, flags_frag, ttl, proto, checksum, src, dst = IPV4.unpack_from(
        frame, offset
    )
    if vihl >> 4 != 4:
        raise FrameError(f"IPv4 version field is {vihl >> 4} at byte {offset}")
    ihl = (vihl & 0x0F) * 4
    if ihl < 20:
        raise FrameError(f"IPv4 header length {ihl} < 20 at byte {offset}")
    if total < ihl:
        raise FrameError(f"IPv4 total length {total} < header length {ihl} at byte {offset + 2}")
    if offset + total > size:
        raise FrameError(
            f"IPv4 total length {total} runs past the frame "
            f"({size - offset} bytes) at byte {offset + 2}"
        )
    ip = IPv4(_v4(src), _v4(dst), ihl, total, ttl, proto, ident, flags_frag, checksum, offset)
    if proto != IPPROTO_TCP or flags_frag & 0x1FFF:
        return Frame(eth, ip)
    return Frame(eth, ip, _parse_tcp(frame, offset + ihl, offset + total))


def _parse_ipv6(
    frame: bytes | bytearray | memoryview, eth: Ethernet, offset: int, size: int
) -> Frame:
    if size < offset + 40:
        raise FrameError(f"IPv6 header cut short at byte {offset} ({size - offset} bytes left)")
    vtf, payload_len, next_header, hop_limit, src, dst = IPV6.unpack_from(frame, offset)
    if vtf >> 28 != 6:
        raise FrameError(f"IPv6 version field is {vtf >> 28} at byte {offset}")
    end = offset + 40 + payload_len
    if end > size:
        raise FrameError(
            f"IPv6 payload length {payload_len} runs past the frame at byte {offset + 4}"
        )
    l4 = offset + 40
    first_fragment = True
    while next_header in _IPV6_EXTENSIONS or next_header in (IPV6_FRAGMENT, IPV6_AH):
        if l4 + 8 > end:
            raise FrameError(f"IPv6 extension header {next_header} cut short at byte {l4}")
        nxt, length = frame[l4], frame[l4 + 1]
        if next_header == IPV6_FRAGMENT:
            (frag,) = _H.unpack_from(frame, l4 + 2)
            first_fragment = frag & 0xFFF8 == 0
            ext_len = 8
        elif next_header == IPV6_AH:
            ext_len = (length + 2) * 4
        else:
            ext_len = (length + 1) * 8
        if l4 + ext_len > end:
            raise FrameError(
                f"IPv6 extension header {next_header} runs past the packet at byte {l4}"
            )
        next_header = nxt
        l4 += ext_len
    ip = IPv6(_v6(src), _v6(dst), payload_len, hop_limit, next_header, offset, l4)
    if next_header != IPPROTO_TCP or not first_fragment:
        return Frame(eth, ip)
    return Frame(eth, ip, _parse_tcp(frame, l4, end))


def _parse_tcp(frame: bytes | bytearray | memoryview, offset: int, end: int) -> Tcp:
    if end - offset < 20:
        raise FrameError(f"TCP header cut short at byte {offset} ({end - offset} bytes left)")
    sport, dport, seq, ack, data_off, flags, window, checksum, urgent = TCP.unpack_from(
        frame, offset
    )
    header_len = (data_off >> 4) * 4
    if header_len < 20 or offset + header_len > end:
        raise FrameError(f"TCP data offset {header_len} is invalid at byte {offset + 12}")
    options = bytes(frame[offset + 20 : offset + header_len]) if header_len > 20 else b""
    return Tcp(
        sport,
        dport,
        seq,
        ack,
        flags,
        header_len,
        window,
        checksum,
        urgent,
        options,
        end - offset - header_len,
        offset,
    )


# --- checksums ------------------------------------------------------------------


def _pseudo_header(ip: IPv4 | IPv6, frame: bytes | bytearray | memoryview, length: int) -> bytes:
    """The TCP pseudo-header, from the addresses where they sit in the IP header:
    source then destination, 4 bytes each from byte 12 of an IPv4 header
    (RFC 791 §3.1), 16 bytes each from byte 8 of an IPv6 one (RFC 8200 §3)."""
    start, size = (ip.offset + 12, 4) if isinstance(ip, IPv4) else (ip.offset + 8, 16)
    src = bytes(frame[start : start + size])
    dst = bytes(frame[start + size : start + 2 * size])
    return pseudo_header(src, dst, IPPROTO_TCP, length)


def _tcp_length(ip: IPv4 | IPv6, tcp: Tcp) -> int:
    return tcp.data_offset + tcp.payload_len


def tcp_checksum_ok(frame: bytes | bytearray | memoryview, parsed: Frame) -> bool:
    """Whether the TCP checksum of a parsed frame is right."""
    if parsed.ip is None or parsed.tcp is None:
        raise FrameError("not a TCP segment")
    length = _tcp_length(parsed.ip, parsed.tcp)
    start = parsed.tcp.offset
    pseudo = _pseudo_header(parsed.ip, frame, length)
    return internet_checksum(pseudo + bytes(frame[start : start + length])) == 0


def ipv4_header_checksum_ok(frame: bytes | bytearray | memoryview, parsed: Frame) -> bool:
    if not isinstance(parsed.ip, IPv4):
        raise FrameError("not an IPv4 packet")
    start = parsed.ip.offset
    return internet_checksum(frame[start : start + parsed.ip.header_len]) == 0


def complete_tcp_checksum(frame: bytes | bytearray | memoryview) -> bytes:
    """A copy of ``frame`` with its TCP checksum (and IPv4 header checksum)
    computed from scratch — for frames the kernel left for offload
    (RFC 9293 §3.1, RFC 8200 §8.1 pseudo-headers)."""
    parsed = parse_frame(frame)
    if parsed.ip is None or parsed.tcp is None:
        raise FrameError("not a TCP segment")
    buf = bytearray(frame)
    ip, tcp = parsed.ip, parsed.tcp
    if isinstance(ip, IPv4):
        _H.pack_into(buf, ip.offset + 10, 0)
        _H.pack_into(
            buf, ip.offset + 10, internet_checksum(buf[ip.offset : ip.offset + ip.header_len])
        )
    length = _tcp_length(ip, tcp)
    _H.pack_into(buf, tcp.offset + 16, 0)
    pseudo = _pseudo_header(ip, buf, length)
    _H.pack_into(
        buf,
        tcp.offset + 16,
        internet_checksum(pseudo + bytes(buf[tcp.offset : tcp.offset + length])),
    )
    return bytes(buf)


# --- building -------------------------------------------------------------------


def build_tcp_frame(
    src_mac: bytes,
    dst_mac: bytes,
    src_ip: str,
    dst_ip: str,
    src_port: int,
    dst_port: int,
    seq: int,
    ack: int,
    flags: int,
    *,
    window: int = 0,
    options: bytes = b"",
    payload: bytes = b"",
    ttl: int = 64,
) -> bytes:
    """A whole Ethernet frame carrying one TCP segment (v4 or v6 by address)."""
    segment = build_tcp(
        src_ip, dst_ip, src_port, dst_port, seq, ack, flags, window, options, payload
    )
    if address_family(src_ip) == socket.AF_INET:
        return build_ethernet(
            dst_mac, src_mac, ETH_P_IP, build_ipv4(src_ip, dst_ip, IPPROTO_TCP, segment, ttl)
        )
    return build_ethernet(
        dst_mac, src_mac, ETH_P_IPV6, build_ipv6(src_ip, dst_ip, IPPROTO_TCP, segment, ttl)
    )
