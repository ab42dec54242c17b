"""The proxy's receive ring: a memory-mapped TPACKET_V3 ``PACKET_RX_RING`` on
a port's packet socket, read a block of frames at a time.

One ``recvmsg`` per frame costs a system call, a copy and the parsing of its
ancillary data; with the ring the kernel writes frames (with their
``tp_status`` and receive timestamp) into shared memory and the proxy walks
them (:mod:`proxy.ring` decodes the blocks).  The kernel hands a block over
when it is full or when :data:`RETIRE_MS` has passed with frames in it, so a
lone SYN waits at most that long before Python sees it.

Each frame is handed to the middlebox while its block is ours; the block is
given back only after all its frames were handled.  Nothing keeps a frame's
bytes past that: the middlebox copies what it forwards, delays, holds or
parks, and the capture copies what it writes.

When the ring cannot be set up (:func:`attach` raises ``OSError``), the
proxy reads the socket with ``recvmsg`` as before (:mod:`proxy.forward`).
"""

from __future__ import annotations

import dataclasses
import mmap
import socket
import struct
from collections.abc import Callable

import trio

from proxy import ring

BLOCK_SIZE = 1 << 20
"""Bytes per block: a power-of-two multiple of the page size, with room for
hundreds of full-size frames (or several 64 KiB GRO frames)."""
BLOCK_NR = 8
"""Blocks in the ring: 8 MiB in all, the size of the recvmsg path's socket
buffer; a slow moment in Python fills blocks instead of dropping frames."""
FRAME_SIZE = 1 << 17
"""The largest frame the ring is asked to hold: a 64 KiB GRO frame with its
headers fits (TPACKET_V3 packs frames by their real size; this only sets
``tp_frame_nr``)."""
RETIRE_MS = 1
"""``tp_retire_blk_tov``: a block with frames in it is handed over at most
this long after it was opened, so a lone segment is not held back (the
kernel's default for a link of unknown speed is 8 ms)."""

"""include/linux/socket.h (not exported by the socket module)."""
_STATUS = struct.Struct("=I")
_STATUS_OFFSET = 8
"""Where ``block_status`` is in a block (struct tpacket_block_desc)."""

Handle = Callable[[memoryview, float, bool], None]
"""What the reader does with each frame: ``(frame, arrival, csum_not_ready)``."""


@dataclasses.dataclass(slots=True)
class RxRing:
    """A socket's mapped receive ring."""

    area: mmap.mmap
    blocks: list[memoryview]
    walk: ring.Walk = dataclasses.field(default_factory=ring.Walk)
    current: int = 0
    """The next block the kernel hands over (it fills them in order)."""

    def close(self) -> None:
        for block in self.blocks:
            block.release()
        self.blocks = []
        try:
            self.area.close()
        except BufferError:
            pass  # a frame's view still alive somewhere: the GC unmaps it


def attach(
    sock: socket.socket,
    *,
    block_size: int = BLOCK_SIZE,
    block_nr: int = BLOCK_NR,
    frame_size: int = FRAME_SIZE,
    retire_ms: int = RETIRE_MS,
) -> RxRing:
    """Switch ``sock`` (an AF_PACKET socket, before it is bound, so no frame
    is queued where the ring reader would not look) to TPACKET_V3, set up its
    receive ring and map it.  Raises ``OSError`` when the kernel refuses."""
    level = ring.SOL_PACKET
    sock.setsockopt(level, ring.PACKET_VERSION, ring.TPACKET_V3)
    sock.setsockopt(
        level, ring.PACKET_RX_RING, ring.request(block_size, block_nr, frame_size, retire_ms)
    )
    area = mmap.mmap(
        sock.fileno(), block_size * block_nr, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE
    )
    view = memoryview(area)
    blocks = [view[i * block_size : (i + 1) * block_size] for i in range(block_nr)]
    view.release()
    return RxRing(area, blocks)


def _next_block(rx: RxRing) -> memoryview | None:
    """The next block that is ours, or None.  The kernel fills blocks in
    order, so it is the one after the last one read; should the two ever
    disagree, the reader follows any block the kernel handed over rather
    than wait on one it will not."""
    user = ring.TP_STATUS_USER
    block = rx.blocks[rx.current]
    if ring.block_owner(block) & user:
        return block
    ours = [i for i, other in enumerate(rx.blocks) if ring.block_owner(other) & user]
    if not ours:
        return None
    rx.current = min(ours, key=lambda i: ring.block_seq(rx.blocks[i]))  # the oldest
    return rx.blocks[rx.current]


async def read(sock: socket.socket, rx: RxRing, handle: Handle, batch: int) -> None:
    """Forever: wait until a block is ours, hand each of its frames to
    ``handle``, give the block back; yield to the other tasks after each
    block and every ``batch`` frames."""
    csum = ring.TP_STATUS_CSUMNOTREADY
    walk = rx.walk
    while True:
        await trio.lowlevel.wait_readable(sock)
        while True:
            block = _next_block(rx)
            if block is None:
                break
            for handled, (frame, status, arrival, _truncated) in enumerate(
                ring.frames(block, walk), 1
            ):
                # a truncated frame goes on as it is: its IP length runs past
                # its end, so the middlebox drops it as malformed
                handle(frame, arrival, bool(status & csum))
                if handled % batch == 0:
                    await trio.lowlevel.checkpoint()
            _STATUS.pack_into(block, _STATUS_OFFSET, ring.TP_STATUS_KERNEL)
            rx.current = (rx.current + 1) % len(rx.blocks)
            await trio.lowlevel.checkpoint()
