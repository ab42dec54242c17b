"""TPACKET_V3 receive ring: its request and its blocks, decoded (sans-IO).

With ``PACKET_RX_RING`` the kernel writes received frames straight into
memory the proxy has mapped, a block of many frames at a time, instead of
one ``recvmsg`` system call per frame.  A block belongs to the kernel while
its ``block_status`` is :data:`TP_STATUS_KERNEL`; the kernel hands it over
(:data:`TP_STATUS_USER`) when it is full or when the retire timeout
(``tp_retire_blk_tov``) expires with frames in it, and the reader gives it
back by writing :data:`TP_STATUS_KERNEL` into its status.

This module only reads bytes: :func:`request` packs the ring's
``struct tpacket_req3``; :func:`block_owner` reads who owns a block;
:func:`frames` walks one block's frames.  The ring's memory is written by
the kernel, but a block is still input: every offset and length in it is
checked against the block before it is used, and a bad one ends the walk
(counted by :class:`Walk`) rather than raising.

Layouts and constants: include/uapi/linux/if_packet.h.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterator
from typing import NamedTuple

# include/linux/socket.h
SOL_PACKET = 263
# include/uapi/linux/if_packet.h: socket options (level SOL_PACKET)
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
# enum tpacket_versions
TPACKET_V3 = 2

# tp_status / block_status bits
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1 << 0
TP_STATUS_COPY = 1 << 1
"""The frame did not fit the ring frame (TPACKET_V1/V2): only part of it is here."""
TP_STATUS_LOSING = 1 << 2
"""Frames were dropped since the last time statistics were read."""
TP_STATUS_CSUMNOTREADY = 1 << 3
"""The frame's checksum was left for offload (to be completed)."""
TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_BLK_TMO = 1 << 5
"""The block was retired by its timeout, not because it was full."""

REQ3 = struct.Struct("=7I")
"""struct tpacket_req3: tp_block_size, tp_block_nr, tp_frame_size,
tp_frame_nr, tp_retire_blk_tov (ms), tp_sizeof_priv, tp_feature_req_word."""
BLOCK_DESC = struct.Struct("=IIIII")
"""struct tpacket_block_desc (version, offset_to_priv) and the first fields of
its struct tpacket_hdr_v1: block_status, num_pkts, offset_to_first_pkt."""
BLOCK_SEQ = struct.Struct("=Q")
BLOCK_SEQ_OFFSET = 24
"""struct tpacket_hdr_v1's seq_num (after blk_len), in the block."""
BLOCK_HEADER_LEN = 48
"""sizeof(struct tpacket_block_desc): the block's header, before any frame
(blk_len, seq_num and the first/last timestamps follow the fields above)."""
PKT_HEADER = struct.Struct("=IIIIIIHH")
"""struct tpacket3_hdr's first fields: tp_next_offset, tp_sec, tp_nsec,
tp_snaplen, tp_len, tp_status, tp_mac, tp_net (then hv1 and padding)."""
PKT_HEADER_LEN = 48
"""sizeof(struct tpacket3_hdr)."""
STATS_V3 = struct.Struct("=III")
"""struct tpacket_stats_v3: tp_packets, tp_drops, tp_freeze_q_cnt."""
TPACKET_ALIGNMENT = 16


class RingFrame(NamedTuple):
    """One frame of a block, as the kernel wrote it."""

    frame: memoryview
    """The frame's bytes in the ring (valid until its block is given back)."""
    status: int
    """Its ``tp_status`` (:data:`TP_STATUS_CSUMNOTREADY`…)."""
    ts: float
    """The kernel's receive time, seconds since the epoch (wall clock)."""
    truncated: bool
    """Only ``tp_snaplen`` of ``tp_len`` bytes are here (or :data:`TP_STATUS_COPY`)."""


@dataclasses.dataclass(slots=True)
class Walk:
    """What walking blocks found wrong: frames a block claimed but that could
    not be read (bad offsets, a count larger than what is there)."""

    bad_frames: int = 0


def request(block_size: int, block_nr: int, frame_size: int, retire_ms: int) -> bytes:
    """The ``struct tpacket_req3`` for a ring of ``block_nr`` blocks of
    ``block_size`` bytes.  The kernel insists on ``tp_frame_nr`` being
    exactly the frames per block times the blocks, though TPACKET_V3 packs
    frames by their real size; ``frame_size`` only bounds how many fit."""
    if block_size <= 0 or block_size & (block_size - 1):
        raise ValueError(f"block size {block_size} is not a power of two")
    if frame_size % TPACKET_ALIGNMENT or not 0 < frame_size <= block_size:
        raise ValueError(f"frame size {frame_size} is not a multiple of 16 up to the block size")
    frame_nr = block_size // frame_size * block_nr
    return REQ3.pack(block_size, block_nr, frame_size, frame_nr, retire_ms, 0, 0)


def block_owner(block: memoryview) -> int:
    """The block's ``block_status`` (:data:`TP_STATUS_USER` set: ours)."""
    status: int = BLOCK_DESC.unpack_from(block, 0)[2]
    return status


def block_seq(block: memoryview) -> int:
    """The block's ``seq_num``: the kernel numbers the blocks it fills."""
    seq: int = BLOCK_SEQ.unpack_from(block, BLOCK_SEQ_OFFSET)[0]
    return seq


def frames(block: memoryview, walk: Walk | None = None) -> Iterator[RingFrame]:
    """The frames of a block the kernel handed over, in order.

    A frame header or frame that would run past the block, or a
    ``tp_next_offset`` that does not move forward, ends the walk: the frames
    the block still claimed are added to ``walk.bad_frames``."""
    size = len(block)
    if size < BLOCK_HEADER_LEN:
        return
    _version, _priv, _status, count, offset = BLOCK_DESC.unpack_from(block, 0)
    unpack = PKT_HEADER.unpack_from
    done = 0
    while done < count:
        if offset < BLOCK_HEADER_LEN or offset + PKT_HEADER_LEN > size:
            break
        next_offset, sec, nsec, snaplen, length, status, mac, _net = unpack(block, offset)
        start = offset + mac
        if mac < PKT_HEADER.size or start + snaplen > size:
            break
        yield RingFrame(
            block[start : start + snaplen],
            status,
            sec + nsec * 1e-9,
            snaplen < length or bool(status & TP_STATUS_COPY),
        )
        done += 1
        if next_offset == 0:
            break  # the kernel's last frame of the block
        if next_offset < PKT_HEADER_LEN:
            break  # would not move past this frame's header: a loop
        offset += next_offset
    if walk is not None and done < count:
        walk.bad_frames += count - done
