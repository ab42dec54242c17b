"""Event lines to the board over a Unix datagram socket (core.recordsink), and
the compose roles relaying their daemons' lines to it (tcplab.roles.Relay)."""

from __future__ import annotations

import io
import json
import signal
import socket
import sys
from pathlib import Path

import pytest

from core import recordsink
from core.recordsink import RecordSink, split_datagram
from tcplab import roles


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "board.sock")


def board(path: str) -> socket.socket:
    """A receiving socket bound at ``path``, as the board binds its own."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)  # what was sent is already there: never wait
    return sock


def received(sock: socket.socket) -> list[bytes]:
    """Every datagram waiting on ``sock``."""
    out = []
    while True:
        try:
            out.append(sock.recv(65536))
        except BlockingIOError:
            return out


def test_lines_arrive_one_per_datagram(path: str) -> None:
    receiver = board(path)
    with receiver, RecordSink(path) as sink:
        assert sink.send(b'{"event": "a"}\n', now=0.0)
        assert sink.send('{"event": "b"}', now=0.0)
        assert received(receiver) == [b'{"event": "a"}', b'{"event": "b"}']
        assert (sink.sent, sink.unsent, sink.oversized) == (2, 0, 0)


def test_an_absent_board_costs_one_connect_a_second(path: str) -> None:
    with RecordSink(path) as sink:
        attempts = 0
        connect = sink._connection

        def counting(now: float) -> socket.socket | None:
            nonlocal attempts
            before = sink._last_attempt
            sock = connect(now)
            attempts += sink._last_attempt != before
            return sock

        sink._connection = counting  # type: ignore[method-assign]
        for i in range(50):
            assert not sink.send(b'{"event": "x"}', now=i * 0.1)  # 5 seconds
        assert sink.unsent == 50 and sink.sent == 0
        assert attempts == 5


def test_a_socket_file_nobody_reads_is_absent_too(path: str) -> None:
    receiver = board(path)
    receiver.close()  # the file stays, nobody is bound to it
    with RecordSink(path) as sink:
        assert not sink.send(b"{}", now=0.0)
        assert sink.unsent == 1 and not sink.connected


def test_the_board_appearing_later_is_found(path: str) -> None:
    with RecordSink(path) as sink:
        assert not sink.send(b'{"n": 1}', now=10.0)
        receiver = board(path)
        with receiver:
            assert not sink.send(b'{"n": 2}', now=10.5)  # too soon to try again
            assert sink.send(b'{"n": 3}', now=11.0)
            assert received(receiver) == [b'{"n": 3}']
            assert (sink.sent, sink.unsent) == (1, 2)


def test_a_restarted_board_is_found_at_once(path: str) -> None:
    with RecordSink(path) as sink:
        first = board(path)
        assert sink.send(b'{"n": 1}', now=0.0)
        first.close()
        Path(path).unlink()  # as a board does before it binds again
        with board(path) as second:
            assert sink.send(b'{"n": 2}', now=5.0)
            assert received(second) == [b'{"n": 2}']


def test_a_full_queue_drops_lines_without_blocking(path: str) -> None:
    receiver = board(path)
    with receiver, RecordSink(path) as sink:
        line = b'{"event": "segment", "pad": "' + b"x" * 1000 + b'"}'
        results = [sink.send(line, now=0.0) for _ in range(2000)]  # nobody reads
        assert results[0] and not results[-1]
        assert sink.sent + sink.unsent == 2000 and sink.unsent > 0
        assert sink.connected  # the board is still there: keep the socket
        assert len(received(receiver)) == sink.sent
        assert sink.send(line, now=0.0)  # room again


def test_an_oversized_line_is_skipped(path: str) -> None:
    receiver = board(path)
    with receiver, RecordSink(path, max_datagram=100) as sink:
        assert not sink.send(b"x" * 101, now=0.0)
        assert sink.send(b"x" * 100, now=0.0)
        assert received(receiver) == [b"x" * 100]
        assert (sink.sent, sink.unsent, sink.oversized) == (1, 0, 1)


def test_disabled_sends_nothing() -> None:
    sink = RecordSink.from_env({})
    assert not sink.enabled and not sink.send(b"{}")
    assert (sink.sent, sink.unsent) == (0, 0)
    assert not RecordSink.from_env({recordsink.ENV: ""}).enabled
    assert RecordSink.from_env({recordsink.ENV: "/run/tcplab/board.sock"}).enabled


def test_split_datagram_tolerates_newlines_and_several_lines() -> None:
    assert split_datagram(b'{"a": 1}') == [b'{"a": 1}']
    assert split_datagram(b'{"a": 1}\n') == [b'{"a": 1}']
    assert split_datagram(b'{"a": 1}\r\n{"b": 2}\n\n{"c": 3}') == [
        b'{"a": 1}',
        b'{"b": 2}',
        b'{"c": 3}',
    ]
    assert split_datagram(b"") == [] and split_datagram(b"\n \n") == []


def test_the_relay_copies_stdout_and_sends_whole_lines(path: str) -> None:
    program = (
        "import sys\n"
        'sys.stdout.write(\'{"event": "one"}\\n\')\n'
        "sys.stdout.write('\\n')\n"
        'sys.stdout.write(\'{"event": "two"}\\n\')\n'
        "sys.stdout.write('{\"cut')\n"
        "sys.exit(3)\n"
    )
    receiver = board(path)
    out = io.BytesIO()
    with receiver, RecordSink(path) as sink:
        relay = roles.Relay(sink, out)
        assert relay.run([sys.executable, "-c", program]) == 3
        relay.line(roles.announcement(roles.scenarios("tour")[0]))
        got = [line for datagram in received(receiver) for line in split_datagram(datagram)]
    assert out.getvalue().startswith(b'{"event": "one"}\n\n{"event": "two"}\n{"cut{')
    assert got[:2] == [b'{"event": "one"}', b'{"event": "two"}']
    assert json.loads(got[2])["event"] == "scenario_start" and len(got) == 3


def test_a_signal_to_the_role_ends_the_daemon_and_its_lines_still_come() -> None:
    program = (
        "import signal, sys, time\n"
        "def bye(*_):\n"
        '    print(\'{"event": "bye"}\', flush=True)\n'
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\n"
        'print(\'{"event": "ready"}\', flush=True)\n'
        "time.sleep(30)\n"
    )

    class Stopped(roles.Relay):
        def line(self, raw: bytes) -> None:
            super().line(raw)
            if b"ready" in raw:  # the daemon is up: the role gets SIGTERM now
                self._on_signal(signal.SIGTERM, None)

    out = io.BytesIO()
    relay = Stopped(RecordSink(None), out)
    assert relay.run([sys.executable, "-c", program]) == 0
    assert out.getvalue() == b'{"event": "ready"}\n{"event": "bye"}\n'
    assert relay.stopping == signal.SIGTERM
    with pytest.raises(SystemExit) as stopped:  # between daemons: the role ends
        relay._on_signal(signal.SIGTERM, None)
    assert stopped.value.code == 128 + signal.SIGTERM
