"""Decode the TCP tracepoints: raw ftrace records of
``sock:inet_sock_set_state``, ``tcp:tcp_retransmit_skb``,
``tcp:tcp_retransmit_synack``, ``tcp:tcp_send_reset`` and
``tcp:tcp_receive_reset`` into :class:`TraceEvent`.

Why binary: the text ``trace_pipe`` prints ``sock:inet_sock_set_state``
without its ``skaddr``.  The socket address is the only thing that ties the
``CLOSE -> SYN_SENT`` event (printed with ``sport=0``: connect() picks the
port *after* the state change) to the rest of its connection.

Tracepoints (include/trace/events/sock.h, include/trace/events/tcp.h)
    :class:`Decoder` locates every field through the format files
    (:mod:`core.traceformat`), so a kernel that moves fields around still
    decodes.  Ports are host-order ``__u16`` (the tracepoints ``ntohs()``
    them); addresses are the 4-byte ``saddr``/``daddr`` for ``AF_INET`` and
    ``saddr_v6``/``daddr_v6`` for ``AF_INET6``.  ``tcp_send_reset`` instead
    stores whole ``struct sockaddr_in``/``sockaddr_in6`` in
    ``saddr[28]``/``daddr[28]`` (family in host order, port in network
    order).

Anything malformed raises :class:`~core.traceformat.TraceDecodeError` (a
ValueError).  Checked on records captured from 6.18 against the kernel's own
text rendering of the same buffer (tests/fixtures/trace/).

This module is pure: records in, dataclasses out.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
from collections.abc import Iterable, Mapping
from typing import Final, Literal

from core.traceformat import EventFormat, Field, RawEvent, TraceDecodeError

__all__ = [
    "EVENT_KINDS",
    "SK_RST_REASONS",
    "TCP_EVENTS",
    "Decoder",
    "Kind",
    "TraceEvent",
    "address_text",
    "ipv4_filter_literal",
    "merge",
]

# include/linux/socket.h, include/uapi/linux/in.h
AF_INET: Final = 2
AF_INET6: Final = 10
IPPROTO_TCP: Final = 6

Kind = Literal["set_state", "retransmit", "retransmit_synack", "send_reset", "receive_reset"]

EVENT_KINDS: Final[Mapping[str, Kind]] = {
    "inet_sock_set_state": "set_state",
    "tcp_retransmit_skb": "retransmit",
    "tcp_retransmit_synack": "retransmit_synack",
    "tcp_send_reset": "send_reset",
    "tcp_receive_reset": "receive_reset",
}
"""Tracepoint name -> :attr:`TraceEvent.kind`."""

TCP_EVENTS: Final = (
    "sock/inet_sock_set_state",
    "tcp/tcp_retransmit_skb",
    "tcp/tcp_retransmit_synack",
    "tcp/tcp_send_reset",
    "tcp/tcp_receive_reset",
)
"""The tracefs names (``events/<system>/<event>``) this module decodes."""

SK_RST_REASONS: Final[Mapping[int, str]] = {
    # enum sk_rst_reason, include/net/rstreason.h, as tcp_send_reset's print
    # fmt lists it on 6.18; Decoder prefers the table of the running kernel.
    0: "NOT_SPECIFIED",
    1: "NO_SOCKET",
    2: "TCP_INVALID_ACK_SEQUENCE",
    3: "TCP_RFC7323_PAWS",
    4: "TCP_TOO_OLD_ACK",
    5: "TCP_ACK_UNSENT_DATA",
    6: "TCP_FLAGS",
    7: "TCP_OLD_ACK",
    8: "TCP_ABORT_ON_DATA",
    9: "TCP_TIMEWAIT_SOCKET",
    10: "INVALID_SYN",
    11: "TCP_ABORT_ON_CLOSE",
    12: "TCP_ABORT_ON_LINGER",
    13: "TCP_ABORT_ON_MEMORY",
    14: "TCP_STATE",
    15: "TCP_KEEPALIVE_TIMEOUT",
    16: "TCP_DISCONNECT_WITH_DATA",
    17: "MPTCP_RST_EUNSPEC",
    18: "MPTCP_RST_EMPTCP",
    19: "MPTCP_RST_ERESOURCE",
    20: "MPTCP_RST_EPROHIBIT",
    21: "MPTCP_RST_EWQ2BIG",
    22: "MPTCP_RST_EBADPERF",
    23: "MPTCP_RST_EMIDDLEBOX",
    24: "ERROR",
    25: "MAX",
}


@dataclasses.dataclass(frozen=True, slots=True)
class TraceEvent:
    """A decoded TCP tracepoint hit.

    ``skaddr`` is the kernel's ``struct sock *`` (0 when the event has none,
    e.g. a reset sent for a segment that matched no socket); for
    ``retransmit_synack`` it is the listener.  ``oldstate``/``newstate`` are
    set for ``set_state`` only, ``state`` for ``retransmit`` and
    ``send_reset`` (None when the kernel says 0, "unknown"), ``reason`` for
    ``send_reset`` (``enum sk_rst_reason`` by name, or its number as text).
    States are the kernel's numbers (include/net/tcp_states.h).
    """

    kind: Kind
    ts_ns: int
    cpu: int
    skaddr: int
    family: int
    sport: int
    dport: int
    saddr: str
    daddr: str
    oldstate: int | None = None
    newstate: int | None = None
    state: int | None = None
    reason: str | None = None
    protocol: int = IPPROTO_TCP
    seq: int = 0


_ADDRS: Final = ("saddr", "daddr", "saddr_v6", "daddr_v6")
_NEEDS: Final[Mapping[Kind, tuple[str, ...]]] = {
    "set_state": (
        "skaddr",
        "oldstate",
        "newstate",
        "sport",
        "dport",
        "family",
        "protocol",
        *_ADDRS,
    ),
    "retransmit": ("skaddr", "state", "sport", "dport", "family", *_ADDRS),
    "retransmit_synack": ("skaddr", "sport", "dport", "family", *_ADDRS),
    "receive_reset": ("skaddr", "sport", "dport", "family", *_ADDRS),
    "send_reset": ("skaddr", "state", "reason", "saddr", "daddr"),
}


@dataclasses.dataclass(frozen=True, slots=True)
class _Plan:
    """How to decode the records of one event id: the fields its kind needs,
    where they are, and the reset reasons of the running kernel."""

    kind: Kind
    fields: Mapping[str, Field]
    min_size: int
    reasons: Mapping[int, str]

    def number(self, data: bytes, name: str) -> int:
        """Field ``name`` of record ``data`` as an integer."""
        field = self.fields[name]
        return int.from_bytes(
            data[field.offset : field.offset + field.size], "little", signed=field.signed
        )

    def raw_bytes(self, data: bytes, name: str) -> bytes:
        """Field ``name`` of record ``data`` as bytes (an address, a sockaddr)."""
        field = self.fields[name]
        return data[field.offset : field.offset + field.size]


class Decoder:
    """Decode records of the TCP tracepoints, given the formats of the
    running kernel by event id (records of other events decode to None)."""

    def __init__(self, formats: Mapping[int, EventFormat], *, tcp_only: bool = True) -> None:
        """``tcp_only``: drop ``set_state`` events of other protocols (SCTP,
        MPTCP share the tracepoint)."""
        self._tcp_only = tcp_only
        self._plans: dict[int, _Plan] = {}
        for event_id, fmt in formats.items():
            kind = EVENT_KINDS.get(fmt.name)
            if kind is None:
                continue
            missing = [name for name in _NEEDS[kind] if name not in fmt.fields]
            if missing:
                raise TraceDecodeError(f"{fmt.name} format lacks {', '.join(missing)}")
            fields = {name: fmt.fields[name] for name in _NEEDS[kind]}
            reasons: Mapping[int, str] = {}
            if kind == "send_reset":
                reasons = {**SK_RST_REASONS, **fmt.symbols("reason")}
            self._plans[event_id] = _Plan(
                kind=kind,
                fields=fields,
                min_size=max(f.offset + f.size for f in fields.values()),
                reasons=reasons,
            )

    @property
    def kinds(self) -> dict[int, Kind]:
        """Event id -> kind, for the events this decoder knows."""
        return {event_id: plan.kind for event_id, plan in self._plans.items()}

    def decode(self, raw: RawEvent) -> TraceEvent | None:
        plan = self._plans.get(raw.type_id)
        if plan is None:
            return None
        if len(raw.data) < plan.min_size:
            raise TraceDecodeError(
                f"{plan.kind} record of {len(raw.data)} bytes, its format needs {plan.min_size}"
            )
        if plan.kind == "send_reset":
            return _decode_reset(plan, raw)
        return self._decode_socket(plan, raw)

    def _decode_socket(self, plan: _Plan, raw: RawEvent) -> TraceEvent | None:
        """Every kind but ``send_reset``: the socket's own addresses, by family."""
        data = raw.data
        family = plan.number(data, "family")
        if family == AF_INET:
            saddr = address_text(plan.raw_bytes(data, "saddr"))
            daddr = address_text(plan.raw_bytes(data, "daddr"))
        elif family == AF_INET6:
            saddr = address_text(plan.raw_bytes(data, "saddr_v6"))
            daddr = address_text(plan.raw_bytes(data, "daddr_v6"))
        else:
            saddr = daddr = ""
        protocol = IPPROTO_TCP
        oldstate = newstate = state = None
        if plan.kind == "set_state":
            protocol = plan.number(data, "protocol")
            if self._tcp_only and protocol != IPPROTO_TCP:
                return None
            oldstate = plan.number(data, "oldstate")
            newstate = plan.number(data, "newstate")
        elif plan.kind == "retransmit":
            state = plan.number(data, "state")
        return TraceEvent(
            kind=plan.kind,
            ts_ns=raw.ts,
            cpu=raw.cpu,
            skaddr=plan.number(data, "skaddr"),
            family=family,
            sport=plan.number(data, "sport"),
            dport=plan.number(data, "dport"),
            saddr=saddr,
            daddr=daddr,
            oldstate=oldstate,
            newstate=newstate,
            state=state,
            protocol=protocol,
            seq=raw.seq,
        )

    def decode_all(self, raws: Iterable[RawEvent]) -> list[TraceEvent]:
        """Decode every record, dropping the ones of other events."""
        return [event for raw in raws if (event := self.decode(raw)) is not None]


def _decode_reset(plan: _Plan, raw: RawEvent) -> TraceEvent:
    """``tcp_send_reset``: whole sockaddrs, and why the kernel reset."""
    data = raw.data
    family, sport, saddr = _sockaddr(plan.raw_bytes(data, "saddr"))
    dfamily, dport, daddr = _sockaddr(plan.raw_bytes(data, "daddr"))
    code = plan.number(data, "reason")
    return TraceEvent(
        kind=plan.kind,
        ts_ns=raw.ts,
        cpu=raw.cpu,
        skaddr=plan.number(data, "skaddr"),
        family=family or dfamily,
        sport=sport,
        dport=dport,
        saddr=saddr,
        daddr=daddr,
        state=plan.number(data, "state") or None,
        reason=plan.reasons.get(code, str(code)),
        seq=raw.seq,
    )


def _sockaddr(raw: bytes) -> tuple[int, int, str]:
    """(family, port, address) of a ``struct sockaddr_in``/``sockaddr_in6``
    (``sa_family`` host order, port network order); (0, 0, "") if neither."""
    if len(raw) < 8:
        return 0, 0, ""
    family = int.from_bytes(raw[0:2], "little")
    port = int.from_bytes(raw[2:4], "big")
    if family == AF_INET:
        return family, port, address_text(raw[4:8])
    if family == AF_INET6 and len(raw) >= 24:
        return family, port, address_text(raw[8:24])
    return 0, 0, ""


_ADDRESS_CACHE: dict[bytes, str] = {}
_ADDRESS_CACHE_MAX = 4096


def address_text(raw: bytes) -> str:
    """4 or 16 address bytes as text; the few addresses of a lab come again
    and again, so they are remembered (a bounded cache)."""
    text = _ADDRESS_CACHE.get(raw)
    if text is None:
        family = socket.AF_INET if len(raw) == 4 else socket.AF_INET6
        text = socket.inet_ntop(family, raw)
        if len(_ADDRESS_CACHE) < _ADDRESS_CACHE_MAX:
            _ADDRESS_CACHE[raw] = text
    return text


def merge(events: Iterable[TraceEvent]) -> list[TraceEvent]:
    """Events of several CPUs in time order: by (ts, cpu, position on the CPU)."""
    return sorted(events, key=lambda e: (e.ts_ns, e.cpu, e.seq))


def ipv4_filter_literal(address: str) -> str:
    """The number an ftrace filter compares a ``__u8 saddr[4]`` field with:
    the four bytes read as a little-endian u32 (192.0.2.7 -> ``0x070200c0``)."""
    packed = ipaddress.IPv4Address(address).packed
    return f"0x{int.from_bytes(packed, 'little'):08x}"
