"""The event vocabulary every tcplab component logs with, as typed records.

Every component (client, server, proxy, the lab around them) writes one JSON
object per line.  In memory each event is a frozen dataclass, one per event
kind; :func:`to_fields` turns a record into the line's fields and
:func:`from_fields` parses a line back into a record.  Every reader of events
across a process boundary (runner, scenario checks, ladder, transcript,
board, capture) takes records, never dicts.

Fields every record has:

``ts``
    **when the fact happened**, wall clock in seconds (microsecond precision
    or better).  All namespaces share one kernel clock, so facts from every
    component can be put on one time line.  What "when" means per kind:

    - ``tcp_state`` from ``trace``: the kernel tracepoint's own timestamp;
      from ``poll``: the time of the sock_diag dump that first showed the
      state, with ``seen_after`` the dump before it (the change happened in
      between); ``inferred``: inside the interval of the poll that implied it;
    - ``segment``: the kernel's receive timestamp of the frame at the
      middlebox (``sent_ts``: when it was forwarded);
    - ``app_*``: the moment before the call (``returned_ts``: after it);
      for a ``recv`` or ``accept``, the moment it returned;
    - lifecycle events (``daemon_ready``…): when the daemon got there.

    The logging setup never supplies ``ts``; it adds ``logged_ts``, when the
    line was written, which is what an observation lag is measured with.
``component``
    ``client``, ``server``, ``proxy``, ``lab``, ``watch``, ``runner``.
``event``
    the kind (below).
``conn``
    ``192.0.2.1:40312-198.51.100.1:7007``, client side first (IPv6 addresses
    in brackets); a listener is its local endpoint only.

This module is pure: names, the TCP state table, records and their
conversion to and from fields.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Final, Literal, TypeVar

# --- event names -----------------------------------------------------------

TCP_STATE: Final = "tcp_state"
"""observer: a socket changed state (:class:`TcpState`)."""
TCP_RETRANSMIT: Final = "tcp_retransmit"
"""observer (trace): the kernel retransmitted a segment or a SYN-ACK."""
TCP_RESET: Final = "tcp_reset"
"""observer (trace): the kernel sent or received an RST."""
SEGMENT: Final = "segment"
"""proxy: one TCP segment and what was done to it (:class:`Segment`)."""

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
"""What a program asked of its socket, and when (:class:`App`)."""

DAEMON_READY: Final = "daemon_ready"
DAEMON_DONE: Final = "daemon_done"
OBSERVER_START: Final = "observer_start"
OBSERVER_STOP: Final = "observer_stop"
CONVERSATION_DONE: Final = "conversation_done"
FRAME_DROPPED: Final = "frame_dropped"
SCENARIO_START: Final = "scenario_start"
RUN_DONE: Final = "run_done"
EXPRESS_UNAVAILABLE: Final = "express_unavailable"
RULES_CHANGED: Final = "rules_changed"
LOG_MESSAGE: Final = "log_message"
"""A line from a library's stdlib logger (trio, pyroute2): warnings and errors."""

Component = Literal["client", "server", "proxy", "lab", "watch", "runner", "board"]

# --- TCP states -------------------------------------------------------------

# Kernel numbering, include/net/tcp_states.h.  inet_diag and the tracepoints
# report these numbers; the names are the ones `ss` and the kernel use
# (SYN_SENT, not "SYN_SEND").
TCP_STATES: Final[dict[int, str]] = {
    1: "ESTABLISHED",
    2: "SYN_SENT",
    3: "SYN_RECV",
    4: "FIN_WAIT1",
    5: "FIN_WAIT2",
    6: "TIME_WAIT",
    7: "CLOSE",  # a socket that is closed but not yet freed
    8: "CLOSE_WAIT",
    9: "LAST_ACK",
    10: "LISTEN",
    11: "CLOSING",
    12: "NEW_SYN_RECV",  # request sock; inet_diag reports these as SYN_RECV
    13: "BOUND_INACTIVE",
}
CLOSED: Final = "CLOSED"
"""RFC 9293's CLOSED: what the kernel calls TCP_CLOSE, and what a socket is
when the kernel no longer reports it.  Events always say CLOSED."""
STATE_NAMES: Final = frozenset(TCP_STATES.values()) | {CLOSED}


def state_name(number: int) -> str:
    """The event name of kernel state ``number`` (TCP_CLOSE → CLOSED)."""
    name = TCP_STATES.get(number, f"UNKNOWN_{number}")
    return CLOSED if name == "CLOSE" else name


StateSource = Literal["poll", "trace", "inferred"]
SOURCES: Final = ("poll", "trace", "inferred")
SockKind = Literal["full", "request", "timewait"]
SOCK_KINDS: Final = ("full", "request", "timewait")
"""Which kernel object a state belongs to: a full socket (the tracepoint sees
it), a request socket (SYN_RECV before the handshake's ACK) or a timewait
minisock (TIME_WAIT, and FIN_WAIT2 of an orphan) — the last two only
sock_diag sees."""

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


def is_connection(conn: str | None) -> bool:
    """True for a connection id, False for a listener's endpoint or None.
    (Neither an IPv4 nor a bracketed IPv6 endpoint contains '-'.)"""
    return conn is not None and "-" in conn


def parse_endpoint(text: str) -> tuple[str, int]:
    """Inverse of :func:`endpoint`; raises ValueError naming the bad text."""
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or len(port) > 5:
        raise ValueError(f"not ADDR:PORT: {text!r}")
    ipaddress.ip_address(host)
    number = int(port)
    if not 0 <= number <= 65535:
        raise ValueError(f"port out of range in {text!r}")
    return host, number


def parse_conn(text: str) -> tuple[tuple[str, int], tuple[str, int]]:
    """Inverse of :func:`conn_id`: ``((client addr, port), (server addr, port))``."""
    client, sep, server = text.partition("-")
    if not sep:
        raise ValueError(f"not a connection id (CLIENT-SERVER): {text!r}")
    return parse_endpoint(client), parse_endpoint(server)


# --- typed records ------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Record:
    """Fields every event has.  ``ts`` is when the fact happened."""

    EVENT: ClassVar[str] = ""
    LEVEL: ClassVar[str] = "info"

    ts: float
    component: str = ""
    """Filled in from the log line when parsed; set by the logger's context
    when emitted."""
    logged_ts: float | None = None
    """When the line was written (parsed records only)."""

    @property
    def event(self) -> str:
        return self.EVENT

    @property
    def level(self) -> str:
        return self.LEVEL


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TcpState(Record):
    """A socket's state change, as a tracepoint reported it, as a poll saw it,
    or as the TCP state machine implies it."""

    EVENT: ClassVar[str] = TCP_STATE

    conn: str
    old: str
    new: str
    source: StateSource = "poll"
    seen_after: float | None = None
    """Polled or inferred: the previous dump's time; the change happened in
    (seen_after, ts].  None when the change is exact (trace)."""
    in_old_ms: float | None = None
    """How long the socket was in ``old``; None when that is unknown."""
    timer: str = "off"
    expires_ms: int | None = None
    """Time until the running timer fires (TIME_WAIT: what is left of it)."""
    retrans: int = 0
    local: str | None = None
    """The observing side's endpoint, so a reader knows which socket this is."""
    sock: SockKind | None = None
    """Which kernel object: see :data:`SOCK_KINDS`."""
    handed_to: SockKind | None = None
    """``timewait``: the full socket closed because a timewait minisock took
    the connection over (the tracepoint says ``→ CLOSE``, ``ss`` still shows
    the connection)."""
    handed_state: str | None = None
    """With ``handed_to``: the minisock's state right after (TIME_WAIT, or
    FIN_WAIT2 for an orphan still waiting for the peer's FIN): the state the
    connection went to at this moment."""

    @property
    def shown_new(self) -> str:
        """The connection's state after this record (a hand-over's minisock
        state rather than the full socket's CLOSED)."""
        return self.handed_state if self.handed_state is not None else self.new

    def __post_init__(self) -> None:
        for name in ("old", "new"):
            value = getattr(self, name)
            if value not in STATE_NAMES:
                raise ValueError(f"tcp_state.{name}: unknown TCP state {value!r}")
        if self.source not in SOURCES:
            raise ValueError(f"tcp_state.source: {self.source!r} is not one of {SOURCES}")
        if self.handed_state is not None and self.handed_state not in STATE_NAMES:
            raise ValueError(f"tcp_state.handed_state: unknown TCP state {self.handed_state!r}")

    @property
    def is_listener(self) -> bool:
        return not is_connection(self.conn)

    @property
    def earliest(self) -> float:
        """The earliest the change can have happened."""
        return self.seen_after if self.seen_after is not None else self.ts


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TcpRetransmit(Record):
    """The kernel retransmitted (tracepoints ``tcp:tcp_retransmit_skb`` and
    ``tcp:tcp_retransmit_synack``)."""

    EVENT: ClassVar[str] = TCP_RETRANSMIT

    conn: str
    local: str
    state: str
    """The socket's state when it retransmitted."""
    synack: bool = False
    """A request socket's SYN-ACK (``tcp_retransmit_synack``)."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TcpReset(Record):
    """The kernel sent or received an RST (``tcp:tcp_send_reset``,
    ``tcp:tcp_receive_reset``)."""

    EVENT: ClassVar[str] = TCP_RESET

    conn: str
    local: str
    direction: Literal["sent", "received"]
    state: str | None = None
    reason: str | None = None
    """Why the kernel sent it (``sk_rst_reason``: NO_SOCKET, TCP_ABORT_ON_DATA…)."""


Verdict = Literal["pass", "drop", "delay", "hold", "duplicate", "reset", "release", "inject"]
VERDICTS: Final[tuple[Verdict, ...]] = (
    "pass",
    "drop",
    "delay",
    "hold",
    "release",
    "duplicate",
    "reset",
    "inject",
)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Segment(Record):
    """One TCP segment through the middlebox and its verdict.

    ``ts`` is the kernel's receive timestamp of the frame at the middlebox.
    A delayed or held segment gets a second record when it leaves: verdict
    ``release``, the same ``ts`` and ``sent_ts`` = when it left."""

    EVENT: ClassVar[str] = SEGMENT

    conn: str
    dir: Literal["c2s", "s2c"]
    flags: str
    seq: int
    ack: int
    rseq: int
    rack: int
    len: int
    tags: tuple[str, ...] = ()
    verdict: Verdict = "pass"
    """``release``: a held or delayed segment let go; ``inject``: a segment
    the proxy made (the RSTs of a ``reset`` rule)."""
    rule: str | None = None
    delay_ms: float | None = None
    kept_ms: float | None = None
    """``release``: how long the middlebox kept it."""
    conn_number: int | None = None
    """The connection's number in the order the proxy first saw them (1, 2…)."""
    sent_ts: float | None = None
    """When it was forwarded; None while it is not (dropped, held, delayed)."""

    @property
    def delivered(self) -> bool:
        """It went on toward its receiver (now or, for a release, now again)."""
        return self.verdict in ("pass", "duplicate", "release", "inject")

    @property
    def shown_at(self) -> float:
        """Where a ladder draws it: on arrival, except what the middlebox kept
        (a release, a paced segment): when it left, which is when it went on
        toward its receiver."""
        if self.sent_ts is not None and (
            self.verdict == "release" or (self.verdict == "pass" and self.delay_ms)
        ):
            return self.sent_ts
        return self.ts


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class App(Record):
    """What a daemon asked of its socket (``app_*`` events)."""

    kind: str
    """The event name, ``app_connect``…"""
    conn: str | None = None
    bytes: int | None = None
    how: str | None = None
    """shutdown: ``write``; close: ``close``, ``abort``, ``never``,
    ``listener``; error: the errno name."""
    op: str | None = None
    """error: the call that failed (connect, recv, io, bind)."""
    detail: str | None = None
    local: str | None = None
    peer: str | None = None
    eof: bool | None = None
    number: int | None = None
    took_ms: float | None = None
    backlog: int | None = None
    farewell: bool | None = None
    returned_ts: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in APP_EVENTS:
            raise ValueError(f"{self.kind!r} is not an app_* event")

    @property
    def event(self) -> str:
        return self.kind

    @property
    def level(self) -> str:
        return "warning" if self.kind == APP_ERROR else "info"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class DaemonReady(Record):
    """A daemon is up (server listening, client starting, proxy forwarding);
    the runner waits for it."""

    EVENT: ClassVar[str] = DAEMON_READY

    listen: str | None = None
    connect: str | None = None
    policy: str | None = None
    front: str | None = None
    back: str | None = None
    rules: tuple[Mapping[str, Any], ...] | None = None
    pace_ms: float | None = None
    control: str | None = None
    pcap: str | None = None
    log_segments: str | None = None
    express: bool | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class DaemonDone(Record):
    """A daemon finished and is about to exit; ``status`` says how."""

    EVENT: ClassVar[str] = DAEMON_DONE

    status: str
    connections: int | None = None
    ok: int | None = None
    failed: int | None = None
    counters: Mapping[str, int] | None = None
    held_lost: int | None = None
    delayed_lost: int | None = None
    send_errors: int | None = None
    express_errors: tuple[str, ...] | None = None
    captured: int | None = None
    error: str | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ObserverStart(Record):
    EVENT: ClassVar[str] = OBSERVER_START

    interval_ms: float
    sources: tuple[str, ...] = ("poll",)
    """``trace`` and ``poll``, or ``poll`` alone."""
    trace_instance: str | None = None
    trace_unavailable: str | None = None
    """Why the tracepoint source is off, when it is."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ObserverStop(Record):
    """The observer stopped: ``reason`` (sockets_gone, deadline, cancelled)
    and the sockets still alive, TIME_WAIT with its remaining time."""

    EVENT: ClassVar[str] = OBSERVER_STOP

    reason: str
    remaining: tuple[Mapping[str, Any], ...] = ()
    polls: int = 0
    lookups: int | None = None
    trace_events: int | None = None
    trace_lost: int | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ConversationDone(Record):
    """client: one connection's scripted conversation ended."""

    EVENT: ClassVar[str] = CONVERSATION_DONE

    number: int
    ok: bool
    op: str | None = None
    how: str | None = None
    detail: str | None = None

    @property
    def level(self) -> str:
        return "info" if self.ok else "warning"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class FrameDropped(Record):
    """proxy: a frame was not forwarded for a reason other than a rule."""

    EVENT: ClassVar[str] = FRAME_DROPPED

    reason: str
    port: str | None = None
    detail: str | None = None
    src: str | None = None
    dst: str | None = None
    egress: str | None = None
    bytes: int | None = None
    mtu: int | None = None
    frames: int | None = None
    conn: str | None = None
    suppressed: int | None = None
    """How many frames dropped for this reason were not logged since the
    previous line (the log is rate-limited; the counters have the totals)."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RulesChanged(Record):
    """proxy: the rules changed at run time."""

    EVENT: ClassVar[str] = RULES_CHANGED

    op: str
    rule: str | None = None
    frames: int | None = None
    value: str | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ExpressUnavailable(Record):
    """proxy: the kernel fast lane could not be set up; every frame goes
    through the proxy."""

    EVENT: ClassVar[str] = EXPRESS_UNAVAILABLE
    LEVEL: ClassVar[str] = "warning"

    reason: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ScenarioStart(Record):
    """client role in compose: the next conversation follows this scenario."""

    EVENT: ClassVar[str] = SCENARIO_START

    scenario: str
    title: str | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RunDone(Record):
    """runner: the run is over."""

    EVENT: ClassVar[str] = RUN_DONE

    scenario: str | None = None
    client_status: int | None = None
    server_status: int | None = None
    proxy_status: int | None = None
    failures: tuple[str, ...] = ()
    violations: tuple[str, ...] = ()
    """Causal-order rules the run's records broke (:mod:`tcplab.causality`)."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class LogMessage(Record):
    """A library's log record (stdlib logging), passed through."""

    EVENT: ClassVar[str] = LOG_MESSAGE

    message: str
    log_level: str = "warning"
    logger: str | None = None


RECORD_TYPES: Final[tuple[type[Record], ...]] = (
    TcpState,
    TcpRetransmit,
    TcpReset,
    Segment,
    DaemonReady,
    DaemonDone,
    ObserverStart,
    ObserverStop,
    ConversationDone,
    FrameDropped,
    RulesChanged,
    ExpressUnavailable,
    ScenarioStart,
    RunDone,
    LogMessage,
)
_BY_NAME: Final[dict[str, type[Record]]] = {cls.EVENT: cls for cls in RECORD_TYPES}
KNOWN_EVENTS: Final = frozenset(_BY_NAME) | APP_EVENTS

_TUPLE_FIELDS: dict[type[Record], frozenset[str]] = {}
_INIT_FIELDS: dict[type[Record], frozenset[str]] = {}


def _fields_of(cls: type[Record]) -> tuple[frozenset[str], frozenset[str]]:
    init = _INIT_FIELDS.get(cls)
    if init is None:
        fields = dataclasses.fields(cls)
        init = frozenset(f.name for f in fields if f.init)
        tuples = frozenset(
            f.name for f in fields if isinstance(f.type, str) and f.type.startswith("tuple[")
        )
        _INIT_FIELDS[cls] = init
        _TUPLE_FIELDS[cls] = tuples
    return init, _TUPLE_FIELDS[cls]


_LINE_FIELDS: dict[type[Record], tuple[str, ...]] = {}
_PLAIN = (str, int, float, bool)


def _line_fields(cls: type[Record]) -> tuple[str, ...]:
    """The fields a line carries after ts, component and event (cached: a
    busy daemon writes thousands of lines a second)."""
    names = _LINE_FIELDS.get(cls)
    if names is None:
        names = tuple(
            f.name for f in dataclasses.fields(cls) if f.name not in ("ts", "component", "kind")
        )
        _LINE_FIELDS[cls] = names
    return names


def to_fields(record: Record) -> dict[str, Any]:
    """The line's fields: ``ts``, ``component``, ``event`` first, None left out."""
    out: dict[str, Any] = {"ts": record.ts}
    if record.component:
        out["component"] = record.component
    out["event"] = record.event
    for name in _line_fields(type(record)):
        value = getattr(record, name)
        if value is None:
            continue
        if type(value) in _PLAIN:
            out[name] = value
        elif isinstance(value, tuple):
            out[name] = [dict(v) if isinstance(v, Mapping) else v for v in value]
        elif isinstance(value, Mapping):
            out[name] = dict(value)
        else:
            out[name] = value
    return out


class RecordError(ValueError):
    """A line that claims to be an event but whose fields do not fit its kind."""


def from_fields(fields: Mapping[str, Any]) -> Record:
    """Rebuild a typed record from a parsed log line (unknown keys ignored).
    Raises :class:`RecordError` naming the field when a line does not fit."""
    name = fields.get("event")
    if not isinstance(name, str):
        raise RecordError("event: missing or not a string")
    cls: type[Record] | None = App if name in APP_EVENTS else _BY_NAME.get(name)
    if cls is None:
        raise RecordError(f"event: no record type for {name!r}")
    init, tuples = _fields_of(cls)
    kwargs = {k: v for k, v in fields.items() if k in init}
    for key in tuples & kwargs.keys():
        value = kwargs[key]
        if isinstance(value, list):
            kwargs[key] = tuple(value)
    if cls is App:
        kwargs["kind"] = name
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise RecordError(f"{name}: {exc}") from None
    except ValueError as exc:
        raise RecordError(str(exc)) from None


def parse_line(line: str | bytes) -> dict[str, Any] | None:
    """One JSON log line → dict, or None when the line is not an event
    (a traceback, a stray print).  Never raises on bad input."""
    try:
        value = json.loads(line)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(value, dict) or "event" not in value or "ts" not in value:
        return None
    if not isinstance(value["ts"], int | float) or isinstance(value["ts"], bool):
        return None
    return value


def parse_record(line: str | bytes) -> Record | None:
    """One JSON log line → a typed record, or None when it is not one."""
    fields = parse_line(line)
    if fields is None:
        return None
    try:
        return from_fields(fields)
    except RecordError:
        return None


def emit(log: Any, record: Record) -> None:
    """Log ``record`` on a structlog logger as one event line (its
    ``component`` comes from the logger's context)."""
    fields = to_fields(record)
    name = fields.pop("event")
    fields.pop("component", None)
    getattr(log, record.level)(name, **fields)


R = TypeVar("R", bound=Record)


def of_kind(records: Sequence[Record], kind: type[R]) -> list[R]:
    """The records of one type, in order."""
    return [r for r in records if isinstance(r, kind)]
