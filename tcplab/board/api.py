"""The board's HTTP API bodies, checked and turned into the middlebox's
control requests (pure).

The API is shaped like toxiproxy's (a list of named faults you add, list and
delete), but its rules are the lab's own grammar — the one ``--drop`` and
``--delay`` take (:mod:`core.rules`) — and every operation becomes the same
control request ``tcplab proxy …`` sends over the Unix socket, answered by
the one implementation of the rule operations in the proxy.

A bad body is an :class:`ApiError`: the HTTP status, the field that was
wrong and what was wrong with it.
"""

from __future__ import annotations

import json
from typing import Any

from core import rules
from core.units import format_duration

ACTIONS = ("drop", "delay", "duplicate", "hold", "reset")
MAX_BODY = 16 * 1024
"""Bytes a request body may have: a rule is a few dozen."""


class ApiError(ValueError):
    """A request the API refuses: ``status`` (4xx), the ``field`` at fault."""

    def __init__(self, status: int, field: str | None, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.field = field

    def as_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": str(self)}
        if self.field is not None:
            body["field"] = self.field
        return body


def parse_body(raw: bytes) -> dict[str, Any]:
    """A JSON object body (an empty body is ``{}``)."""
    if len(raw) > MAX_BODY:
        raise ApiError(413, None, f"the body is {len(raw)} bytes; at most {MAX_BODY}")
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, None, f"the body is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ApiError(400, None, f"the body must be a JSON object, not {type(value).__name__}")
    return value


def _only(body: dict[str, Any], allowed: tuple[str, ...]) -> None:
    for key in body:
        if key not in allowed:
            names = ", ".join(allowed) or "none"
            raise ApiError(400, str(key), f"unknown field {key!r} (allowed: {names})")


def _string(body: dict[str, Any], field: str, *, required: bool) -> str | None:
    value = body.get(field)
    if value is None:
        if required:
            raise ApiError(400, field, f"{field!r} is required")
        return None
    if not isinstance(value, str):
        raise ApiError(400, field, f"{field!r} must be a string, not {type(value).__name__}")
    return value


def add_request(body: dict[str, Any]) -> tuple[dict[str, Any], rules.Rule]:
    """``POST /api/rules``: ``{"action": "drop", "rule": "server:syn-ack@1"}``
    (``rule`` in the ``--drop`` grammar; a delay's duration after ``=``), or
    ``{"table": {...}}`` as in a scenario's ``[[rules]]``.  The control
    request, and the rule it adds (checked here, so a bad one is named
    before anything is sent)."""
    _only(body, ("action", "rule", "table"))
    if "table" in body:
        table = body["table"]
        if not isinstance(table, dict):
            raise ApiError(400, "table", f"'table' must be an object, not {type(table).__name__}")
        try:
            rule = rules.parse_table(table, "'table'")
        except rules.RuleError as exc:
            raise ApiError(422, "table", str(exc)) from None
        return {"op": "add", "table": table}, rule
    action = _string(body, "action", required=True)
    text = _string(body, "rule", required=True)
    assert action is not None and text is not None
    if action not in ACTIONS:
        raise ApiError(422, "action", f"unknown action {action!r} (one of {', '.join(ACTIONS)})")
    try:
        rule = rules.parse_cli(action, text)
    except rules.RuleError as exc:
        raise ApiError(422, "rule", str(exc)) from None
    return {"op": "add", "action": action, "rule": rules.format_rule(rule)}, rule


def release_request(body: dict[str, Any]) -> dict[str, Any]:
    """``POST /api/release``: ``{}`` (every held segment) or ``{"rule": NAME}``."""
    _only(body, ("rule",))
    return {"op": "release", "rule": _string(body, "rule", required=False)}


def pace_request(body: dict[str, Any]) -> dict[str, Any]:
    """``POST /api/pace``: ``{"value": "200ms"}``; ``null`` or ``"off"`` stops pacing."""
    _only(body, ("value",))
    value = _string(body, "value", required=False)
    if value in (None, "", "off"):
        return {"op": "pace", "value": None}
    assert value is not None
    try:
        pace = rules.parse_pace(value)
    except (rules.RuleError, ValueError) as exc:
        raise ApiError(422, "value", str(exc)) from None
    return {"op": "pace", "value": format_duration(pace)}


def rule_name(name: str) -> str:
    """``DELETE /api/rules/{name}``: the name, if it can be one."""
    if not name or len(name) > 200 or any(c.isspace() for c in name):
        raise ApiError(400, "name", f"not a rule name: {name[:40]!r}")
    return name


def proxy_answer(answer: dict[str, Any], field: str | None = None) -> dict[str, Any]:
    """The proxy's control answer, or its refusal as a 422 naming ``field``."""
    if not answer.get("ok"):
        error = str(answer.get("error", "refused"))
        status = 404 if "no rule" in error or "unknown rule" in error else 422
        raise ApiError(status, field, error)
    return {k: v for k, v in answer.items() if k != "ok"}
