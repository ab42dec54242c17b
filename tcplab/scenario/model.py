"""The parsed scenario, and how a file becomes one: :func:`parse` (text),
:func:`load` (a file), :func:`find` (a catalogue name or a path).

What a file may hold is :mod:`tcplab.scenario.spec`; checking its values is
:mod:`tcplab.scenario.validate`.  Here the checked tables are turned into
:class:`Scenario`, the one shape the runner (:func:`tcplab.runner.scenario_options`)
and the checker of a finished run (:mod:`tcplab.scenario.check`) read, with
every default filled in, so neither looks at the TOML.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from core import rules as rulesmod
from proxy.options import ProxyOptions
from tcplab.scenario.locate import locate
from tcplab.scenario.spec import EXPECT, PROXY, SPEC, TOP
from tcplab.scenario.validate import Checker, ScenarioError

MAX_FILE_BYTES = 256 * 1024
"""A scenario is a page of text; anything bigger is a mistake (or an attack)."""


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
    listener: tuple[str, ...] | None = None
    reset_in: tuple[str, ...] = ()
    timer_restarted: Mapping[str, float] = dataclasses.field(default_factory=dict)
    counters: Mapping[str, int] = dataclasses.field(default_factory=dict)
    """``nstat`` name → how much the namespace's counter rose, at least."""


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
    title_zh: str
    """The title in Chinese; empty where the file has none."""
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

    def title_in(self, lang: str) -> str:
        """The title in ``lang`` (``en`` or ``zh``): the English one where
        there is no Chinese one."""
        return self.title_zh if lang == "zh" and self.title_zh else self.title

    def teaches_in(self, lang: str) -> str:
        """What the scenario shows, in ``lang`` (``en`` or ``zh``)."""
        return self.teaches_zh if lang == "zh" else self.teaches

    def proxy_options(self, *, pace: float | None = None) -> ProxyOptions:
        """The rules, pace and segment logging the proxy gets; ``pace``, when
        given, replaces the scenario's."""
        return ProxyOptions(
            rules=tuple(self.rules),
            pace=(self.pace or None) if pace is None else pace,
            log_segments=self.log_segments,  # type: ignore[arg-type]
        )


# --- from text ---------------------------------------------------------------------


def parse(text: str, path: str = "<scenario>") -> Scenario:
    """Validate and parse a scenario; :class:`ScenarioError` on the first problem."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
        raise ScenarioError(f"{path}: a scenario file is at most {MAX_FILE_BYTES // 1024} KiB")
    check = Checker(path, text)
    data = _toml(text, path)
    # the tables in the order they are checked: the first problem is reported
    top = check.table(data, SPEC, "")
    lab = check.table(top.get("lab", {}), TOP["lab"], "lab")
    server = check.table(top.get("server", {}), TOP["server"], "server")
    client = check.table(top.get("client", {}), TOP["client"], "client")
    proxy = check.table(top.get("proxy", {}), TOP["proxy"], "proxy")
    rules = _rules(check, proxy.get("rules", []))
    run = check.table(top.get("run", {}), TOP["run"], "run")
    expect = check.table(top.get("expect", {}), TOP["expect"], "expect")
    sides = {side: _side_expect(check, expect, side) for side in ("client", "server")}
    segments = _segments(check, expect.get("segments", []))
    return Scenario(
        name=top["name"],
        title=top["title"],
        title_zh=top.get("title_zh", ""),
        teaches=top["teaches"].strip(),
        teaches_zh=top["teaches_zh"].strip(),
        path=path,
        sysctls=lab.get("sysctls", {}),
        server=server,
        client=client,
        rules=rules,
        pace=proxy.get("pace"),
        log_segments=proxy.get("log_segments", "all"),
        observe_for=run.get("observe_for", 2.0),
        deadline=run.get("deadline", 60.0),
        expect_client=sides["client"],
        expect_server=sides["server"],
        expect_segments=segments,
    )


def _toml(text: str, path: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:
        raise ScenarioError(f"{path}: not valid TOML: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer of thousands of digits
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from None


def _rules(check: Checker, raw_rules: Any) -> tuple[rulesmod.Rule, ...]:
    """``[[proxy.rules]]``: each table's keys checked here, then the rule
    itself by the proxy's own parser."""
    if not isinstance(raw_rules, list) or len(raw_rules) > PROXY["rules"].max_items:
        raise check.fail("proxy", "rules", "expected [[proxy.rules]] tables, at most 256")
    rules: list[rulesmod.Rule] = []
    for i, table in enumerate(raw_rules):
        check.table(table, PROXY["rules"], "proxy.rules", i)
        line = locate(check.text, "proxy.rules", None, i)
        try:
            rules.append(
                rulesmod.parse_table(table, f"{check.path}:{line}: [[proxy.rules]] #{i + 1}")
            )
        except rulesmod.RuleError as exc:
            raise ScenarioError(str(exc)) from None
    return tuple(rules)


def _side_expect(check: Checker, expect: Mapping[str, Any], side: str) -> SideExpect:
    raw = check.table(expect.get(side, {}), EXPECT[side], f"expect.{side}")
    return SideExpect(
        states=raw.get("states"),
        may_infer=frozenset(raw.get("may_infer", ())),
        may_skip=frozenset(raw.get("may_skip", ())),
        connection=raw.get("connection", 1),
        min_in=raw.get("min_in", {}),
        max_in=raw.get("max_in", {}),
        exit=raw.get("exit"),
        errors=raw.get("errors", ()),
        final=raw.get("final"),
        listener=raw.get("listener"),
        reset_in=raw.get("reset_in", ()),
        timer_restarted=raw.get("timer_restarted", {}),
        counters=raw.get("counters", {}),
    )


def _segments(check: Checker, raw_segments: Any) -> tuple[SegmentExpect, ...]:
    if not isinstance(raw_segments, list) or len(raw_segments) > EXPECT["segments"].max_items:
        raise check.fail("expect", "segments", "expected [[expect.segments]] tables, at most 256")
    segments = []
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
                locate(check.text, "expect.segments", None, i),
                tuple(raw.get("without", ())),
            )
        )
    return tuple(segments)


# --- from files --------------------------------------------------------------------


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
