"""How each daemon ends a connection: the close policies, one grammar each
(pure).  The daemons parse their ``--close`` with these, and scenario files
are checked with the same functions, so the two can never disagree.

Server: ``immediate``, ``linger:D``, ``never``, ``abort``, ``first[:N]``,
``half[:N]`` (N ≥ 0 messages echoed first; 0: at once, on accept).
Client: ``active``, ``shutdown``, ``passive``, ``abort``, ``never``.
"""

from __future__ import annotations

import dataclasses

from core.units import format_duration, parse_duration

SERVER_POLICIES = ("immediate", "linger", "never", "abort", "first", "half")
CLIENT_POLICIES = ("active", "shutdown", "passive", "abort", "never")
MAX_MESSAGES = 1_000_000
MAX_LINGER_S = 3600.0
SERVER_POLICY_PATTERN = (
    r"^(immediate|never|abort|linger:\S+|first(:[0-9]{1,7})?|half(:[0-9]{1,7})?)$"
)
"""The same grammar as a regular expression, for the JSON Schema (a
``linger`` duration is checked by :func:`ClosePolicy.parse` only)."""


@dataclasses.dataclass(frozen=True, slots=True)
class ClosePolicy:
    """The server's close policy, parsed."""

    kind: str
    linger_s: float = 0.0
    after_messages: int = 1

    @classmethod
    def parse(cls, text: str) -> ClosePolicy:
        """``linger:300ms`` → ClosePolicy("linger", 0.3); ValueError saying why not."""
        kind, _, arg = text.partition(":")
        if kind not in SERVER_POLICIES:
            raise ValueError(
                f"unknown close policy {kind!r} (one of: {', '.join(SERVER_POLICIES)})"
            )
        if kind == "linger":
            if not arg:
                raise ValueError("linger needs a duration: linger:2s")
            seconds = parse_duration(arg)
            if seconds > MAX_LINGER_S:
                raise ValueError(f"linger:{arg}: at most {format_duration(MAX_LINGER_S)}")
            return cls(kind, linger_s=seconds)
        if kind in ("first", "half"):
            if not arg:
                return cls(kind, after_messages=1)
            if not arg.isdigit() or len(arg) > 7 or int(arg) > MAX_MESSAGES:
                raise ValueError(
                    f"{kind}:{arg}: expected a number of messages, 0 to {MAX_MESSAGES}"
                )
            return cls(kind, after_messages=int(arg))
        if arg:
            raise ValueError(f"close policy {kind!r} takes no argument (got {text!r})")
        return cls(kind)

    def __str__(self) -> str:
        if self.kind == "linger":
            return f"linger:{format_duration(self.linger_s)}"
        if self.kind in ("first", "half"):
            return f"{self.kind}:{self.after_messages}"
        return self.kind


def client_policy(text: str) -> str:
    """The client's close policy; ValueError when it is none of them."""
    if text not in CLIENT_POLICIES:
        raise ValueError(f"unknown close policy {text!r} (one of: {', '.join(CLIENT_POLICIES)})")
    return text
