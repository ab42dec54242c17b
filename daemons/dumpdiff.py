"""What one sock_diag dump changed since the one before (pure).

A dump is a mapping of raw socket idents (the bytes of each socket's entry
that say who and in what state it is: :func:`daemons.sockdiag.dump_idents`)
to their timer expiries.  Under a load of thousands of sockets most entries
are the same bytes from one dump to the next, so only the idents that came
or went are decoded (set differences, done in C) and handed on.

:func:`dump_records` joins a :class:`DumpIndex` to the tracker: the sockets
whose entry changed, and the tracked sockets the dump no longer lists —
including one the tracker learned from a lookup and that was born and gone
between two dumps, which no dump ever listed.
"""

from __future__ import annotations

from collections.abc import Callable, KeysView, Mapping

from core.events import TCP_STATES, TIMERS, TcpState
from daemons import sockdiag
from daemons.statemachine import SocketTracker
from daemons.tracking import Key, Snapshot, merge_dump


def snapshot_of(info: sockdiag.SockInfo) -> Snapshot:
    """A decoded sock_diag entry as the tracker's snapshot."""
    return Snapshot(
        key=(info.src, info.sport, info.dst, info.dport),
        state=TCP_STATES.get(info.state, f"UNKNOWN_{info.state}"),
        timer=TIMERS.get(info.timer, str(info.timer)),
        expires_ms=info.expires_ms if info.timer else None,
        retrans=info.retrans,
    )


def decode(ident: sockdiag.Ident, expires: int) -> Snapshot:
    return snapshot_of(sockdiag.decode_ident(ident, expires))


class DumpIndex:
    """The watched sockets of the last dump, by ident and by key.

    ``match`` says which sockets are watched; ``decode`` turns an ident into
    a snapshot (a parameter so tests can hand in their own)."""

    def __init__(
        self,
        match: Callable[[Key], bool],
        decode: Callable[[sockdiag.Ident, int], Snapshot] = decode,
    ) -> None:
        self._match = match
        self._decode = decode
        self._idents: Mapping[sockdiag.Ident, int] = {}
        self._cache: dict[sockdiag.Ident, Snapshot | None] = {}
        """Decoded idents (None: not watched), kept while they are listed."""
        self._by_key: dict[Key, dict[sockdiag.Ident, Snapshot]] = {}
        """Two entries for one key while a connection is handed to a minisock."""
        self._ident_of: dict[Key, sockdiag.Ident] = {}

    def update(self, current: Mapping[sockdiag.Ident, int]) -> dict[Key, Snapshot]:
        """Take the next dump; the watched sockets whose entry changed (new,
        or in another state), each with what the dump says now.  A key that
        vanished is not in the result: :meth:`listed` no longer has it."""
        previous = self._idents
        self._idents = current
        if current.keys() == previous.keys():
            return {}
        cache = self._cache
        by_key = self._by_key
        touched: set[Key] = set()
        for ident in previous.keys() - current.keys():
            snap = cache.get(ident)
            if snap is None:
                continue
            idents = by_key.get(snap.key)
            if idents is not None:
                idents.pop(ident, None)
                if not idents:
                    del by_key[snap.key]
            touched.add(snap.key)
        for ident in current.keys() - previous.keys():
            if ident in cache:
                snap = cache[ident]
            else:
                snap = self._decode(ident, current[ident])
                if not self._match(snap.key):
                    snap = None
                cache[ident] = snap
            if snap is not None:
                by_key.setdefault(snap.key, {})[ident] = snap
                touched.add(snap.key)
        changed: dict[Key, Snapshot] = {}
        for key in touched:
            idents = by_key.get(key)
            if not idents:
                self._ident_of.pop(key, None)
                continue
            if len(idents) == 1:
                ((ident, snap),) = idents.items()
            else:  # a hand-over caught half-way: the later state
                snap = merge_dump(idents.values())[key]
                ident = next(i for i, s in idents.items() if s is snap)
            self._ident_of[key] = ident
            changed[key] = snap
        if len(cache) > 2 * len(current) + 1024:
            self._cache = {ident: cache[ident] for ident in current if ident in cache}
        return changed

    def listed(self) -> KeysView[Key]:
        """The watched sockets the last dump listed."""
        return self._by_key.keys()

    def ident_of(self, key: Key) -> sockdiag.Ident | None:
        """The raw entry the last dump had for ``key`` (its timer: expiries)."""
        return self._ident_of.get(key)


def dump_records(
    tracker: SocketTracker,
    index: DumpIndex,
    current: Mapping[sockdiag.Ident, int],
    now: float,
    seen_after: float | None = None,
    *,
    started: float | None = None,
) -> list[TcpState]:
    """Feed one dump, begun at ``started`` and answered at ``now``, to
    ``index`` and ``tracker``; the records it makes."""
    changed = index.update(current)
    # a tracked socket the dump does not list is gone — also when the dump
    # before did not list it either (known from a lookup or the trace only)
    missing = tracker.known() - index.listed()
    if not changed and not missing:
        return []
    return tracker.update_changed(changed, sorted(missing), now, seen_after, started=started)
