"""The middlebox without sockets: frames in, frames and events out."""

from __future__ import annotations

import ipaddress

from proxy import neighbours, rules, wire
from proxy.middlebox import Middlebox
from tcplab import events

FRONT_MAC = bytes.fromhex("02000000000a")
BACK_MAC = bytes.fromhex("02000000000b")
CLIENT_MAC = bytes.fromhex("020000000001")
SERVER_MAC = bytes.fromhex("020000000002")
CLIENT = "192.0.2.1"
SERVER = "198.51.100.1"


def box(*specs: tuple[str, str], mtu: int = 1500, **kw: object) -> Middlebox:
    ports = [
        neighbours.Port(
            "mc0",
            FRONT_MAC,
            mtu,
            (ipaddress.ip_interface("192.0.2.254/24"), ipaddress.ip_interface("2001:db8:1::ff/64")),
        ),
        neighbours.Port(
            "ms0",
            BACK_MAC,
            mtu,
            (
                ipaddress.ip_interface("198.51.100.254/24"),
                ipaddress.ip_interface("2001:db8:2::ff/64"),
            ),
        ),
    ]
    engine = rules.RuleEngine([rules.parse_cli(a, t) for a, t in specs])
    mb = Middlebox(ports, engine=engine, **kw)  # type: ignore[arg-type]
    mb.neighbours.learn("ms0", SERVER, SERVER_MAC, 0.0)
    mb.neighbours.learn("mc0", CLIENT, CLIENT_MAC, 0.0)
    return mb


def from_client(flags: int, seq: int, ack: int = 0, payload: bytes = b"") -> bytes:
    return wire.build_tcp_frame(
        CLIENT_MAC, FRONT_MAC, CLIENT, SERVER, 40000, 7007, seq, ack, flags, payload=payload
    )


def from_server(flags: int, seq: int, ack: int = 0) -> bytes:
    return wire.build_tcp_frame(SERVER_MAC, BACK_MAC, SERVER, CLIENT, 7007, 40000, seq, ack, flags)


def segments(out: object) -> list[dict[str, object]]:
    return [f for name, f in out.events if name == events.SEGMENT]  # type: ignore[attr-defined]


def test_forwarded_frame_is_routed_rewritten_and_still_valid() -> None:
    mb = box()
    out = mb.receive("mc0", from_client(wire.SYN, 100), 1.0)
    assert len(out.frames) == 1
    port, frame = out.frames[0]
    assert port == "ms0"
    parsed = wire.parse_frame(bytes(frame))
    assert parsed.eth.dst == SERVER_MAC and parsed.eth.src == BACK_MAC
    assert isinstance(parsed.ip, wire.IPv4) and parsed.ip.ttl == 63
    assert wire.ipv4_header_checksum_ok(bytes(frame), parsed)
    assert wire.tcp_checksum_ok(bytes(frame), parsed)
    (seg,) = segments(out)
    assert seg["tags"] == ["syn"] and seg["verdict"] == "pass" and seg["dir"] == "c2s"


def test_drop_syn_ack_only_the_first() -> None:
    mb = box(("drop", "syn-ack@1"))
    mb.receive("mc0", from_client(wire.SYN, 100), 0.0)
    first = mb.receive("ms0", from_server(wire.SYN | wire.ACK, 500, 101), 0.1)
    again = mb.receive("ms0", from_server(wire.SYN | wire.ACK, 500, 101), 1.1)
    assert first.frames == [] and segments(first)[0]["verdict"] == "drop"
    assert segments(first)[0]["rule"] == "drop-syn-ack@1"
    assert [p for p, _ in again.frames] == ["mc0"]
    assert segments(again)[0]["tags"] == ["syn-ack", "retransmit"]
    assert mb.counters["dropped_rule"] == 1


def test_delay_comes_out_at_its_time() -> None:
    mb = box(("delay", "client:syn@1=50ms"))
    out = mb.receive("mc0", from_client(wire.SYN, 100), 10.0)
    assert out.frames == [] and segments(out)[0]["delay_ms"] == 50.0
    assert mb.next_wakeup() == 10.05
    assert mb.tick(10.049).frames == []
    assert [p for p, _ in mb.tick(10.05).frames] == ["ms0"]


def test_hold_until_released() -> None:
    mb = box(("hold", "server:fin@1"))
    mb.receive("mc0", from_client(wire.SYN, 100), 0.0)
    out = mb.receive("ms0", from_server(wire.FIN | wire.ACK, 500, 101), 0.1)
    assert out.frames == [] and mb.held.held_by() == {"hold-server:fin@1": 1}
    released = mb.release(5.0)
    assert [p for p, _ in released.frames] == ["mc0"]
    assert segments(released)[0]["verdict"] == "release"


def test_reset_injects_in_window_rsts_both_ways() -> None:
    mb = box(("reset", "data@1"))
    mb.receive("mc0", from_client(wire.SYN, 100), 0.0)
    mb.receive("ms0", from_server(wire.SYN | wire.ACK, 500, 101), 0.0)
    mb.receive("mc0", from_client(wire.ACK, 101, 501), 0.0)
    out = mb.receive("mc0", from_client(wire.PSH | wire.ACK, 101, 501, b"hello\n"), 0.0)
    sent = {port: wire.parse_frame(bytes(frame)) for port, frame in out.frames}
    to_server, to_client = sent["ms0"], sent["mc0"]
    assert to_server.tcp is not None and to_client.tcp is not None
    assert to_server.tcp.flags == wire.RST | wire.ACK and to_server.tcp.seq == 101
    assert to_client.tcp.flags == wire.RST | wire.ACK and to_client.tcp.seq == 501
    assert to_server.eth.dst == SERVER_MAC and to_client.eth.dst == CLIENT_MAC
    verdicts = [s["verdict"] for s in segments(out)]
    assert verdicts == ["reset", "inject", "inject"]


def test_frame_over_the_egress_mtu_is_dropped_and_said() -> None:
    mb = box(mtu=1000)
    out = mb.receive("mc0", from_client(wire.ACK, 1, 1, b"x" * 1200), 0.0)
    assert out.frames == []
    ((name, fields),) = out.events
    assert name == events.FRAME_DROPPED and fields["reason"] == "mtu"
    assert fields["bytes"] == 1240 and fields["mtu"] == 1000


def test_unknown_next_hop_is_resolved_before_sending() -> None:
    mb = box()
    mb.neighbours = neighbours.NeighbourTable(mb.ports.values())  # forget every MAC
    out = mb.receive("mc0", from_client(wire.SYN, 100), 0.0)
    ((port, request),) = out.frames
    assert port == "ms0" and request[:6] == b"\xff" * 6  # ARP who-has
    assert neighbours.parse_neighbour_frame(request) == ("198.51.100.254", BACK_MAC)
    reply = wire.build_ethernet(BACK_MAC, SERVER_MAC, wire.ETH_P_ARP, request[14:])
    reply = (
        reply[:14] + reply[14:20] + b"\x00\x02" + SERVER_MAC + bytes([198, 51, 100, 1]) + reply[32:]
    )
    released = mb.receive("ms0", reply, 0.01)
    ((port, frame),) = released.frames
    assert port == "ms0" and frame[:6] == SERVER_MAC
    assert wire.parse_frame(bytes(frame)).tcp is not None


def test_ipv6_solicitation_and_advertisement() -> None:
    solicit = neighbours.neighbor_solicitation(BACK_MAC, "2001:db8:2::ff", "2001:db8:2::1")
    parsed = wire.parse_frame(solicit)
    assert parsed.eth.dst == bytes.fromhex("3333ff000001")
    assert isinstance(parsed.ip, wire.IPv6) and parsed.ip.dst == "ff02::1:ff00:1"
    assert neighbours.parse_neighbour_frame(solicit) == ("2001:db8:2::ff", BACK_MAC)


def test_checksum_left_for_offload_is_completed() -> None:
    mb = box()
    frame = bytearray(from_client(wire.SYN, 100))
    parsed = wire.parse_frame(bytes(frame))
    assert parsed.tcp is not None
    frame[parsed.tcp.offset + 16 : parsed.tcp.offset + 18] = b"\x12\x34"  # partial sum
    out = mb.receive("mc0", bytes(frame), 0.0, csum_not_ready=True)
    ((_, sent),) = out.frames
    assert wire.tcp_checksum_ok(bytes(sent), wire.parse_frame(bytes(sent)))
    assert mb.counters["checksums_completed"] == 1


def test_frames_for_the_middlebox_itself_and_garbage() -> None:
    mb = box()
    ping = wire.build_ethernet(
        FRONT_MAC, CLIENT_MAC, wire.ETH_P_IP, wire.build_ipv4(CLIENT, "192.0.2.254", 1, b"\0" * 8)
    )
    assert mb.receive("mc0", ping, 0.0).frames == []
    garbage = FRONT_MAC + CLIENT_MAC + b"\x08\x00" + b"\x45\x00\xff\xff"
    out = mb.receive("mc0", garbage, 0.0)
    assert out.frames == [] and out.events[0][1]["reason"] == "malformed"
    assert mb.counters["to_kernel"] == 1 and mb.counters["dropped_malformed"] == 1


def test_ttl_one_is_not_forwarded() -> None:
    mb = box()
    frame = bytearray(from_client(wire.SYN, 100))
    frame[14 + 8] = 1
    out = mb.receive("mc0", bytes(frame), 0.0)
    assert out.frames == [] and mb.counters["dropped_ttl"] == 1


def test_control_mode_logs_only_control_segments() -> None:
    mb = box(log_segments="control")
    mb.receive("mc0", from_client(wire.SYN, 100), 0.0)
    mb.receive("ms0", from_server(wire.SYN | wire.ACK, 500, 101), 0.0)
    mb.receive("mc0", from_client(wire.ACK, 101, 501), 0.0)
    out = mb.receive("mc0", from_client(wire.PSH | wire.ACK, 101, 501, b"data"), 0.0)
    assert segments(out) == [] and len(out.frames) == 1
