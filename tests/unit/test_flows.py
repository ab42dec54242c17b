"""Segment roles on hand-built conversations, one per corner case."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy import flows
from proxy.wire import ACK, FIN, PSH, RST, SYN

C = ("192.0.2.1", 40000)
S = ("198.51.100.1", 7007)
CISN = 1000
SISN = 5000


class Talk:
    """Plays a conversation: each call is one segment, returning its tags."""

    def __init__(self, table: flows.FlowTable | None = None, cisn: int = CISN, sisn: int = SISN):
        self.table = table or flows.FlowTable()
        self.now = 0.0
        self.next = {"c": cisn, "s": sisn}

    def seg(
        self, side: str, flags: int, length: int = 0, *, seq: int | None = None, ack: int = 0
    ) -> flows.Tagged:
        self.now += 0.001
        src, dst = (C, S) if side == "c" else (S, C)
        use = self.next[side] if seq is None else seq
        tagged = self.table.classify(src, dst, flags, use, ack, length, self.now)
        if seq is None:
            self.next[side] = (use + length + (1 if flags & (SYN | FIN) else 0)) % 2**32
        return tagged

    def c(self, flags: int, length: int = 0, **kw: int) -> tuple[str, ...]:
        kw.setdefault("ack", self.next["s"] if flags & ACK else 0)
        return self.seg("c", flags, length, **kw).tags

    def s(self, flags: int, length: int = 0, **kw: int) -> tuple[str, ...]:
        kw.setdefault("ack", self.next["c"] if flags & ACK else 0)
        return self.seg("s", flags, length, **kw).tags

    def handshake(self) -> None:
        assert self.c(SYN) == ("syn",)
        assert self.s(SYN | ACK) == ("syn-ack",)
        assert self.c(ACK) == ("handshake-ack",)


def test_client_closes_server_acks_then_closes_later() -> None:
    t = Talk()
    t.handshake()
    assert t.c(PSH | ACK, 6) == ("data",)
    assert t.s(ACK) == ("ack",)
    assert t.s(PSH | ACK, 6) == ("data",)
    assert t.c(ACK) == ("ack",)
    assert t.c(FIN | ACK) == ("fin",)
    assert t.s(ACK) == ("fin-ack",)
    assert t.s(FIN | ACK) == ("fin",)
    assert t.c(ACK) == ("fin-ack", "last-ack")
    flow = t.table.get(C, S)
    assert flow is not None and flow.finished


def test_server_closes_at_once_fin_rides_on_the_ack() -> None:
    t = Talk()
    t.handshake()
    assert t.c(FIN | ACK) == ("fin",)
    assert t.s(FIN | ACK) == ("fin", "fin-ack")
    assert t.c(ACK) == ("fin-ack", "last-ack")


def test_server_closes_first() -> None:
    t = Talk()
    t.handshake()
    assert t.s(FIN | ACK) == ("fin",)
    assert t.c(ACK) == ("fin-ack",)
    assert t.c(FIN | ACK) == ("fin",)
    assert t.s(ACK) == ("fin-ack", "last-ack")


def test_fin_with_data() -> None:
    t = Talk()
    t.handshake()
    assert t.c(FIN | PSH | ACK, 5) == ("data", "fin")
    tagged = t.seg("s", ACK, ack=CISN + 1 + 5 + 1)
    assert tagged.tags == ("fin-ack",)


def test_simultaneous_close() -> None:
    t = Talk()
    t.handshake()
    client_fin_ack = t.next["s"]
    server_fin_ack = t.next["c"]
    # both FINs cross: neither acknowledges the other
    assert t.c(FIN | ACK, ack=client_fin_ack) == ("fin",)
    assert t.s(FIN | ACK, ack=server_fin_ack) == ("fin",)
    # the server's FIN arrived second: the client's ACK of it is the last ACK
    assert t.s(ACK) == ("fin-ack",)
    assert t.c(ACK) == ("fin-ack", "last-ack")


def test_retransmitted_syn_and_syn_ack() -> None:
    t = Talk()
    assert t.c(SYN) == ("syn",)
    assert t.c(SYN, seq=CISN) == ("syn", "retransmit")
    assert t.s(SYN | ACK) == ("syn-ack",)
    assert t.s(SYN | ACK, seq=SISN, ack=CISN + 1) == ("syn-ack", "retransmit")
    assert t.c(ACK) == ("handshake-ack",)


def test_retransmitted_data_and_fin() -> None:
    t = Talk()
    t.handshake()
    assert t.c(PSH | ACK, 10) == ("data",)
    assert t.c(PSH | ACK, 10, seq=CISN + 1) == ("data", "retransmit")
    assert t.c(FIN | ACK) == ("fin",)
    assert t.c(FIN | ACK, seq=CISN + 11) == ("fin", "retransmit")


def test_time_wait_reack_of_a_retransmitted_fin() -> None:
    t = Talk()
    t.handshake()
    t.c(FIN | ACK)
    t.s(FIN | ACK)
    assert t.c(ACK) == ("fin-ack", "last-ack")  # lost on the way, say
    assert t.s(FIN | ACK, seq=SISN + 1, ack=CISN + 2) == ("fin", "retransmit")
    assert t.c(ACK) == ("fin-ack", "last-ack", "retransmit")


def test_rst_refused_and_mid_connection_and_after_fins() -> None:
    t = Talk()
    assert t.c(SYN) == ("syn",)
    assert t.s(RST | ACK, seq=0, ack=CISN + 1) == ("rst",)
    t2 = Talk(cisn=77)
    t2.handshake()
    assert t2.c(PSH | ACK, 3) == ("data",)
    assert t2.s(RST) == ("rst",)
    t3 = Talk()
    t3.handshake()
    t3.c(FIN | ACK)
    t3.s(ACK)
    assert t3.c(RST | ACK) == ("rst",)


def test_handshake_ack_with_data() -> None:
    t = Talk()
    t.c(SYN)
    t.s(SYN | ACK)
    assert t.c(PSH | ACK, 6) == ("handshake-ack", "data")


def test_relative_numbers_across_wraparound() -> None:
    t = Talk(cisn=2**32 - 2, sisn=2**32 - 1)
    syn = t.seg("c", SYN)
    assert (syn.rseq, syn.rack) == (0, 0)
    synack = t.seg("s", SYN | ACK, ack=(2**32 - 1))
    assert (synack.rseq, synack.rack) == (0, 1)
    ack = t.seg("c", ACK, ack=0)
    assert ack.tags == ("handshake-ack",) and (ack.rseq, ack.rack) == (1, 1)
    data = t.seg("c", PSH | ACK, 100, ack=0)
    again = t.seg("c", PSH | ACK, 100, seq=2**32 - 1, ack=0)
    assert data.rseq == 1 and again.tags == ("data", "retransmit")
    more = t.seg("c", PSH | ACK, 10, ack=0)
    assert more.rseq == 101 and more.tags == ("data",)


def test_new_syn_after_close_is_a_new_connection() -> None:
    t = Talk()
    t.handshake()
    flow = t.table.get(C, S)
    assert flow is not None
    flow.counters["drop-syn-ack@1"] = 1
    t.c(FIN | ACK)
    t.s(FIN | ACK)
    t.c(ACK)
    fresh = t.table.classify(C, S, SYN, 99_999, 0, 0, t.now + 1)
    assert fresh.tags == ("syn",) and fresh.conn_number == 2
    assert fresh.flow.counters == {}


def test_cap_evicts_least_recent_and_idle_flows_expire() -> None:
    table = flows.FlowTable(max_flows=2, idle_timeout=10.0)
    for port, now in ((1, 0.0), (2, 1.0), (3, 2.0)):
        table.classify(("192.0.2.1", 40000 + port), S, SYN, 1, 0, 0, now)
    assert len(table) == 2 and table.evicted == 1
    assert table.get(("192.0.2.1", 40001), S) is None
    assert [f.number for f in table.expire(11.5)] == [2]
    assert len(table) == 1


def test_mid_stream_pickup() -> None:
    table = flows.FlowTable()
    tagged = table.classify(S, C, PSH | ACK, 123_456, 777, 10, 0.0)
    assert tagged.dir == "s2c" and tagged.conn == "192.0.2.1:40000-198.51.100.1:7007"
    assert tagged.tags == ("data",) and (tagged.rseq, tagged.rack) == (1, 1)


segments = st.tuples(
    st.sampled_from([(C, S), (S, C), (("192.0.2.1", 1), S), (S, ("192.0.2.1", 1))]),
    st.integers(0, 255),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 1500),
)


@settings(max_examples=200)
@given(st.lists(segments, max_size=60))
def test_any_sequence_never_raises_and_stays_bounded(items: list) -> None:  # type: ignore[type-arg]
    table = flows.FlowTable(max_flows=1)
    for i, ((src, dst), flags, seq, ack, length) in enumerate(items):
        tagged = table.classify(src, dst, flags, seq, ack, length, float(i))
        assert set(tagged.tags) <= set(flows.TAGS)
        assert len(table) <= 1
