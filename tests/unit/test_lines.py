"""Line framing: a byte stream in, complete lines out, long lines refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemons.lines import LineReader, MessageTooLong


def test_lines_split_across_reads_come_out_whole() -> None:
    reader = LineReader(64)
    assert reader.feed(b"hel") == []
    assert reader.feed(b"lo\nwor") == [b"hello\n"]
    assert reader.feed(b"ld\n\n") == [b"world\n", b"\n"]
    assert reader.pop_line() is None


def test_pop_line_hands_out_what_is_buffered() -> None:
    reader = LineReader(64)
    reader.buf += b"a\nb\nc"
    assert [reader.pop_line(), reader.pop_line(), reader.pop_line()] == [b"a\n", b"b\n", None]
    assert bytes(reader.buf) == b"c"


def test_a_line_over_the_limit_is_refused() -> None:
    with pytest.raises(MessageTooLong):
        LineReader(4).feed(b"12345\n")
    assert LineReader(4).feed(b"1234\n") == [b"1234\n"]


def test_a_peer_that_never_ends_its_line_cannot_fill_the_buffer() -> None:
    reader = LineReader(8)
    reader.feed(b"12345678")
    with pytest.raises(MessageTooLong):
        reader.feed(b"9")
    garbage = LineReader(8)
    garbage.buf += b"123456789"
    with pytest.raises(MessageTooLong):
        garbage.pop_line()


@given(
    st.lists(st.binary(max_size=20).map(lambda b: b.replace(b"\n", b"")), max_size=10), st.data()
)
def test_any_split_gives_the_same_lines(messages: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(m + b"\n" for m in messages)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=5)))
    reader = LineReader(64)
    got: list[bytes] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        got += reader.feed(stream[start:end])
    assert got == [m + b"\n" for m in messages]
