"""Checking a finished run against a scenario's expectations (pure): each
expectation that did not hold, in words."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from core import events
from core.events import CLOSED, App, ObserverStop, Record, Segment, TcpState
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
        failures += _check_side(side, want, records, segs, statuses.get(side), t0)
    failures += _check_segments(sc.expect_segments, segs, t0)
    return failures


def _check_side(
    side: str,
    want: SideExpect,
    records: Sequence[Record],
    segs: Sequence[Segment],
    status: int | None,
    t0: float,
) -> list[str]:
    out: list[str] = []
    if want.exit is not None and status != want.exit:
        out.append(f"{side}: expected exit status {want.exit}, saw {status}")
    # the run, for this side, ends with its observer's last report; what the
    # kernel does with sockets the program kept, as it exits, comes after
    observed = connview.until_stop(records, side)
    stops = [r for r in records if isinstance(r, ObserverStop) and r.component == side]
    stop = stops[-1] if stops else None
    if want.listener is not None:
        out += _check_listener(side, want.listener, observed)
    per_connection = (
        want.states is not None
        or want.min_in
        or want.max_in
        or want.reset_in
        or want.timer_restarted
    )
    if per_connection:
        conns = connview.paths(observed, side)
        if len(conns) < want.connection:
            out.append(f"{side}: expected connection {want.connection}, saw {len(conns)}")
            return out
        path = conns[want.connection - 1]
        out += _check_path(side, want, path, t0)
        for state in want.reset_in:
            out += _check_reset_in(side, state, path, segs, t0)
        for state, least in want.timer_restarted.items():
            out += _check_timer_restarted(side, state, least, path, observed, stop)
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
        remaining = stop.remaining if stop is not None else ()
        states = sorted(str(sock.get("state")) for sock in remaining)
        if states != sorted(want.final):
            wanted = ", ".join(sorted(want.final)) or "no sockets"
            saw = ", ".join(states) or "none"
            out.append(f"{side}: expected {wanted} left at the end, saw {saw}")
    return out


def _check_path(side: str, want: SideExpect, path: connview.ConnPath, t0: float) -> list[str]:
    """The connection's states and the time it spent in them."""
    out: list[str] = []
    walked = path.states
    if want.states is not None:
        expected = [s for s in want.states if s not in want.may_skip or s in walked]
        if walked != expected:
            out.append(f"{side}: expected states {' → '.join(expected)}, saw {' → '.join(walked)}")
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
            out.append(f"{side}: expected to see it leave {state} (at least {least * 1000:g} ms)")
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
    return out


def _check_listener(side: str, want: tuple[str, ...], observed: Sequence[Record]) -> list[str]:
    """The states of the side's (first) listening socket, in order."""
    listeners = connview.listener_states(observed, side)
    walked = [CLOSED]
    for record in listeners:
        if record.conn == listeners[0].conn and record.new != walked[-1]:
            walked.append(record.new)
    if walked == list(want):
        return []
    where = f" ({listeners[0].conn})" if listeners else ""
    return [f"{side}: expected listener states {' → '.join(want)}, saw {' → '.join(walked)}{where}"]


def _check_reset_in(
    side: str, state: str, path: connview.ConnPath, segs: Sequence[Segment], t0: float
) -> list[str]:
    """The connection left ``state`` for CLOSED because of an RST it
    received: one reached it (at the middlebox, delivered) after it entered
    ``state`` and before it was seen to leave."""
    want = f"{side}: expected an RST to end the connection in {state}"
    entered, left = path.entered(state), path.left(state)
    if entered is None:
        return [f"{want}, it was never in {state}"]
    if left is None:
        return [f"{want}, it did not leave {state}"]
    if left.shown_new != CLOSED:
        return [f"{want}, it went to {left.shown_new} ({_fmt_t(left.ts, t0)})"]
    toward = "s2c" if side == "client" else "c2s"
    resets = [
        s
        for s in segs
        if s.conn == path.conn
        and s.dir == toward
        and "R" in s.flags
        and s.delivered
        and entered.earliest <= s.ts <= left.ts
    ]
    if resets:
        return []
    return [f"{want}, none reached it before it closed ({_fmt_t(left.ts, t0)})"]


def _check_timer_restarted(
    side: str,
    state: str,
    least: float,
    path: connview.ConnPath,
    observed: Sequence[Record],
    stop: ObserverStop | None,
) -> list[str]:
    """The connection stayed in ``state`` at least ``least`` longer than the
    state's timer said when it was entered: the timer was restarted (a
    TIME_WAIT re-arms its 60 s when it acknowledges a retransmitted FIN).
    Where the state ends: when it was seen to leave it (a kernel timer fires
    late, never early), or, still in it at the end, the observer's last
    report of the time left."""
    want = f"{side}: expected the {state} timer to restart"
    began = next(
        (
            r
            for r in observed
            if isinstance(r, TcpState)
            and r.conn == path.conn
            and r.shown_new == state
            and r.expires_ms is not None
        ),
        None,
    )
    if began is None:
        return [f"{want}, saw no {state} timer"]
    assert began.expires_ms is not None
    promised = began.ts + began.expires_ms / 1000
    left = path.left(state)
    if left is not None:
        ended = left.earliest
    else:
        last = next(
            (
                sock
                for sock in (stop.remaining if stop is not None else ())
                if sock.get("conn") == path.conn
                and sock.get("state") == state
                and isinstance(sock.get("expires_ms"), int | float)
            ),
            None,
        )
        if last is None or stop is None:
            return [f"{want}, saw neither {state} end nor its timer at the end"]
        ended = stop.ts + float(last["expires_ms"]) / 1000
    later = ended - promised
    if later >= least:
        return []
    return [
        f"{want} (to end at least {least * 1000:g} ms later than its timer said when "
        f"{state} began), saw {later * 1000:+.1f} ms"
    ]


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
