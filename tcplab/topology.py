"""The lab's network: three namespaces, two veth pairs, one router in the middle.

```
 tl<id>-cli               tl<id>-mbx                                tl<id>-srv
 cli0 192.0.2.1  ==veth== mc0 192.0.2.254 | ms0 198.51.100.254 ==veth== srv0 198.51.100.1
 default via .254                                                  default via .254
```

IPv6 runs alongside: 2001:db8:1::/64 on the client side, 2001:db8:2::/64 on
the server side, the router at ``::ff`` on each.

Each lab has a *slot*, n (1 to 253), unique among the labs that exist at
once, and its endpoints use it as their host part: client 192.0.2.n and
2001:db8:1::n, server 198.51.100.n and 2001:db8:2::n (the first lab gets 1,
the addresses of the picture above).  Kernel tracepoints carry no network
namespace, so this is what tells two labs' sockets apart in them.  Addresses are added with
``nodad`` so they are usable at once (duplicate address detection would
hold them "tentative" for a second or more, in a network that has no one
else on it).

Who forwards in the middle is decided in one place, :class:`Forwarding`:
``kernel`` turns on IP forwarding in the middle namespace; ``proxy`` leaves
it off, and the middlebox process forwards frames itself.

The middlebox's ports wear mirrored MACs (``mc0`` has the server's, ``ms0``
the client's), so a frame can cross it unchanged: the proxy's express lane
(``proxy/express.py``) relies on it.

The endpoint veths get TX checksum offload, TSO and GSO turned off, so that
every frame on the wire is one real segment with a finished checksum — a
frame a userspace forwarder reads off a veth otherwise may be a 64 KiB
super-segment with a partial checksum.

Everything happens inside namespaces named ``tl<id>-…``; the host's own
interfaces, routes and sysctls are never touched.  :func:`lab` is a context
manager that tears down on every exit path, including Ctrl-C; each lab also
leaves a small record under ``/run/tcplab`` naming the process that owns it,
so ``tcplab clean`` can remove the leftovers of a run that was killed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import errno
import fcntl
import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from pyroute2 import IPRoute, netns

from core import netns as tlnetns
from core import tracefs
from core.tracefs import TRACE_PREFIX

PREFIX = "tl"
RECORD_DIR = Path("/run/tcplab")


def proxy_control_path(lab_id: str) -> Path:
    """The control socket of a lab's proxy."""
    return RECORD_DIR / f"{lab_id}.proxy.sock"


def proxy_log_path(lab_id: str) -> Path:
    """The log of a proxy that `lab up` started in the background."""
    return RECORD_DIR / f"{lab_id}.proxy.log"


Side = Literal["cli", "mbx", "srv"]
SIDES: tuple[Side, ...] = ("cli", "mbx", "srv")

# IFA_F_NODAD, include/uapi/linux/if_addr.h
IFA_F_NODAD = 0x02


class Forwarding(enum.Enum):
    """Who moves packets between the two halves of the lab."""

    KERNEL = "kernel"
    PROXY = "proxy"


class TopologyError(RuntimeError):
    """The lab could not be built (what failed is in the message)."""


MAX_SLOT = 253
"""Slots 1…253: .254 is the middlebox, .255 broadcast."""


@dataclasses.dataclass(frozen=True, slots=True)
class Addressing:
    """The address plan (documentation ranges, RFC 5737 / RFC 3849) of the
    lab in ``slot``."""

    slot: int = 1
    mbx_front4: str = "192.0.2.254"
    mbx_back4: str = "198.51.100.254"
    prefix4: int = 24
    mbx_front6: str = "2001:db8:1::ff"
    mbx_back6: str = "2001:db8:2::ff"
    prefix6: int = 64

    def __post_init__(self) -> None:
        if not 1 <= self.slot <= MAX_SLOT:
            raise TopologyError(f"lab slot {self.slot} is out of range (1-{MAX_SLOT})")

    @property
    def client4(self) -> str:
        return f"192.0.2.{self.slot}"

    @property
    def server4(self) -> str:
        return f"198.51.100.{self.slot}"

    @property
    def client6(self) -> str:
        return f"2001:db8:1::{self.slot:x}"

    @property
    def server6(self) -> str:
        return f"2001:db8:2::{self.slot:x}"

    def server(self, ipv6: bool = False) -> str:
        return self.server6 if ipv6 else self.server4

    def client(self, ipv6: bool = False) -> str:
        return self.client6 if ipv6 else self.client4


ADDR = Addressing()
CLIENT_IF, FRONT_IF, BACK_IF, SERVER_IF = "cli0", "mc0", "ms0", "srv0"


@dataclasses.dataclass(frozen=True, slots=True)
class LabSpec:
    """What to build.  ``sysctls`` maps a side to ``{"net.ipv4.tcp_fin_timeout":
    "5", …}`` — only ``net.*`` keys, which are per namespace."""

    forwarding: Forwarding = Forwarding.KERNEL
    sysctls: Mapping[Side, Mapping[str, str]] = dataclasses.field(default_factory=dict)
    lab_id: str | None = None
    persistent: bool = False
    """Kept after the creating process exits (``tcplab lab up``)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Lab:
    """A built lab: its id and namespace names."""

    lab_id: str
    forwarding: Forwarding
    addr: Addressing = ADDR

    def ns(self, side: Side) -> str:
        return f"{PREFIX}{self.lab_id}-{side}"

    def trace_instance(self, side: Side) -> str:
        """The ftrace instance the observer of ``side`` opens."""
        return f"{TRACE_PREFIX}{self.lab_id}-{side}"

    @property
    def namespaces(self) -> tuple[str, str, str]:
        return (self.ns("cli"), self.ns("mbx"), self.ns("srv"))

    def describe(self) -> dict[str, Any]:
        a = self.addr
        return {
            "lab": self.lab_id,
            "slot": a.slot,
            "forwarding": self.forwarding.value,
            "client": {
                "netns": self.ns("cli"),
                "if": CLIENT_IF,
                "ipv4": a.client4,
                "ipv6": a.client6,
            },
            "middlebox": {
                "netns": self.ns("mbx"),
                "front": {"if": FRONT_IF, "ipv4": a.mbx_front4, "ipv6": a.mbx_front6},
                "back": {"if": BACK_IF, "ipv4": a.mbx_back4, "ipv6": a.mbx_back6},
            },
            "server": {
                "netns": self.ns("srv"),
                "if": SERVER_IF,
                "ipv4": a.server4,
                "ipv6": a.server6,
            },
        }


def new_lab_id() -> str:
    """Six hex digits: short enough to read, enough to run labs side by side."""
    return secrets.token_hex(3)


def validate_sysctl_key(key: str) -> Path:
    """``net.ipv4.tcp_fin_timeout`` → its /proc/sys path, inside a namespace.

    Only ``net.*`` keys are per network namespace; anything else would change
    the host, so it is refused."""
    parts = key.split(".")
    if (
        len(parts) < 3
        or parts[0] != "net"
        or any(not p or "/" in p or p in ("..", ".") for p in parts)
    ):
        raise TopologyError(f"sysctl {key!r}: only per-namespace net.* keys may be set")
    return Path("/proc/sys", *parts)


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
    # a kernel fast path that cannot rewrite MACs (proxy/express.py).
    macs = {}
    for ns, ifname in ((cli, CLIENT_IF), (srv, SERVER_IF)):
        with IPRoute(netns=ns) as ip:
            macs[ifname] = ip.get_links(_one(ip, ifname))[0].get_attr("IFLA_ADDRESS")
    with IPRoute(netns=mbx) as ip:
        ip.link("set", index=_one(ip, FRONT_IF), address=macs[SERVER_IF])
        ip.link("set", index=_one(ip, BACK_IF), address=macs[CLIENT_IF])

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


# --- processes inside a namespace ---------------------------------------------


def _ns_inode(name: str) -> int | None:
    try:
        return os.stat(tlnetns.path_of(name)).st_ino
    except OSError:
        return None


def pids_in(name: str) -> list[int]:
    """Processes whose network namespace is ``name`` (like ``ip netns pids``)."""
    inode = _ns_inode(name)
    if inode is None:
        return []
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.stat(entry / "ns" / "net").st_ino == inode:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def kill_all_in(name: str, grace_s: float = 1.0) -> int:
    """SIGTERM everything in namespace ``name``, SIGKILL what is left after
    ``grace_s``.  Returns how many processes were found."""
    pids = pids_in(name)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    alive = pids
    while alive and time.monotonic() < deadline:
        time.sleep(0.02)
        alive = [p for p in alive if _alive(p)]
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is dead for our purposes
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


# --- ownership records ----------------------------------------------------------


def _proc_start(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[19]
    except (OSError, IndexError):
        return None


def _record_path(lab_id: str) -> Path:
    return RECORD_DIR / f"{lab_id}.json"


def write_record(lab: Lab, persistent: bool, extra: Mapping[str, Any] | None = None) -> None:
    RECORD_DIR.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    data = {
        "lab": lab.lab_id,
        "slot": lab.addr.slot,
        "forwarding": lab.forwarding.value,
        "namespaces": list(lab.namespaces),
        "owner_pid": pid,
        "owner_start": _proc_start(pid),
        "persistent": persistent,
        "created": time.time(),
        **(extra or {}),
    }
    tmp = _record_path(lab.lab_id).with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(_record_path(lab.lab_id))


def read_record(lab_id: str) -> dict[str, Any] | None:
    try:
        value = json.loads(_record_path(lab_id).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def update_record(lab_id: str, **fields: Any) -> None:
    record = read_record(lab_id)
    if record is None:
        raise TopologyError(f"no record for lab {lab_id}")
    record.update(fields)
    tmp = _record_path(lab_id).with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(_record_path(lab_id))


def owner_alive(record: Mapping[str, Any]) -> bool:
    pid = record.get("owner_pid")
    if not isinstance(pid, int) or not _alive(pid):
        return False
    return _proc_start(pid) == record.get("owner_start")


# --- building and tearing down --------------------------------------------------


def lab_namespaces() -> dict[str, list[str]]:
    """Existing ``tl<id>-{cli,mbx,srv}`` namespaces, grouped by lab id."""
    labs: dict[str, list[str]] = {}
    for name in netns.listnetns():
        if not name.startswith(PREFIX):
            continue
        lab_id, sep, side = name[len(PREFIX) :].rpartition("-")
        if sep and side in SIDES and lab_id:
            labs.setdefault(lab_id, []).append(name)
    return labs


def destroy(lab_id: str) -> list[str]:
    """Remove lab ``lab_id``: stop every process in its namespaces, delete the
    namespaces (their veths go with them), delete the record.  Idempotent;
    returns the namespaces it removed."""
    removed = []
    names = [f"{PREFIX}{lab_id}-{side}" for side in SIDES]
    for name in names:
        kill_all_in(name)
    for name in names:
        if tlnetns.exists(name):
            try:
                netns.remove(name)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise
            removed.append(name)
    # the observers remove their ftrace instances; these are a killed one's
    tracefs.remove_instances(f"{TRACE_PREFIX}{lab_id}-")
    for path in (
        _record_path(lab_id),
        proxy_control_path(lab_id),
        proxy_log_path(lab_id),
    ):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return removed


def _slots_in_use() -> set[int]:
    """Slots of the labs that exist now (their namespaces, or a record of a
    lab being built)."""
    used = set()
    present = lab_namespaces()
    if RECORD_DIR.is_dir():
        for path in RECORD_DIR.glob("*.json"):
            record = read_record(path.stem)
            if record is None:
                continue
            slot = record.get("slot")
            if isinstance(slot, int) and (path.stem in present or owner_alive(record)):
                used.add(slot)
    return used


@contextlib.contextmanager
def _slot_lock() -> Iterator[None]:
    """Serialises slot allocation between processes building labs at once."""
    RECORD_DIR.mkdir(parents=True, exist_ok=True)
    with open(RECORD_DIR / ".slots.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _claim_slot(lab: Lab, persistent: bool) -> Lab:
    """The lab with the lowest free slot, its record written (under the lock,
    so two labs built at once never share addresses)."""
    with _slot_lock():
        used = _slots_in_use()
        free = next((n for n in range(1, MAX_SLOT + 1) if n not in used), None)
        if free is None:
            raise TopologyError(f"{MAX_SLOT} labs exist already: remove some (tcplab clean)")
        lab = dataclasses.replace(lab, addr=Addressing(slot=free))
        write_record(lab, persistent=persistent)
    return lab


def create(spec: LabSpec | None = None) -> Lab:
    """Build a lab; on any failure (Ctrl-C included) remove what was built."""
    spec = spec or LabSpec()
    lab = Lab(lab_id=spec.lab_id or new_lab_id(), forwarding=spec.forwarding)
    if any(tlnetns.exists(n) for n in lab.namespaces):
        raise TopologyError(f"lab {lab.lab_id} already exists")
    try:
        lab = _claim_slot(lab, spec.persistent)
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
    after it, however the block ends."""
    built = create(spec)
    try:
        yield built
    finally:
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


@dataclasses.dataclass(frozen=True, slots=True)
class CleanReport:
    removed: dict[str, list[str]]
    kept: dict[str, str]


def clean(everything: bool = False) -> CleanReport:
    """Remove the labs whose owning process is gone.  A lab made by
    ``tcplab lab up`` is kept (it has no owner by design) unless
    ``everything``; a ``tl`` namespace with no record is a leftover."""
    removed: dict[str, list[str]] = {}
    kept: dict[str, str] = {}
    for lab_id in sorted(lab_namespaces()):
        record = read_record(lab_id)
        if record is not None and not everything:
            if record.get("persistent"):
                kept[lab_id] = "made by `tcplab lab up`; remove it with `tcplab lab down`"
                continue
            if owner_alive(record):
                kept[lab_id] = f"owner process {record.get('owner_pid')} is running"
                continue
        removed[lab_id] = destroy(lab_id)
    # records whose namespaces are already gone
    if RECORD_DIR.is_dir():
        for path in RECORD_DIR.glob("*.json"):
            lab_id = path.stem
            if lab_id in removed or lab_id in kept:
                continue
            record = read_record(lab_id)
            if record is None or not owner_alive(record) or everything:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
    # ftrace instances of labs that are gone, and of `tcplab watch` processes
    # that were killed
    live = set(lab_namespaces())
    for name in tracefs.instance_names(TRACE_PREFIX):
        owner = name[len(TRACE_PREFIX) :]
        if owner.startswith("watch-"):
            pid = owner.removeprefix("watch-")
            if pid.isdigit() and _alive(int(pid)) and not everything:
                continue
        elif owner.rpartition("-")[0] in live:
            continue
        tracefs.remove_instances(name)
        removed.setdefault(owner.rpartition("-")[0] or owner, []).append(f"ftrace {name}")
    return CleanReport(removed=removed, kept=kept)


def exec_in(lab: Lab, side: Side, argv: list[str]) -> int:
    """Run ``argv`` in one of the lab's namespaces (``ip netns exec`` does the
    /sys remount that some tools expect); returns its exit status."""
    return subprocess.call(["ip", "netns", "exec", lab.ns(side), *argv])


def find_lab(lab_id: str | None) -> Lab:
    """The lab named ``lab_id``, or the only one there is."""
    labs = lab_namespaces()
    if lab_id is None:
        if not labs:
            raise TopologyError("no lab is up (start one with `tcplab lab up`)")
        if len(labs) > 1:
            raise TopologyError(f"several labs are up ({', '.join(sorted(labs))}): pass --lab ID")
        lab_id = next(iter(labs))
    if lab_id not in labs:
        raise TopologyError(f"no lab {lab_id!r} (up: {', '.join(sorted(labs)) or 'none'})")
    record = read_record(lab_id) or {}
    mode = Forwarding(record.get("forwarding", "kernel"))
    slot = record.get("slot", 1)
    addr = Addressing(slot=slot) if isinstance(slot, int) and 1 <= slot <= MAX_SLOT else ADDR
    return Lab(lab_id=lab_id, forwarding=mode, addr=addr)
