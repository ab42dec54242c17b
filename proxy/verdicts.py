"""What a rule's verdict means for a segment beyond its fate: which
``segment`` record is logged when, the copy a ``duplicate`` sends, and the
RSTs a ``reset`` injects (sans-IO).

Logging (``--log-segments``): ``all`` logs every segment; ``control`` the
control segments (:data:`CONTROL_TAGS`) and any segment a rule matched or
acted on; ``none`` nothing (:func:`should_log`).  When (:func:`logged_when`):

- a segment that leaves at once is logged when it is judged; the shell
  stamps ``sent_ts`` on it once it has sent it (:func:`stamp_sent`);
- a paced segment is logged when it leaves, with its delay;
- a segment a rule delays or holds is logged twice: on arrival (``delay`` /
  ``hold``) and when it leaves (``release``, with ``kept_ms``:
  :func:`departure_record`).

A reset drops the segment and sends an RST+ACK to each end instead, each
carrying exactly the sequence number its receiver expects next, so it is
taken at once (:func:`in_window_resets`).

:class:`Judge` puts it together for each routed TCP segment: tag, decide,
record, then pass, drop, delay, duplicate, hold or reset.  Pure: it writes
into the middlebox's :class:`~proxy.middlebox.Output` and sends through the
middlebox's egress; ``now`` is passed in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, NamedTuple, Unpack

from core.events import Record, Segment, Verdict
from proxy import flows as flowsmod
from proxy import rules as rulesmod
from proxy import wire
from proxy.counters import DropFacts, DropLog, count_drop
from proxy.neighbours import Port
from proxy.options import LogSegments
from proxy.router import Routed

if TYPE_CHECKING:
    # the middlebox runs the judge and owns what it writes into
    from proxy.middlebox import Output

Send = Callable[[Routed, float, float, "Output"], None]
"""The middlebox's egress: put a routed frame on the wire (or queue it for its
next hop's MAC) — ``(routed, now, wall, out)``."""
Express = Callable[[flowsmod.Flow, float, "Output"], None]
"""Offer a connection whose segment just passed to the express lane."""

CONTROL_TAGS = frozenset(
    {"syn", "syn-ack", "handshake-ack", "fin", "fin-ack", "last-ack", "rst", "retransmit"}
)
"""Segments logged in ``control`` mode (with any segment a rule acted on)."""

RST_ACK = wire.RST | wire.ACK
"""The flags of an injected reset."""

_SENT_NOW = frozenset({"pass", "duplicate", "inject", "release"})
"""Verdicts whose frame the shell puts on the wire as it logs the record."""


def should_log(mode: LogSegments, verdict: rulesmod.Verdict, tags: tuple[str, ...]) -> bool:
    """Whether a segment's record is logged at all in ``--log-segments`` ``mode``."""
    return mode == "all" or (
        mode == "control"
        and (
            verdict.action != "pass"
            or verdict.rule is not None
            or not CONTROL_TAGS.isdisjoint(tags)
        )
    )


def logged_when(
    action: rulesmod.VerdictAction, later: bool
) -> tuple[bool, Literal["no", "as_is", "release"]]:
    """For a segment whose record is logged and whose frame leaves ``later``
    or not: whether the record is logged on arrival, and what is logged when
    the frame leaves (:attr:`Routed.log_on_departure`)."""
    if action in ("pass", "duplicate") and later:
        return False, "as_is"  # paced: logged when it leaves
    return True, "release" if action in ("delay", "hold") else "no"


def departure_record(routed: Routed, now: float) -> Segment | None:
    """What to log when a delayed or held segment leaves at ``now``: what its
    arrival left for then, if anything."""
    record = routed.segment
    if record is None or routed.log_on_departure == "no":
        return None
    if routed.log_on_departure == "release":
        # delay_ms stays: a release with one ends a delay, without one a hold
        record = dataclasses.replace(
            record,
            verdict="release",
            kept_ms=round((now - routed.decided) * 1000, 3),
        )
    return record


def copy_of(routed: Routed) -> Routed:
    """A duplicate's second frame: it travels with the original but is
    logged once, with the original."""
    return dataclasses.replace(routed, frame=bytearray(routed.frame), log_on_departure="no")


class InjectedRst(NamedTuple):
    """One RST the proxy makes: the frame, and the segment its record
    describes (from ``src`` to ``dst``)."""

    frame: bytes
    src: flowsmod.Endpoint
    dst: flowsmod.Endpoint
    seq: int
    ack: int


def in_window_resets(
    parsed: wire.Frame, tcp: wire.Tcp, tagged: flowsmod.Tagged, in_mac: bytes
) -> tuple[InjectedRst, InjectedRst]:
    """The RSTs that replace the segment ``tcp``: toward its receiver (from
    the sender's address, MACs left for the egress to fill), and back toward
    its sender (from the receiver's address, out of the port it came in on,
    whose MAC is ``in_mac``).

    Each carries exactly the sequence number its receiver expects next (the
    dropped segment's own seq; the ack the sender sent), so it is taken at
    once (RFC 5961 §3.2: an RST whose sequence number is not exactly
    RCV.NXT only earns a challenge ACK)."""
    ip = parsed.ip
    assert ip is not None
    back = "s2c" if tagged.dir == "c2s" else "c2s"
    # The receiver never got this segment: it expects exactly its seq.
    # The sender expects what it acknowledges (or the peer's next seq).
    toward_receiver_seq = tcp.seq
    toward_sender_seq = tcp.ack if tcp.flags & wire.ACK else (tagged.flow.next_seq(back) or 0)
    # the RST back acknowledges the whole segment (a SYN's too: a SYN_SENT
    # socket takes an RST only if it acknowledges the SYN, RFC 9293 §3.10.7.3)
    segment_end = (
        tcp.seq + tcp.payload_len + (1 if tcp.flags & (wire.SYN | wire.FIN) else 0)
    ) & 0xFFFFFFFF
    sender, receiver = (ip.src, tcp.src_port), (ip.dst, tcp.dst_port)
    forward = wire.build_tcp_frame(
        b"\0" * 6,
        b"\0" * 6,
        ip.src,
        ip.dst,
        tcp.src_port,
        tcp.dst_port,
        toward_receiver_seq,
        toward_sender_seq,
        RST_ACK,
    )
    backward = wire.build_tcp_frame(
        in_mac,
        bytes(parsed.eth.src),
        ip.dst,
        ip.src,
        tcp.dst_port,
        tcp.src_port,
        toward_sender_seq,
        segment_end,
        RST_ACK,
    )
    # each record's ack is the other RST's seq (the backward frame itself
    # acknowledges segment_end)
    return (
        InjectedRst(forward, sender, receiver, toward_receiver_seq, toward_sender_seq),
        InjectedRst(backward, receiver, sender, toward_sender_seq, toward_receiver_seq),
    )


def segment_record(
    tagged: flowsmod.Tagged,
    verdict: Verdict,
    rule: str | None,
    delay: float | None,
    arrival: float,
) -> Segment:
    """The ``segment`` record of a tagged segment that arrived at ``arrival``."""
    return Segment(
        ts=arrival,
        conn=tagged.conn,
        dir=tagged.dir,
        flags=tagged.flags,
        seq=tagged.seq,
        ack=tagged.ack,
        rseq=tagged.rseq,
        rack=tagged.rack,
        len=tagged.len,
        tags=tagged.tags,
        verdict=verdict,
        rule=rule,
        delay_ms=round(delay * 1000, 3) if delay is not None else None,
        conn_number=tagged.conn_number,
    )


def stamp_sent(records: list[Record], sent: float) -> list[Record]:
    """``records`` with ``sent_ts`` set on the segments that leave now (the
    shell calls this with the time it put them on the wire)."""
    return [
        dataclasses.replace(r, sent_ts=sent)
        if isinstance(r, Segment) and r.sent_ts is None and r.verdict in _SENT_NOW
        else r
        for r in records
    ]


class Judge:
    """Runs each routed TCP segment through the rules and carries out the
    verdict: tags it (:mod:`proxy.flows`), asks the engine (:mod:`proxy.rules`),
    makes and logs its record, then sends, delays, duplicates, holds, drops or
    resets it."""

    def __init__(
        self,
        flows: flowsmod.FlowTable,
        engine: rulesmod.RuleEngine,
        delayed: rulesmod.DelayQueue,
        held: rulesmod.HoldQueue,
        counters: dict[str, int],
        drop_log: DropLog,
        send: Send,
    ) -> None:
        self.flows = flows
        self.engine = engine
        self.delayed = delayed
        self.held = held
        self.counters = counters
        self.drop_log = drop_log
        self.send = send

    def segment(
        self,
        parsed: wire.Frame,
        tcp: wire.Tcp,
        routed: Routed,
        in_port: Port,
        now: float,
        arrival: float,
        out: Output,
        *,
        log_segments: LogSegments,
        describe_all: bool,
        express: Express | None,
    ) -> None:
        """Judge the segment ``tcp`` of ``routed`` that arrived on ``in_port``.
        ``describe_all``: make every segment's record (for the capture), logged
        or not; ``express``: offer the connection to the express lane when its
        segment passes at once."""
        ip = parsed.ip
        assert ip is not None
        self.counters["segments"] += 1
        tagged = self.flows.classify(
            (ip.src, tcp.src_port),
            (ip.dst, tcp.dst_port),
            tcp.flags,
            tcp.seq,
            tcp.ack,
            tcp.payload_len,
            now,
        )
        verdict = self.engine.decide(tagged, now)
        action = verdict.action
        send_at = verdict.send_at if verdict.send_at is not None else now
        later = send_at > now
        log = should_log(log_segments, verdict, tagged.tags)
        # the record is built only when someone reads it: the log, the
        # capture's comments, or a held or delayed segment's later "release"
        if log or describe_all or action != "pass":
            self._record(tagged, verdict, send_at, routed, now, arrival, out, log=log)
        if action == "pass" and not later and express is not None:
            express(tagged.flow, now, out)
        if action in ("pass", "delay", "duplicate"):
            self._forward(routed, action, send_at, now, arrival, out)
        elif action == "drop":
            self.counters["dropped_rule"] += 1
        elif action == "hold":
            self.counters["held"] += 1
            if not self.held.hold(routed, verdict.rule or "hold"):
                self._drop(out, now, arrival, conn=tagged.conn, detail="hold queue")
        elif action == "reset":
            self.counters["resets_injected"] += 1
            self._reset(parsed, tcp, tagged, routed, in_port, verdict.rule, now, arrival, out)

    def _record(
        self,
        tagged: flowsmod.Tagged,
        verdict: rulesmod.Verdict,
        send_at: float,
        routed: Routed,
        now: float,
        arrival: float,
        out: Output,
        *,
        log: bool,
    ) -> None:
        """Make the segment's record, and when it is to be logged (``log``),
        log it now or leave it to be logged when the frame leaves."""
        later = send_at > now
        record = segment_record(
            tagged, verdict.action, verdict.rule, send_at - now if later else None, arrival
        )
        routed.segment = record
        routed.decided = now
        out.segment = record
        if log:
            on_arrival, routed.log_on_departure = logged_when(verdict.action, later)
            if on_arrival:
                out.records.append(record)

    def _forward(
        self,
        routed: Routed,
        action: rulesmod.VerdictAction,
        send_at: float,
        now: float,
        arrival: float,
        out: Output,
    ) -> None:
        """Pass, delay or duplicate: the frame (twice, for a duplicate) leaves
        now, or at ``send_at``."""
        if action != "pass":
            self.counters["delayed" if action == "delay" else "duplicated"] += 1
        later = send_at > now
        for i in range(2 if action == "duplicate" else 1):
            item = routed if i == 0 else copy_of(routed)
            if not later:
                self.send(item, now, arrival, out)
            elif not self.delayed.push(item, send_at):
                record = item.segment
                conn = record.conn if record is not None else None
                self._drop(out, now, arrival, conn=conn, detail="delay queue")

    def _reset(
        self,
        parsed: wire.Frame,
        tcp: wire.Tcp,
        tagged: flowsmod.Tagged,
        routed: Routed,
        in_port: Port,
        rule: str | None,
        now: float,
        arrival: float,
        out: Output,
    ) -> None:
        """Drop the segment; send an in-window RST to each end instead, each
        logged as ``inject``."""
        forward, backward = in_window_resets(parsed, tcp, tagged, in_port.mac)
        toward_receiver, toward_sender = (
            segment_record(
                self.flows.classify(rst.src, rst.dst, RST_ACK, rst.seq, rst.ack, 0, now),
                "inject",
                rule,
                None,
                arrival,
            )
            for rst in (forward, backward)
        )
        out.records += (toward_receiver, toward_sender)
        self.send(Routed(routed.port, routed.next_hop, bytearray(forward.frame)), now, arrival, out)
        out.frames.append((in_port.name, backward.frame))
        # for the capture: the frames the proxy made, with their records
        out.injected.append((routed.port, forward.frame, toward_receiver))
        out.injected.append((in_port.name, backward.frame, toward_sender))

    def _drop(self, out: Output, now: float, arrival: float, **facts: Unpack[DropFacts]) -> None:
        """A segment its queue had no room for: counted, and logged unless the
        drop log's rate is spent."""
        record = count_drop(self.counters, self.drop_log, "queue_full", now, arrival, **facts)
        if record is not None:
            out.records.append(record)
