"""Each header's layout on the wire, and building one from its fields (sans-IO).

One fixed layout per header — Ethernet, IPv4, IPv6, TCP — shared by the
builders here and by the parser (:mod:`proxy.wire`), so the two read and
write the same bytes.  The builders fill in what follows from the fields
(lengths, the IPv4 header checksum, the TCP checksum over its pseudo-header):
tests build frames with them, and the proxy builds the RSTs it injects and
its ARP/ND solicitations.  Whole TCP frames are :func:`proxy.wire.build_tcp_frame`.
"""

from __future__ import annotations

import socket
import struct

from proxy.checksum import internet_checksum, pseudo_header

# RFC 791 / RFC 8200: protocol numbers
IPPROTO_TCP = 6
IPPROTO_UDP = 17

ETHERNET = struct.Struct("!6s6sH")
"""Destination MAC, source MAC, EtherType (IEEE 802.3; include/uapi/linux/if_ether.h)."""
IPV4 = struct.Struct("!BBHHHBBH4s4s")
"""RFC 791 §3.1: version+IHL, TOS, total length, ident, flags+fragment offset,
TTL, protocol, header checksum, source, destination (options follow)."""
IPV6 = struct.Struct("!IHBB16s16s")
"""RFC 8200 §3: version+class+flow label, payload length, next header, hop
limit, source, destination."""
TCP = struct.Struct("!HHIIBBHHH")
"""RFC 9293 §3.1: ports, sequence and acknowledgment numbers, data offset,
control bits, window, checksum, urgent pointer (options follow)."""
_H = struct.Struct("!H")


def address_family(address: str) -> int:
    """``AF_INET6`` for an IPv6 address in text form, else ``AF_INET``."""
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def build_tcp(
    src: str,
    dst: str,
    src_port: int,
    dst_port: int,
    seq: int,
    ack: int,
    flags: int,
    window: int = 0,
    options: bytes = b"",
    payload: bytes = b"",
    urgent: int = 0,
) -> bytes:
    """A TCP header and payload with the right checksum for ``src``/``dst``."""
    if len(options) % 4 or len(options) > 40:
        raise ValueError("TCP options must be a multiple of 4 bytes, at most 40")
    header_len = 20 + len(options)
    header = TCP.pack(
        src_port,
        dst_port,
        seq & 0xFFFFFFFF,
        ack & 0xFFFFFFFF,
        (header_len // 4) << 4,
        flags & 0xFF,
        window,
        0,
        urgent,
    )
    segment = header + options + payload
    family = address_family(src)
    pseudo = pseudo_header(
        socket.inet_pton(family, src), socket.inet_pton(family, dst), IPPROTO_TCP, len(segment)
    )
    checksum = internet_checksum(pseudo + segment)
    return segment[:16] + _H.pack(checksum) + segment[18:]


def build_ipv4(
    src: str,
    dst: str,
    proto: int,
    payload: bytes,
    ttl: int = 64,
    ident: int = 0,
    options: bytes = b"",
    dont_fragment: bool = True,
) -> bytes:
    if len(options) % 4 or len(options) > 40:
        raise ValueError("IPv4 options must be a multiple of 4 bytes, at most 40")
    ihl = 20 + len(options)
    header = (
        IPV4.pack(
            0x40 | ihl // 4,
            0,
            ihl + len(payload),
            ident,
            0x4000 if dont_fragment else 0,
            ttl,
            proto,
            0,
            socket.inet_aton(src),
            socket.inet_aton(dst),
        )
        + options
    )
    checksum = internet_checksum(header)
    return header[:10] + _H.pack(checksum) + header[12:] + payload


def build_ipv6(
    src: str,
    dst: str,
    next_header: int,
    payload: bytes,
    hop_limit: int = 64,
    extensions: bytes = b"",
) -> bytes:
    """An IPv6 packet.  ``next_header`` goes in the fixed header; with
    ``extensions`` (raw extension headers placed before ``payload``) it names
    the first of them, and their own next-header fields chain onwards."""
    return (
        IPV6.pack(
            6 << 28,
            len(extensions) + len(payload),
            next_header,
            hop_limit,
            socket.inet_pton(socket.AF_INET6, src),
            socket.inet_pton(socket.AF_INET6, dst),
        )
        + extensions
        + payload
    )


def build_ethernet(dst: bytes, src: bytes, ethertype: int, payload: bytes) -> bytes:
    return ETHERNET.pack(dst, src, ethertype) + payload
