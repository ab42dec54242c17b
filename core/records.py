"""The typed records of what happens to a connection, and the base every
event record shares.

A record is a frozen dataclass, one per event kind: the kernel's view
(:class:`TcpState`, :class:`TcpRetransmit`, :class:`TcpReset`), the
middlebox's (:class:`Segment`) and the program's (:class:`App`, what it asked
of its socket).  These are what a ladder, a transcript or a scenario check
is drawn from.  The records the lab's processes write about themselves are
in :mod:`core.reports`; turning either into a line and back is
:mod:`core.eventcodec`'s job.

This module is pure: names and dataclasses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import ClassVar, Final, Literal, TypeVar

from core.endpoints import is_connection
from core.tcpstates import STATE_NAMES, SockKind

__all__ = [
    "APP_ACCEPT",
    "APP_CLOSE",
    "APP_CONNECT",
    "APP_ERROR",
    "APP_EVENTS",
    "APP_LISTEN",
    "APP_RECV",
    "APP_SEND",
    "APP_SHUTDOWN",
    "SEGMENT",
    "SOURCES",
    "TCP_RESET",
    "TCP_RETRANSMIT",
    "TCP_STATE",
    "VERDICTS",
    "App",
    "Component",
    "Record",
    "Segment",
    "StateSource",
    "TcpReset",
    "TcpRetransmit",
    "TcpState",
    "Verdict",
    "of_kind",
]

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

Component = Literal["client", "server", "proxy", "lab", "watch", "runner", "board"]

StateSource = Literal["poll", "trace", "inferred"]
SOURCES: Final = ("poll", "trace", "inferred")


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
    handed_seen: float | None = None
    """With ``handed_to``, when the minisock was looked up and found in a
    state other than the full socket's last (TIME_WAIT after FIN_WAIT2).  The
    lookup follows the tracepoint, late under load: an orphan handed over in
    FIN_WAIT2 (at the ACK of its FIN) may have met the peer's FIN by then.
    The connection was in ``handed_state`` by this time, not necessarily at
    ``ts``."""

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


R = TypeVar("R", bound=Record)


def of_kind(records: Sequence[Record], kind: type[R]) -> list[R]:
    """The records of one type, in order."""
    return [r for r in records if isinstance(r, kind)]
