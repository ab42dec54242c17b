"""A dump by its differences: the index of raw idents, joined to the tracker."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from daemons.dumpdiff import DumpIndex, dump_records
from daemons.statemachine import SocketTracker
from daemons.tracking import Key, Snapshot

SERVER = ("198.51.100.1", 7007, "192.0.2.1", 40312)
CLIENT = ("192.0.2.1", 40312, "198.51.100.1", 7007)


def ident(key: Key, state: str) -> bytes:
    """A stand-in for a raw sock_diag entry: the same bytes while the
    socket's key and state are the same."""
    return json.dumps([list(key), state]).encode()


def decode(raw: bytes, _expires: int) -> Snapshot:
    (host, port, peer, peer_port), state = json.loads(raw)
    return Snapshot((host, port, peer, peer_port), state)


def dump(sockets: dict[Key, str]) -> dict[bytes, int]:
    return {ident(k, s): 0 for k, s in sockets.items()}


def test_only_changed_entries_are_decoded() -> None:
    decoded: list[bytes] = []

    def counting(raw: bytes, expires: int) -> Snapshot:
        decoded.append(raw)
        return decode(raw, expires)

    index = DumpIndex(lambda _key: True, counting)
    assert index.update(dump({SERVER: "ESTABLISHED"})) == {SERVER: Snapshot(SERVER, "ESTABLISHED")}
    assert index.update(dump({SERVER: "ESTABLISHED"})) == {}
    assert index.update(dump({SERVER: "CLOSE_WAIT"})) == {SERVER: Snapshot(SERVER, "CLOSE_WAIT")}
    assert len(decoded) == 2
    assert index.update({}) == {}
    assert list(index.listed()) == []
    assert index.ident_of(SERVER) is None


def test_unwatched_sockets_are_left_out() -> None:
    index = DumpIndex(lambda key: key[1] == 7007, decode)
    assert index.update(dump({SERVER: "ESTABLISHED", CLIENT: "ESTABLISHED"})) == {
        SERVER: Snapshot(SERVER, "ESTABLISHED")
    }
    assert set(index.listed()) == {SERVER}


def test_a_socket_no_dump_ever_listed_is_reported_gone() -> None:
    # born and gone between two dumps: the tracker learned of it from a
    # lookup (the program's close()), and the dumps before and after are
    # the same — the next one must still report it closed
    tracker = SocketTracker(vouched=True)
    index = DumpIndex(lambda _key: True, decode)
    assert dump_records(tracker, index, {}, 1.0, started=1.0) == []
    tracker.lookup(CLIENT, Snapshot(CLIENT, "FIN_WAIT1"), 2.0, started=2.0)
    assert CLIENT in tracker.known()
    records = dump_records(tracker, index, {}, 3.0, 1.0, started=3.0)
    # (what happened in between is inferred; a reset would have said)
    assert (records[0].old, records[-1].new) == ("FIN_WAIT1", "CLOSED")
    assert tracker.live == {}


def test_a_dump_begun_before_a_lookup_does_not_bury_what_it_found() -> None:
    tracker = SocketTracker(vouched=True)
    index = DumpIndex(lambda _key: True, decode)
    tracker.lookup(CLIENT, Snapshot(CLIENT, "ESTABLISHED"), 2.0, started=2.0)
    assert dump_records(tracker, index, {}, 2.5, 1.0, started=1.5) == []
    assert tracker.live == {CLIENT: "ESTABLISHED"}


STATES = ["SYN_RECV", "ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "FIN_WAIT1", "TIME_WAIT"]
KEYS = [("198.51.100.1", 7007, "192.0.2.1", 40000 + n) for n in range(4)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(KEYS), st.sampled_from(STATES)), max_size=8))
def test_by_differences_says_what_the_whole_dump_says(dumps: list[dict[Key, str]]) -> None:
    whole = SocketTracker(passive_ports=[7007], vouched=True)
    parts = SocketTracker(passive_ports=[7007], vouched=True)
    index = DumpIndex(lambda _key: True, decode)
    for i, sockets in enumerate([*dumps, {}]):
        now = float(i + 1)
        snaps = {k: Snapshot(k, s) for k, s in sockets.items()}
        expected = whole.update(snaps, now, now - 0.5)
        got = dump_records(parts, index, dump(sockets), now, now - 0.5)
        # the same records; between connections, order does not matter
        assert sorted(got, key=lambda r: r.conn) == sorted(expected, key=lambda r: r.conn)
        assert parts.live == whole.live
