"""The daemons' options as data: one frozen dataclass per daemon (pure).

``python -m daemons.server`` parses its argv into :class:`ServerOptions`
(:func:`core.options.from_argv`); the runner, the compose roles and the
tests build a :class:`ServerOptions` and turn it into argv with
:func:`core.options.to_argv`.  One description, both directions, and a
value that no daemon would accept is refused where it is built.
"""

from __future__ import annotations

import dataclasses

from core import events, logs, netns
from core.options import option, switch
from core.policies import CLIENT_POLICIES, ClosePolicy
from core.units import format_duration, parse_duration

Endpoint = tuple[str, int]

MAX_DURATION_S = 24 * 3600.0
"""Longest duration any daemon option accepts (a day): longer is a typo."""
MAX_COUNT = 1_000_000
"""Most connections, concurrent connections or bytes a count option accepts."""
DEFAULT_SERVER: Endpoint = ("198.51.100.1", 7007)


def endpoint(text: str) -> Endpoint:
    """``ADDR:PORT`` or ``[ADDR6]:PORT``."""
    try:
        return events.parse_endpoint(text)
    except ValueError as exc:
        raise ValueError(f"{exc} (expected ADDR:PORT, [ADDR6]:PORT)") from None


def endpoint_text(value: Endpoint) -> str:
    return events.endpoint(*value)


def bounded_duration(text: str) -> float:
    """A duration with its unit, at most :data:`MAX_DURATION_S`."""
    seconds = parse_duration(text)
    if seconds > MAX_DURATION_S:
        raise ValueError(f"{text!r}: at most {format_duration(MAX_DURATION_S)}")
    return seconds


def positive_int(text: str) -> int:
    """A whole number from 1 to :data:`MAX_COUNT`."""
    if not text.isdigit() or len(text) > 7 or not 1 <= int(text) <= MAX_COUNT:
        raise ValueError(f"not a whole number from 1 to {MAX_COUNT}: {text!r}")
    return int(text)


def port_number(text: str) -> int:
    """A TCP port, 1 to 65535."""
    if not text.isdigit() or len(text) > 5 or not 1 <= int(text) <= 65535:
        raise ValueError(f"not a port (1 to 65535): {text!r}")
    return int(text)


def netns_name(text: str) -> str:
    """A named network namespace (``/run/netns/NAME``): refused at once when
    the name could not be one (a path, too long), not when it is entered."""
    try:
        netns.path_of(text)
    except netns.NetnsError as exc:
        raise ValueError(str(exc)) from None
    return text


MAX_KEEPALIVE_S = 32767
"""The kernel's limit for TCP_KEEPIDLE and TCP_KEEPINTVL (MAX_TCP_KEEPIDLE, seconds)."""
MAX_KEEPALIVE_COUNT = 127
"""The kernel's limit for TCP_KEEPCNT (MAX_TCP_KEEPCNT)."""
MAX_USER_TIMEOUT_S = MAX_DURATION_S
"""Longest TCP_USER_TIMEOUT accepted (a day; the kernel takes up to 2^31 - 1 ms)."""


def keepalive_seconds(text: str) -> float:
    """A keepalive time: whole seconds (the kernel counts them so), 1s to 32767s."""
    seconds = parse_duration(text)
    check_keepalive_seconds(seconds)
    return seconds


def check_keepalive_seconds(seconds: float) -> None:
    if seconds != int(seconds) or not 1 <= seconds <= MAX_KEEPALIVE_S:
        raise ValueError(
            f"{format_duration(seconds)}: whole seconds from 1s to {MAX_KEEPALIVE_S}s "
            "(the kernel counts keepalive times in seconds)"
        )


def probe_count(text: str) -> int:
    """TCP_KEEPCNT: 1 to 127 probes."""
    if not text.isdigit() or len(text) > 3 or not 1 <= int(text) <= MAX_KEEPALIVE_COUNT:
        raise ValueError(f"not a number of probes from 1 to {MAX_KEEPALIVE_COUNT}: {text!r}")
    return int(text)


def whole_millis(text: str) -> float:
    """TCP_USER_TIMEOUT: whole milliseconds, 1ms to a day."""
    seconds = parse_duration(text)
    check_user_timeout(seconds)
    return seconds


def check_user_timeout(seconds: float) -> None:
    millis = seconds * 1000
    if abs(millis - round(millis)) > 1e-6 or not 1 <= round(millis) <= MAX_USER_TIMEOUT_S * 1000:
        raise ValueError(
            f"{format_duration(seconds)}: whole milliseconds from 1ms to "
            f"{format_duration(MAX_USER_TIMEOUT_S)}"
        )


def one_line(text: str) -> str:
    """A message: one line, so no newline in it."""
    if "\n" in text or "\r" in text:
        raise ValueError(f"{text!r}: a message is one line (no newline)")
    return text


@dataclasses.dataclass(frozen=True, kw_only=True)
class CommonOptions:
    """What both daemons take."""

    netns: str | None = option(
        "--netns",
        None,
        parse=netns_name,
        help="enter this network namespace before opening sockets",
    )
    log_format: logs.LogFormat = option(
        "--log-format", "auto", choices=logs.FORMATS, help="console on a tty, else JSON"
    )
    observe_interval: float = option(
        "--observe-interval",
        0.005,
        parse=bounded_duration,
        show=format_duration,
        metavar="D",
        help="how often the observer polls sock_diag (default 5ms)",
    )
    trace: str | None = option(
        "--trace",
        None,
        metavar="INSTANCE",
        help="also read socket states from the kernel's tracepoints, in this ftrace "
        "instance (made and removed by the observer; needs tracefs and CAP_SYS_ADMIN; "
        "without it, or when that fails, polling alone)",
    )
    observe_for: float | None = option(
        "--observe-for",
        None,
        parse=bounded_duration,
        show=format_duration,
        metavar="D",
        help="after the conversation, keep observing at most this long "
        "(default: until the sockets are gone)",
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServerOptions(CommonOptions):
    """``python -m daemons.server``."""

    listen: Endpoint = option(
        "--listen", DEFAULT_SERVER, parse=endpoint, show=endpoint_text, metavar="ADDR:PORT"
    )
    close: ClosePolicy = option(
        "--close",
        ClosePolicy("immediate"),
        parse=ClosePolicy.parse,
        metavar="POLICY",
        help="immediate | linger:D | never | abort | first[:N] | half[:N]",
    )
    max_conns: int | None = option(
        "--max-conns",
        None,
        parse=positive_int,
        metavar="N",
        help="stop accepting after N connections (default: serve forever)",
    )
    idle_timeout: float = option(
        "--idle-timeout",
        30.0,
        parse=bounded_duration,
        show=format_duration,
        metavar="D",
        help="drop a connection silent this long (default 30s)",
    )
    max_message: int = option(
        "--max-message",
        65536,
        parse=positive_int,
        metavar="BYTES",
        help="longest line accepted (default 65536)",
    )
    backlog: int | None = option(
        "--backlog",
        None,
        parse=positive_int,
        metavar="N",
        help="listen backlog (default: the namespace's net.core.somaxconn, the most the "
        "kernel allows; 4096 when it cannot be read)",
    )
    observer: bool = switch(
        "--no-observer",
        True,
        help="do not observe socket states (no tcp_state records, no sock_diag, no "
        "tracepoints): the echo server alone, for measuring what observing costs",
    )
    farewell: str | None = option(
        "--farewell",
        None,
        parse=one_line,
        metavar="TEXT",
        help="send TEXT after the client's FIN, before closing",
    )
    unread: float | None = option(
        "--unread",
        None,
        parse=bounded_duration,
        show=format_duration,
        metavar="D",
        help="read nothing the client sends: D after accepting, close the connection with "
        "its data unread (Linux then sends RST, not FIN; RFC 2525 2.17)",
    )
    reuseaddr: bool = switch(
        "--no-reuseaddr",
        True,
        help="do not set SO_REUSEADDR on the listener: bind() fails with EADDRINUSE while "
        "a TIME_WAIT socket holds the port",
    )
    no_accept: bool = switch(
        "--no-accept",
        False,
        help="listen (with --backlog) but never call accept(): the kernel completes "
        "handshakes into the accept queue, and the connections stay there until the server "
        "exits (at SIGTERM; its observer still reports the listener and the queued sockets)",
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClientOptions(CommonOptions):
    """``python -m daemons.client``."""

    connect: Endpoint = option(
        "--connect", DEFAULT_SERVER, parse=endpoint, show=endpoint_text, metavar="ADDR:PORT"
    )
    send: tuple[str, ...] = option(
        "--send",
        ("hello",),
        parse=one_line,
        repeat=True,
        metavar="TEXT",
        help="a message to send and expect back (repeatable; default: hello)",
    )
    send_bytes: int | None = option(
        "--send-bytes",
        None,
        parse=positive_int,
        metavar="N",
        help="instead of the --send lines: write N bytes (no newline) without waiting for "
        "any reply, read nothing back, then close as --close says; whatever the server has "
        "not taken waits in the send queue, the FIN behind it (1 to 1000000)",
    )
    count: int = option("--count", 1, parse=positive_int, metavar="N", help="connections to make")
    concurrency: int = option(
        "--concurrency", 1, parse=positive_int, metavar="N", help="connections at a time"
    )
    close: str = option("--close", "active", choices=CLIENT_POLICIES)
    connect_timeout: float = option(
        "--connect-timeout", 10.0, parse=bounded_duration, show=format_duration, metavar="D"
    )
    reply_timeout: float = option(
        "--reply-timeout",
        10.0,
        parse=bounded_duration,
        show=format_duration,
        metavar="D",
        help="the whole exchange on one connection must end within D",
    )
    max_message: int = option("--max-message", 65536, parse=positive_int, metavar="BYTES")
    keepalive_idle: float | None = option(
        "--keepalive-idle",
        None,
        parse=keepalive_seconds,
        show=format_duration,
        metavar="D",
        help="turn SO_KEEPALIVE on and send the first probe after D without a segment "
        "from the server (TCP_KEEPIDLE; whole seconds; default: the namespace's "
        "tcp_keepalive_time). Keepalive is off unless a --keepalive-* option is given",
    )
    keepalive_interval: float | None = option(
        "--keepalive-interval",
        None,
        parse=keepalive_seconds,
        show=format_duration,
        metavar="D",
        help="turn SO_KEEPALIVE on, D between unanswered probes (TCP_KEEPINTVL; whole "
        "seconds; default: the namespace's tcp_keepalive_intvl)",
    )
    keepalive_count: int | None = option(
        "--keepalive-count",
        None,
        parse=probe_count,
        metavar="N",
        help="turn SO_KEEPALIVE on, give up (ETIMEDOUT) after N unanswered probes "
        "(TCP_KEEPCNT, 1 to 127; default: the namespace's tcp_keepalive_probes)",
    )
    user_timeout: float | None = option(
        "--user-timeout",
        None,
        parse=whole_millis,
        show=format_duration,
        metavar="D",
        help="give up (ETIMEDOUT) when sent data stays unacknowledged this long "
        "(TCP_USER_TIMEOUT; whole milliseconds; default: the kernel's retries)",
    )

    def __post_init__(self) -> None:
        if not self.send:
            raise ValueError("--send: at least one message")
        for text in self.send:
            one_line(text)
        if self.send_bytes is not None and not 1 <= self.send_bytes <= MAX_COUNT:
            raise ValueError(f"--send-bytes: not from 1 to {MAX_COUNT}")
        for flag, value in (
            ("--keepalive-idle", self.keepalive_idle),
            ("--keepalive-interval", self.keepalive_interval),
        ):
            if value is not None:
                try:
                    check_keepalive_seconds(value)
                except ValueError as exc:
                    raise ValueError(f"{flag}: {exc}") from None
        if (
            self.keepalive_count is not None
            and not 1 <= self.keepalive_count <= MAX_KEEPALIVE_COUNT
        ):
            raise ValueError(f"--keepalive-count: not from 1 to {MAX_KEEPALIVE_COUNT}")
        if self.user_timeout is not None:
            try:
                check_user_timeout(self.user_timeout)
            except ValueError as exc:
                raise ValueError(f"--user-timeout: {exc}") from None

    @property
    def keepalive(self) -> bool:
        """Whether SO_KEEPALIVE is on: any ``--keepalive-*`` option turns it on."""
        return (
            self.keepalive_idle is not None
            or self.keepalive_interval is not None
            or self.keepalive_count is not None
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class WatchOptions:
    """``python -m daemons.watch``."""

    netns: str = option(
        "--netns", "", parse=netns_name, help="network namespace to watch (required)"
    )
    port: tuple[int, ...] = option(
        "--port", (), parse=port_number, repeat=True, help="only sockets with this port"
    )
    interval: float = option(
        "--interval",
        0.005,
        parse=bounded_duration,
        show=format_duration,
        metavar="D",
        help="how often to poll sock_diag (default 5ms)",
    )
    duration: float | None = option(
        "--duration",
        None,
        parse=bounded_duration,
        show=format_duration,
        metavar="D",
        help="stop after D (default: until Ctrl-C)",
    )
    log_format: logs.LogFormat = option("--log-format", "auto", choices=logs.FORMATS)
    no_trace: bool = switch(
        "--no-trace",
        False,
        help="poll sock_diag only (default: also the kernel's tracepoints, where tracefs works)",
    )

    def __post_init__(self) -> None:
        if not self.netns:
            raise ValueError("--netns: which namespace to watch")
