"""Scenario files: what to break, and what must happen (pure).

A scenario is a TOML file::

    name = "lost-syn"
    title = "A lost SYN is sent again after the initial RTO"
    teaches = "..."          # English
    teaches_zh = "..."       # Chinese

    [lab.sysctls]            # per side: cli, mbx, srv; net.* keys only
    cli = { "net.ipv4.tcp_syn_retries" = "2" }

    [server]                 # the server daemon's options
    close = "immediate"      # immediate | linger:D | never | abort | first[:N] | half[:N]
    farewell = "bye"         # optional
    port = 7007              # where it listens (the client connects to [client] port)

    [client]
    close = "active"         # active | shutdown | passive | abort | never
    send = ["hello"]
    count = 1
    concurrency = 1
    port = 7007
    connect_timeout = "10s"

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
validation (:func:`load` / :func:`parse`) and the JSON Schema
(:func:`json_schema`, ``tcplab schema``): every allowed value, range and
length is written there once.  Validation checks every key, type and range
before anything starts, and each error names the file, the line, the field
and what was expected.  Grammars with a parser of their own — close
policies (:mod:`core.policies`), rules (:mod:`proxy.rules`), durations
(:mod:`core.units`) — are checked by that parser, the same one the daemons
use.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from core import events
from core import rules as rulesmod
from core.policies import CLIENT_POLICIES, SERVER_POLICY_PATTERN, ClosePolicy
from core.units import format_duration, parse_duration
from proxy.options import ProxyOptions

SIDES_SYSCTL = ("cli", "mbx", "srv")
STATE_NAMES = tuple(sorted(events.STATE_NAMES))
MAX_FILE_BYTES = 256 * 1024
"""A scenario is a page of text; anything bigger is a mistake (or an attack)."""
HOUR = 3600.0

SYSCTL_KEY = r"^net(\.[A-Za-z0-9_-]{1,64}){2,6}$"
SYSCTL_VALUE = r"^[A-Za-z0-9_.:,/ -]{1,128}$"
"""A number, numbers separated by spaces (ip_local_port_range) or a name
(tcp_congestion_control); the kernel checks the range when it is written."""


class ScenarioError(ValueError):
    """An invalid scenario file: ``file:line: field: what was expected``."""


@dataclasses.dataclass(frozen=True, slots=True)
class Field:
    """One key of a scenario file: what it holds and what is allowed.

    ``kind``: ``str``, ``int``, ``bool``, ``duration``, ``choice``,
    ``choice-list``, ``str-list``, ``duration-pair``, ``duration-map``
    (state → duration), ``sysctl-map``, ``server-close``, ``table`` and
    ``table-list`` (with ``sub``)."""

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


def _duration(description: str, minimum: float = 0.0, maximum: float = HOUR) -> Field:
    return Field("duration", description, minimum=minimum, maximum=maximum)


ONE_LINE = r"^[^\r\n]*$"
LAB = {"sysctls": Field("sysctl-map", "side -> {key: value}", max_items=3)}
SERVER = {
    "close": Field("server-close", "immediate | linger:D | never | abort | first[:N] | half[:N]",
                   pattern=SERVER_POLICY_PATTERN, max_length=64),
    "farewell": Field("str", "a line the server sends from CLOSE_WAIT", pattern=ONE_LINE,
                      max_length=1024),
    "port": Field("int", "listening port", minimum=1, maximum=65535),
    "idle_timeout": _duration("per-connection idle timeout", minimum=0.001),
}  # fmt: skip
CLIENT = {
    "close": Field("choice", " | ".join(CLIENT_POLICIES), choices=CLIENT_POLICIES),
    "send": Field("str-list", "messages, one line each", pattern=ONE_LINE, max_length=65536,
                  max_items=1000),
    "count": Field("int", "connections", minimum=1, maximum=100_000),
    "concurrency": Field("int", "connections at a time", minimum=1, maximum=10_000),
    "port": Field("int", "port to connect to", minimum=1, maximum=65535),
    "connect_timeout": _duration("give up connecting after", minimum=0.001),
    "ipv6": Field("bool", "talk over IPv6"),
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


# --- the parsed scenario ---------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class SideExpect:
    states: tuple[str, ...] | None = None
    may_infer: frozenset[str] = frozenset()
    may_skip: frozenset[str] = frozenset()
    connection: int = 1
    min_in: Mapping[str, float] = dataclasses.field(default_factory=dict)
    max_in: Mapping[str, float] = dataclasses.field(default_factory=dict)
    exit: int | None = None
    errors: tuple[str, ...] = ()
    final: tuple[str, ...] | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class SegmentExpect:
    side: str | None
    tags: tuple[str, ...]
    flags: str | None
    verdict: str | None
    after: tuple[float, float] | None
    count: int | None
    line: int
    without: tuple[str, ...] = ()

    def describe(self) -> str:
        who = f"{self.side} " if self.side else ""
        what = "+".join(self.tags) or (self.flags or "segment")
        if self.without:
            what += "".join(f" (not {tag})" for tag in self.without)
        verdict = f" {self.verdict}" if self.verdict else ""
        return f"{who}{what}{verdict}"


@dataclasses.dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    title: str
    teaches: str
    teaches_zh: str
    path: str
    sysctls: Mapping[str, Mapping[str, str]]
    server: Mapping[str, Any]
    client: Mapping[str, Any]
    rules: tuple[rulesmod.Rule, ...]
    pace: float | None
    log_segments: str
    observe_for: float
    deadline: float
    expect_client: SideExpect
    expect_server: SideExpect
    expect_segments: tuple[SegmentExpect, ...]

    def proxy_options(self, *, pace: float | None = None) -> ProxyOptions:
        """The rules, pace and segment logging the proxy gets; ``pace``, when
        given, replaces the scenario's."""
        return ProxyOptions(
            rules=tuple(self.rules),
            pace=(self.pace or None) if pace is None else pace,
            log_segments=self.log_segments,  # type: ignore[arg-type]
        )


# --- locating fields in the text ----------------------------------------------------

_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r'^\s*("?)([A-Za-z0-9_.\-"]+)\1\s*=')


def locate(text: str, table: str, key: str | None = None, index: int = 0) -> int:
    """The line (1-based) of ``key`` in ``[table]`` (the ``index``-th
    ``[[table]]`` for arrays), or of the table header; 0 if not found."""
    current = ""
    seen = -1
    header_line = 0
    for number, line in enumerate(text.splitlines(), 1):
        match = _HEADER.match(line)
        if match:
            current = match.group(1).replace('"', "").replace(" ", "")
            if current == table:
                seen += 1
                if seen == index:
                    header_line = number
            continue
        if current == table and seen == index and key is not None:
            kmatch = _KEY.match(line)
            if kmatch and kmatch.group(2).strip('"') == key:
                return number
        if table == "" and current == "" and key is not None:
            kmatch = _KEY.match(line)
            if kmatch and kmatch.group(2).strip('"') == key:
                return number
    return header_line


# --- validating against the description ---------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Checker:
    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.text = text

    def fail(self, table: str, key: str | None, message: str, index: int = 0) -> ScenarioError:
        line = locate(self.text, table, key, index)
        if not line and key is not None:  # a table written as [table.key]
            line = locate(self.text, f"{table}.{key}".lstrip("."), None, index)
        where = f"{self.path}:{line}" if line else self.path
        field = ".".join(p for p in (table, key) if p)
        return ScenarioError(f"{where}: {field or 'file'}: {message}")

    def table(self, data: Any, spec: Field, table: str, index: int = 0) -> dict[str, Any]:
        """A table checked against ``spec.sub``: every key known, every value
        valid, every required key there."""
        fields = spec.sub or {}
        if not isinstance(data, dict):
            raise self.fail(table, None, "expected a table", index)
        for key in data:
            if key not in fields:
                allowed = ", ".join(fields)
                raise self.fail(table, key, f"unknown key (allowed: {allowed})", index)
        for key in spec.required:
            if key not in data:
                raise self.fail(table, None, f"missing {key!r} ({fields[key].description})", index)
        return {
            key: self.value(value, fields[key], table, key, index) for key, value in data.items()
        }

    def value(self, value: Any, field: Field, table: str, key: str, index: int) -> Any:
        def bad(expected: str) -> ScenarioError:
            shown = repr(value)
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            return self.fail(
                table, key, f"expected {expected} ({field.description}), got {shown}", index
            )

        def number(n: Any, what: str = "a whole number") -> int:
            if not _is_int(n):
                raise bad(what)
            low = int(field.minimum) if field.minimum is not None else 0
            high = int(field.maximum) if field.maximum is not None else 2**31
            if not low <= n <= high:
                raise bad(f"{what}, {low} to {high}")
            return int(n)

        def text(s: Any, what: str = "a string", pattern: str | None = field.pattern) -> str:
            if not isinstance(s, str):
                raise bad(what)
            if len(s) > field.max_length:
                raise bad(f"{what} of at most {field.max_length} characters")
            if pattern is not None and not re.fullmatch(pattern, s):
                if field.hint:
                    raise self.fail(table, key, field.hint, index)
                raise bad(f"{what} matching {pattern}")
            return s

        def duration(s: Any) -> float:
            if not isinstance(s, str) or len(s) > 32:
                raise bad('a duration string like "250ms"')
            try:
                seconds = parse_duration(s)
            except ValueError as exc:
                raise self.fail(table, key, str(exc), index) from None
            low = field.minimum or 0.0
            high = field.maximum if field.maximum is not None else HOUR
            if not low <= seconds <= high:
                raise bad(f"a duration from {format_duration(low)} to {format_duration(high)}")
            return seconds

        def items(v: Any, what: str) -> list[Any]:
            if not isinstance(v, list):
                raise bad(what)
            if len(v) > field.max_items:
                raise bad(f"{what}, at most {field.max_items}")
            return v

        def choice(c: Any) -> str:
            if isinstance(c, str) and c in field.choices:
                return c
            close = difflib.get_close_matches(str(c), field.choices, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            shown = repr(c) if len(repr(c)) <= 40 else repr(c)[:37] + "..."
            message = f"unknown value {shown}{hint}: expected one of {', '.join(field.choices)}"
            raise self.fail(table, key, message, index)

        kind = field.kind
        if kind == "str":
            return text(value)
        if kind == "int":
            return number(value)
        if kind == "int-or-list":
            numbers = [value] if not isinstance(value, list) else items(value, "numbers")
            return [number(n) for n in numbers] if isinstance(value, list) else number(value)
        if kind == "bool":
            if not isinstance(value, bool):
                raise bad("true or false")
            return value
        if kind == "duration":
            return duration(value)
        if kind == "choice":
            return choice(value)
        if kind == "choice-list":
            return tuple(choice(c) for c in items(value, "a list"))
        if kind == "str-list":
            return tuple(text(s, "strings") for s in items(value, "a list of strings"))
        if kind == "server-close":
            text(value, pattern=None)  # the grammar's own parser says what is wrong
            try:
                ClosePolicy.parse(value)
            except ValueError as exc:
                raise self.fail(table, key, str(exc), index) from None
            return value
        if kind == "duration-pair":
            pair = items(value, 'two durations, ["900ms", "1500ms"]')
            if len(pair) != 2:
                raise bad('two durations, ["900ms", "1500ms"]')
            low, high = (duration(v) for v in pair)
            if low > high:
                raise self.fail(table, key, f"{pair[0]} is more than {pair[1]}", index)
            return (low, high)
        if kind == "duration-map":
            if not isinstance(value, dict):
                raise bad('a table of state = "duration"')
            return {choice(state): duration(spelled) for state, spelled in value.items()}
        if kind == "sysctl-map":
            return self._sysctls(value, field, table, key, index, bad)
        if kind in ("table", "table-list"):
            return value  # checked by the caller against its sub-fields
        raise AssertionError(kind)

    def _sysctls(
        self, value: Any, field: Field, table: str, key: str, index: int, bad: Any
    ) -> dict[str, dict[str, str]]:
        if not isinstance(value, dict):
            raise bad("a table of side = { key = value }")
        out: dict[str, dict[str, str]] = {}
        for side, values in value.items():
            if side not in SIDES_SYSCTL:
                raise self.fail(table, key, f"unknown side {side!r} (cli, mbx, srv)", index)
            if not isinstance(values, dict) or len(values) > 64:
                raise bad("a table per side, at most 64 keys")
            for name, setting in values.items():
                if not name.startswith("net."):
                    message = f"{side}: {name!r}: only net.* sysctls are per namespace"
                    raise self.fail(table, key, message, index)
                if not re.fullmatch(SYSCTL_KEY, name):
                    raise self.fail(table, key, f"{side}: {name!r} is not a sysctl name", index)
                if not known_sysctl(name):
                    message = f"{side}: {name!r}: no such sysctl on this kernel"
                    raise self.fail(table, key, message, index)
                if isinstance(setting, bool) or not isinstance(setting, str | int):
                    raise bad(f"{name} as a string or number")
                if isinstance(setting, int) and abs(setting) > 2**63:
                    raise bad(f"{name}: a number that fits in 64 bits")
                if not re.fullmatch(SYSCTL_VALUE, str(setting)):
                    raise bad(f"{name}: a number, numbers or a name ({SYSCTL_VALUE})")
            out[side] = {k: str(v) for k, v in values.items()}
        return out


def known_sysctl(name: str) -> bool:
    """Whether this kernel has the sysctl (``/proc/sys/net/...``).  Where
    /proc/sys/net cannot be read (not Linux), every well-formed name is."""
    root = Path("/proc/sys/net")
    if not root.is_dir():
        return True
    return Path("/proc/sys", *name.split(".")).exists()


def parse(text: str, path: str = "<scenario>") -> Scenario:
    """Validate and parse a scenario; :class:`ScenarioError` on the first problem."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
        raise ScenarioError(f"{path}: a scenario file is at most {MAX_FILE_BYTES // 1024} KiB")
    check = _Checker(path, text)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:
        raise ScenarioError(f"{path}: not valid TOML: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer of thousands of digits
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from None
    top = check.table(data, SPEC, "")
    lab = check.table(top.get("lab", {}), TOP["lab"], "lab")
    server = check.table(top.get("server", {}), TOP["server"], "server")
    client = check.table(top.get("client", {}), TOP["client"], "client")
    proxy = check.table(top.get("proxy", {}), TOP["proxy"], "proxy")
    rules: list[rulesmod.Rule] = []
    raw_rules = proxy.get("rules", [])
    if not isinstance(raw_rules, list) or len(raw_rules) > PROXY["rules"].max_items:
        raise check.fail("proxy", "rules", "expected [[proxy.rules]] tables, at most 256")
    for i, table in enumerate(raw_rules):
        check.table(table, PROXY["rules"], "proxy.rules", i)
        line = locate(text, "proxy.rules", None, i)
        try:
            rules.append(rulesmod.parse_table(table, f"{path}:{line}: [[proxy.rules]] #{i + 1}"))
        except rulesmod.RuleError as exc:
            raise ScenarioError(str(exc)) from None
    run = check.table(top.get("run", {}), TOP["run"], "run")
    expect = check.table(top.get("expect", {}), TOP["expect"], "expect")
    sides = {}
    for side in ("client", "server"):
        raw = check.table(expect.get(side, {}), EXPECT[side], f"expect.{side}")
        sides[side] = SideExpect(
            states=raw.get("states"),
            may_infer=frozenset(raw.get("may_infer", ())),
            may_skip=frozenset(raw.get("may_skip", ())),
            connection=raw.get("connection", 1),
            min_in=raw.get("min_in", {}),
            max_in=raw.get("max_in", {}),
            exit=raw.get("exit"),
            errors=raw.get("errors", ()),
            final=raw.get("final"),
        )
    segments = []
    raw_segments = expect.get("segments", [])
    if not isinstance(raw_segments, list) or len(raw_segments) > EXPECT["segments"].max_items:
        raise check.fail("expect", "segments", "expected [[expect.segments]] tables, at most 256")
    for i, table in enumerate(raw_segments):
        raw = check.table(table, EXPECT["segments"], "expect.segments", i)
        tags = tuple(raw.get("tags", ())) + ((raw["tag"],) if "tag" in raw else ())
        segments.append(
            SegmentExpect(
                raw.get("from"),
                tags,
                raw.get("flags"),
                raw.get("verdict"),
                raw.get("after"),
                raw.get("count"),
                locate(text, "expect.segments", None, i),
                tuple(raw.get("without", ())),
            )
        )
    return Scenario(
        name=top["name"],
        title=top["title"],
        teaches=top["teaches"].strip(),
        teaches_zh=top["teaches_zh"].strip(),
        path=path,
        sysctls=lab.get("sysctls", {}),
        server=server,
        client=client,
        rules=tuple(rules),
        pace=proxy.get("pace"),
        log_segments=proxy.get("log_segments", "all"),
        observe_for=run.get("observe_for", 2.0),
        deadline=run.get("deadline", 60.0),
        expect_client=sides["client"],
        expect_server=sides["server"],
        expect_segments=tuple(segments),
    )


def load(path: str | Path) -> Scenario:
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ScenarioError(f"{path}: a scenario file is at most {MAX_FILE_BYTES // 1024} KiB")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: cannot read: {exc}") from None
    return parse(text, str(path))


CATALOGUE = Path(__file__).resolve().parents[1] / "scenarios"


def catalogue() -> list[Path]:
    """The shipped scenarios, by file name."""
    return sorted(CATALOGUE.glob("*.toml"))


def find(name_or_path: str) -> Path:
    """A catalogue name (``lost-syn``) or a file path."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or candidate.exists():
        if not candidate.exists():
            raise ScenarioError(f"{candidate}: no such file")
        return candidate
    shipped = CATALOGUE / f"{name_or_path}.toml"
    if re.fullmatch(TOP["name"].pattern or "", name_or_path) and shipped.exists():
        return shipped
    names = ", ".join(p.stem for p in catalogue())
    raise ScenarioError(f"no scenario named {name_or_path!r} (catalogue: {names})")


# --- JSON Schema, from the same description ---------------------------------------------

DURATION_PATTERN = r"^\s*(\d+(\.\d*)?|\.\d+)\s*(us|µs|ms|s|min|m|h)\s*$"


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
