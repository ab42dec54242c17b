"""The express lane's eBPF program for one connection and direction (pure:
values in, bytecode out).

Where the middlebox's ports do not wear mirrored MACs (Docker gives every
interface its own), the kernel lane must rewrite the Ethernet header, and
this kernel has no ``act_pedit``.  So each direction of an express
connection gets a ``cls_bpf`` filter in direct-action mode running this
program (:mod:`proxy.bpf_lane` loads and attaches it):

1. match: not VLAN-tagged, the EtherType of the connection's family; IPv4
   with no options (IHL 5), not a fragment, protocol TCP; or IPv6 whose
   next header is TCP (no extension headers); the exact source and
   destination addresses and ports; TCP flags without SYN, FIN or RST;
2. rewrite: destination MAC ← the next hop's, source MAC ← the egress
   port's (``bpf_skb_store_bytes``);
3. ``return bpf_redirect(egress ifindex, 0)``: TC_ACT_REDIRECT, out of
   the other port.

Any other frame returns TC_ACT_UNSPEC, so the next filter sees it — in the
end the catch-all mirror to the proxy (:mod:`proxy.express`).  Express
frames keep their TTL / hop limit, as the ``u32`` lane's do.

Reads go through ``bpf_skb_load_bytes`` into the stack (works on
non-linear skbs and keeps the verifier's job simple): one call copies the
Ethernet, IP and the first 14 TCP bytes into a buffer placed so that the IP
header starts 8-aligned (the verifier wants aligned stack loads).  A stack
word holds the frame's bytes in network order, and the program loads it
little-endian: so every constant is compared as the little-endian value of
its network-order bytes (:func:`le`), and no byte swaps are needed.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import struct

from proxy import bpf_asm as a

# include/uapi/linux/bpf.h, enum bpf_func_id (the order of __BPF_FUNC_MAPPER)
BPF_FUNC_SKB_STORE_BYTES = 9
BPF_FUNC_REDIRECT = 23
BPF_FUNC_SKB_LOAD_BYTES = 26
# include/uapi/linux/pkt_cls.h
TC_ACT_UNSPEC = -1
TC_ACT_REDIRECT = 7
# include/uapi/linux/bpf.h, struct __sk_buff: offsetof(vlan_present)
SKB_VLAN_PRESENT = 20
# include/uapi/linux/if_ether.h
ETH_HLEN = 14
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
# include/uapi/linux/in.h
IPPROTO_TCP = 6
# RFC 791: the flags' MF bit and the fragment offset; RFC 9293 §3.1: the TCP
# flags byte is 13 bytes into the header, FIN 0x01, SYN 0x02, RST 0x04
IP_MF_OFFSET = 0x3FFF
TCP_FLAGS_AT = 13
CONTROL_FLAGS = 0x07

BUFFER = -(ETH_HLEN + 56)
"""The frame's copy on the stack, from R10: the IP header lands at -56,
8-aligned; room for the Ethernet header, 40 bytes of IPv6 and 14 of TCP."""
IP_AT = BUFFER + ETH_HLEN
PASS = "pass"


@dataclasses.dataclass(frozen=True, slots=True)
class Direction:
    """One direction of one connection: which segments, which new MACs,
    out of which interface."""

    src: tuple[str, int]
    dst: tuple[str, int]
    dst_mac: bytes
    """The next hop's MAC, on the egress port's link."""
    src_mac: bytes
    """The egress port's own MAC."""
    out_ifindex: int


def le(data: bytes) -> int:
    """The value a little-endian load of ``data`` (network order) yields."""
    return int.from_bytes(data, "little")


def _word_checks(data: bytes, at: int) -> list[a.Item]:
    """``data`` (a multiple of 4 bytes) must be at stack offset ``at``."""
    out: list[a.Item] = []
    for i in range(0, len(data), 4):
        out.append(a.load(4, a.R0, a.R10, at + i))
        out.append(a.jump_imm(a.JNE, a.R0, a.signed32(le(data[i : i + 4])), PASS, wide=False))
    return out


def _ip_checks(d: Direction) -> tuple[list[a.Item], int, int]:
    """The IP header's checks; the bytes to copy and where the TCP header
    starts on the stack."""
    src, dst = ipaddress.ip_address(d.src[0]), ipaddress.ip_address(d.dst[0])
    if src.version != dst.version:
        raise ValueError(f"{src} and {dst} are not of one family")
    if src.version == 4:
        checks: list[a.Item] = [
            a.load(2, a.R0, a.R10, IP_AT - 2),
            a.jump_imm(a.JNE, a.R0, le(struct.pack("!H", ETH_P_IP)), PASS),
            a.load(1, a.R0, a.R10, IP_AT),  # version 4, IHL 5: no options
            a.jump_imm(a.JNE, a.R0, 0x45, PASS),
            a.load(2, a.R0, a.R10, IP_AT + 6),  # a fragment carries no TCP header
            a.jump_imm(a.JSET, a.R0, le(struct.pack("!H", IP_MF_OFFSET)), PASS),
            a.load(1, a.R0, a.R10, IP_AT + 9),
            a.jump_imm(a.JNE, a.R0, IPPROTO_TCP, PASS),
            *_word_checks(src.packed + dst.packed, IP_AT + 12),
        ]
        return checks, ETH_HLEN + 20 + TCP_FLAGS_AT + 1, IP_AT + 20
    checks = [
        a.load(2, a.R0, a.R10, IP_AT - 2),
        a.jump_imm(a.JNE, a.R0, le(struct.pack("!H", ETH_P_IPV6)), PASS),
        a.load(1, a.R0, a.R10, IP_AT),
        a.rsh_imm(a.R0, 4),
        a.jump_imm(a.JNE, a.R0, 6, PASS),
        a.load(1, a.R0, a.R10, IP_AT + 6),  # next header TCP: no extension headers
        a.jump_imm(a.JNE, a.R0, IPPROTO_TCP, PASS),
        *_word_checks(src.packed + dst.packed, IP_AT + 8),
    ]
    return checks, ETH_HLEN + 40 + TCP_FLAGS_AT + 1, IP_AT + 40


def _helper_args(length: int) -> list[a.Item]:
    """R1 the skb, R2 offset 0, R3 the stack buffer, R4 ``length``."""
    return [
        a.mov_reg(a.R1, a.R6),
        a.mov_imm(a.R2, 0),
        a.mov_reg(a.R3, a.R10),
        a.add_imm(a.R3, BUFFER),
        a.mov_imm(a.R4, length),
    ]


def _rewrite(d: Direction) -> list[a.Item]:
    """Write the two MACs over the copy's first 12 bytes (2-aligned: six
    halfword stores), then store them into the frame."""
    macs = d.dst_mac + d.src_mac
    if len(macs) != 12:
        raise ValueError("MAC addresses are 6 bytes")
    out: list[a.Item] = [
        a.store_imm(2, a.R10, BUFFER + i, le(macs[i : i + 2])) for i in range(0, 12, 2)
    ]
    out += [*_helper_args(12), a.mov_imm(a.R5, 0), a.call(BPF_FUNC_SKB_STORE_BYTES)]
    # nothing was written when it fails (bad offset, no memory): the proxy has it
    out.append(a.jump_imm(a.JNE, a.R0, 0, PASS))
    return out


def program(d: Direction) -> list[a.Item]:
    """The program, as assembler items (see the module's docstring)."""
    ip_checks, length, tcp_at = _ip_checks(d)
    if not (0 < d.out_ifindex < 1 << 31):
        raise ValueError(f"ifindex {d.out_ifindex} out of range")
    return [
        a.mov_reg(a.R6, a.R1),  # the skb, kept across helper calls
        a.load(4, a.R0, a.R6, SKB_VLAN_PRESENT),
        a.jump_imm(a.JNE, a.R0, 0, PASS),
        *_helper_args(length),
        a.call(BPF_FUNC_SKB_LOAD_BYTES),  # fails on a shorter frame
        a.jump_imm(a.JNE, a.R0, 0, PASS),
        *ip_checks,
        a.load(2, a.R0, a.R10, tcp_at),
        a.jump_imm(a.JNE, a.R0, le(struct.pack("!H", d.src[1])), PASS),
        a.load(2, a.R0, a.R10, tcp_at + 2),
        a.jump_imm(a.JNE, a.R0, le(struct.pack("!H", d.dst[1])), PASS),
        a.load(1, a.R0, a.R10, tcp_at + TCP_FLAGS_AT),
        a.jump_imm(a.JSET, a.R0, CONTROL_FLAGS, PASS),
        *_rewrite(d),
        a.mov_imm(a.R1, d.out_ifindex),
        a.mov_imm(a.R2, 0),
        a.call(BPF_FUNC_REDIRECT),  # TC_ACT_REDIRECT
        a.exit_(),
        a.Label(PASS),
        a.mov_imm(a.R0, TC_ACT_UNSPEC),
        a.exit_(),
    ]


def bytecode(d: Direction) -> bytes:
    """:func:`program`, encoded."""
    return a.assemble(program(d))


def probe() -> bytes:
    """The smallest SCHED_CLS program (``return TC_ACT_UNSPEC``): loading
    and attaching it tells whether the kernel offers the lane."""
    return a.assemble([a.mov_imm(a.R0, TC_ACT_UNSPEC), a.exit_()])
