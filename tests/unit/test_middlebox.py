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


def from_client(
    flags: int, seq: int, ack: int = 0, payload: bytes = b"", gateway: bytes = FRONT_MAC
) -> bytes:
    return wire.build_tcp_frame(
        CLIENT_MAC, gateway, CLIENT, SERVER, 40000, 7007, seq, ack, flags, payload=payload
    )


def from_server(flags: int, seq: int, ack: int = 0, gateway: bytes = BACK_MAC) -> bytes:
    return wire.build_tcp_frame(SERVER_MAC, gateway, SERVER, CLIENT, 7007, 40000, seq, ack, flags)


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


def established(mb: Middlebox) -> None:
    # addressed to the gateway MACs the endpoints see
    front, back = mb.ports["mc0"].mac, mb.ports["ms0"].mac
    mb.receive("mc0", from_client(wire.SYN, 100, gateway=front), 0.0)
    mb.receive("ms0", from_server(wire.SYN | wire.ACK, 500, 101, gateway=back), 0.0)


def mirrored_box(*specs: tuple[str, str], **kw: object) -> Middlebox:
    """Ports wearing the other side's MAC, as the lab builds them."""
    mb = box(*specs, **kw)
    front, back = mb.ports["mc0"], mb.ports["ms0"]
    mb.ports["mc0"] = neighbours.Port("mc0", SERVER_MAC, front.mtu, front.addresses)
    mb.ports["ms0"] = neighbours.Port("ms0", CLIENT_MAC, back.mtu, back.addresses)
    mb.express_enabled = True
    return mb


def test_express_lane_after_the_handshake_and_back_for_the_fin() -> None:
    mb = mirrored_box(log_segments="control")
    established(mb)
    out = mb.receive("mc0", from_client(wire.ACK, 101, 501, gateway=SERVER_MAC), 0.0)
    (lane,) = out.express_add
    assert (lane.client, lane.server) == ((CLIENT, 40000), (SERVER, 7007))
    assert mb.express_done(lane, "add", 0.01).frames == [] and lane.state == "on"
    # the client's FIN waits until the lane is gone...
    fin = mb.receive("mc0", from_client(wire.FIN | wire.ACK, 101, 501, gateway=SERVER_MAC), 0.02)
    assert fin.frames == [] and fin.express_remove == [lane]
    # ... then goes through the proxy, tagged and logged
    done = mb.express_done(lane, "remove", 0.03)
    assert [p for p, _ in done.frames] == ["ms0"]
    assert segments(done)[0]["tags"] == ["fin"]
    assert mb.lanes == {}


def test_a_lane_asked_to_leave_while_installing_waits_for_its_removal() -> None:
    mb = mirrored_box(log_segments="control")
    established(mb)
    (lane,) = mb.receive(
        "mc0", from_client(wire.ACK, 101, 501, gateway=SERVER_MAC), 0.0
    ).express_add
    assert (
        mb.receive(
            "mc0", from_client(wire.FIN | wire.ACK, 101, 501, gateway=SERVER_MAC), 0.0
        ).frames
        == []
    )
    # the install finishing does not release the FIN: the filters are still there
    assert mb.express_done(lane, "add", 0.01).frames == []
    assert len(mb.express_done(lane, "remove", 0.02).frames) == 1


def test_no_express_lane_when_rules_need_data_or_macs_differ() -> None:
    for mb in (
        mirrored_box(("drop", "data@3"), log_segments="control"),
        box(log_segments="control"),  # MACs not mirrored
    ):
        mb.express_enabled = True
        established(mb)
        ack = from_client(wire.ACK, 101, 501, gateway=mb.ports["mc0"].mac)
        out = mb.receive("mc0", ack, 0.0)
        assert len(out.frames) == 1 and out.express_add == []
    # a data rule added at run time recalls the lanes there are
    mb = mirrored_box(log_segments="control")
    established(mb)
    (lane,) = mb.receive(
        "mc0", from_client(wire.ACK, 101, 501, gateway=SERVER_MAC), 0.0
    ).express_add
    mb.express_done(lane, "add", 0.0)
    mb.engine.add(rules.parse_cli("drop", "data@1"))
    assert mb.express_recall().express_remove == [lane]


def test_express_commands() -> None:
    from proxy import express

    add = express.add_commands(3, ("192.0.2.1", 40000), ("198.51.100.1", 7007), "mc0", "ms0")
    front, back = (" ".join(c) for c in add)
    assert "dev mc0 ingress prio 103" in front and "redirect dev ms0" in front
    assert "ip src 192.0.2.1/32" in front and "sport 40000" in front
    assert "ip src 198.51.100.1/32" in back and "redirect dev mc0" in back
    assert "match u8 0 0x7 at 33" in front  # no SYN, FIN or RST
    v6 = " ".join(
        express.add_commands(0, ("2001:db8:1::1", 1), ("2001:db8:2::1", 2), "mc0", "ms0")[0]
    )
    assert "protocol ipv6" in v6 and "at 53" in v6
    assert express.remove_commands(3, "mc0", "ms0")[1][-3:] == ["ingress", "prio", "103"]
