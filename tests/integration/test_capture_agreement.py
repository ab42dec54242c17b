"""Nothing is lost: the proxy's segment log and its pcapng agree with an
independent capture at both endpoints, in every forwarding mode.

The endpoints' captures are AF_PACKET sockets opened in the client's and
the server's namespaces on their lab interfaces, read and decoded here with
code of their own (nothing of :mod:`proxy` is used to read them), and the
pcapng is read block by block here too.  A TCP segment is compared by
direction, sequence and acknowledgment numbers, control flags and payload
length.  What must hold in every mode:

- every segment the proxy logged or captured was sent by that endpoint
  (no invention), and every one it logged as passed reached the other
  endpoint (no loss);
- the pcapng has exactly the frames the proxy counted (``frames_in``);
- every SYN, FIN and RST an endpoint sent is in the log (the picture is
  complete whatever the data logging);

and, by mode:

- ``--log-segments all``: the log has every segment each endpoint sent;
- ``--log-segments control --express off``: every frame still crosses the
  proxy: the pcapng has every segment each endpoint sent, the log only the
  control ones, and the proxy counted the rest;
- ``--log-segments control`` (express lane): the data rode the kernel, so
  the proxy saw fewer segments than were sent, and every byte arrived —
  with the lab's mirrored MACs (``u32`` filters) and with ports that keep
  their own MACs, as in compose (eBPF filters that rewrite them).
"""

from __future__ import annotations

import collections
import os
import socket
import struct
from pathlib import Path

import pytest
import trio

import proxy.__main__ as proxy_main
from core import netns
from core.events import ConversationDone, DaemonDone, Segment
from proxy import bpf_lane, bpf_prog
from tcplab import runner, topology
from tcplab.topology.model import CLIENT_IF, SERVER_IF

DEADLINE = 60
ETH_P_ALL = 0x0003  # include/uapi/linux/if_ether.h
PACKET_OUTGOING = 4  # include/uapi/linux/if_packet.h
TCP_SYN, TCP_FIN, TCP_RST = 0x02, 0x01, 0x04  # RFC 9293 §3.1
CONTROL = TCP_SYN | TCP_FIN | TCP_RST

Key = tuple[str, int, int, int, int]
"""(dir, seq, ack, control flags, payload length)."""


def tcp_of(frame: bytes) -> tuple[str, int, str, int, int, int, int, int] | None:
    """(src, sport, dst, dport, seq, ack, flags, payload length) of an
    Ethernet frame carrying TCP over IPv4 or IPv6; None for anything else."""
    if len(frame) < 14:
        return None
    ethertype = struct.unpack_from("!H", frame, 12)[0]
    if ethertype == 0x0800 and len(frame) >= 34 and frame[23] == 6:
        ihl = (frame[14] & 0x0F) * 4
        total = struct.unpack_from("!H", frame, 16)[0]
        src, dst = (
            socket.inet_ntop(socket.AF_INET, frame[26:30]),
            socket.inet_ntop(socket.AF_INET, frame[30:34]),
        )
        tcp, ip_payload = 14 + ihl, total - ihl
    elif ethertype == 0x86DD and len(frame) >= 54 and frame[20] == 6:
        ip_payload = struct.unpack_from("!H", frame, 18)[0]
        src = socket.inet_ntop(socket.AF_INET6, frame[22:38])
        dst = socket.inet_ntop(socket.AF_INET6, frame[38:54])
        tcp = 54
    else:
        return None
    if len(frame) < tcp + 20:
        return None
    sport, dport, seq, ack, offset, flags = struct.unpack_from("!HHIIBB", frame, tcp)
    return src, sport, dst, dport, seq, ack, flags, ip_payload - (offset >> 4) * 4


class Capture:
    """Every TCP frame on one endpoint's interface, both ways."""

    def __init__(self, ns: str, ifname: str) -> None:
        with netns.inside(ns):
            self.sock = socket.socket(
                socket.AF_PACKET, socket.SOCK_RAW | socket.SOCK_NONBLOCK, socket.htons(ETH_P_ALL)
            )
        self.sock.bind((ifname, ETH_P_ALL))
        self.sent: list[tuple[str, int, str, int, int, int, int, int]] = []
        self.received: list[tuple[str, int, str, int, int, int, int, int]] = []

    async def run(self) -> None:
        while True:
            await trio.lowlevel.wait_readable(self.sock)
            self.drain()

    def drain(self) -> None:
        while True:
            try:
                frame, address = self.sock.recvfrom(65536 + 64)
            except BlockingIOError:
                return
            tcp = tcp_of(frame)
            if tcp is not None:
                (self.sent if address[2] == PACKET_OUTGOING else self.received).append(tcp)


def keys(segments: list[tuple[str, int, str, int, int, int, int, int]], dir: str) -> list[Key]:
    return [(dir, seq, ack, flags & CONTROL, length) for *_, seq, ack, flags, length in segments]


def record_key(s: Segment) -> Key:
    flags = (TCP_SYN if "S" in s.flags else 0) | (TCP_FIN if "F" in s.flags else 0)
    return (s.dir, s.seq, s.ack, flags | (TCP_RST if "R" in s.flags else 0), s.len)


def pcapng_frames(path: Path) -> list[bytes]:
    """The packet data of every Enhanced Packet Block (pcapng: SHB 0x0A0D0D0A,
    EPB 6; little-endian, as the proxy writes it)."""
    data, frames, at = path.read_bytes(), [], 0
    while at + 12 <= len(data):
        kind, length = struct.unpack_from("<II", data, at)
        if length < 12 or at + length > len(data):
            raise AssertionError(f"pcapng block at {at} has a bad length {length}")
        if kind == 6:
            captured = struct.unpack_from("<I", data, at + 20)[0]
            frames.append(data[at + 28 : at + 28 + captured])
        at += length
    assert at == len(data), f"pcapng ends inside a block at {at}"
    return frames


def multiset_missing(wanted: list[Key], have: list[Key]) -> list[Key]:
    """What of ``wanted`` (with its repeats) ``have`` lacks."""
    return list((collections.Counter(wanted) - collections.Counter(have)).elements())


async def run_captured(
    tmp_path: Path, *proxy_args: str, mirrored_macs: bool = True
) -> tuple[runner.RunResult, Capture, Capture, list[bytes]]:
    pcap = tmp_path / "proxy.pcapng"
    options = proxy_main.parse_args([*proxy_args, "--pcap", str(pcap)])
    opts = runner.RunOptions(
        proxy=options, send=("x" * 1400,) * 40, server_close="immediate", observe_for=0.5
    )
    spec = topology.LabSpec(mirrored_macs=mirrored_macs)
    with trio.fail_after(DEADLINE), topology.lab(spec) as lab:
        client = Capture(lab.ns("cli"), CLIENT_IF)
        server = Capture(lab.ns("srv"), SERVER_IF)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.run)
                nursery.start_soon(server.run)
                result = await runner.run_in_lab(lab, opts)
                # the run has ended: its last frames are already queued
                client.drain()
                server.drain()
                nursery.cancel_scope.cancel()
        finally:
            client.sock.close()
            server.sock.close()
    assert not result.stray, "\n".join(result.stray)
    assert result.proxy_status == 0
    return result, client, server, pcapng_frames(pcap)


MODES = {
    "all": ("--log-segments", "all"),
    "control-no-express": ("--log-segments", "control", "--express", "off"),
    "control-express": ("--log-segments", "control"),
    # ports with their own MACs, as in compose: the lane rewrites them (eBPF)
    "control-express-rewrite": ("--log-segments", "control"),
}


def _bpf_unavailable() -> str | None:
    try:
        os.close(bpf_lane.load(bpf_prog.probe(), "tl_probe"))
    except OSError as exc:
        return f"eBPF programs cannot be loaded here: {exc}"
    return None


@pytest.mark.parametrize("mode", list(MODES))
async def test_log_and_pcapng_agree_with_both_endpoints(tmp_path: Path, mode: str) -> None:
    rewrite = mode.endswith("-rewrite")
    if rewrite and (why := _bpf_unavailable()) is not None:
        pytest.skip(why)
    result, client, server, frames = await run_captured(
        tmp_path, *MODES[mode], mirrored_macs=not rewrite
    )
    (done,) = result.of("proxy", DaemonDone)
    counters = done.counters or {}
    assert result.of("client", ConversationDone), "the client never finished"
    assert all(c.ok for c in result.of("client", ConversationDone))

    sent = keys(client.sent, "c2s") + keys(server.sent, "s2c")
    arrived = keys(server.received, "c2s") + keys(client.received, "s2c")
    logged = [record_key(s) for s in result.of("proxy", Segment)]
    passed = [record_key(s) for s in result.of("proxy", Segment) if s.verdict == "pass"]
    client_addr = client.sent[0][0]
    captured: list[Key] = [
        ("c2s" if t[0] == client_addr else "s2c", t[4], t[5], t[6] & CONTROL, t[7])
        for t in (tcp_of(f) for f in frames)
        if t is not None
    ]

    # nothing invented, nothing lost, nothing the proxy saw left out of its pcapng
    assert not multiset_missing(logged, sent), "logged but never sent"
    assert not multiset_missing(captured, sent), "in the pcapng but never sent"
    assert not multiset_missing(passed, arrived), "logged as passed but never arrived"
    assert len(frames) == counters["frames_in"] == done.captured, (counters, done.captured)
    # the picture is whole: every SYN, FIN and RST is in the log
    control = [k for k in sent if k[3]]
    assert control and not multiset_missing(control, logged), "a control segment not logged"

    if mode == "all":
        assert not multiset_missing(sent, logged), "a segment sent but not logged"
    elif mode == "control-no-express":
        assert not multiset_missing(sent, captured), "a segment sent but not in the pcapng"
        assert len(logged) < len(sent)
        assert counters["segments"] == len(captured)
    else:
        assert counters["express_connections"] == 1
        assert len(captured) < len(sent)
        payload = sum(k[4] for k in keys(server.received, "c2s"))
        assert payload >= 40 * 1401
