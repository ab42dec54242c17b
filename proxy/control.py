"""Change the proxy's faults while traffic flows.

A Unix socket speaking one JSON object per line each way.  Requests::

    {"op": "rules"}                                  rules, counters, held segments
    {"op": "add", "action": "drop", "rule": "syn-ack@1"}     the CLI form
    {"op": "add", "table": {"action": "delay", "tag": "fin", "delay": "2s"}}
    {"op": "rm", "name": "drop-syn-ack@1"}
    {"op": "release"}            or {"op": "release", "rule": "hold-fin@1"}
    {"op": "clear"}                                  remove every rule
    {"op": "pace", "value": "250ms"}                 or null to stop pacing

Every answer has ``"ok"``; a refused request has ``"error"`` saying why.
``tcplab proxy rules|add|rm|release|clear|pace`` are clients of this socket.

:class:`Controller` is the pure part (a request dict in, a response dict
out); :func:`serve` is the trio shell.  The socket lives on the filesystem
(``/run/tcplab/<lab>.proxy.sock`` for a lab), mode 0600: whoever may write
there may change the faults.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from proxy import rules as rulesmod
from proxy.middlebox import Middlebox
from tcplab.events import RulesChanged, emit
from tcplab.units import format_duration

MAX_REQUEST = 64 * 1024
"""Longest request line accepted; a longer one closes the connection."""


class Controller:
    """Applies control requests to a middlebox's rule engine."""

    def __init__(
        self,
        middlebox: Middlebox,
        *,
        release: Callable[[str | None], int],
        changed: Callable[[], None] = lambda: None,
        log: Any = None,
    ) -> None:
        self.middlebox = middlebox
        self._release = release
        self._changed = changed
        self.log = log

    def handle(self, request: Any) -> dict[str, Any]:
        """One request → one response; never raises for bad input."""
        if not isinstance(request, dict):
            return {"ok": False, "error": "request must be a JSON object"}
        op = request.get("op")
        try:
            if op == "rules":
                return {"ok": True, **self.status()}
            if op == "add":
                rule = self._rule_from(request)
                self.middlebox.engine.add(rule)
                self._note("add", rule=rule.name)
                return {"ok": True, "name": rule.name}
            if op == "rm":
                name = request.get("name")
                if not isinstance(name, str):
                    return {"ok": False, "error": "rm: 'name' (a rule name) is required"}
                self.middlebox.engine.remove(name)
                self._note("rm", rule=name)
                return {"ok": True, "name": name}
            if op == "clear":
                self.middlebox.engine.clear()
                self._note("clear")
                return {"ok": True}
            if op == "release":
                rule_name = request.get("rule")
                if rule_name is not None and not isinstance(rule_name, str):
                    return {"ok": False, "error": "release: 'rule' must be a rule name"}
                count = self._release(rule_name)
                self._note("release", rule=rule_name, frames=count)
                return {"ok": True, "released": count}
            if op == "pace":
                value = request.get("value")
                pace = None if value in (None, "", "off") else rulesmod.parse_pace(str(value))
                self.middlebox.engine.set_pace(pace)
                self._note("pace", value=format_duration(pace) if pace else None)
                return {"ok": True, "pace": format_duration(pace) if pace else None}
        except (rulesmod.RuleError, ValueError, KeyError) as exc:
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            return {"ok": False, "error": f"{op}: {message}"}
        return {
            "ok": False,
            "error": f"unknown op {op!r} (rules, add, rm, clear, release, pace)",
        }

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
        }

    def _rule_from(self, request: dict[str, Any]) -> rulesmod.Rule:
        if "table" in request:
            table = request["table"]
            if not isinstance(table, dict):
                raise rulesmod.RuleError("'table' must be an object")
            return rulesmod.parse_table(table, "control request")
        action, text = request.get("action"), request.get("rule")
        if not isinstance(action, str) or not isinstance(text, str):
            raise rulesmod.RuleError("give 'action' and 'rule' (e.g. drop, syn-ack@1) or a 'table'")
        return rulesmod.parse_cli(action, text)

    def _note(self, op: str, **fields: Any) -> None:
        self._changed()
        if self.log is not None:
            emit(self.log, RulesChanged(ts=time.time(), op=op, **fields))


async def serve(
    path: str | Path,
    controller: Controller,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``path`` until cancelled; the socket file is removed on exit."""
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
        sock.listen(16)
        listener = trio.SocketListener(sock)
        task_status.started()
        async with trio.open_nursery() as nursery:
            while True:
                stream = await listener.accept()
                nursery.start_soon(_session, stream, controller)
    finally:
        sock.close()
        try:
            path.unlink()
        except FileNotFoundError:
            pass


async def _session(stream: trio.SocketStream, controller: Controller) -> None:
    buffer = bytearray()
    async with stream:
        while True:
            try:
                data = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                return
            if not data:
                return
            buffer += data
            while b"\n" in buffer:
                line, _, rest = bytes(buffer).partition(b"\n")
                buffer = bytearray(rest)
                try:
                    request = json.loads(line)
                except ValueError as exc:
                    response: dict[str, Any] = {"ok": False, "error": f"not JSON: {exc}"}
                else:
                    response = controller.handle(request)
                try:
                    await stream.send_all(json.dumps(response).encode() + b"\n")
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return
            if len(buffer) > MAX_REQUEST:
                await stream.send_all(
                    json.dumps({"ok": False, "error": "request too long"}).encode() + b"\n"
                )
                return


def request(path: str | Path, payload: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """Send one request to a running proxy and return its answer (blocking;
    for the CLI).  Raises OSError with a readable message when no proxy
    listens there."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise OSError(exc.errno, f"no proxy control socket at {path}") from None
        sock.sendall(json.dumps(payload).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    answer = json.loads(data) if data else {"ok": False, "error": "proxy closed the connection"}
    if not isinstance(answer, dict):
        return {"ok": False, "error": "proxy sent something that is not an object"}
    return answer
