"""The middlebox without sockets: frames in, frames and records out."""

from __future__ import annotations

import ipaddress

import pytest

from core import rules as grammar
from core.events import VERDICTS, FrameDropped, Record, Segment
from proxy import headers, lanes, neighbour_frames, neighbours, rules, wire
from proxy.counters import DROP_LOG_BURST, DROP_LOG_RATE, DropLog
from proxy.lanes import MAX_PARKED, ExpressLane
from proxy.middlebox import Middlebox, Output
from proxy.verdicts import stamp_sent

FRONT_MAC = bytes.fromhex("02000000000a")
BACK_MAC = bytes.fromhex("02000000000b")
CLIENT_MAC = bytes.fromhex("020000000001")
SERVER_MAC = bytes.fromhex("020000000002")
CLIENT = "192.0.2.1"
SERVER = "198.51.100.1"
WALL = 1_700_000_000.0
"""The wall clock at ``now`` 0: arrivals are ``WALL + now`` unless a test
needs one that is not."""


def box(
    *specs: tuple[str, str], mtu: int = 1500, pace: float | None = None, **kw: object
) -> Middlebox:
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
    engine = rules.RuleEngine([grammar.parse_cli(a, t) for a, t in specs], pace=pace)
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


def receive(
    mb: Middlebox,
    port: str,
    frame: bytes,
    now: float,
    arrival: float | None = None,
    *,
    csum_not_ready: bool = False,
) -> Output:
    return mb.receive(
        port,
        frame,
        now,
        arrival=WALL + now if arrival is None else arrival,
        csum_not_ready=csum_not_ready,
    )


def tick(mb: Middlebox, now: float) -> Output:
    return mb.tick(now, WALL + now)


def segments(out: Output) -> list[Segment]:
    return [r for r in out.records if isinstance(r, Segment)]


def drops(out: Output) -> list[FrameDropped]:
    return [r for r in out.records if isinstance(r, FrameDropped)]


def handshake(mb: Middlebox) -> None:
    receive(mb, "mc0", from_client(wire.SYN, 100), 0.0)
    receive(mb, "ms0", from_server(wire.SYN | wire.ACK, 500, 101), 0.0)
    receive(mb, "mc0", from_client(wire.ACK, 101, 501), 0.0)


def test_forwarded_frame_is_routed_rewritten_and_still_valid() -> None:
    mb = box()
    out = receive(mb, "mc0", from_client(wire.SYN, 100), 1.0)
    assert len(out.frames) == 1
    port, frame = out.frames[0]
    assert port == "ms0"
    parsed = wire.parse_frame(bytes(frame))
    assert parsed.eth.dst == SERVER_MAC and parsed.eth.src == BACK_MAC
    assert isinstance(parsed.ip, wire.IPv4) and parsed.ip.ttl == 63
    assert wire.ipv4_header_checksum_ok(bytes(frame), parsed)
    assert wire.tcp_checksum_ok(bytes(frame), parsed)
    (seg,) = segments(out)
    assert seg.tags == ("syn",) and seg.verdict == "pass" and seg.dir == "c2s"
    assert out.segment == seg


def test_drop_syn_ack_only_the_first() -> None:
    mb = box(("drop", "syn-ack@1"))
    receive(mb, "mc0", from_client(wire.SYN, 100), 0.0)
    first = receive(mb, "ms0", from_server(wire.SYN | wire.ACK, 500, 101), 0.1)
    again = receive(mb, "ms0", from_server(wire.SYN | wire.ACK, 500, 101), 1.1)
    assert first.frames == [] and segments(first)[0].verdict == "drop"
    assert segments(first)[0].rule == "drop-syn-ack@1"
    assert [p for p, _ in again.frames] == ["mc0"]
    assert segments(again)[0].tags == ("syn-ack", "retransmit")
    assert mb.counters["dropped_rule"] == 1


def test_delay_comes_out_at_its_time() -> None:
    mb = box(("delay", "client:syn@1=50ms"))
    out = receive(mb, "mc0", from_client(wire.SYN, 100), 10.0)
    assert out.frames == [] and segments(out)[0].delay_ms == 50.0
    assert mb.next_wakeup() == 10.05
    assert tick(mb, 10.049).frames == []
    assert [p for p, _ in tick(mb, 10.05).frames] == ["ms0"]


def test_hold_until_released() -> None:
    mb = box(("hold", "server:fin@1"))
    receive(mb, "mc0", from_client(wire.SYN, 100), 0.0)
    out = receive(mb, "ms0", from_server(wire.FIN | wire.ACK, 500, 101), 0.1)
    assert out.frames == [] and mb.held.held_by() == {"hold-server:fin@1": 1}
    released = mb.release(5.0, wall=WALL + 5.0)
    assert [p for p, _ in released.frames] == ["mc0"]
    assert segments(released)[0].verdict == "release"


def test_reset_injects_in_window_rsts_both_ways() -> None:
    mb = box(("reset", "data@1"))
    handshake(mb)
    out = receive(mb, "mc0", from_client(wire.PSH | wire.ACK, 101, 501, b"hello\n"), 0.0)
    sent = {port: wire.parse_frame(bytes(frame)) for port, frame in out.frames}
    to_server, to_client = sent["ms0"], sent["mc0"]
    assert to_server.tcp is not None and to_client.tcp is not None
    assert to_server.tcp.flags == wire.RST | wire.ACK and to_server.tcp.seq == 101
    assert to_client.tcp.flags == wire.RST | wire.ACK and to_client.tcp.seq == 501
    assert to_server.eth.dst == SERVER_MAC and to_client.eth.dst == CLIENT_MAC
    verdicts = [s.verdict for s in segments(out)]
    assert verdicts == ["reset", "inject", "inject"]


def test_frame_over_the_egress_mtu_is_dropped_and_said() -> None:
    mb = box(mtu=1000)
    out = receive(mb, "mc0", from_client(wire.ACK, 1, 1, b"x" * 1200), 0.0)
    assert out.frames == []
    (record,) = out.records
    assert isinstance(record, FrameDropped) and record.reason == "mtu"
    assert record.bytes == 1240 and record.mtu == 1000


def test_unknown_next_hop_is_resolved_before_sending() -> None:
    mb = box()
    mb.neighbours = neighbours.NeighbourTable(mb.ports.values())  # forget every MAC
    out = receive(mb, "mc0", from_client(wire.SYN, 100), 0.0)
    ((port, sent),) = out.frames
    request = bytes(sent)
    assert port == "ms0" and request[:6] == b"\xff" * 6  # ARP who-has
    assert neighbour_frames.parse_neighbour_frame(request) == ("198.51.100.254", BACK_MAC)
    reply = headers.build_ethernet(BACK_MAC, SERVER_MAC, wire.ETH_P_ARP, request[14:])
    reply = (
        reply[:14] + reply[14:20] + b"\x00\x02" + SERVER_MAC + bytes([198, 51, 100, 1]) + reply[32:]
    )
    released = receive(mb, "ms0", reply, 0.01)
    ((port, frame),) = released.frames
    assert port == "ms0" and frame[:6] == SERVER_MAC
    assert wire.parse_frame(bytes(frame)).tcp is not None


def test_ipv6_solicitation_and_advertisement() -> None:
    solicit = neighbour_frames.neighbor_solicitation(BACK_MAC, "2001:db8:2::ff", "2001:db8:2::1")
    parsed = wire.parse_frame(solicit)
    assert parsed.eth.dst == bytes.fromhex("3333ff000001")
    assert isinstance(parsed.ip, wire.IPv6) and parsed.ip.dst == "ff02::1:ff00:1"
    assert neighbour_frames.parse_neighbour_frame(solicit) == ("2001:db8:2::ff", BACK_MAC)


def test_checksum_left_for_offload_is_completed() -> None:
    mb = box()
    frame = bytearray(from_client(wire.SYN, 100))
    parsed = wire.parse_frame(bytes(frame))
    assert parsed.tcp is not None
    frame[parsed.tcp.offset + 16 : parsed.tcp.offset + 18] = b"\x12\x34"  # partial sum
    out = receive(mb, "mc0", bytes(frame), 0.0, csum_not_ready=True)
    ((_, sent),) = out.frames
    assert wire.tcp_checksum_ok(bytes(sent), wire.parse_frame(bytes(sent)))
    assert mb.counters["checksums_completed"] == 1


def test_frames_for_the_middlebox_itself_and_garbage() -> None:
    mb = box()
    ping = headers.build_ethernet(
        FRONT_MAC,
        CLIENT_MAC,
        wire.ETH_P_IP,
        headers.build_ipv4(CLIENT, "192.0.2.254", 1, b"\0" * 8),
    )
    assert receive(mb, "mc0", ping, 0.0).frames == []
    garbage = FRONT_MAC + CLIENT_MAC + b"\x08\x00" + b"\x45\x00\xff\xff"
    out = receive(mb, "mc0", garbage, 0.0)
    assert out.frames == []
    (record,) = out.records
    assert isinstance(record, FrameDropped) and record.reason == "malformed"
    assert mb.counters["to_kernel"] == 1 and mb.counters["dropped_malformed"] == 1


def test_ttl_one_is_not_forwarded() -> None:
    mb = box()
    frame = bytearray(from_client(wire.SYN, 100))
    frame[14 + 8] = 1
    out = receive(mb, "mc0", bytes(frame), 0.0)
    assert out.frames == [] and mb.counters["dropped_ttl"] == 1


def test_control_mode_logs_only_control_segments() -> None:
    mb = box(log_segments="control")
    syn = receive(mb, "mc0", from_client(wire.SYN, 100), 0.0)
    receive(mb, "ms0", from_server(wire.SYN | wire.ACK, 500, 101), 0.0)
    receive(mb, "mc0", from_client(wire.ACK, 101, 501), 0.0)
    out = receive(mb, "mc0", from_client(wire.PSH | wire.ACK, 101, 501, b"data"), 0.0)
    assert segments(out) == [] and len(out.frames) == 1
    assert [s.tags for s in segments(syn)] == [("syn",)]  # the mode does log control segments


# --- when a record's fact happened ----------------------------------------------


def test_records_carry_the_arrival_time_not_the_scheduling_clock() -> None:
    mb = box(("drop", "syn-ack@1"), mtu=1000)
    passed = receive(mb, "mc0", from_client(wire.SYN, 100), 1.0, arrival=WALL + 123.25)
    (seg,) = segments(passed)
    assert seg.verdict == "pass" and seg.ts == WALL + 123.25
    assert seg.sent_ts is None  # the shell stamps it when it has sent the frame
    dropped = receive(
        mb, "ms0", from_server(wire.SYN | wire.ACK, 500, 101), 2.0, arrival=WALL + 7.5
    )
    (seg,) = segments(dropped)
    assert seg.verdict == "drop" and seg.ts == WALL + 7.5
    too_big = receive(mb, "mc0", from_client(wire.ACK, 1, 1, b"x" * 1200), 3.0, arrival=WALL + 9.0)
    (record,) = drops(too_big)
    assert record.reason == "mtu" and record.ts == WALL + 9.0
    garbage = FRONT_MAC + CLIENT_MAC + b"\x08\x00" + b"\x45\x00\xff\xff"
    (record,) = drops(receive(mb, "mc0", garbage, 4.0, arrival=WALL + 11.0))
    assert record.reason == "malformed" and record.ts == WALL + 11.0


def test_injected_rsts_carry_the_arrival_of_the_segment_they_answer() -> None:
    mb = box(("reset", "data@1"))
    handshake(mb)
    data = from_client(wire.PSH | wire.ACK, 101, 501, b"hello\n")
    out = receive(mb, "mc0", data, 5.0, arrival=WALL + 42.0)
    assert [(s.verdict, s.ts) for s in segments(out)] == [
        ("reset", WALL + 42.0),
        ("inject", WALL + 42.0),
        ("inject", WALL + 42.0),
    ]


def test_unresolved_next_hop_drop_is_dated_by_the_tick_wall_clock() -> None:
    mb = box()
    mb.neighbours = neighbours.NeighbourTable(mb.ports.values())  # forget every MAC
    receive(mb, "mc0", from_client(wire.SYN, 100), 0.0)
    given_up: list[tuple[float, FrameDropped]] = []
    for now in (1.0, 2.0, 3.0, 4.0, 5.0):
        given_up += [(now, r) for r in drops(mb.tick(now, WALL + 1000 + now))]
    ((now, record),) = given_up
    assert record.reason == "unresolved" and record.frames == 1
    assert record.ts == WALL + 1000 + now  # the tick's wall clock, not an arrival


def express_lane_and_its_fin() -> tuple[Middlebox, ExpressLane, bytes]:
    """A middlebox whose established connection went to the express lane
    (added at 0.01), and the client's FIN that takes it back."""
    mb = mirrored_box(log_segments="control")
    established(mb)
    ack = from_client(wire.ACK, 101, 501, gateway=SERVER_MAC)
    (lane,) = receive(mb, "mc0", ack, 0.0).express_add
    mb.express_done(lane, "add", 0.01)
    fin = from_client(wire.FIN | wire.ACK, 101, 501, gateway=SERVER_MAC)
    return mb, lane, fin


def test_parked_express_segment_keeps_its_own_arrival() -> None:
    mb, lane, fin = express_lane_and_its_fin()
    assert receive(mb, "mc0", fin, 0.02, arrival=WALL + 0.02).records == []
    done = mb.express_done(lane, "remove", 0.5)
    (seg,) = segments(done)
    assert seg.tags == ("fin",) and seg.ts == WALL + 0.02


def test_a_parked_frame_is_counted_once_when_it_is_let_go() -> None:
    mb, lane, fin = express_lane_and_its_fin()
    before = dict(mb.counters)
    receive(mb, "mc0", fin, 0.02, arrival=WALL + 0.02)
    mb.express_done(lane, "remove", 0.5)
    assert mb.counters["frames_in"] == before["frames_in"] + 1
    assert mb.counters["segments"] == before["segments"] + 1


# --- segments the middlebox keeps: logged on arrival and when they leave ---------


def test_delay_rule_logs_delay_on_arrival_and_release_when_it_leaves() -> None:
    mb = box(("delay", "client:syn@1=50ms"))
    arrival = WALL + 300.0
    out = receive(mb, "mc0", from_client(wire.SYN, 100), 10.0, arrival=arrival)
    (delayed,) = segments(out)
    assert out.frames == []
    assert delayed.verdict == "delay" and delayed.delay_ms == 50.0
    assert delayed.ts == arrival and delayed.kept_ms is None
    assert delayed.rule == "delay-client:syn@1"
    early = tick(mb, 10.049)
    assert early.frames == [] and early.records == []
    due = mb.tick(10.05, arrival + 0.05)
    (release,) = segments(due)
    assert [p for p, _ in due.frames] == ["ms0"]
    assert release.verdict == "release" and release.ts == arrival
    assert release.kept_ms == pytest.approx(50.0, abs=0.01)
    assert release.delay_ms == 50.0 and release.rule == "delay-client:syn@1"
    assert release.sent_ts is None
    # leaving now, the shell stamps it
    (stamped,) = stamp_sent(due.records, arrival + 0.0502)
    assert isinstance(stamped, Segment) and stamped.sent_ts == arrival + 0.0502
    assert tick(mb, 11.0).records == []  # logged once


def test_release_of_a_delay_says_how_long_it_was_really_kept() -> None:
    mb = box(("delay", "client:syn@1=50ms"))
    receive(mb, "mc0", from_client(wire.SYN, 100), 10.0)
    late = tick(mb, 10.2)  # the shell woke up late
    (release,) = segments(late)
    assert release.kept_ms == pytest.approx(200.0, abs=0.01) and release.delay_ms == 50.0


def test_paced_segment_is_logged_only_when_it_leaves() -> None:
    mb = box(pace=0.2)
    arrival = WALL + 77.0
    out = receive(mb, "mc0", from_client(wire.SYN, 100), 1.0, arrival=arrival)
    assert out.frames == [] and out.records == []
    assert mb.next_wakeup() == pytest.approx(1.2)
    early = tick(mb, 1.1)
    assert early.frames == [] and early.records == []
    due = mb.tick(1.2, arrival + 0.2)
    (seg,) = segments(due)
    assert [p for p, _ in due.frames] == ["ms0"]
    assert seg.verdict == "pass" and seg.delay_ms == 200.0 and seg.ts == arrival
    assert seg.kept_ms is None and seg.rule is None and seg.sent_ts is None
    assert tick(mb, 5.0).records == []  # logged once


def test_hold_logs_hold_then_release_with_kept_ms_and_no_delay() -> None:
    mb = box(("hold", "server:fin@1"))
    receive(mb, "mc0", from_client(wire.SYN, 100), 0.0)
    arrival = WALL + 0.1
    out = receive(mb, "ms0", from_server(wire.FIN | wire.ACK, 500, 101), 0.1, arrival=arrival)
    (held,) = segments(out)
    assert held.verdict == "hold" and held.rule == "hold-server:fin@1" and held.ts == arrival
    assert held.delay_ms is None and held.kept_ms is None
    assert tick(mb, 3.0).records == []  # a hold does not end by itself
    released = mb.release(5.0, wall=WALL + 5.0)
    (release,) = segments(released)
    assert release.verdict == "release" and release.ts == arrival
    assert release.kept_ms == pytest.approx(4900.0, abs=0.01)
    assert release.delay_ms is None and release.rule == "hold-server:fin@1"
    assert mb.release(6.0, wall=WALL + 6.0).records == []


def test_control_mode_does_not_log_a_paced_data_segment() -> None:
    mb = box(log_segments="control", pace=0.1)
    receive(mb, "mc0", from_client(wire.SYN, 100), 0.0)
    receive(mb, "ms0", from_server(wire.SYN | wire.ACK, 500, 101), 0.1)
    handshake_logged = tick(mb, 0.3)
    assert sorted(s.tags for s in segments(handshake_logged)) == [("syn",), ("syn-ack",)]
    receive(mb, "mc0", from_client(wire.ACK, 101, 501), 0.3)
    out = receive(mb, "mc0", from_client(wire.PSH | wire.ACK, 101, 501, b"data"), 0.31)
    assert out.records == [] and out.frames == []
    due = tick(mb, 0.5)
    assert len(due.frames) == 2  # the handshake's ACK and the data left...
    assert [s.tags for s in segments(due)] == [("handshake-ack",)]  # ...only the ACK is logged


# --- stamp_sent -------------------------------------------------------------------


def a_segment(verdict: str, sent_ts: float | None = None) -> Segment:
    return Segment(
        ts=WALL,
        conn=f"{CLIENT}:40000-{SERVER}:7007",
        dir="c2s",
        flags="S",
        seq=100,
        ack=0,
        rseq=0,
        rack=0,
        len=0,
        verdict=verdict,  # type: ignore[arg-type]
        sent_ts=sent_ts,
    )


def test_stamp_sent_stamps_only_segments_leaving_now_and_not_yet_stamped() -> None:
    records: list[Record] = [a_segment(v) for v in VERDICTS]
    already = a_segment("pass", sent_ts=WALL + 1.0)
    other = FrameDropped(ts=WALL, reason="mtu")
    records += [already, other]
    stamped = stamp_sent(records, WALL + 2.0)
    assert len(stamped) == len(records)
    by_verdict = {r.verdict: r.sent_ts for r in stamped[: len(VERDICTS)] if isinstance(r, Segment)}
    assert by_verdict == {
        "pass": WALL + 2.0,
        "duplicate": WALL + 2.0,
        "inject": WALL + 2.0,
        "release": WALL + 2.0,
        "drop": None,
        "delay": None,
        "hold": None,
        "reset": None,
    }
    assert stamped[-2] == already  # an existing sent_ts is kept
    assert stamped[-1] is other
    # everything else about a record is left alone
    assert stamped[0] == a_segment("pass", sent_ts=WALL + 2.0)
    # the records given are not changed (they are frozen; the list is new)
    assert all(isinstance(r, Segment) and r.sent_ts is None for r in records[: len(VERDICTS)])


def test_stamp_sent_on_a_real_output() -> None:
    mb = box(("reset", "data@1"))
    handshake(mb)
    out = receive(mb, "mc0", from_client(wire.PSH | wire.ACK, 101, 501, b"hello\n"), 1.0)
    stamped = [r for r in stamp_sent(out.records, WALL + 1.001) if isinstance(r, Segment)]
    assert [(s.verdict, s.sent_ts) for s in stamped] == [
        ("reset", None),
        ("inject", WALL + 1.001),
        ("inject", WALL + 1.001),
    ]


# --- the express lane ---------------------------------------------------------------


def established(mb: Middlebox) -> None:
    # addressed to the gateway MACs the endpoints see
    front, back = mb.ports["mc0"].mac, mb.ports["ms0"].mac
    receive(mb, "mc0", from_client(wire.SYN, 100, gateway=front), 0.0)
    receive(mb, "ms0", from_server(wire.SYN | wire.ACK, 500, 101, gateway=back), 0.0)


def mirrored_box(*specs: tuple[str, str], **kw: object) -> Middlebox:
    """Ports wearing the other side's MAC, as the lab builds them."""
    mb = box(*specs, **kw)  # type: ignore[arg-type]
    front, back = mb.ports["mc0"], mb.ports["ms0"]
    mb.ports["mc0"] = neighbours.Port("mc0", SERVER_MAC, front.mtu, front.addresses)
    mb.ports["ms0"] = neighbours.Port("ms0", CLIENT_MAC, back.mtu, back.addresses)
    mb.express_enabled = True
    return mb


def test_express_lane_after_the_handshake_and_back_for_the_fin() -> None:
    mb = mirrored_box(log_segments="control")
    established(mb)
    out = receive(mb, "mc0", from_client(wire.ACK, 101, 501, gateway=SERVER_MAC), 0.0)
    (lane,) = out.express_add
    assert (lane.client, lane.server) == ((CLIENT, 40000), (SERVER, 7007))
    assert mb.express_done(lane, "add", 0.01).frames == [] and lane.state == "on"
    # the client's FIN waits until the lane is gone...
    fin = receive(mb, "mc0", from_client(wire.FIN | wire.ACK, 101, 501, gateway=SERVER_MAC), 0.02)
    assert fin.frames == [] and fin.express_remove == [lane]
    # ... then goes through the proxy, tagged and logged
    done = mb.express_done(lane, "remove", 0.03)
    assert [p for p, _ in done.frames] == ["ms0"]
    assert segments(done)[0].tags == ("fin",)
    assert mb.lanes == {}


def test_a_lane_asked_to_leave_while_installing_waits_for_its_removal() -> None:
    mb = mirrored_box(log_segments="control")
    established(mb)
    (lane,) = receive(
        mb, "mc0", from_client(wire.ACK, 101, 501, gateway=SERVER_MAC), 0.0
    ).express_add
    fin = from_client(wire.FIN | wire.ACK, 101, 501, gateway=SERVER_MAC)
    assert receive(mb, "mc0", fin, 0.0).frames == []
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
        out = receive(mb, "mc0", ack, 0.0)
        assert len(out.frames) == 1 and out.express_add == []
    # a data rule added at run time recalls the lanes there are
    mb = mirrored_box(log_segments="control")
    established(mb)
    (lane,) = receive(
        mb, "mc0", from_client(wire.ACK, 101, 501, gateway=SERVER_MAC), 0.0
    ).express_add
    mb.express_done(lane, "add", 0.0)
    mb.engine.add(grammar.parse_cli("drop", "data@1"))
    assert mb.express_recall().express_remove == [lane]


def test_lane_kind_follows_the_macs() -> None:
    ports = (FRONT_MAC, BACK_MAC)
    mirrored = (BACK_MAC, FRONT_MAC)
    assert lanes.kind_for(mirrored, ports, rewrite=False) == "mirrored"
    assert lanes.kind_for(mirrored, ports, rewrite=True) == "mirrored"
    assert lanes.kind_for((CLIENT_MAC, SERVER_MAC), ports, rewrite=False) is None
    assert lanes.kind_for((CLIENT_MAC, SERVER_MAC), ports, rewrite=True) == lanes.Rewrite(
        to_server=(SERVER_MAC, BACK_MAC), to_client=(CLIENT_MAC, FRONT_MAC)
    )
    assert lanes.kind_for((None, SERVER_MAC), ports, rewrite=True) is None


def test_a_lane_rewrites_macs_where_they_are_not_mirrored() -> None:
    mb = box(log_segments="control")
    mb.express_enabled = mb.express_rewrite = True
    established(mb)
    (lane,) = receive(mb, "mc0", from_client(wire.ACK, 101, 501), 0.0).express_add
    assert lane.rewrite == lanes.Rewrite(
        to_server=(SERVER_MAC, BACK_MAC), to_client=(CLIENT_MAC, FRONT_MAC)
    )
    assert mb.counters["express_connections"] == 1
    # with mirrored MACs the frames cross unchanged: no rewriting
    mb = mirrored_box(log_segments="control")
    mb.express_rewrite = True
    established(mb)
    (lane,) = receive(
        mb, "mc0", from_client(wire.ACK, 101, 501, gateway=SERVER_MAC), 0.0
    ).express_add
    assert lane.rewrite is None


def test_no_lane_for_a_connection_the_ports_do_not_route_as_client_and_server() -> None:
    mb = box(log_segments="control")
    mb.express_enabled = mb.express_rewrite = True
    # the "client" is on the back port: the server side opened it
    receive(mb, "ms0", from_server(wire.SYN, 500), 0.0)
    receive(mb, "mc0", from_client(wire.SYN | wire.ACK, 100, 501), 0.0)
    out = receive(mb, "ms0", from_server(wire.ACK, 501, 101), 0.0)
    assert len(out.frames) == 1 and out.express_add == []


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


# --- bounds: drop records, parked frames, frames waiting for a MAC -----------------

GARBAGE = FRONT_MAC + CLIENT_MAC + b"\x08\x00" + b"\x45\x00\xff\xff"
"""Addressed to the front port, but not an IPv4 packet: dropped as malformed."""


def no_route_frame(dst: str = "203.0.113.5") -> bytes:
    return wire.build_tcp_frame(CLIENT_MAC, FRONT_MAC, CLIENT, dst, 40000, 80, 1, 0, wire.SYN)


def test_frame_dropped_is_rate_limited_per_reason_and_counters_keep_the_totals() -> None:
    mb = box()
    burst = [r for _ in range(1000) for r in drops(receive(mb, "mc0", GARBAGE, 0.0))]
    # a burst at one instant: DROP_LOG_BURST lines, the rest counted
    assert len(burst) == DROP_LOG_BURST
    assert all(r.reason == "malformed" and r.suppressed is None for r in burst)
    assert mb.counters["dropped_malformed"] == 1000
    # another reason has its own budget
    (other,) = drops(receive(mb, "mc0", no_route_frame(), 0.0))
    assert other.reason == "no_route" and other.dst == "203.0.113.5"
    # a second later the bucket is full again; the next line says what it skipped
    (after,) = drops(receive(mb, "mc0", GARBAGE, 1.0))
    assert after.suppressed == 1000 - DROP_LOG_BURST
    assert mb.drop_log.suppressed() == {}


def test_a_steady_flood_logs_at_the_rate_and_no_frame_goes_uncounted() -> None:
    mb = box()
    frames = 20_000  # 2,000 a second for 10 s
    logged: list[FrameDropped] = []
    for i in range(frames):
        logged += drops(receive(mb, "mc0", GARBAGE, i / 2000))
    assert mb.counters["dropped_malformed"] == frames
    # the burst, then DROP_LOG_RATE a second (give or take one at the edges)
    assert len(logged) <= DROP_LOG_BURST + DROP_LOG_RATE * 10 + 1
    assert len(logged) >= DROP_LOG_RATE * 10
    unlogged = mb.drop_log.suppressed().get("malformed", 0)
    assert len(logged) + sum(r.suppressed or 0 for r in logged) + unlogged == frames


def test_drop_log_token_bucket() -> None:
    log = DropLog(rate=2.0, burst=3)
    assert [log.admit("x", 0.0) for _ in range(5)] == [0, 0, 0, None, None]
    assert log.admit("x", 0.25) is None  # half a token
    assert log.admit("x", 0.5) == 3  # one token: three frames were skipped
    assert log.admit("x", 0.5, frames=7) is None
    assert log.suppressed() == {"x": 7}
    assert log.admit("y", 0.5) == 0


def test_frames_refused_a_place_in_the_resolution_queue_are_counted() -> None:
    mb = box()
    mb.neighbours = neighbours.NeighbourTable(mb.ports.values())  # forget every MAC
    records: list[FrameDropped] = []
    for i in range(100):
        syn = wire.build_tcp_frame(
            CLIENT_MAC, FRONT_MAC, CLIENT, SERVER, 40000 + i, 7007, 1, 0, wire.SYN
        )
        records += drops(receive(mb, "mc0", syn, 0.0))
    waiting = neighbours.PENDING_PER_HOP
    assert mb.counters["dropped_unresolved"] == 100 - waiting
    assert len(records) == DROP_LOG_BURST
    assert records[0].reason == "unresolved" and records[0].dst == SERVER
    assert records[0].detail is not None and "wait for 198.51.100.1's MAC" in records[0].detail


def test_an_express_lane_parks_a_bounded_number_of_frames() -> None:
    mb, lane, fin = express_lane_and_its_fin()
    for _ in range(MAX_PARKED + 50):
        receive(mb, "mc0", fin, 0.02)
    assert len(lane.parked) == MAX_PARKED
    assert mb.counters["express_parked"] == MAX_PARKED
    assert mb.counters["dropped_queue_full"] == 50
