"""The proxy's control protocol: one JSON object per line each way, on a
Unix socket (pure framing, and the blocking client the CLI uses).

Requests::

    {"op": "rules"}                                  rules, counters, held segments
    {"op": "add", "action": "drop", "rule": "syn-ack@1"}     the CLI form
    {"op": "add", "table": {"action": "delay", "tag": "fin", "delay": "2s"}}
    {"op": "rm", "name": "drop-syn-ack@1"}
    {"op": "release"}            or {"op": "release", "rule": "hold-fin@1"}
    {"op": "clear"}                                  remove every rule
    {"op": "pace", "value": "250ms"}                 or null to stop pacing

Every answer has ``"ok"``; a refused request has ``"error"`` saying why.
The server, with its limits, is :mod:`proxy.control`; this module holds
what both ends need: the line limits (:data:`MAX_REQUEST`,
:data:`MAX_DEPTH`), parsing a line safely (:func:`parse_request`,
:class:`LineBuffer`), encoding an answer, and :func:`request`, the client
``tcplab proxy …`` and the board use.
"""

from __future__ import annotations

import errno
import json
import re
import socket
import time
from pathlib import Path
from typing import Any, Literal

MAX_REQUEST = 64 * 1024
"""Longest request line accepted, in bytes; a longer one closes the
connection.  The largest real request (a rule table) is a few hundred."""
MAX_DEPTH = 8
"""Deepest nesting of arrays and objects accepted in a request.  Real
requests nest three deep (``{"table": {"nth": [1]}}``); CPython's JSON
parser recurses once per level and fails near 1,000 (the interpreter's
recursion limit), so the line is checked before it is parsed."""
RECEIVE_SIZE = 16 * 1024
CONNECT_RETRY_FOR = 2.0
"""Seconds :func:`request` keeps retrying a connection the proxy could not
take yet (a full backlog, a ``busy`` answer, a socket file nobody listens on
yet) before it gives up."""

_JSON_STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+(?:"|\\?\Z)', re.DOTALL)
"""A JSON string, or an unfinished one to the end of the line (possessive:
never backtracks)."""
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def nesting_depth(text: bytes, limit: int = MAX_DEPTH) -> int:
    """How deeply arrays and objects nest in the JSON ``text``, counting
    brackets outside strings; stops once past ``limit``.  No recursion and
    no backtracking (strings are skipped by one possessive pattern, an
    unfinished one runs to the end), so it is safe and linear on any input;
    on invalid JSON it is only an estimate, and the parser rejects it."""
    brackets = _JSON_STRING.sub(b"", text).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for byte in brackets:
        if byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        else:
            depth -= 1
    return deepest


def parse_request(line: bytes) -> tuple[Any, str | None]:
    """One request line (without its newline) → ``(request, None)``, or
    ``(None, why not)``.  Never raises."""
    if len(line) > MAX_REQUEST:
        return None, f"request too long ({len(line)} bytes; at most {MAX_REQUEST})"
    if nesting_depth(line) > MAX_DEPTH:
        return None, f"request nested too deeply (at most {MAX_DEPTH} levels of [ and {{)"
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8: {exc}"
    try:
        return json.loads(text), None
    except RecursionError:  # belt and braces: the depth check should prevent it
        return None, "request nested too deeply"
    except ValueError as exc:  # JSONDecodeError, and integers of over 4,300 digits
        return None, f"not JSON: {exc}"


def encode_answer(answer: dict[str, Any]) -> bytes:
    """An answer as one line; never raises (a value JSON cannot carry
    becomes an error answer)."""
    try:
        return json.dumps(answer).encode() + b"\n"
    except (TypeError, ValueError) as exc:
        return json.dumps({"ok": False, "error": f"internal error: {exc}"}).encode() + b"\n"


class LineBuffer:
    """Splits one connection's bytes into request lines.

    Bound: holds at most :data:`MAX_REQUEST` bytes of an unfinished line.
    Once a line is longer (finished or not), ``overflow`` is set and nothing
    more is split: the connection is to be closed.
    """

    def __init__(self, limit: int = MAX_REQUEST) -> None:
        self.limit = limit
        self.overflow = False
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Bytes of an unfinished line."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """The lines ``data`` finishes, without their newlines."""
        if self.overflow:
            return []
        buf = self._buffer
        buf += data
        lines: list[bytes] = []
        start = 0
        while True:
            end = buf.find(b"\n", start)
            if end < 0:
                break
            if end - start > self.limit:
                self.overflow = True
                buf.clear()
                return lines
            lines.append(bytes(buf[start:end]))
            start = end + 1
        del buf[:start]
        if len(buf) > self.limit:
            self.overflow = True
            buf.clear()
        return lines


# --- the client -----------------------------------------------------------------


Why = Literal["absent", "refused", "denied", "busy", "timeout"]


class ProxyUnreachable(OSError):
    """:func:`request` could not get an answer; ``why`` says which way:

    - ``absent``: no socket file at the path (no proxy there);
    - ``refused``: a socket file, but nothing listens (a proxy that exited);
    - ``denied``: not allowed to open it;
    - ``busy``: a proxy listens but could not take the connection for
      :data:`CONNECT_RETRY_FOR` (a full backlog, or every connection slot
      in use);
    - ``timeout``: connected, but no answer in time.
    """

    def __init__(self, code: int, message: str, why: Why) -> None:
        super().__init__(code, message)
        self.why: Why = why

    def __str__(self) -> str:
        return str(self.strerror)


class _Retry(Exception):
    def __init__(self, code: int, why: Why, detail: str) -> None:
        self.code, self.why, self.detail = code, why, detail


def request(path: str | Path, payload: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """Send one request to a running proxy and return its answer (blocking;
    for the CLI).

    A proxy that cannot take the connection yet (its listen backlog full:
    EAGAIN; its connection slots full: a ``busy`` answer; a socket not
    listening: ECONNREFUSED) is retried with a short backoff for up to
    :data:`CONNECT_RETRY_FOR` (never past ``timeout``).  Raises
    :class:`ProxyUnreachable` (an OSError) whose message says what happened
    and whose ``why`` says which case it was."""
    line = json.dumps(payload).encode() + b"\n"
    start = time.monotonic()
    deadline = start + timeout
    retry_until = start + min(CONNECT_RETRY_FOR, timeout)
    backoff = 0.005
    while True:
        try:
            return _request_once(str(path), line, deadline, timeout)
        except _Retry as retry:
            if time.monotonic() + backoff > retry_until:
                waited = time.monotonic() - start
                if retry.why == "busy":
                    message = f"the proxy at {path} is busy ({retry.detail}; for {waited:.1f} s)"
                else:
                    message = (
                        f"nothing listens on {path} (connection refused for {waited:.1f} s; "
                        "the proxy that made it has exited?)"
                    )
                raise ProxyUnreachable(retry.code, message, retry.why) from None
            time.sleep(backoff)
            backoff = min(backoff * 2, 0.1)


def _request_once(path: str, line: bytes, deadline: float, timeout: float) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        try:
            sock.connect(path)
        except FileNotFoundError:
            raise ProxyUnreachable(
                errno.ENOENT, f"no proxy control socket at {path}", "absent"
            ) from None
        except PermissionError as exc:
            raise ProxyUnreachable(
                exc.errno or errno.EACCES, f"not allowed to open {path} (root's?)", "denied"
            ) from None
        except ConnectionRefusedError:
            raise _Retry(errno.ECONNREFUSED, "refused", "connection refused") from None
        except BlockingIOError:  # EAGAIN: the listen backlog is full
            raise _Retry(errno.EAGAIN, "busy", "its listen backlog is full") from None
        except TimeoutError:
            raise _Retry(errno.EAGAIN, "busy", "connect timed out") from None
        try:
            try:
                sock.sendall(line)
            except (BrokenPipeError, ConnectionResetError):
                pass  # closed on us: it may have said why (busy), read on
            data = b""
            while not data.endswith(b"\n"):
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            raise ProxyUnreachable(
                errno.ETIMEDOUT,
                f"no answer from the proxy at {path} within {timeout:g} s",
                "timeout",
            ) from None
    if not data:
        return {"ok": False, "error": "proxy closed the connection without an answer"}
    try:
        answer = json.loads(data)
    except ValueError:
        return {"ok": False, "error": "proxy sent something that is not JSON"}
    if not isinstance(answer, dict):
        return {"ok": False, "error": "proxy sent something that is not an object"}
    if answer.get("busy") is True:
        raise _Retry(errno.EAGAIN, "busy", str(answer.get("error", "busy")))
    return answer
