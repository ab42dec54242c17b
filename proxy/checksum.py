"""The Internet checksum and the pseudo-header it covers (sans-IO).

IPv4 headers, TCP segments and ICMPv6 messages all carry the same checksum
(RFC 1071); TCP and ICMPv6 also cover a pseudo-header made of the IP
addresses, the protocol and the length, so a segment delivered to the wrong
address fails its check.  Parsing (:mod:`proxy.wire`), building
(:mod:`proxy.headers`) and the ARP/ND frames (:mod:`proxy.neighbour_frames`)
share this one implementation, which knows nothing of headers beyond that.
"""

from __future__ import annotations

import struct

# RFC 9293 §3.1: IPv4 pseudo-header after the addresses (zero, protocol, TCP length)
_V4_TAIL = struct.Struct("!BBH")
# RFC 8200 §8.1: IPv6 pseudo-header after the addresses (upper-layer length,
# three zero bytes, next header)
_V6_TAIL = struct.Struct("!I3xB")


def internet_checksum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """RFC 1071: the ones' complement of the ones' complement sum of 16-bit words.

    The sum of a number's 16-bit words is congruent to the number modulo
    0xFFFF (2^16 ≡ 1), so one big-integer remainder does the whole sum in C."""
    if len(data) % 2:
        data = bytes(data) + b"\0"
    total = int.from_bytes(data, "big") + initial
    folded = total % 0xFFFF
    if folded == 0 and total:
        folded = 0xFFFF  # ones' complement "negative zero"
    return ~folded & 0xFFFF


def pseudo_header(src: bytes, dst: bytes, proto: int, length: int) -> bytes:
    """The pseudo-header for an upper-layer ``length`` bytes long, between
    the packed addresses ``src`` and ``dst``: the IPv4 form for 4-byte
    addresses (RFC 9293 §3.1), the IPv6 form for 16-byte ones (RFC 8200 §8.1)."""
    if len(src) == 4:
        return src + dst + _V4_TAIL.pack(0, proto, length)
    return src + dst + _V6_TAIL.pack(length, proto)
