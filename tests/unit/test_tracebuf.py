"""The ftrace ring buffer codec on pages the kernel really wrote, checked
against the kernel's own text rendering of the same events (saved with the
pages by tests/fixtures/trace/capture.py), and on built and random pages."""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import tracebuf
from core.tracebuf import (
    DEFAULT_LAYOUT,
    RB_MISSED_EVENTS,
    RB_MISSED_STORED,
    Decoder,
    PageLayout,
    RawEvent,
    TraceDecodeError,
    TraceEvent,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "trace"
LAYOUT = tracebuf.parse_header_page((FIXTURES / "header_page").read_text())
FORMATS = {
    fmt.id: fmt
    for fmt in (tracebuf.parse_format(p.read_text()) for p in FIXTURES.glob("formats/*.format"))
}
BY_NAME = {fmt.name: fmt for fmt in FORMATS.values()}
PAGE = LAYOUT.page_size

# --- the fixtures ------------------------------------------------------------------

LINE_RE = re.compile(
    r"^\s*(?P<comm>.*?)-(?P<pid>\d+)\s+\[(?P<cpu>\d+)\]\s+(?P<flags>\S+)\s+"
    r"(?P<ts>\d+(?:\.\d+)?): (?P<name>\w+): (?P<body>.*)$"
)


@dataclass(frozen=True)
class TextLine:
    """One event as the kernel printed it in ``trace``."""

    cpu: int
    pid: int
    ts: str  # "1310.807099" (seconds.microseconds) or a raw counter value
    name: str
    body: str

    def fields(self) -> dict[str, str]:
        return dict(item.partition("=")[::2] for item in self.body.split(" "))

    def matches_ts(self, ts: int) -> bool:
        if "." in self.ts:
            # trace_print_context(): ns2usecs() rounds to the nearest µs
            return (ts + 500) // 1000 == int(self.ts.replace(".", ""))
        return ts == int(self.ts)


def text_lines(capture: str) -> list[TextLine]:
    out = []
    for line in (FIXTURES / capture / "trace.txt").read_text().splitlines():
        if line.startswith("#"):
            continue
        match = LINE_RE.match(line)
        assert match, f"unexpected line in {capture}/trace.txt: {line!r}"
        out.append(
            TextLine(
                int(match["cpu"]), int(match["pid"]), match["ts"], match["name"], match["body"]
            )
        )
    return out


def meta(capture: str) -> dict[str, object]:
    loaded = json.loads((FIXTURES / capture / "meta.json").read_text())
    assert isinstance(loaded, dict)
    return loaded


def pages(capture: str) -> Iterator[tuple[int, bytes]]:
    for path in sorted((FIXTURES / capture).glob("cpu*.pages")):
        cpu = int(path.name[len("cpu") : -len(".pages")])
        data = path.read_bytes()
        assert len(data) % PAGE == 0
        for start in range(0, len(data), PAGE):
            yield cpu, data[start : start + PAGE]


def parsed(capture: str) -> list[tracebuf.PageEvents]:
    seqs: dict[int, int] = {}
    out = []
    for cpu, page in pages(capture):
        events = tracebuf.parse_page(page, cpu, LAYOUT, seq=seqs.get(cpu, 0))
        seqs[cpu] = seqs.get(cpu, 0) + len(events.events)
        out.append(events)
    return out


def raw_events(capture: str) -> list[RawEvent]:
    return [raw for page in parsed(capture) for raw in page.events]


def pid_of(raw: RawEvent) -> int:
    return int.from_bytes(raw.data[4:8], "little", signed=True)


def assert_same_stream(capture: str) -> list[tuple[RawEvent, TextLine]]:
    """Every record matches the kernel's text line for it (per CPU, in order):
    time, pid and event; returns the pairs."""
    raws = raw_events(capture)
    lines = text_lines(capture)
    pairs = []
    for cpu in sorted({line.cpu for line in lines} | {raw.cpu for raw in raws}):
        cpu_raws = [raw for raw in raws if raw.cpu == cpu]
        cpu_lines = [line for line in lines if line.cpu == cpu]
        assert len(cpu_raws) == len(cpu_lines), f"{capture} CPU {cpu}"
        for raw, line in zip(cpu_raws, cpu_lines, strict=True):
            assert line.matches_ts(raw.ts), (capture, cpu, raw.ts, line.ts)
            assert pid_of(raw) == line.pid
            pairs.append((raw, line))
    return pairs


# --- formats and headers -----------------------------------------------------------


def test_header_page_is_the_x86_64_default() -> None:
    assert LAYOUT == DEFAULT_LAYOUT
    assert (LAYOUT.timestamp_offset, LAYOUT.commit_offset, LAYOUT.data_offset) == (0, 8, 16)
    assert LAYOUT.commit_size == 8
    assert LAYOUT.page_size == 4096


def test_header_page_without_fields_is_an_error() -> None:
    with pytest.raises(TraceDecodeError):
        tracebuf.parse_header_page("# compressed entry header\n")
    with pytest.raises(TraceDecodeError):
        tracebuf.parse_header_page("\tfield: u64 timestamp;\toffset:0;\tsize:8;\tsigned:0;\n")


def test_header_event_says_what_the_codec_assumes() -> None:
    text = (FIXTURES / "header_event").read_text()
    assert "type_len    :    5 bits" in text
    assert "time_delta  :   27 bits" in text
    assert f"padding     : type == {tracebuf.RINGBUF_TYPE_PADDING}" in text
    assert f"time_extend : type == {tracebuf.RINGBUF_TYPE_TIME_EXTEND}" in text
    assert f"time_stamp : type == {tracebuf.RINGBUF_TYPE_TIME_STAMP}" in text
    assert f"data max type_len  == {tracebuf.RINGBUF_TYPE_DATA_TYPE_LEN_MAX}" in text


def test_parse_format_set_state() -> None:
    fmt = BY_NAME["inet_sock_set_state"]
    assert fmt.id > 0
    assert fmt.fields["common_type"] == tracebuf.Field("common_type", "unsigned short", 0, 2, False)
    assert fmt.fields["common_pid"].signed
    skaddr = fmt.fields["skaddr"]
    assert (skaddr.type, skaddr.offset, skaddr.size, skaddr.is_array) == (
        "const void *",
        8,
        8,
        False,
    )
    saddr = fmt.fields["saddr"]
    assert (saddr.type, saddr.size, saddr.is_array, saddr.array_len) == ("__u8", 4, True, 4)
    assert fmt.fields["saddr_v6"].array_len == 16
    assert fmt.fields["oldstate"].signed
    assert fmt.symbols("oldstate")[2] == "TCP_SYN_SENT"
    assert fmt.symbols("protocol") == {6: "IPPROTO_TCP", 132: "IPPROTO_SCTP", 262: "IPPROTO_MPTCP"}
    assert fmt.symbols("nosuchfield") == {}


def test_parse_format_other_shapes() -> None:
    reset = BY_NAME["tcp_send_reset"]
    assert reset.fields["reason"].type == "enum sk_rst_reason"
    assert reset.fields["saddr"].array_len == 28
    # the kernel's table agrees with the built-in one
    assert reset.symbols("reason") == dict(tracebuf.SK_RST_REASONS)
    # retransmit_skb's state table has symbolic keys: nothing numeric to read
    assert BY_NAME["tcp_retransmit_skb"].symbols("state") == {}
    buf = BY_NAME["print"].fields["buf"]
    assert (buf.is_array, buf.array_len, buf.size) == (True, 0, 0)
    loc = tracebuf.parse_format(
        "name: x\nID: 9\nformat:\n\tfield:__data_loc char[] name;\toffset:8;\tsize:4;\tsigned:1;\n"
    )
    assert loc.fields["name"].type == "__data_loc char[]"
    assert not loc.fields["name"].is_array


@pytest.mark.parametrize(
    "text",
    [
        "",
        "name: x\n",
        "ID: 7\n",
        "name: x\nID: seven\n",
        "name: x\nID: 7\n\tfield:int;\toffset:0;\tsize:4;\tsigned:1;\n",
        "name: x\nID: 7\n\tfield:int a;\toffset:zero;\n",
    ],
)
def test_parse_format_rejects(text: str) -> None:
    with pytest.raises(TraceDecodeError):
        tracebuf.parse_format(text)


# --- real pages ------------------------------------------------------------------

STATE_NUMBERS = {
    name: number for number, name in BY_NAME["inet_sock_set_state"].symbols("oldstate").items()
}
FAMILIES = {"AF_INET": 2, "AF_INET6": 10}


def split_endpoint(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def expected_from_text(line: TextLine) -> dict[str, object]:
    """What the decoded event must say, from the kernel's text alone."""
    f = line.fields()
    kind = tracebuf.EVENT_KINDS[line.name]
    if kind == "send_reset":
        saddr, sport = split_endpoint(f["src"])
        daddr, dport = split_endpoint(f["dest"])
        return {
            "kind": kind,
            "family": 10 if ":" in saddr else 2,
            "saddr": saddr,
            "sport": sport,
            "daddr": daddr,
            "dport": dport,
            "state": None if f["state"] == "UNKNOWN" else STATE_NUMBERS[f["state"]],
            "reason": f["reason"],
        }
    family = FAMILIES[f["family"]]
    want: dict[str, object] = {
        "kind": kind,
        "family": family,
        "sport": int(f["sport"]),
        "dport": int(f["dport"]),
        "saddr": f["saddr"] if family == 2 else f["saddrv6"],
        "daddr": f["daddr"] if family == 2 else f["daddrv6"],
    }
    if kind == "set_state":
        want["oldstate"] = STATE_NUMBERS[f["oldstate"]]
        want["newstate"] = STATE_NUMBERS[f["newstate"]]
        want["protocol"] = 6
    if kind == "retransmit":
        want["state"] = STATE_NUMBERS[f["state"]]
    return want


def tcp_events() -> list[TraceEvent]:
    decoder = Decoder(FORMATS)
    return decoder.decode_all(raw_events("tcp"))


def test_tcp_pages_match_the_text_trace() -> None:
    decoder = Decoder(FORMATS)
    pairs = assert_same_stream("tcp")
    assert len(pairs) >= 50
    for raw, line in pairs:
        event = decoder.decode(raw)
        assert event is not None
        assert (event.ts_ns, event.cpu) == (raw.ts, raw.cpu)
        for key, value in expected_from_text(line).items():
            assert getattr(event, key) == value, (key, line)


def test_tcp_capture_has_every_kind_in_both_families() -> None:
    seen = {(event.kind, event.family) for event in tcp_events()}
    for kind in tracebuf.EVENT_KINDS.values():
        assert (kind, 2) in seen and (kind, 10) in seen, kind


def test_tcp_pages_have_time_extends() -> None:
    # the one-second wait for retransmissions needs deltas over 2**27 ns
    for page in parsed("tcp"):
        assert page.extends > 0
        assert not page.missed and page.missed_count == 0


def test_connect_event_has_port_zero_and_the_socket_address() -> None:
    info = meta("tcp")
    ports = info["ports"]
    assert isinstance(ports, dict)
    events = tcp_events()
    for family, host in ((2, info["v4"]), (10, info["v6"])):
        server_port = ports["v4" if family == 2 else "v6"]
        connects = [
            e
            for e in events
            if e.kind == "set_state"
            and e.family == family
            and (e.oldstate, e.newstate) == (7, 2)
            and e.saddr == host
        ]
        assert len(connects) == 3  # open/close, refused, aborted
        for connect in connects:
            assert connect.sport == 0 and connect.dport in (server_port, server_port + 1)
            later = [e for e in events if e.skaddr == connect.skaddr and e.ts_ns > connect.ts_ns]
            nxt = later[0]
            assert nxt.kind in ("set_state", "receive_reset")
            assert nxt.sport != 0 and nxt.dport == connect.dport
            if nxt.kind == "set_state":
                assert nxt.oldstate == 2


def test_resets() -> None:
    info = meta("tcp")
    events = tcp_events()
    for family in (2, 10):
        sent = [
            e
            for e in events
            if e.kind == "send_reset" and e.family == family and e.saddr in (info["v4"], info["v6"])
        ]
        # to the closed port: no socket, no state; the zero-linger abort: a socket
        assert {(e.skaddr == 0, e.state, e.reason) for e in sent} == {
            (True, None, "NO_SOCKET"),
            (False, 7, "TCP_STATE"),
        }
        for reset in sent:
            # the other side saw the same four-tuple, reversed
            got = [
                e
                for e in events
                if e.kind == "receive_reset"
                and (e.saddr, e.sport, e.daddr, e.dport)
                == (reset.daddr, reset.dport, reset.saddr, reset.sport)
            ]
            assert len(got) == 1


def test_retransmissions() -> None:
    info = meta("tcp")
    events = tcp_events()
    for family, far in ((2, info["far4"]), (10, info["far6"])):
        skb = [e for e in events if e.kind == "retransmit" and e.family == family]
        synack = [e for e in events if e.kind == "retransmit_synack" and e.family == family]
        assert skb and all(e.state == 2 and e.saddr == far for e in skb)  # the SYN
        assert synack and all(e.daddr == far for e in synack)
        listener = [
            e for e in events if e.kind == "set_state" and e.newstate == 10 and e.family == family
        ]
        assert {e.skaddr for e in synack} == {listener[0].skaddr}


def test_merge_orders_cpus_like_the_kernel() -> None:
    merged = tracebuf.merge(reversed(tcp_events()))
    assert [(e.cpu, (e.ts_ns + 500) // 1000) for e in merged] == [
        (line.cpu, int(line.ts.replace(".", ""))) for line in text_lines("tcp")
    ]
    assert {e.cpu for e in merged} == {0, 1}


def test_merge_keeps_same_time_events_in_cpu_order() -> None:
    a = TraceEvent("set_state", 5, 1, 0, 2, 1, 2, "", "", seq=1)
    b = TraceEvent("set_state", 5, 1, 0, 2, 1, 2, "", "", seq=0)
    c = TraceEvent("set_state", 5, 0, 0, 2, 1, 2, "", "", seq=7)
    d = TraceEvent("set_state", 4, 1, 0, 2, 1, 2, "", "", seq=9)
    assert tracebuf.merge([a, b, c, d]) == [d, c, b, a]


def test_marker_pages_long_entries_and_missed_events() -> None:
    pairs = assert_same_stream("marker")  # x86-tsc: compared to the nanosecond
    print_id = BY_NAME["print"].id
    buf = BY_NAME["print"].fields["buf"].offset
    long_records = 0
    for raw, line in pairs:
        assert raw.type_id == print_id
        text = raw.data[buf:].split(b"\0", 1)[0].decode()
        assert text == line.body + "\n"
        long_records += len(raw.data) > 4 * tracebuf.RINGBUF_TYPE_DATA_TYPE_LEN_MAX
    assert long_records > 10  # type_len 0: array[0] counts itself
    first, *rest = parsed("marker")
    written = meta("marker")["written"]
    assert isinstance(written, int)
    assert first.missed and first.missed_count == written - len(pairs)
    assert all(not page.missed for page in rest)


def test_absolute_time_stamps_match_the_kernel() -> None:
    assert_same_stream("abs")  # x86-tsc: to the nanosecond
    assert sum(page.stamps for page in parsed("abs")) > 0


def test_absolute_time_stamps_matter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracebuf, "fix_abs_ts", lambda abs_ts, save_ts: save_ts)
    with pytest.raises(AssertionError):
        assert_same_stream("abs")


def test_decoder_ignores_other_events() -> None:
    decoder = Decoder(FORMATS)
    assert all(decoder.decode(raw) is None for raw in raw_events("marker"))
    assert set(decoder.kinds.values()) == set(tracebuf.EVENT_KINDS.values())


# --- truncation and fuzzing -------------------------------------------------------

CUT_PAGES = [("tcp", 0), ("tcp", 1), ("marker", 0), ("abs", -1)]  # abs: has a time stamp


@pytest.mark.parametrize(("capture", "index"), CUT_PAGES)
def test_page_cut_anywhere(capture: str, index: int) -> None:
    cpu, page = list(pages(capture))[index]
    whole = tracebuf.parse_page(page, cpu, LAYOUT)
    decoder = Decoder(FORMATS)
    for cut in range(len(page)):
        try:
            got = tracebuf.parse_page(page[:cut], cpu, LAYOUT)
        except TraceDecodeError:
            continue
        assert got.events == whole.events[: len(got.events)]
        for raw in got.events:
            decoder.decode(raw)


@pytest.mark.parametrize(("capture", "index"), CUT_PAGES)
def test_records_cut_anywhere(capture: str, index: int) -> None:
    cpu, page = list(pages(capture))[index]
    decoder = Decoder(FORMATS)
    for raw in tracebuf.parse_page(page, cpu, LAYOUT).events:
        for cut in range(len(raw.data)):
            short = RawEvent(raw.cpu, raw.ts, raw.data[:cut])
            try:
                decoder.decode(short)
            except TraceDecodeError:
                pass


@settings(max_examples=500)
@given(st.binary(max_size=600), st.integers(0, 3))
def test_random_bytes_raise_only_decode_errors(data: bytes, cpu: int) -> None:
    try:
        tracebuf.parse_page(data, cpu, LAYOUT)
    except TraceDecodeError:
        pass


def header(size: int, flags: int = 0, ts: int = 1000) -> bytes:
    return struct.pack("<QQ", ts, size | flags)


def decode_or_refuse(page: bytes) -> None:
    """Decode a page and its entries; a TraceDecodeError is the only way
    to refuse (anything else fails the test)."""
    decoder = Decoder(FORMATS)
    try:
        got = tracebuf.parse_page(page, 0, LAYOUT)
    except TraceDecodeError:
        return
    for raw in got.events:
        try:
            decoder.decode(raw)
        except TraceDecodeError:
            pass


@settings(max_examples=500)
@given(st.binary(min_size=0, max_size=300), st.integers(0, 320), st.sampled_from([0, 1, 2, 3]))
def test_random_entries_raise_only_decode_errors(body: bytes, size: int, flags: int) -> None:
    decode_or_refuse(header(size, flags << 30) + body)


REAL = [page for _, page in pages("tcp")] + [page for _, page in pages("abs")]


@settings(max_examples=300)
@given(
    st.sampled_from(range(len(REAL))),
    st.lists(st.tuples(st.integers(0, PAGE - 1), st.integers(0, 255)), min_size=1, max_size=8),
)
def test_corrupted_real_pages_raise_only_decode_errors(
    which: int, edits: list[tuple[int, int]]
) -> None:
    page = bytearray(REAL[which])
    for offset, value in edits:
        page[offset] = value
    decode_or_refuse(bytes(page))


@settings(max_examples=300)
@given(st.binary(max_size=120))
def test_random_records_raise_only_decode_errors(data: bytes) -> None:
    decoder = Decoder(FORMATS)
    for event_id in FORMATS:
        try:
            decoder.decode(RawEvent(0, 0, event_id.to_bytes(2, "little") + data))
        except TraceDecodeError:
            pass


# --- built pages: every entry type ---------------------------------------------------


def entry(type_len: int, delta: int, *array: int, payload: bytes = b"") -> bytes:
    return struct.pack("<I", (delta << 5) | type_len) + b"".join(
        struct.pack("<I", a) for a in array
    ) + payload  # fmt: skip


def build(*entries: bytes, ts: int = 1000, flags: int = 0, tail: bytes = b"") -> bytes:
    data = b"".join(entries)
    page = header(len(data), flags, ts) + data + tail
    return page.ljust(PAGE, b"\0")


def test_small_and_long_records() -> None:
    small = entry(2, 5, payload=b"ABCDEFGH")
    long = entry(0, 7, 4 + 12, payload=b"0123456789ab")
    got = tracebuf.parse_page(build(small, long), 3, seq=10)
    assert [(e.ts, e.data, e.cpu, e.seq) for e in got.events] == [
        (1005, b"ABCDEFGH", 3, 10),
        (1012, b"0123456789ab", 3, 11),
    ]


def test_time_extend_and_absolute_stamp() -> None:
    ext = entry(tracebuf.RINGBUF_TYPE_TIME_EXTEND, 3, 2)  # 2 << 27 | 3
    stamp = entry(tracebuf.RINGBUF_TYPE_TIME_STAMP, 9, 1)  # 1 << 27 | 9
    rec = entry(1, 1, payload=b"abcd")
    got = tracebuf.parse_page(build(rec, ext, rec, stamp, rec, ts=100), 0)
    assert [e.ts for e in got.events] == [101, 101 + (2 << 27) + 3 + 1, (1 << 27) + 9 + 1]
    assert (got.extends, got.stamps) == (1, 1)


def test_absolute_stamp_takes_the_top_bits_of_the_page_time() -> None:
    top = 0b10101 << 59
    page_ts = top | 500
    stamp = entry(tracebuf.RINGBUF_TYPE_TIME_STAMP, 600, 0)
    rec = entry(1, 0, payload=b"abcd")
    assert tracebuf.parse_page(build(stamp, rec, ts=page_ts), 0).events[0].ts == top | 600
    # an absolute stamp below the running time: the top bits ticked over
    stamp = entry(tracebuf.RINGBUF_TYPE_TIME_STAMP, 400, 0)
    assert (
        tracebuf.parse_page(build(stamp, rec, ts=page_ts), 0).events[0].ts == top + (1 << 59) | 400
    )


def test_fix_abs_ts() -> None:
    assert tracebuf.fix_abs_ts(123, 456) == 123  # no top bits: as is
    assert tracebuf.fix_abs_ts(5, (1 << 63) | 3) == (1 << 63) | 5
    assert tracebuf.fix_abs_ts(2, (1 << 59) | 3) == (2 << 59) | 2
    assert tracebuf.fix_abs_ts(1, (0x1F << 59) | 3) == 1  # wraps at 2**64


def test_padding() -> None:
    rec = entry(1, 10, payload=b"abcd")
    # a discarded event: array[0] + 4 bytes in all
    discarded = entry(tracebuf.RINGBUF_TYPE_PADDING, 20, 12, payload=b"xxxxxxxx")
    forced = entry(tracebuf.RINGBUF_TYPE_PADDING, 1, 8, payload=b"yyyy")  # delta 1: "was 0"
    null = entry(tracebuf.RINGBUF_TYPE_PADDING, 0, 0)
    got = tracebuf.parse_page(build(rec, discarded, rec, forced, rec, null, rec, ts=0), 0)
    assert [e.ts for e in got.events] == [10, 40, 50]  # nothing after the null event
    # a padded tail that runs past the commit ends the page too
    tail = entry(tracebuf.RINGBUF_TYPE_PADDING, 1, 4000)
    assert [e.ts for e in tracebuf.parse_page(build(rec, tail, ts=0), 0).events] == [10]


def test_missed_flags() -> None:
    rec = entry(1, 1, payload=b"abcd")
    got = tracebuf.parse_page(build(rec), 0)
    assert (got.missed, got.missed_count) == (False, 0)
    got = tracebuf.parse_page(build(rec, flags=RB_MISSED_EVENTS), 0)
    assert (got.missed, got.missed_count) == (True, None)
    stored = RB_MISSED_EVENTS | RB_MISSED_STORED
    got = tracebuf.parse_page(build(rec, flags=stored, tail=struct.pack("<Q", 77)), 0)
    assert (got.missed, got.missed_count, len(got.events)) == (True, 77, 1)
    # the kernel adds (int)(1 << 31) to a long: the high half is all ones
    page = bytearray(build(rec, tail=struct.pack("<Q", 5)))
    page[8:16] = struct.pack("<Q", 0xFFFFFFFF << 32 | stored | 8)
    got = tracebuf.parse_page(bytes(page), 0)
    assert (got.missed, got.missed_count, got.size) == (True, 5, 8)


@pytest.mark.parametrize(
    "page",
    [
        b"",
        header(0)[:15],
        header(5000),  # commit beyond the page
        header(8) + entry(1, 0, payload=b"abcd")[:6],  # commit beyond the bytes given
        build(entry(1, 0, payload=b"abcd"), flags=RB_MISSED_STORED)[: 16 + 8 + 4],
        build(entry(5, 0, payload=b"abcd")),  # record longer than the commit
        build(entry(0, 0, 3)),  # a long entry's length must count array[0] itself
        build(entry(0, 0, 4000, payload=b"abcd")),
        build(entry(tracebuf.RINGBUF_TYPE_PADDING, 5, 1, payload=b"zz")),  # padding < 8
        build(entry(tracebuf.RINGBUF_TYPE_TIME_EXTEND, 0)),  # 4 bytes of an 8-byte entry
        build(entry(1, 0, payload=b"abcd"), b"\x01\x00"),  # 2 bytes of a header
    ],
)
def test_malformed_pages(page: bytes) -> None:
    with pytest.raises(TraceDecodeError):
        tracebuf.parse_page(page, 0)


def test_layout_from_a_bigger_subbuffer() -> None:
    layout = PageLayout(data_size=8192 - 16)
    rec = entry(1, 1, payload=b"abcd")
    page = (header(8) + rec).ljust(8192, b"\0")
    assert len(tracebuf.parse_page(page, 0, layout).events) == 1
    with pytest.raises(TraceDecodeError):
        tracebuf.parse_page(header(5000) + bytes(5000), 0)  # too big for 4 KiB


# --- decoding built records ----------------------------------------------------------


def set_state_record(protocol: int, family: int = 2) -> RawEvent:
    fmt = BY_NAME["inet_sock_set_state"]
    data = bytearray(fmt.fields["daddr_v6"].offset + 16)

    def put(name: str, value: int) -> None:
        field = fmt.fields[name]
        data[field.offset : field.offset + field.size] = value.to_bytes(field.size, "little")

    put("common_type", fmt.id)
    put("skaddr", 0xFFFF888012345678)
    put("oldstate", 7)
    put("newstate", 2)
    put("sport", 0)
    put("dport", 443)
    put("family", family)
    put("protocol", protocol)
    data[fmt.fields["saddr"].offset : fmt.fields["saddr"].offset + 4] = bytes([192, 0, 2, 1])
    return RawEvent(1, 99, bytes(data), seq=4)


def test_decode_built_set_state() -> None:
    event = Decoder(FORMATS).decode(set_state_record(6))
    assert event == TraceEvent(
        kind="set_state",
        ts_ns=99,
        cpu=1,
        skaddr=0xFFFF888012345678,
        family=2,
        sport=0,
        dport=443,
        saddr="192.0.2.1",
        daddr="0.0.0.0",
        oldstate=7,
        newstate=2,
        protocol=6,
        seq=4,
    )


def test_other_protocols_are_dropped_unless_asked_for() -> None:
    assert Decoder(FORMATS).decode(set_state_record(132)) is None
    event = Decoder(FORMATS, tcp_only=False).decode(set_state_record(262))
    assert event is not None and event.protocol == 262


def test_unknown_family_has_no_addresses() -> None:
    event = Decoder(FORMATS).decode(set_state_record(6, family=0))
    assert event is not None and (event.saddr, event.daddr) == ("", "")


def test_send_reset_without_addresses() -> None:
    fmt = BY_NAME["tcp_send_reset"]
    data = bytearray(fmt.fields["daddr"].offset + 28)
    data[0:2] = fmt.id.to_bytes(2, "little")
    reason = fmt.fields["reason"].offset
    data[reason : reason + 4] = (99).to_bytes(4, "little")
    event = Decoder(FORMATS).decode(RawEvent(0, 1, bytes(data)))
    assert event is not None
    assert (event.family, event.saddr, event.sport, event.state, event.reason) == (
        0,
        "",
        0,
        None,
        "99",
    )


def test_short_records_and_missing_fields() -> None:
    decoder = Decoder(FORMATS)
    with pytest.raises(TraceDecodeError):
        decoder.decode(RawEvent(0, 0, b"\x01"))
    record = set_state_record(6)
    with pytest.raises(TraceDecodeError):
        decoder.decode(RawEvent(0, 0, record.data[:40]))
    broken = tracebuf.parse_format(
        "name: inet_sock_set_state\nID: 7\n\tfield:int oldstate;\toffset:8;\tsize:4;\tsigned:1;\n"
    )
    with pytest.raises(TraceDecodeError, match="lacks"):
        Decoder({7: broken})


def test_ipv4_filter_literal() -> None:
    assert tracebuf.ipv4_filter_literal("192.0.2.7") == "0x070200c0"
    assert tracebuf.ipv4_filter_literal("10.0.0.1") == "0x0100000a"
