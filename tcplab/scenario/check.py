"""Checking a finished run against a scenario's expectations (pure): each
expectation that did not hold, in words."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from core import events
from core.events import App, ObserverStop, Record, Segment
from tcplab import connview
from tcplab.scenario.model import Scenario, SegmentExpect, SideExpect


def _fmt_t(ts: float, t0: float) -> str:
    return f"t={(ts - t0) * 1000:+.1f} ms"


def check(sc: Scenario, records: Sequence[Record], statuses: Mapping[str, int | None]) -> list[str]:
    """Every expectation that did not hold, in words (empty: the run passed).
    ``records`` in the order they arrived (each component's own in order)."""
    segs = sorted((r for r in records if isinstance(r, Segment)), key=lambda r: r.ts)
    t0 = connview.time_zero(records)
    failures: list[str] = []
    for side, want in (("client", sc.expect_client), ("server", sc.expect_server)):
        failures += _check_side(side, want, records, statuses.get(side), t0)
    failures += _check_segments(sc.expect_segments, segs, t0)
    return failures


def _check_side(
    side: str,
    want: SideExpect,
    records: Sequence[Record],
    status: int | None,
    t0: float,
) -> list[str]:
    out: list[str] = []
    if want.exit is not None and status != want.exit:
        out.append(f"{side}: expected exit status {want.exit}, saw {status}")
    # the run, for this side, ends with its observer's last report; what the
    # kernel does with sockets the program kept, as it exits, comes after
    conns = connview.paths(connview.until_stop(records, side), side)
    if want.states is not None or want.min_in or want.max_in:
        if len(conns) < want.connection:
            out.append(f"{side}: expected connection {want.connection}, saw {len(conns)}")
            return out
        path = conns[want.connection - 1]
        walked = path.states
        if want.states is not None:
            expected = [s for s in want.states if s not in want.may_skip or s in walked]
            if walked != expected:
                out.append(
                    f"{side}: expected states {' → '.join(expected)}, saw {' → '.join(walked)}"
                )
            inferred = {r.new for r in path.records if r.source == "inferred"}
            extra = sorted(inferred - want.may_infer)
            if extra:
                out.append(
                    f"{side}: {', '.join(extra)} only inferred (too quick for the poller); "
                    f"allowed inferred: {', '.join(sorted(want.may_infer)) or 'none'}"
                )
        for state, least in want.min_in.items():
            left = path.left(state)
            if left is None or left.in_old_ms is None:
                out.append(
                    f"{side}: expected to see it leave {state} (at least {least * 1000:g} ms)"
                )
            elif left.in_old_ms < least * 1000:
                out.append(
                    f"{side}: expected at least {least * 1000:g} ms in {state}, saw "
                    f"{left.in_old_ms:.1f} ms ({_fmt_t(left.ts, t0)})"
                )
        for state, most in want.max_in.items():
            left = path.left(state)
            if left is not None and left.in_old_ms is not None and left.in_old_ms > most * 1000:
                out.append(
                    f"{side}: expected at most {most * 1000:g} ms in {state}, saw "
                    f"{left.in_old_ms:.1f} ms ({_fmt_t(left.ts, t0)})"
                )
    if want.errors:
        seen = {
            str(r.how)
            for r in records
            if isinstance(r, App) and r.component == side and r.kind == events.APP_ERROR
        }
        missing = [name for name in want.errors if name not in seen]
        if missing:
            saw = ", ".join(sorted(seen)) or "none"
            out.append(f"{side}: expected errors {', '.join(missing)}, saw {saw}")
    if want.final is not None:
        stops = [r for r in records if isinstance(r, ObserverStop) and r.component == side]
        remaining = stops[-1].remaining if stops else ()
        states = sorted(str(sock.get("state")) for sock in remaining)
        if states != sorted(want.final):
            wanted = ", ".join(sorted(want.final)) or "no sockets"
            saw = ", ".join(states) or "none"
            out.append(f"{side}: expected {wanted} left at the end, saw {saw}")
    return out


def _matches(want: SegmentExpect, seg: Segment) -> bool:
    if want.side is not None and seg.dir != ("c2s" if want.side == "client" else "s2c"):
        return False
    if any(tag not in seg.tags for tag in want.tags):
        return False
    if any(tag in seg.tags for tag in want.without):
        return False
    if want.flags is not None and seg.flags != want.flags:
        return False
    return want.verdict is None or seg.verdict == want.verdict


def _check_segments(wants: tuple[SegmentExpect, ...], segs: list[Segment], t0: float) -> list[str]:
    out: list[str] = []
    position = 0
    previous: Segment | None = None
    for want in wants:
        if want.count is not None:
            # a count is about the whole run, not a step in the sequence
            found = sum(1 for e in segs if _matches(want, e))
            if found != want.count:
                out.append(f"segments: expected {want.count} × {want.describe()}, saw {found}")
            continue
        hit = next((i for i in range(position, len(segs)) if _matches(want, segs[i])), None)
        if hit is None:
            after = f" after {_fmt_t(previous.ts, t0)}" if previous else ""
            out.append(f"segments: expected {want.describe()}{after}, not seen")
            continue
        seg = segs[hit]
        if want.after is not None and previous is not None:
            gap = seg.ts - previous.ts
            low, high = want.after
            if not low <= gap <= high:
                out.append(
                    f"segments: expected {want.describe()} {low * 1000:g}–{high * 1000:g} ms after "
                    f"the previous one, saw {gap * 1000:.1f} ms ({_fmt_t(seg.ts, t0)})"
                )
        previous = seg
        position = hit + 1
    return out
