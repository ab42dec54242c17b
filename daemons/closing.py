"""What a daemon does next to end a connection, by its close policy (pure).

The close policy (:mod:`core.policies`) is the point of the lab: each one
makes the kernel walk a different path through the teardown, so each
decision it implies must be exactly what the policy's description promises.
Those decisions are made here, from what has happened so far — the policy,
the messages echoed, the client's FIN read, a reset — as values the
daemon acts on; the daemon keeps the sockets, the clock and the waiting.

Server (``--close``):

* on accept: read (``first:0`` closes at once, ``half:0`` shuts down writing
  first) — :func:`at_accept`;
* on each complete line: echo it, or drop it once writing is shut down; then
  read on, shut down writing, or close first — :func:`on_line`;
* on the client's FIN: send the farewell, then close, linger and close, or
  keep the socket open (``never``) — :func:`at_eof`;
* at the end, however it came: close, abortively under ``abort`` — and what
  the owner then knows for the observer — :func:`server_close`.

Client: only the final close is a decision of this kind
(:func:`client_close`); the rest of its policy is the order of its calls.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from core.policies import ClosePolicy
from daemons.inference import Fact

Next = Literal["read", "shutdown", "close"]
"""After accepting or echoing: read on; shut down writing (our FIN) and read
on; or close now, before the client does."""

RESET_ERRNOS = frozenset({"ECONNRESET", "EPIPE"})
"""The errors of a connection the peer reset: ECONNRESET, and EPIPE from a
send() on a connection the reset has already closed."""


@dataclasses.dataclass(frozen=True, slots=True)
class LineStep:
    """What to do with one complete line the client sent."""

    echo: bool
    """False: writing is shut down (``half``), the line is read and dropped."""
    then: Next


@dataclasses.dataclass(frozen=True, slots=True)
class EofStep:
    """What to do once the client's FIN is read: the server is in CLOSE_WAIT."""

    look: bool
    """Whether the observer looks at the socket now.  Not when a close
    follows at once: the look after close() says it all (CLOSE_WAIT is then
    implied by the facts)."""
    farewell: bool
    """Send the farewell line first: data flowing from CLOSE_WAIT."""
    then: Literal["close", "linger", "keep"]
    """Close; wait :attr:`linger_s` in CLOSE_WAIT, then close; or keep the
    socket open until the server exits (``never``)."""
    linger_s: float = 0.0


@dataclasses.dataclass(frozen=True, slots=True)
class Close:
    """How to close the descriptor, and what the owner knows once it has."""

    abort: bool
    """SO_LINGER 0 first: close() sends RST instead of FIN."""
    facts: tuple[Fact, ...]

    @property
    def how(self) -> Literal["abort", "close"]:
        """The ``how`` of the ``app_close`` record."""
        return "abort" if self.abort else "close"


def at_accept(policy: ClosePolicy) -> Next:
    """Before the first message: ``first:0`` closes at once, ``half:0``
    shuts down writing; every other policy waits for the client."""
    if policy.kind == "first" and policy.after_messages == 0:
        return "close"
    if policy.kind == "half" and policy.after_messages == 0:
        return "shutdown"
    return "read"


def on_line(policy: ClosePolicy, echoed: int) -> LineStep:
    """A complete line arrived after ``echoed`` lines were echoed back."""
    if policy.kind == "half" and echoed >= policy.after_messages:
        return LineStep(echo=False, then="read")  # write side is shut: read and drop
    now = echoed + 1
    if policy.kind == "first" and now >= policy.after_messages:
        return LineStep(echo=True, then="close")
    if policy.kind == "half" and now == policy.after_messages:
        return LineStep(echo=True, then="shutdown")
    return LineStep(echo=True, then="read")


def at_eof(policy: ClosePolicy, *, farewell: bool) -> EofStep:
    """The client's FIN was read; ``farewell``: the server has a farewell
    line to send (``--farewell``).  Under ``half`` our FIN left already, so
    there is nothing left to say."""
    closes_at_once = policy.kind in ("immediate", "abort") and not farewell
    says_farewell = farewell and policy.kind != "half"
    if policy.kind == "linger":
        return EofStep(not closes_at_once, says_farewell, "linger", policy.linger_s)
    if policy.kind == "never":
        return EofStep(not closes_at_once, says_farewell, "keep")
    return EofStep(not closes_at_once, says_farewell, "close")


def server_close(policy: ClosePolicy, *, reset: bool, unread: bool = False) -> Close:
    """The server closes its socket (for whatever reason: the policy, the
    client's FIN, an error); ``reset``: the connection was reset already, so
    the kernel has closed it and close() sends nothing; ``unread``: bytes
    wait unread in its receive queue, so close() sends RST, not FIN."""
    if unread and not reset:
        return Close(abort=policy.kind == "abort", facts=("reset", "closed"))
    return _close(abort=policy.kind == "abort", reset=reset)


def client_close(policy: str, *, gone: bool = False) -> Close:
    """The client closes its socket at the end of a conversation; ``gone``:
    the kernel had ended the connection already (an I/O error said so:
    :func:`ends_connection`), so close() sends nothing."""
    return _close(abort=policy == "abort", reset=gone)


def _close(*, abort: bool, reset: bool) -> Close:
    if abort or reset:
        return Close(abort=abort, facts=("reset", "closed"))
    return Close(abort=abort, facts=("snd_fin", "closed"))


def is_reset(errno_name: str) -> bool:
    """Whether an I/O error (by errno name) means the peer reset the connection."""
    return errno_name in RESET_ERRNOS


def ends_connection(errno_name: str) -> bool:
    """Whether an error from send() or recv() (by errno name) means the kernel
    has ended the connection: the peer reset it, or the kernel gave up on
    it (ETIMEDOUT: keepalive probes unanswered, TCP_USER_TIMEOUT, too many
    retransmissions) and dropped it, with an RST or silently."""
    return errno_name in RESET_ERRNOS or errno_name == "ETIMEDOUT"
