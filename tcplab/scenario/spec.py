"""What a scenario file may hold, written once: the field tables and the
JSON Schema made from them (pure, but for asking the kernel which sysctls
it has).

A scenario is a TOML file::

    name = "lost-syn"
    title = "A lost SYN is sent again after the initial RTO"
    title_zh = "..."         # optional: the title in Chinese
    teaches = "..."          # English
    teaches_zh = "..."       # Chinese

    [lab.sysctls]            # per side: cli, mbx, srv; net.* keys only
    cli = { "net.ipv4.tcp_syn_retries" = "2" }

    [server]                 # the server daemon's options
    close = "immediate"      # immediate | linger:D | never | abort | first[:N] | half[:N]
    farewell = "bye"         # optional
    port = 7007              # where it listens (the client connects to [client] port)
    unread = "300ms"         # read nothing; close this long after accepting (RST)
    reuseaddr = true         # SO_REUSEADDR on the listener
    no_accept = false        # listen, never accept(): connections wait in the queue
    backlog = 1              # listen()'s backlog (default: net.core.somaxconn)
    restart = false          # once it has exited, start it again (and stop it)

    [client]
    close = "active"         # active | shutdown | passive | abort | never
    send = ["hello"]
    send_bytes = 200000      # instead of send: write this many bytes, read nothing back
    count = 1
    concurrency = 1
    port = 7007
    connect_timeout = "10s"
    reply_timeout = "10s"    # the exchange on one connection must end within this
    keepalive_idle = "1s"    # SO_KEEPALIVE and TCP_KEEPIDLE (whole seconds)
    keepalive_interval = "1s"  # TCP_KEEPINTVL
    keepalive_count = 3      # TCP_KEEPCNT
    user_timeout = "2s"      # TCP_USER_TIMEOUT

    [proxy]
    pace = "100ms"           # optional
    [[proxy.rules]]          # proxy/rules.py: action, tag, from, nth, conn, delay, name
    action = "drop"
    tag = "syn"
    from = "client"
    nth = 1

    [run]
    observe_for = "2s"       # how long the daemons observe after the conversation
    deadline = "60s"

    [expect.client]          # and [expect.server]
    states = ["CLOSED", "SYN_SENT", "ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT"]
    may_infer = ["SYN_SENT"] # states allowed to be inferred rather than polled
    may_skip = []            # states allowed to be missing (too quick even to infer)
    connection = 1           # which connection's states (default: the first)
    min_in = { SYN_SENT = "900ms" }     # time spent in a state, at least
    max_in = { SYN_SENT = "1500ms" }    # ... at most
    exit = 0                 # the daemon's exit status
    errors = ["ECONNREFUSED"] # errno names its app_error events must include
    final = ["TIME_WAIT"]    # states of the sockets still alive at the end
    listener = ["CLOSED", "LISTEN", "CLOSED"]  # the listening socket's states
    reset_in = ["LAST_ACK"]  # states from which an RST it received closed the connection
    timer_restarted = { TIME_WAIT = "150ms" }  # the state's timer was re-armed: the
                             # state ended (or, still in it at the end, will end) at
                             # least this much later than its timer said on entry
    counters = { TcpExtListenOverflows = 1 }  # the namespace's kernel counters
                             # (nstat names) rose by at least this while observed

    [[expect.segments]]      # in order: each matches a later segment than the one before
    from = "client"
    tag = "syn"
    verdict = "drop"
    [[expect.segments]]
    from = "client"
    tags = ["syn", "retransmit"]   # all of these
    without = ["retransmit"]       # none of these
    verdict = "pass"
    after = ["900ms", "1500ms"]    # since the previous expected segment
    [[expect.segments]]
    from = "server"
    tag = "syn-ack"
    count = 1                # a count: exactly this many such segments in the whole
                             # run (not a step of the sequence)

One description, :data:`SPEC` (a tree of :class:`Field`), drives both the
validation (:mod:`tcplab.scenario.validate`, through
:func:`tcplab.scenario.model.parse`) and the JSON Schema (:func:`json_schema`,
``tcplab schema``): every allowed value, range and length is written here
once, so the two cannot disagree.  Validation checks every key, type and
range before anything starts, and each error names the file, the line, the
field and what was expected.  Grammars with a parser of their own — close
policies (:mod:`core.policies`), rules (:mod:`proxy.rules`), durations
(:mod:`core.units`) — are checked by that parser, the same one the daemons
use.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from core import events
from core import rules as rulesmod
from core.policies import CLIENT_POLICIES, SERVER_POLICY_PATTERN
from core.units import format_duration

SIDES_SYSCTL = ("cli", "mbx", "srv")
STATE_NAMES = tuple(sorted(events.STATE_NAMES))
HOUR = 3600.0

SYSCTL_KEY = r"^net(\.[A-Za-z0-9_-]{1,64}){2,6}$"
SYSCTL_VALUE = r"^[A-Za-z0-9_.:,/ -]{1,128}$"
COUNTER_NAME = r"^(TcpExt|Tcp)[A-Za-z0-9]{1,48}$"
"""A TCP counter as ``nstat`` names it (:mod:`core.netstat`)."""
"""A number, numbers separated by spaces (ip_local_port_range) or a name
(tcp_congestion_control); the kernel checks the range when it is written."""


@dataclasses.dataclass(frozen=True, slots=True)
class Field:
    """One key of a scenario file: what it holds and what is allowed.

    ``kind``: ``str``, ``int``, ``int-or-list``, ``bool``, ``duration``,
    ``choice``, ``choice-list``, ``str-list``, ``duration-pair``, ``duration-map``
    (state → duration), ``count-map`` (name → whole number), ``sysctl-map``,
    ``server-close``, ``table`` and ``table-list`` (with ``sub``)."""

    kind: str
    description: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    pattern: str | None = None
    max_length: int = 4096
    max_items: int = 1000
    sub: Mapping[str, Field] | None = None
    required: tuple[str, ...] = ()
    hint: str | None = None
    """What to say when a string does not match ``pattern``."""
    step: float | None = None
    """A duration must be a whole number of this many seconds (the kernel
    takes keepalive times in seconds, TCP_USER_TIMEOUT in milliseconds)."""


def _duration(
    description: str, minimum: float = 0.0, maximum: float = HOUR, step: float | None = None
) -> Field:
    return Field("duration", description, minimum=minimum, maximum=maximum, step=step)


ONE_LINE = r"^[^\r\n]*$"
LAB = {"sysctls": Field("sysctl-map", "side -> {key: value}", max_items=3)}
SERVER = {
    "close": Field("server-close", "immediate | linger:D | never | abort | first[:N] | half[:N]",
                   pattern=SERVER_POLICY_PATTERN, max_length=64),
    "farewell": Field("str", "a line the server sends from CLOSE_WAIT", pattern=ONE_LINE,
                      max_length=1024),
    "port": Field("int", "listening port", minimum=1, maximum=65535),
    "idle_timeout": _duration("per-connection idle timeout", minimum=0.001),
    "unread": _duration("read nothing; close this long after accepting (RST: data unread)"),
    "reuseaddr": Field("bool", "set SO_REUSEADDR on the listener (default true)"),
    "no_accept": Field("bool", "listen but never accept(): connections stay in the accept "
                       "queue until the server is stopped (default false)"),
    "backlog": Field("int", "listen() backlog (default: net.core.somaxconn)", minimum=1,
                     maximum=65535),
    "restart": Field("bool", "once the server has exited, start it again and stop it"),
}  # fmt: skip
CLIENT = {
    "close": Field("choice", " | ".join(CLIENT_POLICIES), choices=CLIENT_POLICIES),
    "send": Field("str-list", "messages, one line each", pattern=ONE_LINE, max_length=65536,
                  max_items=1000),
    "send_bytes": Field("int", "instead of send: write this many bytes, read nothing back, "
                        "then close", minimum=1, maximum=1_000_000),
    "count": Field("int", "connections", minimum=1, maximum=100_000),
    "concurrency": Field("int", "connections at a time", minimum=1, maximum=10_000),
    "port": Field("int", "port to connect to", minimum=1, maximum=65535),
    "connect_timeout": _duration("give up connecting after", minimum=0.001),
    "reply_timeout": _duration("give up on a connection's exchange after (ETIMEDOUT)",
                               minimum=0.001),
    "ipv6": Field("bool", "talk over IPv6"),
    "keepalive_idle": _duration("SO_KEEPALIVE on; TCP_KEEPIDLE (whole seconds)", minimum=1.0,
                                maximum=32767.0, step=1.0),
    "keepalive_interval": _duration("SO_KEEPALIVE on; TCP_KEEPINTVL (whole seconds)",
                                    minimum=1.0, maximum=32767.0, step=1.0),
    "keepalive_count": Field("int", "SO_KEEPALIVE on; TCP_KEEPCNT: unanswered probes",
                             minimum=1, maximum=127),
    "user_timeout": _duration("TCP_USER_TIMEOUT (whole milliseconds)", minimum=0.001,
                              maximum=86400.0, step=0.001),
}  # fmt: skip
RULE = {
    "action": Field("choice", "what to do", choices=rulesmod.ACTIONS),
    "tag": Field("choice", "the segments' role", choices=(*rulesmod.TAGS, rulesmod.ANY)),
    "from": Field("choice", "whose segments", choices=("client", "server")),
    "nth": Field("int-or-list", "which occurrences (1 = the first)", minimum=1,
                 maximum=rulesmod.MAX_COUNT, max_items=rulesmod.MAX_NTH),
    "conn": Field("int", "the proxy's connection number", minimum=1, maximum=rulesmod.MAX_COUNT),
    "delay": _duration("a delay rule's delay", maximum=rulesmod.MAX_DELAY),
    "name": Field("str", "the rule's name", pattern=r"^\S.*$", max_length=64),
}  # fmt: skip
PROXY = {
    "pace": _duration("delay every segment (slow motion)", maximum=rulesmod.MAX_DELAY),
    "rules": Field("table-list", "[[proxy.rules]]: action, tag, from, nth, conn, delay, name",
                   sub=RULE, required=("action",), max_items=256),
    "log_segments": Field("choice", "all | control | none", choices=("all", "control", "none")),
}  # fmt: skip
RUN = {
    "observe_for": _duration("observe this long after the conversation"),
    "deadline": _duration("the whole run must end within", minimum=1.0, maximum=2 * HOUR),
}
SIDE_EXPECT = {
    "states": Field("choice-list", "the state sequence of one connection", choices=STATE_NAMES,
                    max_items=64),
    "may_infer": Field("choice-list", "states that may be inferred", choices=STATE_NAMES),
    "may_skip": Field("choice-list", "states that may be missing", choices=STATE_NAMES),
    "connection": Field("int", "which connection (1 = first)", minimum=1, maximum=100_000),
    "min_in": Field("duration-map", "state -> least time in it", choices=STATE_NAMES,
                    maximum=HOUR),
    "max_in": Field("duration-map", "state -> most time in it", choices=STATE_NAMES,
                    maximum=HOUR),
    "exit": Field("int", "exit status", minimum=0, maximum=255),
    "errors": Field("str-list", "errno names that must appear in app_error events",
                    pattern=r"^[A-Za-z0-9_]{1,32}$"),
    "final": Field("choice-list", "states of the sockets left at the end", choices=STATE_NAMES),
    "listener": Field("choice-list", "the listening socket's state sequence",
                      choices=STATE_NAMES, max_items=64),
    "reset_in": Field("choice-list", "states from which an RST it received closed the "
                      "connection", choices=STATE_NAMES),
    "timer_restarted": Field("duration-map", "state -> how much later than its timer said "
                             "on entry the state ends, at least", choices=STATE_NAMES,
                             maximum=HOUR),
    "counters": Field("count-map", "nstat counter -> how much it rose while observed, at "
                      "least", pattern=COUNTER_NAME, minimum=1, maximum=1_000_000_000,
                      max_items=32, hint="an nstat name such as TcpExtListenOverflows"),
}  # fmt: skip
SEGMENT_EXPECT = {
    "from": Field("choice", "client | server", choices=("client", "server")),
    "tag": Field("choice", "one role the segment has", choices=rulesmod.TAGS),
    "tags": Field("choice-list", "roles the segment has, all of them",
                  choices=rulesmod.TAGS),
    "without": Field("choice-list", "roles the segment must not have (e.g. retransmit)",
                     choices=rulesmod.TAGS),
    "flags": Field("str", "exact flags, e.g. FA", pattern=r"^[SAFRPUEC]{1,8}$"),
    "verdict": Field("choice", " | ".join(events.VERDICTS), choices=events.VERDICTS),
    "after": Field("duration-pair", "[min, max] since the previous expected segment",
                   maximum=HOUR),
    "count": Field("int", "exactly this many matching segments in the run (not a step)",
                   minimum=0, maximum=1_000_000),
}  # fmt: skip
EXPECT = {
    "client": Field("table", "the client's sockets", sub=SIDE_EXPECT),
    "server": Field("table", "the server's sockets", sub=SIDE_EXPECT),
    "segments": Field("table-list", "segments, in order", sub=SEGMENT_EXPECT, max_items=256),
}
TOP = {
    "name": Field(
        "str",
        "short name",
        pattern=r"^[a-z0-9][a-z0-9-]{0,63}$",
        hint="use lowercase letters, digits and dashes",
    ),
    "title": Field("str", "one line", pattern=ONE_LINE, max_length=200),
    "title_zh": Field("str", "the title in Chinese, one line", pattern=ONE_LINE, max_length=200),
    "teaches": Field("str", "what it shows, in English", max_length=20_000),
    "teaches_zh": Field("str", "what it shows, in Chinese", max_length=20_000),
    "lab": Field("table", "per-namespace sysctls", sub=LAB),
    "server": Field("table", "the server daemon", sub=SERVER),
    "client": Field("table", "the client daemon", sub=CLIENT),
    "proxy": Field("table", "rules and pace", sub=PROXY),
    "run": Field("table", "observation time and deadline", sub=RUN),
    "expect": Field("table", "what must happen", sub=EXPECT),
}
SPEC = Field("table", "a tcplab scenario", sub=TOP, required=("name", "title", "teaches",
                                                              "teaches_zh"))  # fmt: skip
REQUIRED_TOP = SPEC.required


def known_sysctl(name: str) -> bool:
    """Whether this kernel has the sysctl (``/proc/sys/net/...``).  Where
    /proc/sys/net cannot be read (not Linux), every well-formed name is."""
    root = Path("/proc/sys/net")
    if not root.is_dir():
        return True
    return Path("/proc/sys", *name.split(".")).exists()


# --- JSON Schema, from the same description ---------------------------------------------

DURATION_PATTERN = r"^\s*(\d+(\.\d*)?|\.\d+)\s*(us|µs|ms|s|min|m|h)\s*$"


def _count_map_schema(field: Field) -> dict[str, Any]:
    count = {"type": "integer", "minimum": field.minimum, "maximum": field.maximum}
    return {
        "type": "object",
        "propertyNames": {"pattern": field.pattern},
        "additionalProperties": count,
        "maxProperties": field.max_items,
    }


def _schema(field: Field) -> dict[str, Any]:
    kind = field.kind
    out: dict[str, Any]
    if kind == "str":
        out = {"type": "string", "maxLength": field.max_length}
        if field.pattern:
            out["pattern"] = field.pattern
    elif kind == "int":
        out = {"type": "integer", "minimum": field.minimum or 0}
        if field.maximum is not None:
            out["maximum"] = field.maximum
    elif kind == "int-or-list":
        one = {"type": "integer", "minimum": field.minimum, "maximum": field.maximum}
        out = {"oneOf": [one, {"type": "array", "items": one, "maxItems": field.max_items}]}
    elif kind == "bool":
        out = {"type": "boolean"}
    elif kind == "duration":
        out = {"type": "string", "pattern": DURATION_PATTERN}
        low, high = field.minimum or 0.0, field.maximum if field.maximum is not None else HOUR
        out["description"] = (
            f"{field.description} ({format_duration(low)} to {format_duration(high)})"
        )
        return out
    elif kind == "choice":
        out = {"enum": list(field.choices)}
    elif kind == "choice-list":
        out = {"type": "array", "items": {"enum": list(field.choices)}, "maxItems": field.max_items}
    elif kind == "str-list":
        item: dict[str, Any] = {"type": "string", "maxLength": field.max_length}
        if field.pattern:
            item["pattern"] = field.pattern
        out = {"type": "array", "items": item, "maxItems": field.max_items}
    elif kind == "server-close":
        out = {"type": "string", "pattern": field.pattern}
    elif kind == "duration-pair":
        duration = {"type": "string", "pattern": DURATION_PATTERN}
        out = {"type": "array", "items": duration, "minItems": 2, "maxItems": 2}
    elif kind == "count-map":
        out = _count_map_schema(field)
    elif kind == "duration-map":
        out = {
            "type": "object",
            "propertyNames": {"enum": list(field.choices)},
            "additionalProperties": {"type": "string", "pattern": DURATION_PATTERN},
        }
    elif kind == "sysctl-map":
        out = {
            "type": "object",
            "propertyNames": {"enum": list(SIDES_SYSCTL)},
            "additionalProperties": {
                "type": "object",
                "propertyNames": {"pattern": SYSCTL_KEY},
                "additionalProperties": {
                    "oneOf": [{"type": "string", "pattern": SYSCTL_VALUE}, {"type": "integer"}]
                },
            },
        }
    elif kind in ("table", "table-list"):
        table: dict[str, Any] = {
            "type": "object",
            "properties": {key: _schema(sub) for key, sub in (field.sub or {}).items()},
            "additionalProperties": False,
        }
        if field.required:
            table["required"] = list(field.required)
        out = table if kind == "table" else {
            "type": "array", "items": table, "maxItems": field.max_items
        }  # fmt: skip
    else:
        raise AssertionError(kind)
    out["description"] = field.description
    return out


def json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of a scenario file, from :data:`SPEC`."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "tcplab scenario",
        **_schema(SPEC),
    }
