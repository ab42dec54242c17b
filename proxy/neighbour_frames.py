"""ARP and Neighbor Discovery frames: the solicitations the proxy sends, and
the announcements it learns MACs from (sans-IO).

The neighbour table (:mod:`proxy.neighbours`) resolves a next hop's MAC the
way a host does: an ARP request (RFC 826) for IPv4, a Neighbor Solicitation
(RFC 4861 §7.2.2) for IPv6.  This module is only the packets: building the
two requests, and reading the ``(ip, mac)`` that an ARP packet or a Neighbor
Advertisement / Solicitation announces.
"""

from __future__ import annotations

import socket
import struct

from proxy.checksum import internet_checksum, pseudo_header
from proxy.headers import build_ethernet, build_ipv6
from proxy.wire import ETH_P_ARP, ETH_P_IP, ETH_P_IPV6

ETH_BROADCAST = b"\xff" * 6
# RFC 826: hardware type Ethernet (1), protocol IPv4, request 1 / reply 2
ARP_REQUEST = 1
ARP_REPLY = 2
_ARP = struct.Struct("!HHBBH6s4s6s4s")
# RFC 4861 §4.3 / §4.4: ICMPv6 types and the link-layer address options
ICMPV6 = 58
ND_NEIGHBOR_SOLICIT = 135
ND_NEIGHBOR_ADVERT = 136
ND_OPT_SOURCE_LL = 1
ND_OPT_TARGET_LL = 2


def arp_request(src_mac: bytes, src_ip: str, target_ip: str) -> bytes:
    """Who has ``target_ip``? Tell ``src_ip`` (broadcast)."""
    body = _ARP.pack(
        1,
        ETH_P_IP,
        6,
        4,
        ARP_REQUEST,
        src_mac,
        socket.inet_aton(src_ip),
        b"\0" * 6,
        socket.inet_aton(target_ip),
    )
    return build_ethernet(ETH_BROADCAST, src_mac, ETH_P_ARP, body)


def solicited_node(target: str) -> tuple[str, bytes]:
    """The solicited-node multicast address for ``target`` and its MAC
    (RFC 4291 §2.7.1, RFC 2464 §7)."""
    packed = socket.inet_pton(socket.AF_INET6, target)
    group = socket.inet_pton(socket.AF_INET6, "ff02::1:ff00:0")[:13] + packed[13:]
    return socket.inet_ntop(socket.AF_INET6, group), b"\x33\x33" + group[12:]


def _icmpv6(src: str, dst: str, body: bytes) -> bytes:
    pseudo = pseudo_header(
        socket.inet_pton(socket.AF_INET6, src),
        socket.inet_pton(socket.AF_INET6, dst),
        ICMPV6,
        len(body),
    )
    checksum = internet_checksum(pseudo + body)
    return body[:2] + struct.pack("!H", checksum) + body[4:]


def neighbor_solicitation(src_mac: bytes, src_ip: str, target_ip: str) -> bytes:
    """RFC 4861 §4.3, to the target's solicited-node group, hop limit 255."""
    group, group_mac = solicited_node(target_ip)
    body = (
        struct.pack("!BBHI", ND_NEIGHBOR_SOLICIT, 0, 0, 0)
        + socket.inet_pton(socket.AF_INET6, target_ip)
        + struct.pack("!BB", ND_OPT_SOURCE_LL, 1)
        + src_mac
    )
    packet = build_ipv6(src_ip, group, ICMPV6, _icmpv6(src_ip, group, body), hop_limit=255)
    return build_ethernet(group_mac, src_mac, ETH_P_IPV6, packet)


def parse_neighbour_frame(frame: bytes) -> tuple[str, bytes] | None:
    """``(ip, mac)`` announced by an ARP packet (its sender) or by a Neighbor
    Advertisement / Solicitation (its link-layer option); None otherwise.
    Never raises."""
    if len(frame) < 14:
        return None
    ethertype = int.from_bytes(frame[12:14], "big")
    if ethertype == ETH_P_ARP:
        if len(frame) < 14 + _ARP.size:
            return None
        htype, ptype, hlen, plen, _op, sha, spa, _tha, _tpa = _ARP.unpack_from(frame, 14)
        if htype != 1 or ptype != ETH_P_IP or hlen != 6 or plen != 4:
            return None
        if spa == b"\0\0\0\0":
            return None  # an ARP probe: the sender has no address yet
        return socket.inet_ntoa(spa), sha
    if ethertype != ETH_P_IPV6 or len(frame) < 14 + 40 + 24:
        return None
    if frame[14 + 6] != ICMPV6:
        return None
    icmp = 14 + 40
    kind = frame[icmp]
    src = socket.inet_ntop(socket.AF_INET6, frame[14 + 8 : 14 + 24])
    target = socket.inet_ntop(socket.AF_INET6, frame[icmp + 8 : icmp + 24])
    if kind == ND_NEIGHBOR_ADVERT:
        want, ip = ND_OPT_TARGET_LL, target
    elif kind == ND_NEIGHBOR_SOLICIT:
        if src == "::":
            return None  # duplicate address detection: no address yet
        want, ip = ND_OPT_SOURCE_LL, src
    else:
        return None
    offset = icmp + 24
    while offset + 8 <= len(frame):
        opt, units = frame[offset], frame[offset + 1]
        if units == 0:
            return None
        if opt == want and units == 1:
            return ip, bytes(frame[offset + 2 : offset + 8])
        offset += units * 8
    return None
