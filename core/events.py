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

This module is where the vocabulary is imported from, as one namespace
(``from core.events import TcpState, emit``); each part lives in a module
of its own:

- :mod:`core.records`: the record base and the facts about a connection
  (states, retransmits, resets, segments, socket calls);
- :mod:`core.reports`: what the lab's processes report about themselves;
- :mod:`core.tcpstates`: the kernel's TCP state and timer numbering;
- :mod:`core.endpoints`: endpoints and connection ids as text;
- :mod:`core.eventcodec`: records to a line's fields and back.

All of them are pure.
"""

from __future__ import annotations

from core.endpoints import conn_id, endpoint, is_connection, parse_conn, parse_endpoint
from core.eventcodec import (
    KNOWN_EVENTS,
    RECORD_TYPES,
    RecordError,
    emit,
    from_fields,
    parse_line,
    parse_record,
    to_fields,
)
from core.records import (
    APP_ACCEPT,
    APP_CLOSE,
    APP_CONNECT,
    APP_ERROR,
    APP_EVENTS,
    APP_LISTEN,
    APP_RECV,
    APP_SEND,
    APP_SHUTDOWN,
    SEGMENT,
    SOURCES,
    TCP_RESET,
    TCP_RETRANSMIT,
    TCP_STATE,
    VERDICTS,
    App,
    Component,
    Record,
    Segment,
    StateSource,
    TcpReset,
    TcpRetransmit,
    TcpState,
    Verdict,
    of_kind,
)
from core.reports import (
    CONVERSATION_DONE,
    DAEMON_DONE,
    DAEMON_READY,
    EXPRESS_UNAVAILABLE,
    FRAME_DROPPED,
    LOG_MESSAGE,
    OBSERVER_START,
    OBSERVER_STOP,
    RULES_CHANGED,
    RUN_DONE,
    SCENARIO_START,
    ConversationDone,
    DaemonDone,
    DaemonReady,
    ExpressUnavailable,
    FrameDropped,
    LogMessage,
    ObserverStart,
    ObserverStop,
    RulesChanged,
    RunDone,
    ScenarioStart,
)
from core.tcpstates import (
    CLOSED,
    SOCK_KINDS,
    STATE_NAMES,
    TCP_STATES,
    TIMERS,
    SockKind,
    state_name,
)

__all__ = [
    "APP_ACCEPT", "APP_CLOSE", "APP_CONNECT", "APP_ERROR", "APP_EVENTS", "APP_LISTEN", "APP_RECV",
    "APP_SEND", "APP_SHUTDOWN", "CLOSED", "CONVERSATION_DONE", "DAEMON_DONE", "DAEMON_READY",
    "EXPRESS_UNAVAILABLE", "FRAME_DROPPED", "KNOWN_EVENTS", "LOG_MESSAGE", "OBSERVER_START",
    "OBSERVER_STOP", "RECORD_TYPES", "RULES_CHANGED", "RUN_DONE", "SCENARIO_START", "SEGMENT",
    "SOCK_KINDS", "SOURCES", "STATE_NAMES", "TCP_RESET", "TCP_RETRANSMIT", "TCP_STATE",
    "TCP_STATES", "TIMERS", "VERDICTS", "App", "Component", "ConversationDone", "DaemonDone",
    "DaemonReady", "ExpressUnavailable", "FrameDropped", "LogMessage", "ObserverStart",
    "ObserverStop", "Record", "RecordError", "RulesChanged", "RunDone", "ScenarioStart", "Segment",
    "SockKind", "StateSource", "TcpReset", "TcpRetransmit", "TcpState", "Verdict", "conn_id",
    "emit", "endpoint", "from_fields", "is_connection", "of_kind", "parse_conn", "parse_endpoint",
    "parse_line", "parse_record", "state_name", "to_fields",
]  # fmt: skip
