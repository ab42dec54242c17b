"""The typed records the lab's processes write about themselves: a daemon
is up or done, the observer started or stopped, a conversation or a run
ended, the proxy dropped a frame or changed its rules, a library logged a
warning.

They are not facts about a connection (those are :mod:`core.records`), but
the runner waits for them, checks a run's outcome with them and shows them,
so they are typed records too, on the same :class:`~core.records.Record`
base.

This module is pure: names and dataclasses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, Final

from core.records import Record

__all__ = [
    "CONVERSATION_DONE",
    "DAEMON_DONE",
    "DAEMON_READY",
    "EXPRESS_UNAVAILABLE",
    "FRAME_DROPPED",
    "LOG_MESSAGE",
    "OBSERVER_START",
    "OBSERVER_STOP",
    "RULES_CHANGED",
    "RUN_DONE",
    "SCENARIO_START",
    "ConversationDone",
    "DaemonDone",
    "DaemonReady",
    "ExpressUnavailable",
    "FrameDropped",
    "LogMessage",
    "ObserverStart",
    "ObserverStop",
    "RulesChanged",
    "RunDone",
    "ScenarioStart",
]

# --- event names -----------------------------------------------------------

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


# --- typed records ------------------------------------------------------------


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
    express_rewrite: bool | None = None
    """The express lane can also rewrite MACs (cls_bpf, proxy/bpf_prog.py),
    so it works where the ports do not wear mirrored MACs."""


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
    counters: Mapping[str, int] | None = None
    """The namespace's TCP counters that moved while it observed, by
    ``nstat`` name (:mod:`core.netstat`): ``TcpExtListenOverflows``…"""


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
    """proxy: the kernel fast lane, or its MAC-rewriting kind, could not be
    set up (logged once, at start)."""

    EVENT: ClassVar[str] = EXPRESS_UNAVAILABLE
    LEVEL: ClassVar[str] = "warning"

    reason: str
    available: str | None = None
    """The lane kind still there: ``mirrored`` (the kernel forwards only
    where the ports wear mirrored MACs), or None: every frame goes through
    the proxy."""


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
