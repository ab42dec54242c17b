"""Which sockets an observer watches, said twice: to itself and to the kernel (pure).

Every observer watches some sockets only — a daemon its own, ``tcplab
watch`` one namespace's.  sock_diag dumps and tracepoint events are checked
against a ``match`` predicate on the four-tuple (:func:`port_filter`,
:func:`local_filter`).  The tracepoints carry no network namespace and fire
for every socket of the machine, so the ftrace instance is also given
filters (:func:`trace_filters`) that drop most of the rest in the kernel,
before they fill the ring buffer; ``match`` checks again what the filters
cannot express (IPv6 addresses).  :class:`TraceConfig` is what the observer
needs to open that instance.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable, Iterable

from daemons.tracking import Key

TRACE_EVENTS = (
    "sock/inet_sock_set_state",
    "tcp/tcp_retransmit_skb",
    "tcp/tcp_retransmit_synack",
    "tcp/tcp_send_reset",
    "tcp/tcp_receive_reset",
)
"""The tracepoints an observer enables (include/trace/events/sock.h, tcp.h)."""

TRACE_BUFFER_KB = 4096
"""Ring buffer per CPU of the observer's ftrace instance.  A server taking
thousands of connections at once makes tens of thousands of events while its
event loop is busy with them; 4 MiB per CPU holds about 50,000 before the
kernel overwrites any (``trace_lost`` in ``observer_stop``)."""


@dataclasses.dataclass(frozen=True, slots=True)
class TraceConfig:
    """The observer's own ftrace instance: its name, filters, buffer size."""

    instance: str
    filters: dict[str, str] = dataclasses.field(default_factory=dict)
    buffer_kb: int = TRACE_BUFFER_KB


def port_filter(ports: Iterable[int]) -> Callable[[Key], bool]:
    """Sockets with one of ``ports`` at either end."""
    wanted = frozenset(ports)
    if not wanted:
        return lambda _key: True
    return lambda key: key[1] in wanted or key[3] in wanted


def local_filter(host: str, port: int) -> Callable[[Key], bool]:
    """A listener's sockets: local port ``port`` on ``host`` (any address
    when ``host`` is a wildcard).  The tracepoints see every namespace's
    sockets, so "port 7007 at either end" would take in the client's too."""
    if ipaddress.ip_address(host).is_unspecified:
        return lambda key: key[1] == port
    return lambda key: key[1] == port and key[0] == host


def trace_filters(address: str | None, local_port: int | None = None) -> dict[str, str]:
    """ftrace filters keeping the events of sockets with ``address`` at one
    end (IPv4; the kernel compares ``__u8 saddr[4]`` as a little-endian u32,
    which is why the number is built that way).  IPv6 addresses cannot be
    compared in a filter (16 bytes): those are filtered by ``match``.

    With ``local_port`` (a listener's), only sockets whose own side is
    ``address:local_port``: the tracepoints see every namespace, and a
    server's observer has no use for the events of the client sockets that
    talk to it — half of what a busy server's ring buffer would carry."""
    filters = {"sock/inet_sock_set_state": "protocol == 6"}
    ip = ipaddress.ip_address(address) if address is not None else None
    v4 = ip is not None and ip.version == 4 and not ip.is_unspecified
    number = int.from_bytes(ip.packed, "little") if ip is not None and v4 else 0
    if local_port is not None:
        mine = f"sport == {local_port}"
        if v4:
            mine = f"sport == {local_port} && (family == 10 || saddr == {number:#x})"
        elif ip is not None and ip.version == 6 and not ip.is_unspecified:
            mine = f"sport == {local_port} && family == 10"
        filters["sock/inet_sock_set_state"] = f"protocol == 6 && {mine}"
        for name in (
            "tcp/tcp_retransmit_skb",
            "tcp/tcp_retransmit_synack",
            "tcp/tcp_receive_reset",
        ):
            filters[name] = mine
        return filters
    if not v4:
        return filters
    by_address = f"family == 10 || saddr == {number:#x} || daddr == {number:#x}"
    filters["sock/inet_sock_set_state"] = f"protocol == 6 && ({by_address})"
    for name in ("tcp/tcp_retransmit_skb", "tcp/tcp_retransmit_synack", "tcp/tcp_receive_reset"):
        filters[name] = by_address
    return filters
