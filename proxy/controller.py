"""The control requests, applied to the middlebox's rule engine (pure).

What the control socket (:mod:`proxy.control`) is for: one JSON request in,
one answer out (the requests are listed in :mod:`core.control`).

Every answer has ``"ok"``; a refused request has ``"error"`` saying why
(a field of the wrong type or an unknown field is named).

Whoever can open the socket can send anything, so what one request may ask
is capped too, each cap with a clear error: a string field is at most
:data:`MAX_FIELD` characters, ``nth`` lists at most :data:`MAX_NTH`
numbers, and the engine holds at most :data:`MAX_RULES` rules.

:class:`Controller` never raises for bad input, whatever the bytes; no
sockets, no trio, no clock: the time a request arrived is passed in
with it, and stamps what it logs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from core import rules as rulesmod
from core.control import parse_request
from core.events import RulesChanged, emit
from core.units import format_duration
from proxy.middlebox import Middlebox

MAX_FIELD = 256
"""Longest string accepted in a request field (a rule, a name, a duration)."""
MAX_NTH = 64
"""Most occurrence numbers one rule may list (``@1,2,3``…)."""
MAX_RULES = 256
"""Rules the engine holds at most; each one is tried on every segment, and
a lab needs a handful."""
_OPS: dict[str, dict[str, tuple[type, ...]]] = {
    "rules": {},
    "add": {"action": (str,), "rule": (str,), "table": (dict,)},
    "rm": {"name": (str,)},
    "clear": {},
    "release": {"rule": (str, type(None))},
    "pace": {"value": (str, type(None))},
}
"""Each op's fields (besides ``op``) and the JSON types they accept."""
_OP_NAMES = ", ".join(_OPS)

_TYPE_NAMES: dict[type, str] = {str: "a string", dict: "an object", type(None): "null"}


class ControlError(ValueError):
    """A request that cannot be carried out; the message says why."""


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _brief(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Controller:
    """Applies control requests to a middlebox's rule engine."""

    def __init__(
        self,
        middlebox: Middlebox,
        *,
        release: Callable[[str | None], int],
        changed: Callable[[], None] = lambda: None,
        log: Any = None,
        max_rules: int = MAX_RULES,
    ) -> None:
        self.middlebox = middlebox
        self._release = release
        self._changed = changed
        self.log = log
        self._now = 0.0
        """When the request being handled arrived (the ``ts`` of what it logs)."""
        self.max_rules = max_rules
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "requests",
                "refused",
                "busy",
                "too_long",
                "timed_out",
                "idle_closed",
                "accept_errors",
                "internal_errors",
            ),
            0,
        )
        """What the control socket turned away (shown by ``rules``)."""

    def handle_line(self, line: bytes, now: float) -> dict[str, Any]:
        """One request line (without its newline), received at ``now``
        (wall clock) → its answer.  Never raises, whatever the bytes."""
        request, error = parse_request(line)
        if error is not None:
            self.stats["requests"] += 1
            self.stats["refused"] += 1
            return {"ok": False, "error": error}
        return self.handle(request, now)

    def handle(self, request: Any, now: float) -> dict[str, Any]:
        """One request, received at ``now`` (wall clock) → one response;
        never raises for bad input."""
        self._now = now
        self.stats["requests"] += 1
        try:
            op = self._check(request)
            answer = self._apply(op, request)
        except ControlError as exc:
            answer = {"ok": False, "error": str(exc)}
        except (rulesmod.RuleError, ValueError, KeyError) as exc:
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            answer = {"ok": False, "error": f"{request.get('op')}: {message}"}
        if not answer["ok"]:
            self.stats["refused"] += 1
        return answer

    def _check(self, request: Any) -> str:
        """The request's op, once every field has its type."""
        if not isinstance(request, dict):
            raise ControlError(f"request must be a JSON object, not {_json_type(request)}")
        if "op" not in request:
            raise ControlError(f"'op' is required ({_OP_NAMES})")
        op = request["op"]
        if not isinstance(op, str):
            raise ControlError(f"'op' must be a string, not {_json_type(op)}")
        fields = _OPS.get(op)
        if fields is None:
            raise ControlError(f"unknown op {_brief(op)} ({_OP_NAMES})")
        for key, value in request.items():
            if key == "op":
                continue
            if key not in fields:
                allowed = ", ".join(repr(k) for k in fields) or "none"
                raise ControlError(f"{op}: unknown field {_brief(key)} (allowed: {allowed})")
            types = fields[key]
            if not isinstance(value, types):
                wanted = " or ".join(_TYPE_NAMES[t] for t in types)
                raise ControlError(f"{op}: {key!r} must be {wanted}, not {_json_type(value)}")
            _check_strings(op, key, value)
        return op

    def _apply(self, op: str, request: dict[str, Any]) -> dict[str, Any]:
        engine = self.middlebox.engine
        if op == "rules":
            return {"ok": True, **self.status()}
        if op == "add":
            if len(engine.rules) >= self.max_rules:
                raise ControlError(
                    f"add: {self.max_rules} rules already, the most the proxy holds; "
                    "remove some first (rm, clear)"
                )
            rule = self._rule_from(request)
            rule = engine.add(rule)
            self._note("add", rule=rule.name)
            return {"ok": True, "name": rule.name}
        if op == "rm":
            if "name" not in request:
                raise ControlError("rm: 'name' (a rule name) is required")
            name = request["name"]
            engine.remove(name)
            self._forget_counts()
            self._note("rm", rule=name)
            return {"ok": True, "name": name}
        if op == "clear":
            engine.clear()
            self._forget_counts()
            self._note("clear")
            return {"ok": True}
        if op == "release":
            rule_name = request.get("rule")
            count = self._release(rule_name)
            self._note("release", rule=rule_name, frames=count)
            return {"ok": True, "released": count}
        assert op == "pace"
        value = request.get("value")
        pace = None if value in (None, "", "off") else rulesmod.parse_pace(str(value))
        engine.set_pace(pace)
        self._note("pace", value=format_duration(pace) if pace else None)
        return {"ok": True, "pace": format_duration(pace) if pace else None}

    def status(self) -> dict[str, Any]:
        mb = self.middlebox
        pace = mb.engine.pace
        return {
            "rules": mb.engine.describe(),
            "pace": format_duration(pace) if pace else None,
            "counters": dict(mb.counters),
            "held": mb.held.held_by(),
            "delayed": len(mb.delayed),
            "flows": len(mb.flows),
            "neighbours": mb.neighbours.sizes(),
            "drops_unlogged": mb.drop_log.suppressed(),
            "control": dict(self.stats),
        }

    def _rule_from(self, request: dict[str, Any]) -> rulesmod.Rule:
        if "table" in request:
            table = request["table"]
            nth = table.get("nth")
            if isinstance(nth, list) and len(nth) > MAX_NTH:
                raise ControlError(f"add: 'table.nth' lists {len(nth)} numbers (at most {MAX_NTH})")
            return rulesmod.parse_table(table, "'table'")
        action, text = request.get("action"), request.get("rule")
        if action is None or text is None:
            raise ControlError("add: give 'action' and 'rule' (e.g. drop, syn-ack@1) or a 'table'")
        if text.count(",") >= MAX_NTH:
            raise ControlError(f"add: 'rule' lists more than {MAX_NTH} occurrences")
        return rulesmod.parse_cli(action, text)

    def _forget_counts(self) -> None:
        # The engine keeps matched/fired counts by rule name and never drops
        # them; without this, add/rm cycles with fresh names grow it forever.
        engine = self.middlebox.engine
        names = {r.name for r in engine.rules}
        for counts in (engine.fired, engine.matched):
            for name in [n for n in counts if n not in names]:
                del counts[name]

    def _note(self, op: str, **fields: Any) -> None:
        self._changed()
        if self.log is not None:
            emit(self.log, RulesChanged(ts=self._now, op=op, **fields))


def _check_strings(op: str, field: str, value: Any) -> None:
    """Every string in the request field ``field`` (keys included) is at
    most :data:`MAX_FIELD` characters long.  Iterative: safe at any depth."""
    stack: list[tuple[str, Any]] = [(field, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            if len(item) > MAX_FIELD:
                raise ControlError(
                    f"{op}: {_brief(where)} is {len(item)} characters long (at most {MAX_FIELD})"
                )
        elif isinstance(item, dict):
            for key, inner in item.items():
                name = f"{where}.{key}"
                if isinstance(key, str) and len(key) > MAX_FIELD:
                    raise ControlError(f"{op}: a key in {where!r} is too long")
                stack.append((name, inner))
        elif isinstance(item, list):
            stack.extend((where, inner) for inner in item)
