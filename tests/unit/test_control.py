"""The control API: request handling (pure), its limits, the socket's
behaviour under hostile clients, and the CLI's client."""

from __future__ import annotations

import errno
import ipaddress
import json
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from core import control as protocol
from proxy import control, neighbours
from proxy.controller import MAX_RULES, Controller
from proxy.middlebox import Middlebox

T0 = 1_700_000_000.0
"""The wall-clock time the requests are handled at."""


def controller() -> tuple[Controller, list[str | None]]:
    port = neighbours.Port("mc0", b"\x02" * 6, 1500, (ipaddress.ip_interface("192.0.2.254/24"),))
    released: list[str | None] = []

    def release(rule: str | None) -> int:
        released.append(rule)
        return 3

    return Controller(Middlebox([port]), release=release), released


def test_add_list_remove() -> None:
    c, _ = controller()
    assert c.handle({"op": "add", "action": "drop", "rule": "syn-ack@1"}, now=T0) == {
        "ok": True,
        "name": "drop-syn-ack@1",
    }
    table = {"action": "delay", "tag": "fin", "delay": "2s", "name": "slow-fin"}
    assert c.handle({"op": "add", "table": table}, now=T0)["name"] == "slow-fin"
    status = c.handle({"op": "rules"}, now=T0)
    assert [r["rule"] for r in status["rules"]] == ["syn-ack@1", "fin=2s"]
    assert status["counters"]["frames_in"] == 0
    assert c.handle({"op": "rm", "name": "slow-fin"}, now=T0) == {"ok": True, "name": "slow-fin"}
    assert c.handle({"op": "clear"}, now=T0) == {"ok": True}
    assert c.handle({"op": "rules"}, now=T0)["rules"] == []


def test_release_and_pace() -> None:
    c, released = controller()
    assert c.handle({"op": "release", "rule": "hold-fin@1"}, now=T0) == {"ok": True, "released": 3}
    assert released == ["hold-fin@1"]
    assert c.handle({"op": "pace", "value": "250ms"}, now=T0) == {"ok": True, "pace": "250ms"}
    assert c.handle({"op": "pace", "value": None}, now=T0) == {"ok": True, "pace": None}


def test_bad_requests_get_reasons() -> None:
    c, _ = controller()
    assert "JSON object" in c.handle([1, 2], now=T0)["error"]
    assert "unknown op 'explode'" in c.handle({"op": "explode"}, now=T0)["error"]
    bad = c.handle({"op": "add", "action": "drop", "rule": "synack@1"}, now=T0)
    assert not bad["ok"] and "did you mean 'syn-ack'" in bad["error"]
    assert "no rule named 'x'" in c.handle({"op": "rm", "name": "x"}, now=T0)["error"]
    assert "'name'" in c.handle({"op": "rm"}, now=T0)["error"]
    assert "bad duration" in c.handle({"op": "pace", "value": "fast"}, now=T0)["error"]


# --- limits: nothing a client sends stops the proxy ---------------------------------


def test_deep_json_is_refused_before_the_parser_sees_it() -> None:
    c, _ = controller()
    answer = c.handle_line(b"[" * 60_000, now=T0)
    assert answer == {
        "ok": False,
        "error": f"request nested too deeply (at most {protocol.MAX_DEPTH} levels of [ and {{)",
    }
    closed = b"[" * 30_000 + b"]" * 30_000
    assert "nested too deeply" in c.handle_line(closed, now=T0)["error"]
    # brackets inside strings do not count; the deepest real request passes
    table = {"op": "add", "table": {"action": "drop", "tag": "fin", "nth": [1, 2]}}
    table["table"]["name"] = "[[[[[[[[[[[[[[[[[[[["
    assert c.handle_line(json.dumps(table).encode(), now=T0)["ok"]
    assert protocol.nesting_depth(b'{"a": "[\\"[[[[[[[[[[", "b": [[{}]]}') == 4


def test_a_recursion_error_in_the_parser_is_an_answer_too(monkeypatch: pytest.MonkeyPatch) -> None:
    c, _ = controller()
    monkeypatch.setattr(protocol, "MAX_DEPTH", 10**9)  # as if the scan missed it
    assert c.handle_line(b"[" * 60_000, now=T0) == {
        "ok": False,
        "error": "request nested too deeply",
    }


def test_lines_longer_than_max_request_are_refused_however_they_arrive() -> None:
    reader = protocol.LineBuffer()
    assert reader.feed(b"x" * 65_000) == [] and not reader.overflow
    # the newline arrives with the next chunk: a 130 kB line, still too long
    assert reader.feed(b"y" * 65_000 + b"\n") == [] and reader.overflow
    reader = protocol.LineBuffer()
    assert reader.feed(b'{"op": "rules"}\n' + b"z" * (protocol.MAX_REQUEST + 1)) == [
        b'{"op": "rules"}'
    ]
    assert reader.overflow
    reader = protocol.LineBuffer()
    assert reader.feed(b"a\nb") == [b"a"] and reader.pending == 1
    assert reader.feed(b"c\n\n") == [b"bc", b""] and reader.pending == 0
    c, _ = controller()
    assert "too long" in c.handle_line(b" " * (protocol.MAX_REQUEST + 1), now=T0)["error"]


def test_the_rule_count_is_bounded() -> None:
    c, _ = controller()
    for n in range(MAX_RULES):
        assert c.handle({"op": "add", "action": "drop", "rule": f"syn@{n + 1}"}, now=T0)["ok"]
    refused = c.handle({"op": "add", "action": "drop", "rule": "fin@1"}, now=T0)
    assert not refused["ok"]
    assert f"{MAX_RULES} rules already" in refused["error"]
    assert c.handle({"op": "rm", "name": "drop-syn@1"}, now=T0)["ok"]
    assert c.handle({"op": "add", "action": "drop", "rule": "fin@1"}, now=T0)["ok"]
    # removed rules' counts are forgotten: add/rm cycles cannot grow memory
    for n in range(1000):
        c.handle({"op": "add", "table": {"action": "drop", "tag": "fin", "name": f"r{n}"}}, now=T0)
        c.handle({"op": "rm", "name": f"r{n}"}, now=T0)
    engine = c.middlebox.engine
    assert len(engine.fired) == len(engine.matched) == MAX_RULES


@pytest.mark.parametrize(
    ("request_", "names"),
    [
        ({"op": 1}, "'op' must be a string, not a number"),
        ({"op": ["rules"]}, "'op' must be a string, not an array"),
        ({}, "'op' is required"),
        ({"op": "rm", "name": 5}, "rm: 'name' must be a string, not a number"),
        ({"op": "rm", "name": None}, "rm: 'name' must be a string, not null"),
        ({"op": "add", "table": [1]}, "add: 'table' must be an object, not an array"),
        ({"op": "add", "action": 7, "rule": "fin"}, "add: 'action' must be a string"),
        ({"op": "add", "action": "drop", "rule": {}}, "add: 'rule' must be a string"),
        ({"op": "add", "table": {"action": "drop", "tag": 5}}, "'tag' must be a string"),
        ({"op": "add", "table": {"action": "drop", "nth": "x"}}, "'nth' must be a number"),
        ({"op": "add", "table": {"action": "drop", "conn": 1.5}}, "'conn' must be"),
        ({"op": "pace", "value": 3}, "pace: 'value' must be a string or null, not a number"),
        ({"op": "pace", "value": {"a": 1}}, "pace: 'value' must be a string or null"),
        ({"op": "release", "rule": [1]}, "release: 'rule' must be a string or null"),
        ({"op": "rules", "verbose": True}, "rules: unknown field 'verbose'"),
        ({"op": "rm", "nmae": "x"}, "rm: unknown field 'nmae' (allowed: 'name')"),
        ({"op": "add", "action": "drop", "rule": "f" * 300}, "add: 'rule' is 300 characters"),
        ({"op": "add", "table": {"action": "drop", "name": "n" * 999}}, "'table.name' is 999"),
        ({"op": "add", "table": {"action": "drop", "nth": list(range(1, 99))}}, "'table.nth'"),
        ({"op": "add", "action": "drop"}, "give 'action' and 'rule'"),
    ],
)
def test_wrong_types_anywhere_are_answered_with_the_field_named(
    request_: dict[str, Any], names: str
) -> None:
    c, _ = controller()
    answer = c.handle(request_, now=T0)
    assert answer["ok"] is False and names in answer["error"], answer
    assert c.middlebox.engine.rules == []


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
ops = st.sampled_from(["rules", "add", "rm", "clear", "release", "pace", "bogus"])
fields = st.sampled_from(["action", "rule", "table", "name", "value", "tag", "nth", "op"])
requests = st.one_of(
    json_values,
    st.builds(
        lambda op, extra: {"op": op, **extra},
        ops,
        st.dictionaries(fields, json_values | st.sampled_from(["drop", "fin@1", "2s"])),
    ),
    st.builds(
        lambda table: {"op": "add", "table": table},
        st.dictionaries(
            st.sampled_from(["action", "tag", "from", "nth", "conn", "delay", "name", "x"]),
            json_values | st.sampled_from(["delay", "drop", "fin", "client", "1s"]),
        ),
    ),
)


def assert_answer(answer: Any) -> None:
    assert isinstance(answer, dict) and isinstance(answer["ok"], bool)
    assert answer["ok"] or isinstance(answer["error"], str)
    assert json.loads(protocol.encode_answer(answer)) is not None


@settings(max_examples=200, deadline=None)
@given(requests)
def test_handle_never_raises(request_: Any) -> None:
    c, _ = controller()
    assert_answer(c.handle(request_, now=T0))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300) | requests.map(lambda r: json.dumps(r).encode()))
def test_any_bytes_in_an_answer_out(line: bytes) -> None:
    c, _ = controller()
    for piece in protocol.LineBuffer().feed(line + b"\n"):
        assert_answer(c.handle_line(piece, now=T0))
    assert_answer(c.handle_line(line, now=T0))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=50), max_size=20))
def test_line_buffer_splits_like_split_whatever_the_chunks(chunks: list[bytes]) -> None:
    reader = protocol.LineBuffer(limit=40)
    lines: list[bytes] = []
    for chunk in chunks:
        lines += reader.feed(chunk)
        if reader.overflow:
            break
    whole = b"".join(chunks)
    if not reader.overflow:
        *expected, rest = whole.split(b"\n")
        assert lines == expected and reader.pending == len(rest)
    else:
        assert any(len(piece) > 40 for piece in whole.split(b"\n"))
        assert lines == whole.split(b"\n")[: len(lines)]


# --- the socket: busy, half lines, EMFILE ----------------------------------------------


@pytest.fixture
def sock_path() -> Iterator[Path]:
    # short: a Unix socket path is at most 107 bytes
    where = Path(tempfile.mkdtemp(prefix="tlctl", dir="/tmp"))
    try:
        yield where / "c.sock"
    finally:
        shutil.rmtree(where)


@asynccontextmanager
async def clients(path: Path) -> AsyncIterator[list[trio.SocketStream]]:
    """Connections opened in the block (append to the list), all closed after."""
    opened: list[trio.SocketStream] = []
    try:
        yield opened
    finally:
        for stream in opened:
            stream.socket.close()  # synchronous: also when the test was cancelled


@asynccontextmanager
async def serving(
    path: Path,
) -> AsyncIterator[tuple[Controller, trio.Nursery, list[trio.SocketStream]]]:
    """A controller served on ``path`` for the block; the nursery it runs
    in (cancel it to stop), and the client connections opened, closed after."""
    c, _ = controller()
    async with trio.open_nursery() as nursery, clients(path) as opened:
        await nursery.start(control.serve, path, c)
        yield c, nursery, opened


async def connect(path: Path, opened: list[trio.SocketStream]) -> trio.SocketStream:
    stream = await trio.open_unix_socket(str(path))
    opened.append(stream)
    return stream


async def answers_of(stream: trio.SocketStream, count: int) -> list[dict[str, Any]]:
    data = b""
    while data.count(b"\n") < count:
        chunk = await stream.receive_some()
        assert chunk, f"closed after {data!r}"
        data += chunk
    found = [json.loads(line) for line in data.splitlines()]
    assert len(found) == count and all(isinstance(a, dict) for a in found)
    return found


async def answer_of(stream: trio.SocketStream) -> dict[str, Any]:
    (answer,) = await answers_of(stream, 1)
    return answer


async def closed(stream: trio.SocketStream) -> bool:
    try:
        return await stream.receive_some() == b""
    except trio.BrokenResourceError:
        return True


async def test_connections_beyond_the_limit_are_told_busy(sock_path: Path) -> None:
    c, _ = controller()
    async with trio.open_nursery() as nursery, clients(sock_path) as opened:
        await nursery.start(
            lambda task_status: control.serve(
                sock_path, c, max_connections=3, task_status=task_status
            )
        )
        with trio.fail_after(5):
            idle = [await connect(sock_path, opened) for _ in range(3)]
            extra = await connect(sock_path, opened)
            answer = await answer_of(extra)
            assert answer["ok"] is False and answer["busy"] is True
            assert answer["error"].startswith("busy: 3 control connections")
            assert await closed(extra)
            # a slot frees when a client leaves, and the next one is served
            await idle[0].aclose()
            while True:
                s = await connect(sock_path, opened)
                await s.send_all(b'{"op": "rules"}\n')
                reply = await answer_of(s)
                if reply["ok"]:
                    break
                assert reply.get("busy")
                await trio.sleep(0.01)  # the server has not seen the close yet
        assert reply["control"]["busy"] >= 1
        nursery.cancel_scope.cancel()
    assert not sock_path.exists()  # noqa: ASYNC240


async def test_half_a_line_then_silence_is_answered_and_closed(
    sock_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(control, "LINE_DEADLINE", 0.3)
    async with serving(sock_path) as (c, nursery, opened):
        with trio.fail_after(5):
            s = await connect(sock_path, opened)
            await s.send_all(b'{"op": "ru')
            began = trio.current_time()
            answer = await answer_of(s)
            assert trio.current_time() - began >= 0.3
            assert answer == {
                "ok": False,
                "error": "request line unfinished 0.3 s after it began",
            }
            assert await closed(s)
            # a line that trickles in one byte at a time does not reset the clock
            s = await connect(sock_path, opened)
            began = trio.current_time()
            with trio.move_on_after(1.0):
                try:
                    for byte in b'{"op": "rules"' * 10:
                        await s.send_all(bytes([byte]))
                        await trio.sleep(0.03)
                except trio.BrokenResourceError:
                    pass  # it answered and closed
            answer = await answer_of(s)
            assert "unfinished" in answer["error"] and trio.current_time() - began < 1.5
            # a whole line in pieces within the deadline is fine
            s = await connect(sock_path, opened)
            await s.send_all(b'{"op": ')
            await trio.sleep(0.1)
            await s.send_all(b'"rules"}\n{"op": "clear"}\n')
            rules, clear = await answers_of(s, 2)
            assert rules["ok"] and clear == {"ok": True}
        assert c.stats["timed_out"] == 2
        nursery.cancel_scope.cancel()


async def test_hostile_lines_get_clean_errors_and_the_socket_still_answers(
    sock_path: Path,
) -> None:
    async with serving(sock_path) as (_c, nursery, opened):
        with trio.fail_after(10):
            s = await connect(sock_path, opened)
            await s.send_all(b"[" * 60_000 + b"\n")
            assert "nested too deeply" in (await answer_of(s))["error"]
            await s.send_all(b"\xff\xfe\x00garbage\n")
            assert "not UTF-8" in (await answer_of(s))["error"]
            try:
                await s.send_all(b"x" * 1_000_000)
            except trio.BrokenResourceError:
                pass  # it closed before taking it all: what it said is still there
            assert "too long" in (await answer_of(s))["error"]
            assert await closed(s)
            s = await connect(sock_path, opened)
            await s.send_all(b'{"op": "rules"}\n')
            assert (await answer_of(s))["ok"]
        nursery.cancel_scope.cancel()


async def test_accept_out_of_descriptors_backs_off_and_goes_on(
    sock_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_accept = trio.SocketListener.accept
    failures = [errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM]

    async def accept(self: trio.SocketListener) -> trio.SocketStream:
        if failures:
            await trio.lowlevel.checkpoint()
            raise OSError(failures.pop(0), "as if out of resources")
        return await real_accept(self)

    monkeypatch.setattr(trio.SocketListener, "accept", accept)
    async with serving(sock_path) as (_c, nursery, opened):
        with trio.fail_after(5):
            s = await connect(sock_path, opened)
            await s.send_all(b'{"op": "rules"}\n')
            answer = await answer_of(s)
        assert answer["ok"] and answer["control"]["accept_errors"] == 4
        nursery.cancel_scope.cancel()


# --- the client ------------------------------------------------------------------------


def test_request_says_when_there_is_no_socket(sock_path: Path) -> None:
    with pytest.raises(protocol.ProxyUnreachable) as caught:
        protocol.request(sock_path, {"op": "rules"})
    assert caught.value.why == "absent" and caught.value.errno == errno.ENOENT
    assert str(caught.value) == f"no proxy control socket at {sock_path}"


def test_request_says_when_nothing_listens(
    sock_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(protocol, "CONNECT_RETRY_FOR", 0.2)
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(sock_path))  # a socket file nobody listens on
        with pytest.raises(protocol.ProxyUnreachable) as caught:
            protocol.request(sock_path, {"op": "rules"})
    assert caught.value.why == "refused" and "nothing listens" in str(caught.value)


def test_request_retries_a_full_backlog_then_says_busy(
    sock_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(protocol, "CONNECT_RETRY_FOR", 0.3)
    filling: list[socket.socket] = []
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(sock_path))
        listener.listen(0)  # and never accepts: the backlog fills
        try:
            while True:
                s = socket.socket(socket.AF_UNIX)
                filling.append(s)
                s.setblocking(False)
                s.connect(str(sock_path))
        except BlockingIOError:
            pass
        began = time.monotonic()
        try:
            with pytest.raises(protocol.ProxyUnreachable) as caught:
                protocol.request(sock_path, {"op": "rules"})
        except BaseException:
            for s in filling:
                s.close()
            raise
        waited = time.monotonic() - began
        # not a bare EAGAIN: said, after retrying for the budget
        assert caught.value.why == "busy" and caught.value.errno == errno.EAGAIN
        assert str(caught.value).startswith(f"the proxy at {sock_path} is busy")
        assert 0.2 < waited < 2.0

        # once the proxy takes the connection, the retried request goes through
        def serve_one() -> None:
            time.sleep(0.1)
            for s in filling:
                s.close()
            while True:
                conn, _ = listener.accept()
                with conn:
                    conn.settimeout(2)
                    if conn.recv(100).startswith(b'{"op": "rules"}'):
                        conn.sendall(b'{"ok": true}\n')
                        return

        helper = threading.Thread(target=serve_one)
        helper.start()
        monkeypatch.setattr(protocol, "CONNECT_RETRY_FOR", 3.0)
        try:
            assert protocol.request(sock_path, {"op": "rules"}) == {"ok": True}
        finally:
            helper.join(5)


def test_request_retries_a_busy_answer(sock_path: Path) -> None:
    answers = [control.busy_answer(), control.busy_answer(), {"ok": True, "rules": []}]
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(sock_path))
        listener.listen(8)

        def serve() -> None:
            for answer in answers:
                conn, _ = listener.accept()
                with conn:
                    conn.sendall(protocol.encode_answer(answer))

        helper = threading.Thread(target=serve)
        helper.start()
        try:
            assert protocol.request(sock_path, {"op": "rules"}) == {"ok": True, "rules": []}
        finally:
            helper.join(5)


def test_request_says_when_the_proxy_does_not_answer(sock_path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(sock_path))
        listener.listen(8)
        with pytest.raises(protocol.ProxyUnreachable) as caught:
            protocol.request(sock_path, {"op": "rules"}, timeout=0.3)
    assert caught.value.why == "timeout" and "no answer" in str(caught.value)


async def test_a_failing_control_socket_is_logged_and_the_proxy_goes_on(
    sock_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import proxy.__main__ as proxy_main
    from core.events import LogMessage

    async def broken(*_args: Any, **_kw: Any) -> None:
        raise OSError(errno.EBADF, "as if the listener broke")

    logged: list[tuple[str, dict[str, Any]]] = []

    class Log:
        def __getattr__(self, level: str) -> Any:
            return lambda event, **fields: logged.append((event, fields))

    monkeypatch.setattr(control, "serve_socket", broken)
    c, _ = controller()
    sock = await control.bind(sock_path)
    with sock, trio.fail_after(5):
        # returns (instead of raising into the nursery that also forwards)
        await proxy_main._serve_control(sock, sock_path, c, Log())
    ((event, fields),) = logged
    assert event == LogMessage.EVENT and fields["log_level"] == "error"
    assert "forwarding goes on without it" in fields["message"]


@pytest.mark.parametrize(
    ("specs", "late"),
    [
        ([("delay", "client:syn@1=2s")], True),
        ([("hold", "syn@1")], True),
        ([("delay", "any=100ms")], True),
        ([("delay", "client:retransmit@1=1s")], True),
        ([("drop", "client:syn@1")], False),
        ([("delay", "server:syn=1s")], False),
        ([("delay", "fin=60ms"), ("delay", "fin-ack=100ms")], False),
        ([("delay", "client:data=500ms")], False),
        ([], False),
    ],
)
def test_which_rules_may_bring_a_syn_late(specs: list[tuple[str, str]], late: bool) -> None:
    """A delay or hold that can match a client's SYN: the runner then lets
    the server accept without a limit, so that its listener is still there
    when the SYN comes late."""
    from core.rules import parse_cli
    from tcplab.runner import keeps_back_syns

    assert keeps_back_syns(parse_cli(action, text) for action, text in specs) is late
