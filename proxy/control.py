"""Change the proxy's faults while traffic flows.

A Unix socket speaking one JSON object per line each way.  Requests::

    {"op": "rules"}                                  rules, counters, held segments
    {"op": "add", "action": "drop", "rule": "syn-ack@1"}     the CLI form
    {"op": "add", "table": {"action": "delay", "tag": "fin", "delay": "2s"}}
    {"op": "rm", "name": "drop-syn-ack@1"}
    {"op": "release"}            or {"op": "release", "rule": "hold-fin@1"}
    {"op": "clear"}                                  remove every rule
    {"op": "pace", "value": "250ms"}                 or null to stop pacing

Every answer has ``"ok"``; a refused request has ``"error"`` saying why
(a field of the wrong type or an unknown field is named).
``tcplab proxy rules|add|rm|release|clear|pace`` are clients of this socket.

Limits.  Whoever can open the socket can send anything, and nothing they
send may stop the proxy forwarding (one line of 60,000 ``[`` once did: a
RecursionError in ``json.loads``), so every resource the socket uses is
capped, and each cap answers with a clear error:

- a request line is at most :data:`MAX_REQUEST` bytes (a longer one is
  answered ``request too long`` and the connection closed, before any of it
  is parsed) and nests at most :data:`MAX_DEPTH` arrays or objects (checked
  by counting brackets before the line reaches the JSON parser);
- a string field is at most :data:`MAX_FIELD` characters, ``nth`` lists at
  most :data:`MAX_NTH` numbers, and the engine holds at most
  :data:`MAX_RULES` rules;
- at most :data:`MAX_CONNECTIONS` connections are served at once; one more
  is answered ``{"ok": false, "busy": true, "error": "busy: …"}`` and closed
  (no request is read from it, so a client may simply retry);
- a line must be finished within :data:`LINE_DEADLINE` of its first byte, a
  connection with nothing pending is closed after :data:`IDLE_TIMEOUT`, and
  an answer the client does not read within :data:`SEND_DEADLINE` closes it;
- ``accept()`` failing for want of descriptors or memory (EMFILE, ENFILE,
  ENOBUFS, ENOMEM) backs off :data:`ACCEPT_BACKOFF` and goes on, as
  ``trio.serve_listeners`` does.

:class:`Controller` is the pure part (a request line or dict in, a response
dict out, never an exception); :class:`LineBuffer` splits a byte stream into
lines, also pure; :func:`serve` is the trio shell.  The socket lives on the
filesystem (``/run/tcplab/<lab>.proxy.sock`` for a lab), mode 0600: whoever
may write there may change the faults.  :mod:`core.control` holds the framing and
the blocking client the CLI uses.
"""

from __future__ import annotations

import errno
import math
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from core import rules as rulesmod
from core.control import MAX_REQUEST, RECEIVE_SIZE, LineBuffer, encode_answer, parse_request
from core.events import LogMessage, RulesChanged, emit
from core.units import format_duration
from proxy.middlebox import Middlebox

MAX_FIELD = 256
"""Longest string accepted in a request field (a rule, a name, a duration)."""
MAX_NTH = 64
"""Most occurrence numbers one rule may list (``@1,2,3``…)."""
MAX_RULES = 256
"""Rules the engine holds at most; each one is tried on every segment, and
a lab needs a handful."""
MAX_CONNECTIONS = 64
"""Control connections served at once; the CLI opens one per request and
closes it, so more means a misbehaving client."""
LINE_DEADLINE = 5.0
"""Seconds from the first byte of a request line to its newline."""
IDLE_TIMEOUT = 60.0
"""Seconds a connection may stay open with nothing pending."""
SEND_DEADLINE = 5.0
"""Seconds an answer may wait for the client to read it."""
BUSY_SEND_DEADLINE = 0.1
"""Seconds the one-line ``busy`` answer may take (it fits any socket buffer)."""
BACKLOG = 128
"""listen(2) backlog: connections the kernel queues before accept (the
traditional SOMAXCONN, include/linux/socket.h before Linux 5.4).  A burst of
CLI requests waits here instead of failing with EAGAIN."""
ACCEPT_BACKOFF = 0.1
"""Seconds to wait after accept(2) fails for want of resources (trio's
``serve_listeners`` waits the same)."""
ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
"""accept(2) errors that mean the process or system is out of descriptors or
memory, not that the listener is broken (accept(2); trio's serve_listeners)."""
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


def busy_answer(limit: int = MAX_CONNECTIONS) -> dict[str, Any]:
    """What a connection beyond the limit gets, before it is closed."""
    return {
        "ok": False,
        "busy": True,
        "error": f"busy: {limit} control connections are open already; try again",
    }


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

    def handle_line(self, line: bytes) -> dict[str, Any]:
        """One request line (without its newline) → its answer.  Never
        raises, whatever the bytes."""
        request, error = parse_request(line)
        if error is not None:
            self.stats["requests"] += 1
            self.stats["refused"] += 1
            return {"ok": False, "error": error}
        return self.handle(request)

    def handle(self, request: Any) -> dict[str, Any]:
        """One request → one response; never raises for bad input."""
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
            emit(self.log, RulesChanged(ts=time.time(), op=op, **fields))


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


# --- the trio shell -------------------------------------------------------------


async def serve(
    path: str | Path,
    controller: Controller,
    *,
    max_connections: int = MAX_CONNECTIONS,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``path`` until cancelled; the socket file is removed on exit."""
    sock = await bind(path)
    task_status.started()
    await serve_socket(sock, path, controller, max_connections=max_connections)


async def bind(path: str | Path) -> trio.socket.SocketType:
    """The listening control socket at ``path`` (mode 0600; a stale socket
    file there is replaced).  Raises OSError if it cannot be made."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_socket():
        path.unlink()
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old_umask = os.umask(0o177)
        try:
            await sock.bind(str(path))
        finally:
            os.umask(old_umask)
        sock.listen(BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


async def serve_socket(
    sock: trio.socket.SocketType,
    path: str | Path,
    controller: Controller,
    *,
    max_connections: int = MAX_CONNECTIONS,
) -> None:
    """Serve connections on the listening ``sock`` until cancelled; closes
    it and removes ``path`` however this ends.  Sessions that fail are
    closed and logged; only an accept(2) error that is not about resources
    ends it (raised)."""
    try:
        listener = trio.SocketListener(sock)
        active = 0
        starved = False

        async def session(stream: trio.SocketStream) -> None:
            nonlocal active
            try:
                await _session(stream, controller)
            except Exception as exc:  # a bug: lose this connection, not the proxy
                controller.stats["internal_errors"] += 1
                _log(controller, f"control session failed: {exc!r}", "error")
            finally:
                active -= 1

        async with trio.open_nursery() as nursery:
            while True:
                try:
                    stream = await listener.accept()
                except OSError as exc:
                    if exc.errno not in ACCEPT_CAPACITY_ERRNOS:
                        raise
                    controller.stats["accept_errors"] += 1
                    if not starved:  # once per episode, not once per retry
                        _log(
                            controller,
                            f"control socket: accept failed ({errno.errorcode[exc.errno]}: "
                            f"{os.strerror(exc.errno)}); retrying every {ACCEPT_BACKOFF:g} s",
                        )
                    starved = True
                    await trio.sleep(ACCEPT_BACKOFF)
                    continue
                starved = False
                if active >= max_connections:
                    controller.stats["busy"] += 1
                    await _refuse(stream, max_connections)
                    continue
                active += 1
                nursery.start_soon(session, stream)
    finally:
        sock.close()
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _log(controller: Controller, message: str, level: str = "warning") -> None:
    if controller.log is not None:
        emit(
            controller.log,
            LogMessage(ts=time.time(), message=message, log_level=level, logger="proxy.control"),
        )


async def _refuse(stream: trio.SocketStream, limit: int) -> None:
    """Answer ``busy`` without reading anything, and close."""
    with trio.move_on_after(BUSY_SEND_DEADLINE):
        try:
            await stream.send_all(encode_answer(busy_answer(limit)))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
    await trio.aclose_forcefully(stream)


async def _send(stream: trio.SocketStream, answer: dict[str, Any]) -> bool:
    """Send one answer line; False if the client is gone or does not read."""
    with trio.move_on_after(SEND_DEADLINE):
        try:
            await stream.send_all(encode_answer(answer))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True
    return False


async def _session(stream: trio.SocketStream, controller: Controller) -> None:
    reader = LineBuffer()
    stats = controller.stats
    async with stream:
        idle_deadline = trio.current_time() + IDLE_TIMEOUT
        line_deadline = math.inf
        while True:
            deadline = line_deadline if reader.pending else idle_deadline
            data: bytes | None = None
            with trio.move_on_at(deadline):
                try:
                    data = await stream.receive_some(RECEIVE_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return
            if data is None:  # the deadline passed
                if reader.pending:
                    stats["timed_out"] += 1
                    error = f"request line unfinished {LINE_DEADLINE:g} s after it began"
                else:
                    stats["idle_closed"] += 1
                    error = f"no request for {IDLE_TIMEOUT:g} s; closing"
                await _send(stream, {"ok": False, "error": error})
                return
            if not data:
                return
            was_idle = not reader.pending
            lines = reader.feed(data)
            for line in lines:
                if not await _send(stream, controller.handle_line(line)):
                    return
            if reader.overflow:
                stats["too_long"] += 1
                await _send(
                    stream,
                    {"ok": False, "error": f"request too long (at most {MAX_REQUEST} bytes)"},
                )
                return
            now = trio.current_time()
            idle_deadline = now + IDLE_TIMEOUT
            if reader.pending and (lines or was_idle):
                line_deadline = now + LINE_DEADLINE  # a new line began
