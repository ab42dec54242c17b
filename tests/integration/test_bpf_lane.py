"""The express lane where the middlebox's ports do not wear mirrored MACs
(as in a compose network): its filters are eBPF programs that rewrite the
Ethernet header (proxy/bpf_prog.py).  Skipped where eBPF programs cannot be
loaded (no CAP_BPF / CAP_SYS_ADMIN, a seccomp filter, an old kernel)."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import threading
import time
from typing import Any

import pytest
import trio

import proxy.__main__ as proxy_main
from core import netns
from core.events import DaemonDone, DaemonReady, Segment
from proxy import bpf_lane, bpf_prog
from proxy.options import ProxyOptions
from tcplab import causality, runner, topology

DEADLINE = 60
PORT = 9000
BLOCK = os.urandom(1 << 20)
MEGABYTES = 64


def _bpf_unavailable() -> str | None:
    try:
        fd = bpf_lane.load(bpf_prog.probe(), "tl_probe")
    except OSError as exc:
        return f"eBPF programs cannot be loaded here: {exc}"
    os.close(fd)
    return None


BPF_UNAVAILABLE = _bpf_unavailable()
pytestmark = pytest.mark.skipif(BPF_UNAVAILABLE is not None, reason=str(BPF_UNAVAILABLE))
RANDOM_MACS = topology.LabSpec(mirrored_macs=False)


def segment_tags(records: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    return [tuple(r["tags"]) for r in records if r.get("event") == "segment"]


async def test_rewrite_lane_carries_the_data_and_gives_the_teardown_back() -> None:
    """A conversation through the proxy with --log-segments control: the
    established connection rides the MAC-rewriting lane, and its handshake
    and teardown are seen, tagged and logged by the proxy."""
    proxy = proxy_main.parse_args(["--log-segments", "control"])
    opts = runner.RunOptions(
        proxy=proxy, observe_for=1.0, send=("x" * 1000,) * 50, server_close="immediate"
    )
    with trio.fail_after(DEADLINE), topology.lab(RANDOM_MACS) as lab:
        result = await runner.run_in_lab(lab, opts)
    assert not result.stray, "\n".join(result.stray)
    assert result.proxy_status == 0 and result.client_status == 0
    assert not causality.check(result.records)
    (ready,) = result.of("proxy", DaemonReady)
    assert ready.express and ready.express_rewrite
    (done,) = result.of("proxy", DaemonDone)
    counters = done.counters or {}
    assert counters["express_connections"] == 1
    assert not done.express_errors
    # 50 echoes of 1,001 bytes each way, and the proxy forwarded few of them
    assert counters["segments"] < 50
    tags = [s.tags for s in sorted(result.of("proxy", Segment), key=lambda s: s.ts)]
    assert tags[:3] == [("syn",), ("syn-ack",), ("handshake-ack",)]
    assert tags[-3:] == [("fin",), ("fin", "fin-ack"), ("fin-ack", "last-ack")]


class Sink:
    """Reads one connection to its end in the server namespace, hashing."""

    def __init__(self, lab: topology.Lab) -> None:
        with netns.inside(lab.ns("srv")):
            self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((lab.addr.server4, PORT))
        self.listener.listen(1)
        self.listener.settimeout(DEADLINE)
        self.digest = hashlib.sha256()
        self.received = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        conn.settimeout(DEADLINE)
        buffer = bytearray(1 << 20)
        with conn:
            while n := conn.recv_into(buffer):
                self.digest.update(memoryview(buffer)[:n])
                self.received += n
        self.listener.close()


def bulk(lab: topology.Lab) -> tuple[float, str, str]:
    """Bits per second client → server, and the sent and received sha256
    (blocking: run in a thread)."""
    sink = Sink(lab)
    sent = hashlib.sha256()
    with netns.inside(lab.ns("cli")):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with sock:
        sock.settimeout(DEADLINE)
        sock.connect((lab.addr.server4, PORT))
        start = time.perf_counter()
        for _ in range(MEGABYTES):
            sock.sendall(BLOCK)
            sent.update(BLOCK)
        sock.shutdown(socket.SHUT_WR)
        sink.thread.join(DEADLINE)
        elapsed = time.perf_counter() - start
    return sink.received * 8 / elapsed, sent.hexdigest(), sink.digest.hexdigest()


async def _read_records(
    stream: trio.abc.ReceiveStream, records: list[dict[str, Any]], ready: trio.Event
) -> None:
    """Collect the proxy's JSON lines; ``ready`` is set on ``daemon_ready``
    (or at the end of its output, if it never came)."""
    buffer = b""
    async for chunk in stream:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
            if records[-1].get("event") == "daemon_ready":
                ready.set()
    ready.set()


def express_leftovers(lab: topology.Lab) -> list[str]:
    """The middlebox's ingress filters and shadow veths (none once the
    proxy has exited)."""
    found = []
    with netns.inside(lab.ns("mbx")):
        for port in (topology.FRONT_IF, topology.BACK_IF):
            argv = ["tc", "filter", "show", "dev", port, "ingress"]
            shown = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
            found += shown.splitlines()
            try:
                found.append(f"{port}x: index {socket.if_nametoindex(port + 'x')}")
            except OSError:
                pass
    return found


async def test_bulk_transfer_rides_the_rewrite_lane_near_kernel_speed() -> None:
    """The bytes arrive intact, the connection entered the lane, the
    throughput is of the kernel's order (the ratio is printed), and the
    proxy leaves no filter behind."""
    with trio.fail_after(DEADLINE), topology.lab(RANDOM_MACS) as lab:
        topology.set_forwarding(lab, topology.Forwarding.KERNEL)
        kernel, sent, received = await trio.to_thread.run_sync(bulk, lab)
        assert sent == received
        topology.set_forwarding(lab, topology.Forwarding.PROXY)
        options = ProxyOptions(netns=lab.ns("mbx"), log_format="json", log_segments="control")
        records: list[dict[str, Any]] = []
        async with trio.open_nursery() as nursery:
            process = await trio.lowlevel.open_process(
                runner.daemon_argv("proxy", options), stdout=subprocess.PIPE
            )
            assert process.stdout is not None
            ready = trio.Event()
            nursery.start_soon(_read_records, process.stdout, records, ready)
            await ready.wait()
            assert records and records[-1]["event"] == "daemon_ready", records
            try:
                express, sent, received = await trio.to_thread.run_sync(bulk, lab)
            finally:
                process.terminate()
                assert await process.wait() == 0
        assert not express_leftovers(lab)
    assert sent == received
    (ready,) = [r for r in records if r["event"] == "daemon_ready"]
    assert ready["express_rewrite"] is True
    (done,) = [r for r in records if r["event"] == "daemon_done"]
    assert done["counters"]["express_connections"] == 1
    # 64 MiB is some 46,000 segments of 1,448 bytes: the proxy saw the
    # handshake, those that came before the filters were in, and the teardown
    assert done["counters"]["segments"] < 1000, "the data went through the proxy"
    tags = segment_tags(records)
    assert tags[:3] == [("syn",), ("syn-ack",), ("handshake-ack",)]
    assert any("fin" in t for t in tags) and tags[-1] == ("fin-ack", "last-ack")
    ratio = express / kernel
    print(f"bulk {MEGABYTES} MiB: kernel {kernel / 1e9:.2f} Gbit/s, rewrite lane "
          f"{express / 1e9:.2f} Gbit/s, ratio {ratio:.2f}")  # fmt: skip
    # the proxy's own Python path is two orders of magnitude slower
    assert ratio > 0.1
