"""Tie a connect()'s traced SYN_SENT, made before it had a port, to its socket (pure).

``tcp_v4_connect`` sets SYN_SENT before it picks the local port, so the
tracepoint reports that first transition with port 0: it names the peer,
not the socket.  Only ``skaddr`` (the kernel's ``struct sock *``) ties it
to the socket's later, ported transitions.  A client making thousands of
connections to one server has thousands of such events in flight, so they
wait here, by ``skaddr``, until one of two things names their four-tuple:

* the owner says which four-tuple it is connecting
  (:meth:`PortlessConnects.connecting`: connect() returned with its port);
* the trace reports the same socket again, with its port
  (:meth:`PortlessConnects.ported`).

What waits is handed back re-keyed, in order, for the tracker to apply.
"""

from __future__ import annotations

import dataclasses

from core.events import CLOSED
from daemons.tracking import Key, TraceTransition

MAX_CONNECTING = 4096
"""Connects waiting for their portless trace event; more means the trace is
not keeping up, and the oldest are forgotten (a poll reports them)."""


def is_portless(key: Key) -> bool:
    """A connection's socket the tracepoint saw before it had a port."""
    return key[1] == 0 and key[3] != 0


def _same_peer(portless: Key, key: Key) -> bool:
    """``key`` may be the socket the portless ``portless`` became."""
    return portless[0] == key[0] and portless[2] == key[2] and portless[3] == key[3]


@dataclasses.dataclass(slots=True)
class _Pending:
    """Transitions of a socket that has no port yet (connect() in progress)."""

    key: Key
    items: list[TraceTransition]


class PortlessConnects:
    """Traced transitions waiting for their port, and connects waiting for
    their traced transition."""

    def __init__(self) -> None:
        self._portless: dict[int, _Pending] = {}
        self._linked: dict[int, Key] = {}
        """Portless sockets already tied to their four-tuple, by address."""
        self._connecting: list[Key] = []
        """Sockets the owner said it is connecting (port known, SYN_SENT's
        trace event maybe not read yet), oldest first."""

    def connecting(self, key: Key) -> list[TraceTransition]:
        """The owner just called connect() on ``key`` (it knows the port the
        kernel picked).  The tracepoint saw that socket enter SYN_SENT before
        it had a port; one thread's connect() calls reach the tracepoint in
        the order they were made, so the oldest portless SYN_SENT toward the
        same peer is this socket's.  Returns its transitions, now under
        ``key``; none when its event has not been read yet (it will be tied
        to ``key`` when it is)."""
        for skaddr, pending in self._portless.items():
            if _same_peer(pending.key, key):
                del self._portless[skaddr]
                self._linked[skaddr] = key
                return [dataclasses.replace(item, key=key) for item in pending.items]
        self._connecting.append(key)
        del self._connecting[:-MAX_CONNECTING]
        return []

    def portless(self, event: TraceTransition) -> list[TraceTransition]:
        """A transition whose key has no port (:func:`is_portless`): what may
        be applied now, in order — under its four-tuple once that is known,
        under the portless key when the socket closed before it got a port —
        or nothing while it waits."""
        linked = self._linked.get(event.skaddr)
        if linked is not None and event.new != CLOSED:
            return [dataclasses.replace(event, key=linked)]
        waiting = next((k for k in self._connecting if _same_peer(event.key, k)), None)
        if waiting is not None and event.skaddr not in self._portless:
            self._connecting.remove(waiting)
            self._linked[event.skaddr] = waiting
            return [dataclasses.replace(event, key=waiting)]
        pending = self._portless.get(event.skaddr)
        if event.new == CLOSED and pending is not None:
            # connect() failed before it got a port (EADDRNOTAVAIL)
            del self._portless[event.skaddr]
            return [*pending.items, event]
        if pending is None:
            self._portless[event.skaddr] = _Pending(event.key, [event])
        else:
            pending.items.append(event)
        return []

    def ported(self, event: TraceTransition) -> list[TraceTransition]:
        """A transition with its port: the same socket's earlier, portless
        transitions still waiting, under its four-tuple (to be applied
        before it)."""
        self._linked.pop(event.skaddr, None)
        pending = self._portless.pop(event.skaddr, None)
        if pending is None:
            return []
        return [dataclasses.replace(item, key=event.key) for item in pending.items]

    def seen(self, key: Key) -> None:
        """The trace reported ``key`` with its port: a connect the owner
        announced for it waits no more (its portless SYN_SENT was never read)."""
        if key in self._connecting:
            self._connecting.remove(key)

    def awaiting_port(self, key: Key) -> bool:
        """A traced connect() toward ``key``'s peer is still without a port,
        or the owner's connect() on ``key`` still waits for its trace event."""
        return any(_same_peer(p.key, key) for p in self._portless.values()) or key in (
            self._connecting
        )
