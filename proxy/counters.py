"""What the middlebox counts, and how much of what it drops it logs.

Every frame is counted (:data:`COUNTERS`, reported by the control API and
in ``daemon_done``), but the records of dropped frames are rate-limited:
every reason the middlebox drops a frame for (:data:`DropReason`) can be
caused by whoever sends it frames, as fast as they like.  So each reason
may log at most :data:`DROP_LOG_BURST` records at once and
:data:`DROP_LOG_RATE` a second (:class:`DropLog`); the next record of a
reason says in ``suppressed`` how many frames went unlogged, and the
``dropped_<reason>`` counter always has the total (:func:`count_drop`).

Pure: ``now`` is passed in.
"""

from __future__ import annotations

from typing import Literal, TypedDict, Unpack

from core.events import FrameDropped

COUNTERS = (
    "frames_in",
    "forwarded",
    "to_kernel",
    "segments",
    "dropped_rule",
    "delayed",
    "held",
    "released",
    "duplicated",
    "resets_injected",
    "dropped_malformed",
    "dropped_mtu",
    "dropped_ttl",
    "dropped_no_route",
    "dropped_unresolved",
    "dropped_queue_full",
    "checksums_completed",
    "express_connections",
    "express_parked",
)
"""The middlebox's counters, in the order they are reported."""

DropReason = Literal["malformed", "no_route", "mtu", "ttl", "queue_full", "unresolved"]
"""Why the middlebox itself dropped a frame (a rule's drop is a ``segment``
record's verdict, not one of these); each has a ``dropped_<reason>`` counter."""

DROP_LOG_RATE = 10.0
"""``frame_dropped`` records per second per reason, at most (a flood of bad
frames once wrote a 102 MB log, one line per frame)."""
DROP_LOG_BURST = 10
"""``frame_dropped`` records per reason that may be logged back to back."""


class DropLog:
    """Rate limit for ``frame_dropped`` records: a token bucket per reason.

    Each reason's bucket holds up to :data:`DROP_LOG_BURST` tokens and
    refills at :data:`DROP_LOG_RATE` per second of ``now``; a record is
    logged when a token is there, else it is counted as suppressed, and the
    next record logged for that reason carries the count.  Bound: one
    bucket per reason, and the reasons are the middlebox's own fixed few
    (:data:`DropReason`); never evicted.  Pure: ``now`` is passed in.
    """

    def __init__(self, rate: float = DROP_LOG_RATE, burst: int = DROP_LOG_BURST) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._buckets: dict[str, list[float]] = {}
        """reason → [tokens, when last refilled, frames suppressed since
        the last record logged]"""

    def admit(self, reason: str, now: float, frames: int = 1) -> int | None:
        """None: do not log this drop (it is counted as suppressed).  Else log
        it, with the returned number of frames suppressed before it."""
        bucket = self._buckets.get(reason)
        if bucket is None:
            bucket = self._buckets[reason] = [self.burst, now, 0]
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens < 1.0:
            bucket[0] = tokens
            bucket[2] += frames
            return None
        bucket[0] = tokens - 1.0
        suppressed = int(bucket[2])
        bucket[2] = 0
        return suppressed

    def suppressed(self) -> dict[str, int]:
        """Frames not logged since each reason's last record."""
        return {reason: int(b[2]) for reason, b in self._buckets.items() if b[2]}


class DropFacts(TypedDict, total=False):
    """What a ``frame_dropped`` record says about the frame, besides why."""

    port: str | None
    detail: str | None
    src: str | None
    dst: str | None
    egress: str | None
    bytes: int | None
    mtu: int | None
    frames: int | None
    conn: str | None


def count_drop(
    counters: dict[str, int],
    log: DropLog,
    reason: DropReason,
    now: float,
    ts: float,
    count: int = 1,
    **facts: Unpack[DropFacts],
) -> FrameDropped | None:
    """Count ``count`` frames dropped for ``reason`` at ``now``; the record to
    log about them (dated ``ts``), or None when ``log`` has no room for it."""
    counters["dropped_" + reason] += count
    suppressed = log.admit(reason, now, count)
    if suppressed is None:
        return None
    return FrameDropped(ts=ts, reason=reason, suppressed=suppressed or None, **facts)
