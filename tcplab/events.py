"""The event vocabulary every tcplab component logs with.

Every component (client, server, proxy, the lab around them) writes one JSON
object per line.  The fields shared by all of them are:

``ts``
    wall-clock time in seconds with microsecond precision.  All namespaces
    share one kernel clock, so lines from every component merge by ``ts``.
``component``
    ``client``, ``server``, ``proxy``, ``lab``, ``watch``.
``event``
    one of the names below.
``conn``
    ``192.0.2.1:40312-198.51.100.1:7007`` — client side first (IPv6
    addresses in brackets).

This module is pure: names, the TCP state table, and typed records that turn
into the keyword arguments a structlog call takes and back
(:func:`to_fields` / :func:`from_fields`), so a test can check what a log line
says without string matching.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from collections.abc import Mapping
from typing import Any, Final, Literal

# --- event names -----------------------------------------------------------

TCP_STATE: Final = "tcp_state"
"""observer: a socket changed state (fields of :class:`TcpState`)."""
SEGMENT: Final = "segment"
"""proxy: one TCP segment and what was done to it (fields of :class:`Segment`)."""

APP_LISTEN: Final = "app_listen"
APP_CONNECT: Final = "app_connect"
APP_ACCEPT: Final = "app_accept"
APP_SEND: Final = "app_send"
APP_RECV: Final = "app_recv"
APP_SHUTDOWN: Final = "app_shutdown"
APP_CLOSE: Final = "app_close"
APP_ERROR: Final = "app_error"
APP_EVENTS: Final = frozenset(
    {
        APP_LISTEN,
        APP_CONNECT,
        APP_ACCEPT,
        APP_SEND,
        APP_RECV,
        APP_SHUTDOWN,
        APP_CLOSE,
        APP_ERROR,
    }
)
"""What a program asked of its socket, and when."""

DAEMON_READY: Final = "daemon_ready"
"""a daemon is up (server listening, proxy forwarding); the runner waits for it."""
DAEMON_DONE: Final = "daemon_done"
"""a daemon finished its work and is about to exit; ``status`` says how."""
OBSERVER_START: Final = "observer_start"
OBSERVER_STOP: Final = "observer_stop"
"""the observer stopped; ``reason`` (sockets_gone, deadline, cancelled) and,
for sockets still in TIME_WAIT, their remaining time."""
LAB_UP: Final = "lab_up"
LAB_DOWN: Final = "lab_down"
LAB_CLEAN: Final = "lab_clean"
CONVERSATION_DONE: Final = "conversation_done"
"""client: one connection's scripted conversation ended (``ok``, ``error``)."""
FRAME_DROPPED: Final = "frame_dropped"
SCENARIO_START: Final = "scenario_start"
"""client role in compose: the next conversation follows this scenario."""
RUN_DONE: Final = "run_done"
"""runner: the run is over; the daemons' exit statuses (``client_status``…)."""
EXPRESS_UNAVAILABLE: Final = "express_unavailable"
"""proxy: the kernel fast lane could not be set up (``reason``); every frame
goes through the proxy."""
RULES_CHANGED: Final = "rules_changed"
"""proxy: the rules changed at run time (``op``: add, rm, clear, release, pace)."""
"""proxy: a frame was not forwarded for a reason other than a rule (too big…)."""

KNOWN_EVENTS: Final = frozenset(
    {
        TCP_STATE,
        SEGMENT,
        DAEMON_READY,
        DAEMON_DONE,
        OBSERVER_START,
        OBSERVER_STOP,
        LAB_UP,
        LAB_DOWN,
        LAB_CLEAN,
        CONVERSATION_DONE,
        FRAME_DROPPED,
        RULES_CHANGED,
        EXPRESS_UNAVAILABLE,
        RUN_DONE,
        SCENARIO_START,
    }
    | APP_EVENTS
)

Component = Literal["client", "server", "proxy", "lab", "watch", "runner"]

# --- TCP states -------------------------------------------------------------

# Kernel numbering, include/net/tcp_states.h.  inet_diag reports these numbers;
# the names are the ones `ss` and the kernel use (SYN_SENT, not "SYN_SEND").
TCP_STATES: Final[dict[int, str]] = {
    1: "ESTABLISHED",
    2: "SYN_SENT",
    3: "SYN_RECV",
    4: "FIN_WAIT1",
    5: "FIN_WAIT2",
    6: "TIME_WAIT",
    7: "CLOSE",  # reported for a socket that is closed but not yet freed
    8: "CLOSE_WAIT",
    9: "LAST_ACK",
    10: "LISTEN",
    11: "CLOSING",
    12: "NEW_SYN_RECV",  # request sock; inet_diag reports these as SYN_RECV
    13: "BOUND_INACTIVE",
}
CLOSED: Final = "CLOSED"
"""What a socket is when the kernel no longer reports it (RFC 9293 CLOSED)."""
STATE_NAMES: Final = frozenset(TCP_STATES.values()) | {CLOSED}

StateSource = Literal["poll", "trace", "inferred"]
SOURCES: Final = ("poll", "trace", "inferred")

TIMERS: Final[dict[int, str]] = {
    # idiag_timer, net/ipv4/inet_diag.c and tcp_diag / ss(8)
    0: "off",
    1: "on",  # retransmit timer (also SYN-ACK retransmit of a request sock)
    2: "keepalive",
    3: "timewait",
    4: "probe",  # zero-window probe
}


# --- connection ids -----------------------------------------------------------


def endpoint(addr: str, port: int) -> str:
    """``192.0.2.1:40312`` or ``[2001:db8::1]:40312``."""
    if ":" in addr:
        return f"[{addr}]:{port}"
    return f"{addr}:{port}"


def conn_id(client_addr: str, client_port: int, server_addr: str, server_port: int) -> str:
    """The ``conn`` field: client side first."""
    return f"{endpoint(client_addr, client_port)}-{endpoint(server_addr, server_port)}"


def parse_endpoint(text: str) -> tuple[str, int]:
    """Inverse of :func:`endpoint`; raises ValueError naming the bad text."""
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"not ADDR:PORT: {text!r}")
    ipaddress.ip_address(host)
    number = int(port)
    if not 0 <= number <= 65535:
        raise ValueError(f"port out of range in {text!r}")
    return host, number


def parse_conn(text: str) -> tuple[tuple[str, int], tuple[str, int]]:
    """Inverse of :func:`conn_id`: ``((client addr, port), (server addr, port))``."""
    # Neither an IPv4 nor a bracketed IPv6 endpoint contains '-'.
    client, sep, server = text.partition("-")
    if not sep:
        raise ValueError(f"not a connection id (CLIENT-SERVER): {text!r}")
    return parse_endpoint(client), parse_endpoint(server)


# --- typed records ------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class TcpState:
    """A socket's state change as the observer saw (or inferred) it."""

    conn: str
    old: str
    new: str
    source: StateSource = "poll"
    in_old_ms: float | None = None
    """How long the socket was in ``old``; None when that is unknown."""
    timer: str = "off"
    expires_ms: int | None = None
    """Time until the running timer fires (TIME_WAIT: what is left of it)."""
    retrans: int = 0
    local: str | None = None
    """The observing side's endpoint, so a reader knows which socket this is."""

    event: str = dataclasses.field(default=TCP_STATE, init=False)

    def __post_init__(self) -> None:
        for name in ("old", "new"):
            value = getattr(self, name)
            if value not in STATE_NAMES:
                raise ValueError(f"tcp_state.{name}: unknown TCP state {value!r}")
        if self.source not in SOURCES:
            raise ValueError(f"tcp_state.source: {self.source!r} is not one of {SOURCES}")


@dataclasses.dataclass(frozen=True, slots=True)
class Segment:
    """One TCP segment through the middlebox and its verdict."""

    conn: str
    dir: Literal["c2s", "s2c"]
    flags: str
    seq: int
    ack: int
    rseq: int
    rack: int
    len: int
    tags: tuple[str, ...] = ()
    verdict: Literal["pass", "drop", "delay", "hold", "duplicate", "reset", "release", "inject"] = (
        "pass"
    )
    """``release``: a held segment let go; ``inject``: a segment the proxy
    made (the RSTs of a ``reset`` rule)."""
    rule: str | None = None
    delay_ms: float | None = None
    conn_number: int | None = None
    """The connection's number in the order the proxy first saw them (1, 2…)."""

    event: str = dataclasses.field(default=SEGMENT, init=False)


@dataclasses.dataclass(frozen=True, slots=True)
class App:
    """What a daemon asked of its socket (``app_*`` events)."""

    event: str
    conn: str | None = None
    bytes: int | None = None
    how: str | None = None
    """shutdown: ``write``; close: ``close``, ``abort``; error: the errno name."""
    detail: str | None = None

    def __post_init__(self) -> None:
        if self.event not in APP_EVENTS:
            raise ValueError(f"{self.event!r} is not an app_* event")


Record = TcpState | Segment | App


def to_fields(record: Record) -> dict[str, Any]:
    """The keyword arguments for ``log.info(**fields)``; None fields left out."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        if value is None:
            continue
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def emit(log: Any, record: Record, **extra: Any) -> None:
    """Log ``record`` on a structlog logger as one event line."""
    fields = to_fields(record)
    name = fields.pop("event")
    log.info(name, **fields, **extra)


def from_fields(fields: Mapping[str, Any]) -> Record:
    """Rebuild a typed record from a parsed log line (unknown keys ignored)."""
    name = fields.get("event")
    cls: type[TcpState] | type[Segment] | type[App]
    if name == TCP_STATE:
        cls = TcpState
    elif name == SEGMENT:
        cls = Segment
    elif name in APP_EVENTS:
        cls = App
    else:
        raise ValueError(f"no record type for event {name!r}")
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    kwargs = {k: v for k, v in fields.items() if k in names}
    if cls is App:
        kwargs["event"] = name
    if "tags" in kwargs:
        kwargs["tags"] = tuple(kwargs["tags"])
    return cls(**kwargs)


def parse_line(line: str | bytes) -> dict[str, Any] | None:
    """One JSON log line → dict, or None when the line is not an event
    (a traceback, a stray print).  Never raises on bad input."""
    try:
        value = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(value, dict) or "event" not in value or "ts" not in value:
        return None
    if not isinstance(value["ts"], int | float):
        return None
    return value
