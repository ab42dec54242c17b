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

Validation (:func:`load` / :func:`parse`) checks every key and type before
anything starts, and each error names the file, the line, the field and
what was expected.  :data:`SCHEMA` is the same description as JSON Schema,
generated from the tables below (``tcplab schema``), for editors.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from proxy import rules as rulesmod
from tcplab import connview, events
from tcplab.events import App, ObserverStop, Record, Segment
from tcplab.units import format_duration, parse_duration

SIDES_SYSCTL = ("cli", "mbx", "srv")
SERVER_POLICY = re.compile(r"^(immediate|never|abort|linger:\S+|first(:\d+)?|half(:\d+)?)$")
CLIENT_POLICIES = ("active", "shutdown", "passive", "abort", "never")
VERDICTS = ("pass", "drop", "delay", "hold", "release", "duplicate", "reset", "inject")
STATE_NAMES = sorted(events.STATE_NAMES)


class ScenarioError(ValueError):
    """An invalid scenario file: ``file:line: field: what was expected``."""


# --- the description: one table drives validation and the JSON Schema ----------

# kind: "str", "int", "bool", "duration", "str-list", "duration-pair",
# "duration-map", "state-list", "sysctl-map", "table", "table-list"
Field = tuple[str, str, str]  # (kind, description, json-schema extra hint)

TOP: dict[str, Field] = {
    "name": ("str", "short name, [a-z0-9-]", ""),
    "title": ("str", "one line", ""),
    "teaches": ("str", "what it shows, in English", ""),
    "teaches_zh": ("str", "what it shows, in Chinese", ""),
    "lab": ("table", "per-namespace sysctls", ""),
    "server": ("table", "the server daemon", ""),
    "client": ("table", "the client daemon", ""),
    "proxy": ("table", "rules and pace", ""),
    "run": ("table", "observation time and deadline", ""),
    "expect": ("table", "what must happen", ""),
}
REQUIRED_TOP = ("name", "title", "teaches", "teaches_zh")
LAB: dict[str, Field] = {"sysctls": ("sysctl-map", "side -> {key: value}", "")}
SERVER: dict[str, Field] = {
    "close": ("str", "immediate | linger:D | never | abort | first[:N] | half[:N]", ""),
    "farewell": ("str", "a line the server sends from CLOSE_WAIT", ""),
    "port": ("int", "listening port", ""),
    "idle_timeout": ("duration", "per-connection idle timeout", ""),
}
CLIENT: dict[str, Field] = {
    "close": ("str", "active | shutdown | passive | abort | never", ""),
    "send": ("str-list", "messages, one line each", ""),
    "count": ("int", "connections", ""),
    "concurrency": ("int", "connections at a time", ""),
    "port": ("int", "port to connect to", ""),
    "connect_timeout": ("duration", "give up connecting after", ""),
    "ipv6": ("bool", "talk over IPv6", ""),
}
PROXY: dict[str, Field] = {
    "pace": ("duration", "delay every segment (slow motion)", ""),
    "rules": ("table-list", "[[proxy.rules]]: action, tag, from, nth, conn, delay, name", ""),
    "log_segments": ("str", "all | control | none", ""),
}
RUN: dict[str, Field] = {
    "observe_for": ("duration", "observe this long after the conversation", ""),
    "deadline": ("duration", "the whole run must end within", ""),
}
EXPECT: dict[str, Field] = {
    "client": ("table", "the client's sockets", ""),
    "server": ("table", "the server's sockets", ""),
    "segments": ("table-list", "segments, in order", ""),
}
SIDE_EXPECT: dict[str, Field] = {
    "states": ("state-list", "the state sequence of one connection", ""),
    "may_infer": ("state-list", "states that may be inferred", ""),
    "may_skip": ("state-list", "states that may be missing", ""),
    "connection": ("int", "which connection (1 = first)", ""),
    "min_in": ("duration-map", "state -> least time in it", ""),
    "max_in": ("duration-map", "state -> most time in it", ""),
    "exit": ("int", "exit status", ""),
    "errors": ("str-list", "errno names that must appear in app_error events", ""),
    "final": ("state-list", "states of the sockets left at the end", ""),
}
SEGMENT_EXPECT: dict[str, Field] = {
    "from": ("str", "client | server", ""),
    "tag": ("str", "one role the segment has", ""),
    "tags": ("str-list", "roles the segment has, all of them", ""),
    "without": ("str-list", "roles the segment must not have (e.g. retransmit)", ""),
    "flags": ("str", "exact flags, e.g. FA", ""),
    "verdict": ("str", " | ".join(VERDICTS), ""),
    "after": ("duration-pair", "[min, max] since the previous expected segment", ""),
    "count": ("int", "exactly this many matching segments in the run (not a step)", ""),
}


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

    def proxy_args(self, *, pace: float | None = None) -> list[str]:
        """The rules and pace as ``python -m proxy`` options; ``pace``, when
        given, replaces the scenario's."""
        out: list[str] = []
        for rule in self.rules:
            out += [f"--{rule.action}", rulesmod.format_rule(rule)]
        pace = self.pace if pace is None else pace
        if pace:
            out += ["--pace", format_duration(pace)]
        if self.log_segments != "all":
            out += ["--log-segments", self.log_segments]
        return out


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


class _Checker:
    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.text = text

    def fail(self, table: str, key: str | None, message: str, index: int = 0) -> ScenarioError:
        line = locate(self.text, table, key, index)
        where = f"{self.path}:{line}" if line else self.path
        field = ".".join(p for p in (table, key) if p)
        return ScenarioError(f"{where}: {field or 'file'}: {message}")

    def table(
        self, data: Any, spec: Mapping[str, Field], table: str, index: int = 0
    ) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise self.fail(table, None, "expected a table", index)
        for key in data:
            if key not in spec:
                allowed = ", ".join(spec)
                raise self.fail(table, key, f"unknown key (allowed: {allowed})", index)
        out: dict[str, Any] = {}
        for key, value in data.items():
            out[key] = self.value(value, spec[key], table, key, index)
        return out

    def value(self, value: Any, field: Field, table: str, key: str, index: int) -> Any:
        kind, description, _ = field

        def bad(expected: str) -> ScenarioError:
            return self.fail(
                table, key, f"expected {expected} ({description}), got {value!r}", index
            )

        if kind == "str":
            if not isinstance(value, str):
                raise bad("a string")
            return value
        if kind == "int":
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise bad("a whole number ≥ 0")
            return value
        if kind == "bool":
            if not isinstance(value, bool):
                raise bad("true or false")
            return value
        if kind == "duration":
            if not isinstance(value, str):
                raise bad('a duration string like "250ms"')
            try:
                return parse_duration(value)
            except ValueError as exc:
                raise self.fail(table, key, str(exc), index) from None
        if kind == "str-list":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise bad("a list of strings")
            return tuple(value)
        if kind == "state-list":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise bad("a list of TCP state names")
            for state in value:
                if state not in events.STATE_NAMES:
                    known = ", ".join(STATE_NAMES)
                    raise self.fail(table, key, f"unknown TCP state {state!r} ({known})", index)
            return tuple(value)
        if kind == "duration-pair":
            if not (
                isinstance(value, list)
                and len(value) == 2
                and all(isinstance(v, str) for v in value)
            ):
                raise bad('two durations, ["900ms", "1500ms"]')
            try:
                low, high = (parse_duration(v) for v in value)
            except ValueError as exc:
                raise self.fail(table, key, str(exc), index) from None
            if low > high:
                raise self.fail(table, key, f"{value[0]} is more than {value[1]}", index)
            return (low, high)
        if kind == "duration-map":
            if not isinstance(value, dict):
                raise bad('a table of state = "duration"')
            out = {}
            for state, text in value.items():
                if state not in events.STATE_NAMES:
                    raise self.fail(table, key, f"unknown TCP state {state!r}", index)
                if not isinstance(text, str):
                    raise bad('durations as strings, e.g. SYN_SENT = "900ms"')
                try:
                    out[state] = parse_duration(text)
                except ValueError as exc:
                    raise self.fail(table, key, f"{state}: {exc}", index) from None
            return out
        if kind == "sysctl-map":
            if not isinstance(value, dict):
                raise bad("a table of side = { key = value }")
            out2: dict[str, dict[str, str]] = {}
            for side, values in value.items():
                if side not in SIDES_SYSCTL:
                    raise self.fail(table, key, f"unknown side {side!r} (cli, mbx, srv)", index)
                if not isinstance(values, dict):
                    raise bad("a table per side")
                for name, setting in values.items():
                    if not name.startswith("net."):
                        raise self.fail(
                            table, key, f"{side}: {name!r}: only net.* sysctls are per namespace",
                            index,
                        )  # fmt: skip
                    if not isinstance(setting, str | int):
                        raise bad(f"{name} as a string or number")
                out2[side] = {k: str(v) for k, v in values.items()}
            return out2
        if kind in ("table", "table-list"):
            return value  # checked by the caller against its own spec
        raise AssertionError(kind)


def parse(text: str, path: str = "<scenario>") -> Scenario:
    """Validate and parse a scenario; :class:`ScenarioError` on the first problem."""
    check = _Checker(path, text)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from None
    top = check.table(data, TOP, "")
    for key in REQUIRED_TOP:
        if key not in top:
            raise check.fail("", None, f"missing {key!r} ({TOP[key][1]})")
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", top["name"]):
        raise check.fail("", "name", "use lowercase letters, digits and dashes")
    lab = check.table(top.get("lab", {}), LAB, "lab")
    server = check.table(top.get("server", {}), SERVER, "server")
    if "close" in server and not SERVER_POLICY.match(server["close"]):
        raise check.fail(
            "server", "close", f"unknown policy {server['close']!r} ({SERVER['close'][1]})"
        )
    if "close" in server and server["close"].startswith("linger:"):
        try:
            parse_duration(server["close"].split(":", 1)[1])
        except ValueError as exc:
            raise check.fail("server", "close", str(exc)) from None
    client = check.table(top.get("client", {}), CLIENT, "client")
    if "close" in client and client["close"] not in CLIENT_POLICIES:
        raise check.fail(
            "client", "close", f"unknown policy {client['close']!r} ({CLIENT['close'][1]})"
        )
    for message in client.get("send", ()):
        if "\n" in message:
            raise check.fail("client", "send", "a message is one line (no newline)")
    proxy = check.table(top.get("proxy", {}), PROXY, "proxy")
    rules: list[rulesmod.Rule] = []
    raw_rules = proxy.get("rules", [])
    if not isinstance(raw_rules, list):
        raise check.fail("proxy", "rules", "expected [[proxy.rules]] tables")
    for i, table in enumerate(raw_rules):
        line = locate(text, "proxy.rules", None, i)
        try:
            rules.append(rulesmod.parse_table(table, f"{path}:{line}: [[proxy.rules]] #{i + 1}"))
        except rulesmod.RuleError as exc:
            raise ScenarioError(str(exc)) from None
    log_segments = proxy.get("log_segments", "all")
    if log_segments not in ("all", "control", "none"):
        raise check.fail("proxy", "log_segments", "expected all, control or none")
    run = check.table(top.get("run", {}), RUN, "run")
    expect = check.table(top.get("expect", {}), EXPECT, "expect")
    sides = {}
    for side in ("client", "server"):
        raw = check.table(expect.get(side, {}), SIDE_EXPECT, f"expect.{side}")
        sides[side] = SideExpect(
            states=raw.get("states"),
            may_infer=frozenset(raw.get("may_infer", ())),
            may_skip=frozenset(raw.get("may_skip", ())),
            connection=max(1, raw.get("connection", 1)),
            min_in=raw.get("min_in", {}),
            max_in=raw.get("max_in", {}),
            exit=raw.get("exit"),
            errors=raw.get("errors", ()),
            final=raw.get("final"),
        )
    segments = []
    raw_segments = expect.get("segments", [])
    if not isinstance(raw_segments, list):
        raise check.fail("expect", "segments", "expected [[expect.segments]] tables")
    for i, table in enumerate(raw_segments):
        raw = check.table(table, SEGMENT_EXPECT, "expect.segments", i)
        who: str | None = raw.get("from")
        if who not in (None, "client", "server"):
            raise check.fail("expect.segments", "from", "expected client or server", i)
        tags = tuple(raw.get("tags", ())) + ((raw["tag"],) if "tag" in raw else ())
        without = tuple(raw.get("without", ()))
        for field_name, listed in (("tags" if "tags" in raw else "tag", tags),
                                   ("without", without)):  # fmt: skip
            for tag in listed:
                if tag not in rulesmod.KNOWN_TAGS:
                    raise check.fail(
                        "expect.segments", field_name,
                        f"unknown tag {tag!r} ({', '.join(rulesmod.KNOWN_TAGS)})", i,
                    )  # fmt: skip
        verdict = raw.get("verdict")
        if verdict is not None and verdict not in VERDICTS:
            raise check.fail(
                "expect.segments", "verdict", f"expected one of {', '.join(VERDICTS)}", i
            )
        segments.append(
            SegmentExpect(
                who,
                tags,
                raw.get("flags"),
                verdict,
                raw.get("after"),
                raw.get("count"),
                locate(text, "expect.segments", None, i),
                without,
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
        log_segments=log_segments,
        observe_for=run.get("observe_for", 2.0),
        deadline=run.get("deadline", 60.0),
        expect_client=sides["client"],
        expect_server=sides["server"],
        expect_segments=tuple(segments),
    )


def load(path: str | Path) -> Scenario:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: cannot read: {exc}") from None
    return parse(text, str(path))


CATALOGUE = Path(__file__).resolve().parent / "scenarios"


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
    if shipped.exists():
        return shipped
    names = ", ".join(p.stem for p in catalogue())
    raise ScenarioError(f"no scenario named {name_or_path!r} (catalogue: {names})")


# --- JSON Schema --------------------------------------------------------------------

_JSON_KIND: dict[str, dict[str, Any]] = {
    "str": {"type": "string"},
    "int": {"type": "integer", "minimum": 0},
    "bool": {"type": "boolean"},
    "duration": {
        "type": "string",
        "pattern": r"^\s*(\d+(\.\d*)?|\.\d+)\s*(us|µs|ms|s|min|m|h)\s*$",
    },
    "str-list": {"type": "array", "items": {"type": "string"}},
    "state-list": {"type": "array", "items": {"enum": STATE_NAMES}},
    "duration-pair": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 2},
    "duration-map": {
        "type": "object",
        "propertyNames": {"enum": STATE_NAMES},
        "additionalProperties": {"type": "string"},
    },
    "sysctl-map": {
        "type": "object",
        "propertyNames": {"enum": list(SIDES_SYSCTL)},
        "additionalProperties": {
            "type": "object",
            "propertyNames": {"pattern": r"^net\."},
            "additionalProperties": {"type": ["string", "integer"]},
        },
    },
}


def _object(spec: Mapping[str, Field], nested: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for key, (kind, description, _) in spec.items():
        if key in nested:
            properties[key] = {**nested[key], "description": description}
        else:
            properties[key] = {**_JSON_KIND[kind], "description": description}
    return {"type": "object", "properties": properties, "additionalProperties": False}


def json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of a scenario file, from the tables above."""
    rule_table = {
        "type": "object",
        "properties": {
            "action": {"enum": list(rulesmod.ACTIONS)},
            "tag": {"enum": [*rulesmod.KNOWN_TAGS, rulesmod.ANY]},
            "from": {"enum": ["client", "server"]},
            "nth": {"oneOf": [{"type": "integer", "minimum": 1},
                              {"type": "array", "items": {"type": "integer", "minimum": 1}}]},
            "conn": {"type": "integer", "minimum": 1},
            "delay": _JSON_KIND["duration"],
            "name": {"type": "string"},
        },
        "required": ["action"],
        "additionalProperties": False,
    }  # fmt: skip
    segment = _object(SEGMENT_EXPECT, {})
    segment["properties"]["tag"] = {"enum": list(rulesmod.KNOWN_TAGS)}
    segment["properties"]["verdict"] = {"enum": list(VERDICTS)}
    side = _object(SIDE_EXPECT, {})
    schema = _object(
        TOP,
        {
            "lab": _object(LAB, {}),
            "server": _object(SERVER, {}),
            "client": _object(CLIENT, {}),
            "proxy": _object(PROXY, {"rules": {"type": "array", "items": rule_table}}),
            "run": _object(RUN, {}),
            "expect": _object(
                EXPECT,
                {"client": side, "server": side, "segments": {"type": "array", "items": segment}},
            ),
        },
    )
    schema["required"] = list(REQUIRED_TOP)
    schema["properties"]["client"]["properties"]["close"] = {"enum": list(CLIENT_POLICIES)}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "tcplab scenario",
        **schema,
    }


# --- checking a run against the expectations ------------------------------------------


def _fmt_t(ts: float, t0: float) -> str:
    return f"t={(ts - t0) * 1000:+.1f} ms"


def check(sc: Scenario, records: Sequence[Record], statuses: Mapping[str, int | None]) -> list[str]:
    """Every expectation that did not hold, in words (empty: the run passed).
    ``records`` in the order they arrived (each component's own in order)."""
    segs = sorted((r for r in records if isinstance(r, Segment)), key=lambda r: r.ts)
    t0 = connview.time_zero(records)
    failures: list[str] = []
    for side, want in (("client", sc.expect_client), ("server", sc.expect_server)):
        failures += _check_side(side, want, records, statuses.get(side), t0)
    failures += _check_segments(sc.expect_segments, segs, t0)
    return failures


def _check_side(
    side: str,
    want: SideExpect,
    records: Sequence[Record],
    status: int | None,
    t0: float,
) -> list[str]:
    out: list[str] = []
    if want.exit is not None and status != want.exit:
        out.append(f"{side}: expected exit status {want.exit}, saw {status}")
    # the run, for this side, ends with its observer's last report; what the
    # kernel does with sockets the program kept, as it exits, comes after
    conns = connview.paths(connview.until_stop(records, side), side)
    if want.states is not None or want.min_in or want.max_in:
        if len(conns) < want.connection:
            out.append(f"{side}: expected connection {want.connection}, saw {len(conns)}")
            return out
        path = conns[want.connection - 1]
        walked = path.states
        if want.states is not None:
            expected = [s for s in want.states if s not in want.may_skip or s in walked]
            if walked != expected:
                out.append(
                    f"{side}: expected states {' → '.join(expected)}, saw {' → '.join(walked)}"
                )
            inferred = {r.new for r in path.records if r.source == "inferred"}
            extra = sorted(inferred - want.may_infer)
            if extra:
                out.append(
                    f"{side}: {', '.join(extra)} only inferred (too quick for the poller); "
                    f"allowed inferred: {', '.join(sorted(want.may_infer)) or 'none'}"
                )
        for state, least in want.min_in.items():
            left = path.left(state)
            if left is None or left.in_old_ms is None:
                out.append(
                    f"{side}: expected to see it leave {state} (at least {least * 1000:g} ms)"
                )
            elif left.in_old_ms < least * 1000:
                out.append(
                    f"{side}: expected at least {least * 1000:g} ms in {state}, saw "
                    f"{left.in_old_ms:.1f} ms ({_fmt_t(left.ts, t0)})"
                )
        for state, most in want.max_in.items():
            left = path.left(state)
            if left is not None and left.in_old_ms is not None and left.in_old_ms > most * 1000:
                out.append(
                    f"{side}: expected at most {most * 1000:g} ms in {state}, saw "
                    f"{left.in_old_ms:.1f} ms ({_fmt_t(left.ts, t0)})"
                )
    if want.errors:
        seen = {
            str(r.how)
            for r in records
            if isinstance(r, App) and r.component == side and r.kind == events.APP_ERROR
        }
        missing = [name for name in want.errors if name not in seen]
        if missing:
            saw = ", ".join(sorted(seen)) or "none"
            out.append(f"{side}: expected errors {', '.join(missing)}, saw {saw}")
    if want.final is not None:
        stops = [r for r in records if isinstance(r, ObserverStop) and r.component == side]
        remaining = stops[-1].remaining if stops else ()
        states = sorted(str(sock.get("state")) for sock in remaining)
        if states != sorted(want.final):
            wanted = ", ".join(sorted(want.final)) or "no sockets"
            saw = ", ".join(states) or "none"
            out.append(f"{side}: expected {wanted} left at the end, saw {saw}")
    return out


def _matches(want: SegmentExpect, seg: Segment) -> bool:
    if want.side is not None and seg.dir != ("c2s" if want.side == "client" else "s2c"):
        return False
    if any(tag not in seg.tags for tag in want.tags):
        return False
    if any(tag in seg.tags for tag in want.without):
        return False
    if want.flags is not None and seg.flags != want.flags:
        return False
    return want.verdict is None or seg.verdict == want.verdict


def _check_segments(wants: tuple[SegmentExpect, ...], segs: list[Segment], t0: float) -> list[str]:
    out: list[str] = []
    position = 0
    previous: Segment | None = None
    for want in wants:
        if want.count is not None:
            # a count is about the whole run, not a step in the sequence
            found = sum(1 for e in segs if _matches(want, e))
            if found != want.count:
                out.append(f"segments: expected {want.count} × {want.describe()}, saw {found}")
            continue
        hit = next((i for i in range(position, len(segs)) if _matches(want, segs[i])), None)
        if hit is None:
            after = f" after {_fmt_t(previous.ts, t0)}" if previous else ""
            out.append(f"segments: expected {want.describe()}{after}, not seen")
            continue
        seg = segs[hit]
        if want.after is not None and previous is not None:
            gap = seg.ts - previous.ts
            low, high = want.after
            if not low <= gap <= high:
                out.append(
                    f"segments: expected {want.describe()} {low * 1000:g}–{high * 1000:g} ms after "
                    f"the previous one, saw {gap * 1000:.1f} ms ({_fmt_t(seg.ts, t0)})"
                )
        previous = seg
        position = hit + 1
    return out
