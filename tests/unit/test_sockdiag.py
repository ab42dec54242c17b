"""The sock_diag codec on bytes the kernel really sent, checked against what
``ss`` printed for the same sockets, and on generated messages."""

from __future__ import annotations

import errno
import socket
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.events import TCP_STATES
from daemons import sockdiag

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sockdiag"

# ss(8) spells states its own way.
SS_NAMES = {
    "ESTAB": "ESTABLISHED",
    "SYN-SENT": "SYN_SENT",
    "SYN-RECV": "SYN_RECV",
    "FIN-WAIT-1": "FIN_WAIT1",
    "FIN-WAIT-2": "FIN_WAIT2",
    "TIME-WAIT": "TIME_WAIT",
    "CLOSE-WAIT": "CLOSE_WAIT",
    "LAST-ACK": "LAST_ACK",
    "LISTEN": "LISTEN",
    "CLOSING": "CLOSING",
}


def ss_endpoint(text: str) -> tuple[str, int | None]:
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    if host == "*":
        host = "0.0.0.0"
    return host, None if port == "*" else int(port)


def ss_rows() -> set[tuple[str, int, int, str, int, str, int | None]]:
    rows = set()
    for line in (FIXTURES / "ss.txt").read_text().splitlines():
        state, rq, sq, local, peer = line.split()
        src, sport = ss_endpoint(local)
        dst, dport = ss_endpoint(peer)
        assert sport is not None
        rows.add((SS_NAMES[state], int(rq), int(sq), src, sport, dst, dport))
    return rows


def decoded_rows() -> set[tuple[str, int, int, str, int, str, int | None]]:
    rows = set()
    for name in ("inet.bin", "inet6.bin"):
        found, done = sockdiag.parse_messages((FIXTURES / name).read_bytes(), seq=1)
        assert done, f"{name}: no NLMSG_DONE"
        for info in found:
            dport = info.dport if info.state != 10 else None  # ss prints a listener's peer as *
            rows.add(
                (
                    TCP_STATES[info.state],
                    info.rqueue,
                    info.wqueue,
                    info.src,
                    info.sport,
                    info.dst,
                    dport,
                )
            )
    return rows


def test_real_dump_decodes_to_what_ss_printed() -> None:
    expected = ss_rows()
    assert len(expected) == 13  # the capture script makes 13 sockets
    assert decoded_rows() == expected


def test_real_dump_timers() -> None:
    found, _ = sockdiag.parse_messages((FIXTURES / "inet.bin").read_bytes(), seq=1)
    by_state = {TCP_STATES[i.state]: i for i in found}
    time_wait = by_state["TIME_WAIT"]
    # TIME_WAIT: timer 3 ("timewait"), what is left of TCP_TIMEWAIT_LEN (60 s)
    assert time_wait.timer == 3
    assert 50_000 < time_wait.expires_ms <= 60_000
    syn_sent = by_state["SYN_SENT"]
    assert syn_sent.timer == 1  # retransmit timer armed for the SYN
    assert by_state["LISTEN"].timer == 0
    assert all(i.family == socket.AF_INET for i in found)


def test_real_dump_cut_anywhere_is_an_error_not_a_crash() -> None:
    raw = (FIXTURES / "inet.bin").read_bytes()
    for cut in range(1, len(raw)):
        try:
            found, done = sockdiag.parse_messages(raw[:cut], seq=1)
        except sockdiag.DiagError as exc:
            assert exc.errno == errno.EBADMSG
        else:
            # a cut on a message boundary is a valid (unfinished) buffer
            assert not done or cut >= len(raw) - 20
            assert len(found) <= 7


def test_reply_for_another_request_is_refused() -> None:
    raw = (FIXTURES / "inet.bin").read_bytes()
    with pytest.raises(sockdiag.DiagError, match="sequence 1, expected 2"):
        sockdiag.parse_messages(raw, seq=2)


def test_error_reply_carries_the_errno() -> None:
    with pytest.raises(sockdiag.DiagError) as info:
        sockdiag.parse_messages(sockdiag.encode_error(errno.EPERM), seq=1)
    assert info.value.errno == errno.EPERM


def test_request_layout() -> None:
    request = sockdiag.build_dump_request(socket.AF_INET6, seq=7)
    # nlmsghdr (16) + inet_diag_req_v2 (56)
    assert len(request) == 72
    assert int.from_bytes(request[:4], "little") == 72
    assert request[16] == socket.AF_INET6 and request[17] == socket.IPPROTO_TCP


# nlmsghdr and inet_diag_req_v2 are in host byte order; the sockid's ports
# and addresses in network order (include/uapi/linux/inet_diag.h)
@pytest.mark.parametrize(
    ("family", "key", "src", "dst"),
    [
        (
            socket.AF_INET,
            ("192.0.2.1", 40312, "198.51.100.1", 7007),
            "c0000201" + "00" * 12,
            "c6336401" + "00" * 12,
        ),
        (
            socket.AF_INET6,
            ("2001:db8:1::1", 40312, "2001:db8:2::1", 7007),
            "20010db8000100000000000000000001",
            "20010db8000200000000000000000001",
        ),
    ],
)
def test_lookup_request_layout(
    family: int, key: tuple[str, int, str, int], src: str, dst: str
) -> None:
    request = sockdiag.build_lookup_request(family, key, seq=9)
    assert len(request) == 16 + 56
    length, kind, flags, seq, pid = struct.unpack("=IHHII", request[:16])
    assert (length, kind, seq, pid) == (72, 20, 9, 0)  # SOCK_DIAG_BY_FAMILY
    assert flags == 0x01  # NLM_F_REQUEST alone: one socket, not a dump
    assert not flags & (sockdiag.NLM_F_ROOT | sockdiag.NLM_F_MATCH)
    req_family, protocol, ext, pad, states = struct.unpack("=BBBBI", request[16:24])
    assert (req_family, protocol, ext, pad) == (family, 6, 0, 0)  # IPPROTO_TCP
    assert states == 0xFFF  # every TCP state
    sockid = request[24:]
    assert len(sockid) == 48
    assert sockid[:4] == bytes.fromhex("9d781b5f")  # sport 40312, dport 7007, big-endian
    assert sockid[4:20] == bytes.fromhex(src)
    assert sockid[20:36] == bytes.fromhex(dst)
    interface, cookie_lo, cookie_hi = struct.unpack("=III", sockid[36:])
    assert interface == 0
    assert (cookie_lo, cookie_hi) == (0xFFFFFFFF, 0xFFFFFFFF)  # INET_DIAG_NOCOOKIE
    expected = (
        struct.pack("=IHHII", 72, 20, 1, 9, 0)
        + struct.pack("=BBBBI", family, 6, 0, 0, 0xFFF)
        + bytes.fromhex("9d781b5f" + src + dst)
        + struct.pack("=III", 0, 0xFFFFFFFF, 0xFFFFFFFF)
    )
    assert request == expected


ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
u32 = st.integers(0, 2**32 - 1)


@st.composite
def sock_infos(draw: st.DrawFn) -> sockdiag.SockInfo:
    family = draw(st.sampled_from([socket.AF_INET, socket.AF_INET6]))
    addr = ipv4 if family == socket.AF_INET else ipv6
    return sockdiag.SockInfo(
        family=family,
        state=draw(st.sampled_from(sorted(TCP_STATES))),
        timer=draw(st.integers(0, 4)),
        retrans=draw(st.integers(0, 255)),
        expires_ms=draw(u32),
        src=socket.inet_ntop(family, socket.inet_pton(family, draw(addr))),
        sport=draw(st.integers(0, 65535)),
        dst=socket.inet_ntop(family, socket.inet_pton(family, draw(addr))),
        dport=draw(st.integers(0, 65535)),
        cookie=draw(st.integers(0, 2**64 - 1)),
        inode=draw(u32),
        uid=draw(u32),
        rqueue=draw(u32),
        wqueue=draw(u32),
    )


@given(st.lists(sock_infos(), max_size=20))
def test_round_trip(infos: list[sockdiag.SockInfo]) -> None:
    raw = b"".join(sockdiag.encode_inet_diag_msg(i, seq=3) for i in infos)
    found, done = sockdiag.parse_messages(raw + sockdiag.encode_done(seq=3), seq=3)
    assert done
    assert found == infos


@given(st.binary(max_size=400))
def test_garbage_raises_only_diag_error(data: bytes) -> None:
    try:
        sockdiag.parse_messages(data)
    except sockdiag.DiagError:
        pass


@pytest.mark.parametrize("name", ["inet.bin", "inet6.bin"])
def test_scan_agrees_with_the_full_decoder(name: str) -> None:
    raw = (FIXTURES / name).read_bytes()
    infos, done = sockdiag.parse_messages(raw, seq=1)
    scanned, scan_done = sockdiag.scan_messages(raw, seq=1)
    assert done and scan_done
    assert [expires for _, expires in scanned] == [i.expires_ms for i in infos]
    for (ident, expires), info in zip(scanned, infos, strict=True):
        decoded = sockdiag.decode_ident(ident, expires)
        assert decoded.key == info.key
        assert (decoded.state, decoded.timer, decoded.retrans) == (
            info.state,
            info.timer,
            info.retrans,
        )
        assert sockdiag.ident_of(info) == ident


@given(st.binary(max_size=400))
def test_scan_garbage_raises_only_diag_error(data: bytes) -> None:
    raw = (FIXTURES / "inet.bin").read_bytes()
    for buffer in (data, raw[: len(data)], raw[:88] + data):
        try:
            sockdiag.scan_messages(buffer)
        except sockdiag.DiagError:
            pass
