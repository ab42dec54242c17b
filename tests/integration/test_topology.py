"""The lab's network on a real kernel: built, reachable, isolated, and gone after."""

from __future__ import annotations

import errno
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from core import netns
from tcplab import topology

IP_RECVTTL = 12  # include/uapi/linux/in.h (not exported by Python 3.11)


def ns_run(ns: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=20, check=False
    )


def veths_everywhere() -> set[str]:
    """Names of veth-ish links in the host namespace and every lab namespace."""
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


def test_up_and_down_leaves_nothing() -> None:
    host_links = veths_everywhere()
    with topology.lab() as lab:
        names = set(lab.namespaces)
        assert names <= set(topology.lab_namespaces()[lab.lab_id])
        assert topology.read_record(lab.lab_id) is not None
    assert not (names & {n for v in topology.lab_namespaces().values() for n in v})
    assert topology.read_record(lab.lab_id) is None
    assert veths_everywhere() == host_links


def test_teardown_also_when_the_body_raises() -> None:
    seen: list[str] = []
    with pytest.raises(RuntimeError, match="boom"), topology.lab() as lab:
        seen.extend(lab.namespaces)
        proc = subprocess.Popen(["ip", "netns", "exec", lab.ns("srv"), "sleep", "300"])
        raise RuntimeError("boom")
    assert proc.wait(timeout=10) != 0  # killed by the teardown
    assert not any(netns.exists(n) for n in seen)


def test_addresses_and_offloads(lab: topology.Lab) -> None:
    out = ns_run(lab.ns("cli"), "ip", "-br", "addr", "show", "cli0").stdout
    a = lab.addr  # the lab's slot: .1 when it is the only one
    assert f"{a.client4}/24" in out and f"{a.client6}/64" in out
    out = ns_run(lab.ns("srv"), "ip", "-br", "addr", "show", "srv0").stdout
    assert f"{a.server4}/24" in out and f"{a.server6}/64" in out
    route = ns_run(lab.ns("cli"), "ip", "route", "show", "default").stdout
    assert "via 192.0.2.254" in route
    assert topology.read_sysctl(lab.ns("mbx"), "net.ipv4.ip_forward") == "1"


def _udp_hops(lab: topology.Lab, target: str) -> int:
    """Send one UDP datagram client → server; return the TTL / hop limit it
    arrived with (64 minus the routers it crossed)."""
    v6 = ":" in target
    family = socket.AF_INET6 if v6 else socket.AF_INET
    with netns.inside(lab.ns("srv")):
        rx = socket.socket(family, socket.SOCK_DGRAM)
    with netns.inside(lab.ns("cli")):
        tx = socket.socket(family, socket.SOCK_DGRAM)
    with rx, tx:
        if v6:
            rx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
        else:
            rx.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
        rx.bind((target, 9999))
        rx.settimeout(5)
        tx.sendto(b"x", (target, 9999))
        data, anc, _flags, _addr = rx.recvmsg(16, socket.CMSG_SPACE(4))
        assert data == b"x"
        ((_level, _type, value),) = anc
        return int.from_bytes(value[:4], "little")


@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
def test_client_reaches_server_through_the_middle(lab: topology.Lab, ipv6: bool) -> None:
    # one router hop: the middle namespace forwarded it (64 → 63)
    assert _udp_hops(lab, lab.addr.server(ipv6)) == 63


@pytest.mark.parametrize("target", ["203.0.113.7", "2001:db8:ffff::7", "127.0.0.53"])
def test_nothing_else_is_reachable(lab: topology.Lab, target: str) -> None:
    """An address outside the lab gets no answer but the middlebox's "no route";
    the host's loopback is not the lab's."""
    family = socket.AF_INET6 if ":" in target else socket.AF_INET
    with netns.inside(lab.ns("cli")):
        sock = socket.socket(family, socket.SOCK_STREAM)
    with sock:
        sock.settimeout(5)
        with pytest.raises(OSError) as caught:
            sock.connect((target, 80))
    assert caught.value.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ECONNREFUSED)
    assert "default" not in ns_run(lab.ns("mbx"), "ip", "route").stdout


def test_sysctls_are_per_namespace() -> None:
    host = Path("/proc/sys/net/ipv4/tcp_fin_timeout").read_text().strip()
    spec = topology.LabSpec(sysctls={"cli": {"net.ipv4.tcp_fin_timeout": "7"}})
    with topology.lab(spec) as lab:
        assert topology.read_sysctl(lab.ns("cli"), "net.ipv4.tcp_fin_timeout") == "7"
        assert topology.read_sysctl(lab.ns("srv"), "net.ipv4.tcp_fin_timeout") == "60"
    assert Path("/proc/sys/net/ipv4/tcp_fin_timeout").read_text().strip() == host


def test_non_net_sysctl_is_refused_and_nothing_is_left() -> None:
    spec = topology.LabSpec(sysctls={"cli": {"kernel.pid_max": "1"}})
    with pytest.raises(topology.TopologyError, match="only per-namespace net"):
        topology.create(spec)


def test_clean_removes_labs_whose_owner_is_gone() -> None:
    # a process builds a lab and is killed before it can tear it down
    code = (
        "import os, signal, sys\n"
        "from tcplab import topology\n"
        "lab = topology.create()\n"
        "print(lab.lab_id, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    lab_id = proc.stdout.strip()
    assert lab_id in topology.lab_namespaces()
    report = topology.clean()
    assert lab_id in report.removed
    assert lab_id not in topology.lab_namespaces()


def test_clean_keeps_a_lab_up_lab() -> None:
    lab = topology.create(topology.LabSpec(persistent=True))
    try:
        report = topology.clean()
        assert lab.lab_id in report.kept
    finally:
        topology.destroy(lab.lab_id)


async def test_tcp_through_the_middle(lab: topology.Lab) -> None:
    """A raw TCP exchange through kernel forwarding, from sockets opened in
    each namespace (the socket stays in the namespace it was made in)."""
    with netns.inside(lab.ns("srv")):
        listener = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with netns.inside(lab.ns("cli")):
        client = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with listener, client:
        await listener.bind((lab.addr.server4, 7007))
        listener.listen()
        with trio.fail_after(5):
            await client.connect((lab.addr.server4, 7007))
            conn, peer = await listener.accept()
            with conn:
                assert peer[0] == lab.addr.client4
                await client.send(b"ping")
                assert await conn.recv(10) == b"ping"
