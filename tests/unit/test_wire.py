"""The wire codec on frames real kernels sent, and on generated ones."""

from __future__ import annotations

import random
import socket
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy import checksum, headers, wire

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "wire"
MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")


def real_frames(name: str) -> list[bytes]:
    lines = (FIXTURES / f"{name}.hex").read_text().splitlines()
    return [bytes.fromhex(line) for line in lines if line and not line.startswith("#")]


def real_segments(name: str) -> list[tuple[bytes, wire.Frame]]:
    out = []
    for frame in real_frames(name):
        parsed = wire.parse_frame(frame)
        if parsed.tcp is not None:
            out.append((frame, parsed))
    return out


@pytest.mark.parametrize("name", ["ipv4", "ipv6"])
def test_kernel_checksums_verify(name: str) -> None:
    segments = real_segments(name)
    assert len(segments) >= 10  # handshake, two echoes, teardown
    for frame, parsed in segments:
        assert wire.tcp_checksum_ok(frame, parsed), frame.hex()
        if isinstance(parsed.ip, wire.IPv4):
            assert wire.ipv4_header_checksum_ok(frame, parsed)


@pytest.mark.parametrize("name", ["ipv4", "ipv6"])
def test_kernel_conversation_parses_as_a_conversation(name: str) -> None:
    segments = [p for _, p in real_segments(name)]
    flags = [wire.flags_text(p.tcp.flags) for p in segments if p.tcp]
    assert flags[:3] == ["S", "SA", "A"]
    assert "FA" in flags
    syn = segments[0].tcp
    assert syn is not None and syn.dst_port == 7007
    assert syn.options[:2] == b"\x02\x04"  # MSS first, as Linux sends it
    data = [p.tcp.payload_len for p in segments if p.tcp and p.tcp.payload_len]
    assert 6 in data and 1201 in data  # "hello\n" and 1200 x's + "\n", each way
    family = wire.IPv4 if name == "ipv4" else wire.IPv6
    assert all(isinstance(p.ip, family) for p in segments)


@pytest.mark.parametrize("name", ["ipv4", "ipv6"])
def test_a_flipped_bit_breaks_the_checksum(name: str) -> None:
    frame, parsed = next((f, p) for f, p in real_segments(name) if p.tcp and p.tcp.payload_len)
    assert parsed.tcp is not None
    broken = bytearray(frame)
    broken[parsed.tcp.offset + parsed.tcp.data_offset] ^= 0x01
    assert not wire.tcp_checksum_ok(bytes(broken), parsed)


@pytest.mark.parametrize("name", ["ipv4", "ipv6"])
def test_complete_checksum_restores_the_kernels(name: str) -> None:
    for frame, parsed in real_segments(name):
        assert parsed.tcp is not None
        partial = bytearray(frame)
        partial[parsed.tcp.offset + 16 : parsed.tcp.offset + 18] = b"\xab\xcd"
        if isinstance(parsed.ip, wire.IPv4):
            partial[parsed.ip.offset + 10 : parsed.ip.offset + 12] = b"\0\0"
        assert wire.complete_tcp_checksum(bytes(partial)) == frame


def test_flag_letters() -> None:
    assert wire.flags_text(wire.SYN) == "S"
    assert wire.flags_text(wire.SYN | wire.ACK) == "SA"
    assert wire.flags_text(wire.FIN | wire.ACK) == "FA"
    assert wire.flags_text(wire.FIN | wire.PSH | wire.ACK) == "FPA"
    assert wire.flags_text(wire.RST | wire.ACK) == "RA"


addresses4 = st.ip_addresses(v=4).map(str)
addresses6 = st.ip_addresses(v=6).map(str)
u32 = st.integers(0, 2**32 - 1)
options = st.binary(max_size=40).map(lambda b: b[: len(b) - len(b) % 4])


@given(
    v6=st.booleans(),
    a4=addresses4,
    b4=addresses4,
    a6=addresses6,
    b6=addresses6,
    ports=st.tuples(st.integers(0, 65535), st.integers(0, 65535)),
    seq=u32,
    ack=u32,
    flags=st.integers(0, 255),
    window=st.integers(0, 65535),
    opts=options,
    payload=st.binary(max_size=1500),
)
def test_build_parse_round_trip(
    v6: bool,
    a4: str,
    b4: str,
    a6: str,
    b6: str,
    ports: tuple[int, int],
    seq: int,
    ack: int,
    flags: int,
    window: int,
    opts: bytes,
    payload: bytes,
) -> None:
    src, dst = (a6, b6) if v6 else (a4, b4)
    frame = wire.build_tcp_frame(
        MAC_A,
        MAC_B,
        src,
        dst,
        *ports,
        seq,
        ack,
        flags,
        window=window,
        options=opts,
        payload=payload,
    )
    parsed = wire.parse_frame(frame)
    assert parsed.eth.dst == MAC_B and parsed.eth.src == MAC_A
    assert parsed.ip is not None and parsed.tcp is not None
    family = socket.AF_INET6 if v6 else socket.AF_INET
    assert socket.inet_pton(family, parsed.ip.src) == socket.inet_pton(family, src)
    tcp = parsed.tcp
    assert (tcp.src_port, tcp.dst_port, tcp.seq, tcp.ack) == (*ports, seq, ack)
    assert (tcp.flags, tcp.window, tcp.options, tcp.payload_len) == (
        flags,
        window,
        opts,
        len(payload),
    )
    assert wire.tcp_checksum_ok(frame, parsed)


def test_ipv4_options_and_padding() -> None:
    segment = headers.build_tcp("192.0.2.1", "198.51.100.1", 1, 2, 3, 4, wire.ACK, payload=b"hi")
    packet = headers.build_ipv4(
        "192.0.2.1", "198.51.100.1", 6, segment, options=b"\x01\x01\x01\x00"
    )
    frame = headers.build_ethernet(MAC_B, MAC_A, wire.ETH_P_IP, packet) + b"\0" * 10  # padding
    parsed = wire.parse_frame(frame)
    assert isinstance(parsed.ip, wire.IPv4) and parsed.ip.header_len == 24
    assert parsed.tcp is not None and parsed.tcp.payload_len == 2
    assert wire.tcp_checksum_ok(frame, parsed)


def test_ipv6_extension_headers_are_skipped() -> None:
    segment = headers.build_tcp("2001:db8:1::1", "2001:db8:2::1", 1, 2, 3, 4, wire.SYN)
    hop_by_hop = bytes([wire.IPV6_DEST_OPTS, 0]) + b"\x01\x04\0\0\0\0"  # PadN
    dest_opts = bytes([headers.IPPROTO_TCP, 0]) + b"\x01\x04\0\0\0\0"
    packet = headers.build_ipv6(
        "2001:db8:1::1",
        "2001:db8:2::1",
        wire.IPV6_HOP_BY_HOP,
        segment,
        extensions=hop_by_hop + dest_opts,
    )
    parsed = wire.parse_frame(headers.build_ethernet(MAC_B, MAC_A, wire.ETH_P_IPV6, packet))
    assert isinstance(parsed.ip, wire.IPv6)
    assert parsed.ip.next_header == headers.IPPROTO_TCP and parsed.ip.l4_offset == 14 + 40 + 16
    assert parsed.tcp is not None and parsed.tcp.flags == wire.SYN


def test_vlan_tag() -> None:
    inner = wire.build_tcp_frame(MAC_A, MAC_B, "192.0.2.1", "198.51.100.1", 1, 2, 3, 4, wire.ACK)
    tagged = inner[:12] + struct.pack("!HH", wire.ETH_P_8021Q, 7) + inner[12:]
    parsed = wire.parse_frame(tagged)
    assert parsed.eth.header_len == 18 and parsed.tcp is not None
    assert wire.tcp_checksum_ok(tagged, parsed)


def test_non_tcp_passes_through() -> None:
    arp = headers.build_ethernet(b"\xff" * 6, MAC_A, wire.ETH_P_ARP, b"\0" * 28)
    assert wire.parse_frame(arp).ip is None
    udp = headers.build_ipv4("192.0.2.1", "198.51.100.1", headers.IPPROTO_UDP, b"\0" * 8)
    parsed = wire.parse_frame(headers.build_ethernet(MAC_B, MAC_A, wire.ETH_P_IP, udp))
    assert parsed.ip is not None and parsed.tcp is None


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (b"\0" * 10, "shorter than an Ethernet header"),
        (MAC_B + MAC_A + b"\x08\x00" + b"\x45" + b"\0" * 5, "IPv4 header cut short at byte 14"),
        (MAC_B + MAC_A + b"\x08\x00" + b"\x65" + b"\0" * 19, "version field is 6 at byte 14"),
    ],
)
def test_errors_say_what_and_where(frame: bytes, message: str) -> None:
    with pytest.raises(wire.FrameError, match=message):
        wire.parse_frame(frame)


def test_random_truncated_and_mutated_frames_raise_only_frame_error() -> None:
    rng = random.Random(9293)
    seeds = [f for name in ("ipv4", "ipv6") for f in real_frames(name)]
    ok = errors = 0
    for i in range(10_000):
        kind = i % 3
        if kind == 0:
            frame = rng.randbytes(rng.randrange(0, 200))
        else:
            frame = bytearray(rng.choice(seeds))
            if kind == 1:
                frame = frame[: rng.randrange(0, len(frame))]
            else:
                for _ in range(rng.randrange(1, 6)):
                    frame[rng.randrange(len(frame))] = rng.randrange(256)
        try:
            wire.parse_frame(bytes(frame))
            ok += 1
        except wire.FrameError:
            errors += 1
    assert ok and errors  # both kinds happened: the fuzz reached the parser's checks


def test_checksum_matches_rfc1071_example() -> None:
    # RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (checksum 220d)
    assert checksum.internet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D
