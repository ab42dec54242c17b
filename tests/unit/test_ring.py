"""The TPACKET_V3 block decoder (proxy/ring.py), on blocks built byte by byte
as include/uapi/linux/if_packet.h lays them out."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy import ring

BLOCK = 4096


def block(
    packets: list[tuple[bytes, int, int, int]],
    *,
    status: int = ring.TP_STATUS_USER,
    num_pkts: int | None = None,
    first: int = ring.BLOCK_HEADER_LEN,
    size: int = BLOCK,
) -> memoryview:
    """A block holding ``packets`` (frame, tp_status, tp_sec, tp_nsec), each
    frame after its struct tpacket3_hdr, aligned to 16 as the kernel does."""
    buf = bytearray(size)
    count = len(packets) if num_pkts is None else num_pkts
    # struct tpacket_block_desc: version, offset_to_priv, then tpacket_hdr_v1
    struct.pack_into("=IIIIIIQ", buf, 0, 3, 0, status, count, first, 0, 7)
    offset = first
    for i, (frame, tp_status, sec, nsec) in enumerate(packets):
        mac = ring.PKT_HEADER_LEN
        span = (mac + len(frame) + 15) // 16 * 16
        next_offset = 0 if i == len(packets) - 1 else span
        struct.pack_into(
            "=IIIIIIHH", buf, offset, next_offset, sec, nsec, len(frame), len(frame), tp_status,
            mac, mac,
        )  # fmt: skip
        buf[offset + mac : offset + mac + len(frame)] = frame
        offset += span
    return memoryview(buf)


def test_request_packs_tpacket_req3() -> None:
    req = ring.request(1 << 20, 8, 1 << 17, 1)
    assert struct.unpack("=7I", req) == (1 << 20, 8, 1 << 17, 64, 1, 0, 0)
    with pytest.raises(ValueError, match="power of two"):
        ring.request(3 << 19, 8, 1 << 17, 1)
    with pytest.raises(ValueError, match="multiple of 16"):
        ring.request(1 << 20, 8, 1000, 1)


def test_frames_in_order_with_status_and_kernel_time() -> None:
    data = block(
        [
            (b"\x01" * 60, ring.TP_STATUS_USER, 1_700_000_000, 250_000_000),
            (b"\x02" * 1514, ring.TP_STATUS_USER | ring.TP_STATUS_CSUMNOTREADY, 1_700_000_001, 5),
        ]
    )
    assert ring.block_owner(data) & ring.TP_STATUS_USER
    assert ring.block_seq(data) == 7
    walk = ring.Walk()
    got = list(ring.frames(data, walk))
    assert [bytes(f.frame) for f in got] == [b"\x01" * 60, b"\x02" * 1514]
    assert [bool(f.status & ring.TP_STATUS_CSUMNOTREADY) for f in got] == [False, True]
    assert got[0].ts == pytest.approx(1_700_000_000.25)
    assert got[1].ts == pytest.approx(1_700_000_001 + 5e-9)
    assert not any(f.truncated for f in got)
    assert walk.bad_frames == 0


def test_truncated_frame_is_marked() -> None:
    data = bytearray(block([(b"\x03" * 100, ring.TP_STATUS_USER, 1, 0)]))
    # tp_len larger than tp_snaplen: only a part was captured
    struct.pack_into("=I", data, ring.BLOCK_HEADER_LEN + 16, 9000)
    (only,) = ring.frames(memoryview(data))
    assert only.truncated and len(only.frame) == 100
    struct.pack_into("=II", data, ring.BLOCK_HEADER_LEN + 16, 100, ring.TP_STATUS_COPY)
    (only,) = ring.frames(memoryview(data))
    assert only.truncated


def test_empty_and_short_blocks() -> None:
    assert list(ring.frames(block([]))) == []
    assert list(ring.frames(memoryview(b"\0" * 10))) == []


def test_num_pkts_lying_stops_at_the_last_frame() -> None:
    walk = ring.Walk()
    data = block([(b"a" * 60, 1, 0, 0), (b"b" * 60, 1, 0, 0)], num_pkts=1000)
    assert len(list(ring.frames(data, walk))) == 2
    assert walk.bad_frames == 998


@pytest.mark.parametrize("first", [0, 10, BLOCK - 20, BLOCK + 100, 0xFFFFFFFF])
def test_first_offset_out_of_the_block_is_rejected(first: int) -> None:
    walk = ring.Walk()
    data = block([], num_pkts=3, first=first)
    assert list(ring.frames(data, walk)) == []
    assert walk.bad_frames == 3


def test_frame_running_past_the_block_is_rejected() -> None:
    data = bytearray(block([(b"a" * 60, 1, 0, 0)]))
    struct.pack_into("=I", data, ring.BLOCK_HEADER_LEN + 12, BLOCK)  # tp_snaplen
    walk = ring.Walk()
    assert list(ring.frames(memoryview(data), walk)) == []
    assert walk.bad_frames == 1


def test_next_offset_that_does_not_advance_ends_the_walk() -> None:
    data = bytearray(block([(b"a" * 60, 1, 0, 0), (b"b" * 60, 1, 0, 0)]))
    struct.pack_into("=I", data, ring.BLOCK_HEADER_LEN, 8)  # tp_next_offset: a loop
    walk = ring.Walk()
    assert len(list(ring.frames(memoryview(data), walk))) == 1
    assert walk.bad_frames == 1


@given(st.binary(min_size=0, max_size=600), st.integers(0, 2**32 - 1))
def test_any_bytes_never_raise(junk: bytes, count: int) -> None:
    """Whatever the block says, the walk ends without an exception, and every
    frame it yields lies inside the block."""
    data = bytearray(junk.ljust(ring.BLOCK_HEADER_LEN, b"\0"))
    struct.pack_into("=I", data, 12, count)
    view = memoryview(bytes(data))
    for frame in ring.frames(view, ring.Walk()):
        assert len(frame.frame) <= len(view)
