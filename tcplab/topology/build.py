"""Building a lab: namespaces, veths, addresses, routes, offloads,
sysctls (pyroute2), and tearing it down on every exit path."""

from __future__ import annotations

import contextlib
import errno
import signal
import subprocess
from collections.abc import Iterator
from typing import Any

from pyroute2 import IPRoute, netns

from core import netns as tlnetns
from tcplab.topology.model import (
    BACK_IF,
    CLIENT_IF,
    FRONT_IF,
    IFA_F_NODAD,
    SERVER_IF,
    SIDES,
    Forwarding,
    Lab,
    LabSpec,
    Side,
    TopologyError,
    new_lab_id,
    validate_sysctl_key,
)
from tcplab.topology.ownership import claim_slot, destroy

# --- low-level steps ---------------------------------------------------------


def _write_sysctl(ns: str, key: str, value: str) -> None:
    path = validate_sysctl_key(key)
    # /proc/sys/net resolves against the opening thread's namespace.
    with tlnetns.inside(ns):
        try:
            path.write_text(f"{value}\n")
        except FileNotFoundError:
            raise TopologyError(f"sysctl {key}: no such key in this kernel") from None
        except OSError as exc:
            raise TopologyError(f"sysctl {key}={value!r}: {exc.strerror}") from None


def read_sysctl(ns: str, key: str) -> str:
    path = validate_sysctl_key(key)
    with tlnetns.inside(ns):
        return path.read_text().strip()


def _addr(ip: Any, index: int, address: str, prefixlen: int) -> None:
    if ":" in address:
        ip.addr("add", index=index, address=address, prefixlen=prefixlen, IFA_FLAGS=IFA_F_NODAD)
    else:
        ip.addr("add", index=index, address=address, prefixlen=prefixlen)


def _one(ip: Any, ifname: str) -> int:
    found = ip.link_lookup(ifname=ifname)
    if not found:
        raise TopologyError(f"interface {ifname} did not appear")
    return int(found[0])


def offloads_off(ns: str | None, ifname: str) -> None:
    """TX checksum, TSO and GSO off (``ethtool -K IF tx off tso off gso off``)."""
    from pyroute2 import Ethtool

    with tlnetns.inside(ns):
        tool = Ethtool()
        try:
            features = tool.get_features(ifname)
            for name in (
                "tx-checksum-ip-generic",
                "tx-checksum-ipv4",
                "tx-checksum-ipv6",
                "tx-tcp-segmentation",
                "tx-tcp6-segmentation",
                "tx-tcp-ecn-segmentation",
                "tx-tcp-mangleid-segmentation",
                "tx-generic-segmentation",
            ):
                feature = features.features.get(name)
                if feature is not None and feature.enable:
                    feature.enable = False
            tool.set_features(ifname, features)
        finally:
            tool.close()


CHILD_EHASH_ENTRIES = 8192
"""Buckets of the endpoints' own TCP connection hash (``tcp_child_ehash_entries``,
Documentation/networking/ip-sysctl.rst, Linux 6.1+).  A namespace shares
the host's table by default — 262,144 buckets on a 24 GiB machine — and a
sock_diag dump walks all of it: 5 ms per dump with a handful of sockets.
With a table of its own it takes 0.1 ms.  8,192 buckets hold the catalogue's
busiest runs (thousands of TIME_WAIT sockets) with short chains."""


def _build(lab: Lab, spec: LabSpec) -> None:
    a = lab.addr
    cli, mbx, srv = lab.namespaces
    # The middle namespace first; the endpoints are made from inside it, so
    # that its tcp_child_ehash_entries gives them hash tables of their own
    # (the setting is read from the namespace a new one is created from).
    netns.create(mbx)
    try:
        _write_sysctl(mbx, "net.ipv4.tcp_child_ehash_entries", str(CHILD_EHASH_ENTRIES))
    except TopologyError:
        pass  # before Linux 6.1: the endpoints share the host's table, dumps are slower
    with tlnetns.inside(mbx):
        netns.create(cli)
        netns.create(srv)
    with IPRoute(netns=cli) as ip:
        ip.link("add", ifname=CLIENT_IF, kind="veth", peer={"ifname": FRONT_IF, "net_ns_fd": mbx})
    with IPRoute(netns=srv) as ip:
        ip.link("add", ifname=SERVER_IF, kind="veth", peer={"ifname": BACK_IF, "net_ns_fd": mbx})

    plan: list[tuple[str, str, list[tuple[str, int]], list[str]]] = [
        (
            cli,
            CLIENT_IF,
            [(a.client4, a.prefix4), (a.client6, a.prefix6)],
            [a.mbx_front4, a.mbx_front6],
        ),
        (
            srv,
            SERVER_IF,
            [(a.server4, a.prefix4), (a.server6, a.prefix6)],
            [a.mbx_back4, a.mbx_back6],
        ),
    ]
    for ns, ifname, addrs, gateways in plan:
        with IPRoute(netns=ns) as ip:
            ip.link("set", index=_one(ip, "lo"), state="up")
            index = _one(ip, ifname)
            for address, prefix in addrs:
                _addr(ip, index, address, prefix)
            ip.link("set", index=index, state="up")
            for gw in gateways:
                if ":" in gw:
                    ip.route("add", dst="::/0", gateway=gw, family=10)
                else:
                    ip.route("add", dst="0.0.0.0/0", gateway=gw)
        offloads_off(ns, ifname)

    # Mirrored MACs: the middlebox's client-side port wears the server's MAC
    # and its server-side port the client's.  Each endpoint still sees one
    # gateway MAC, but a frame can now cross the middlebox with its Ethernet
    # header unchanged — which lets the proxy hand established connections to
    # a kernel fast path with no MAC rewriting (proxy/express.py).  A spec
    # may ask for the veths' own random MACs instead, as a compose network has.
    if spec.mirrored_macs:
        _mirror_macs(cli, mbx, srv)

    with IPRoute(netns=mbx) as ip:
        ip.link("set", index=_one(ip, "lo"), state="up")
        for ifname, v4, v6 in (
            (FRONT_IF, a.mbx_front4, a.mbx_front6),
            (BACK_IF, a.mbx_back4, a.mbx_back6),
        ):
            index = _one(ip, ifname)
            _addr(ip, index, v4, a.prefix4)
            _addr(ip, index, v6, a.prefix6)
            ip.link("set", index=index, state="up")

    set_forwarding(lab, lab.forwarding)
    for side, values in spec.sysctls.items():
        if side not in SIDES:
            raise TopologyError(f"sysctls: unknown side {side!r} (cli, mbx, srv)")
        for key, value in values.items():
            _write_sysctl(lab.ns(side), key, str(value))


def _mirror_macs(cli: str, mbx: str, srv: str) -> None:
    macs = {}
    for ns, ifname in ((cli, CLIENT_IF), (srv, SERVER_IF)):
        with IPRoute(netns=ns) as ip:
            macs[ifname] = ip.get_links(_one(ip, ifname))[0].get_attr("IFLA_ADDRESS")
    with IPRoute(netns=mbx) as ip:
        ip.link("set", index=_one(ip, FRONT_IF), address=macs[SERVER_IF])
        ip.link("set", index=_one(ip, BACK_IF), address=macs[CLIENT_IF])


def set_forwarding(lab: Lab, mode: Forwarding) -> None:
    """The one switch between kernel forwarding and the proxy.

    With the proxy, the middle kernel must not forward (or every segment would
    arrive twice) and must not send ICMP redirects for frames it sees."""
    mbx = lab.ns("mbx")
    on = "1" if mode is Forwarding.KERNEL else "0"
    _write_sysctl(mbx, "net.ipv4.ip_forward", on)
    _write_sysctl(mbx, "net.ipv6.conf.all.forwarding", on)
    if mode is Forwarding.PROXY:
        _write_sysctl(mbx, "net.ipv4.conf.all.send_redirects", "0")


def create(spec: LabSpec | None = None) -> Lab:
    """Build a lab; on any failure (Ctrl-C included) remove what was built."""
    spec = spec or LabSpec()
    lab = Lab(lab_id=spec.lab_id or new_lab_id(), forwarding=spec.forwarding)
    if any(tlnetns.exists(n) for n in lab.namespaces):
        raise TopologyError(f"lab {lab.lab_id} already exists")
    try:
        lab = claim_slot(lab, spec.persistent)
        _build(lab, spec)
    except BaseException as exc:
        with _sigint_deferred():
            destroy(lab.lab_id)
        if isinstance(exc, OSError) and exc.errno == errno.EPERM:
            raise TopologyError(
                "building the lab needs root or CAP_NET_ADMIN (and CAP_SYS_ADMIN to "
                "create named network namespaces)"
            ) from exc
        raise
    return lab


@contextlib.contextmanager
def lab(spec: LabSpec | None = None) -> Iterator[Lab]:
    """``with lab() as l: ...`` — the lab exists inside the block and is gone
    after it, however the block ends.  Ctrl-C while it is being built waits
    until it is (a second or so): interrupted inside a pyroute2 call, an
    object is left half-made, and its event loop dies noisily at exit."""
    built: Lab | None = None
    try:
        with _sigint_deferred():
            built = create(spec)
        yield built
    finally:
        if built is not None:
            with _sigint_deferred():
                destroy(built.lab_id)


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold Ctrl-C (and SIGTERM) until the block is done, so a second Ctrl-C
    cannot leave a half-removed lab; re-raise it afterwards."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def hold(signum: int, _frame: Any) -> None:
        pending.append(signum)

    old_int = signal.signal(signal.SIGINT, hold)
    old_term = signal.signal(signal.SIGTERM, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
        if pending:
            signal.raise_signal(pending[0])


def exec_in(lab: Lab, side: Side, argv: list[str]) -> int:
    """Run ``argv`` in one of the lab's namespaces (``ip netns exec`` does the
    /sys remount that some tools expect); returns its exit status."""
    return subprocess.call(["ip", "netns", "exec", lab.ns(side), *argv])
