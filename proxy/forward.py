"""The proxy's I/O shell: AF_PACKET sockets on the middlebox's ports, a clock,
and a :class:`~proxy.middlebox.Middlebox` that decides.

One trio task per port waits until its socket is readable and then drains
it in a batch (up to :data:`BATCH` frames without yielding), handing each
frame to the middlebox and sending what it returns; one timer task sleeps
until the next delayed frame or ARP retry is due.  Nothing here decides
anything.

Sockets:

- ``PACKET_AUXDATA`` on, so each frame comes with the kernel's
  ``tp_status``: ``TP_STATUS_CSUMNOTREADY`` marks a frame whose checksum was
  left for offload, which the middlebox then completes;
- ``PACKET_IGNORE_OUTGOING`` on, so the frames we (and the middlebox's
  kernel) send are not read back;
- ``PACKET_QDISC_BYPASS`` on: forwarded frames go straight to the driver;
- ``SO_TIMESTAMPNS`` on: each frame comes with the kernel's receive
  timestamp (wall clock, ns), which becomes its record's ``ts``: the time
  the segment reached the middlebox, not when Python got to it.  A record
  of a segment sent on gets ``sent_ts``, taken just before the send.

The middlebox's kernel keeps IP forwarding off (it would forward every
segment a second time); it still answers ARP/ND and pings for its own
addresses, which the proxy leaves alone.
"""

from __future__ import annotations

import collections
import dataclasses
import errno
import functools
import ipaddress
import socket
import struct
import time
from collections.abc import Callable, Iterable
from typing import Any, Literal

import trio

from core.events import Record, emit
from proxy import bpf_lane, express, rxring
from proxy.lanes import MAX_EXPRESS
from proxy.middlebox import Middlebox, Output
from proxy.neighbours import Port, Route
from proxy.ring import SOL_PACKET, TP_STATUS_CSUMNOTREADY
from proxy.verdicts import stamp_sent

# include/uapi/linux/if_ether.h, include/uapi/linux/if_packet.h
ETH_P_ALL = 0x0003
PACKET_AUXDATA = 8
PACKET_QDISC_BYPASS = 20
PACKET_IGNORE_OUTGOING = 23
_AUXDATA = struct.Struct("=IIIHHHH")  # struct tpacket_auxdata
# include/uapi/asm-generic/socket.h: SO_TIMESTAMPNS_OLD, a struct timespec of
# two longs (the 64-bit layout; SO_TIMESTAMPNS_NEW is the y2038 variant)
SO_TIMESTAMPNS = 35
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
_TIMESPEC = struct.Struct("=qq")

BATCH = 256
"""Frames handled per wakeup before yielding to the other tasks."""
FRAME_BUFFER = 65536 + 64
SOCKET_BUFFER = 8 << 20
EPOLL_RESOLUTION_S = 0.001
"""epoll_wait(2) takes its timeout in whole milliseconds and Python rounds
it up (``select.epoll.poll``), so trio wakes a sleeper up to 1 ms after its
deadline: a ``delay`` rule of 5 ms added 5–6 ms.  The timer task sleeps
until this long before what is due, then yields until it is."""
MAX_LANE_ERRORS = 16
"""Express-lane error messages kept for ``daemon_done`` (the latest ones)."""
# include/uapi/asm-generic/socket.h (not exported by the socket module)
SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33


@dataclasses.dataclass(slots=True)
class Interface:
    """A port with its socket."""

    port: Port
    index: int
    sock: socket.socket
    """Where its frames are read: the port itself, or its shadow veth in
    express mode (:mod:`proxy.express`)."""
    send_sock: socket.socket | None = None
    """Where frames leave, when that is not ``sock``."""
    rx: rxring.RxRing | None = None
    """``sock``'s receive ring, when it has one (:mod:`proxy.rxring`)."""

    @property
    def sender(self) -> socket.socket:
        return self.send_sock or self.sock

    def close(self) -> None:
        if self.rx is not None:
            self.rx.close()
        self.sock.close()
        if self.send_sock is not None:
            self.send_sock.close()


def discover(names: Iterable[str]) -> tuple[list[Port], list[Route], list[tuple[str, str, bytes]]]:
    """Read the ports, routes and known neighbours of the current namespace
    (blocking pyroute2 calls: done once, before forwarding starts)."""
    from pyroute2 import IPRoute

    wanted = list(names)
    ports: list[Port] = []
    routes: list[Route] = []
    neighbours: list[tuple[str, str, bytes]] = []
    with IPRoute() as ip:
        by_index: dict[int, str] = {}
        for name in wanted:
            found = ip.link_lookup(ifname=name)
            if not found:
                raise ValueError(f"no interface named {name!r} in this namespace")
            index = found[0]
            link = ip.get_links(index)[0]
            mac = bytes.fromhex(link.get_attr("IFLA_ADDRESS").replace(":", ""))
            addrs: list[ipaddress.IPv4Interface | ipaddress.IPv6Interface] = []
            for msg in ip.get_addr(index=index):
                addrs.append(
                    ipaddress.ip_interface(f"{msg.get_attr('IFA_ADDRESS')}/{msg['prefixlen']}")
                )
            ports.append(Port(name, mac, int(link.get_attr("IFLA_MTU")), tuple(addrs)))
            by_index[index] = name
        for family in (socket.AF_INET, socket.AF_INET6):
            for msg in ip.get_routes(family=family, table=254):
                oif = msg.get_attr("RTA_OIF")
                gateway = msg.get_attr("RTA_GATEWAY")
                if oif not in by_index or gateway is None:
                    continue
                dst = msg.get_attr("RTA_DST") or ("0.0.0.0" if family == socket.AF_INET else "::")
                routes.append(
                    Route(
                        ipaddress.ip_network(f"{dst}/{msg['dst_len']}"),
                        by_index[oif],
                        ipaddress.ip_address(gateway),
                    )
                )
        for msg in ip.get_neighbours():
            owner = by_index.get(msg["ifindex"])
            lladdr = msg.get_attr("NDA_LLADDR")
            dst = msg.get_attr("NDA_DST")
            # NUD_REACHABLE 0x02, NUD_STALE 0x04, NUD_PERMANENT 0x80 (neighbour.h)
            if owner and lladdr and dst and msg["state"] & (0x02 | 0x04 | 0x80):
                neighbours.append((owner, dst, bytes.fromhex(lladdr.replace(":", ""))))
    return ports, routes, neighbours


def open_packet_socket(
    ifname: str,
    *,
    receive: bool = True,
    before_bind: Callable[[socket.socket], None] | None = None,
) -> tuple[socket.socket, int]:
    """A non-blocking AF_PACKET socket bound to ``ifname``, and its index.
    ``receive=False``: a socket only for sending (protocol 0 reads nothing).
    ``before_bind`` is called with the socket before it is bound (and can
    still not receive anything)."""
    protocol = socket.htons(ETH_P_ALL) if receive else 0
    sock = socket.socket(
        socket.AF_PACKET, socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC, protocol
    )
    try:
        sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        try:
            sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        except OSError as exc:  # Linux < 4.20
            raise OSError(exc.errno, "PACKET_IGNORE_OUTGOING needs Linux >= 4.20") from exc
        sock.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
        if receive:
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        for option in (SO_RCVBUFFORCE, SO_SNDBUFFORCE):
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
            except PermissionError:
                pass  # without CAP_NET_ADMIN the default buffers will do
        if before_bind is not None:
            before_bind(sock)
        # the address's protocol is host order: Python applies htons itself
        sock.bind((ifname, ETH_P_ALL if receive else 0))
        return sock, socket.if_nametoindex(ifname)
    except OSError:
        sock.close()
        raise


class Forwarder:
    """Runs a :class:`Middlebox` over real sockets."""

    def __init__(
        self,
        middlebox: Middlebox,
        interfaces: Iterable[Interface],
        *,
        on_records: Callable[[list[Record]], None],
        on_frame: Callable[[str, bytes | bytearray | memoryview, Output, float], None]
        | None = None,
    ) -> None:
        self.middlebox = middlebox
        self.interfaces = {i.port.name: i for i in interfaces}
        self.on_records = on_records
        self.on_frame = on_frame
        self.send_errors = 0
        self.lane_errors: collections.deque[str] = collections.deque(maxlen=MAX_LANE_ERRORS)
        """The latest express-lane failures (bounded: a broken ``tc`` fails
        once per connection); ``lane_error_count`` counts them all."""
        self.lane_error_count = 0
        self._wake = trio.Event()
        self._timer_at = float("inf")
        # lane operations for the thread that runs tc, in order; bounded: at
        # most one add and one remove per lane are ever in flight
        self._lane_ops, self._lane_inbox = trio.open_memory_channel[
            tuple[Literal["add", "remove"], Any]
        ](4 * MAX_EXPRESS)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for iface in self.interfaces.values():
                nursery.start_soon(self._read_loop, iface)
            nursery.start_soon(self._timer_loop)
            if self.middlebox.express_enabled:
                nursery.start_soon(self._lane_loop)
            task_status.started()

    def release(self, rule: str | None = None) -> int:
        """Let held segments go now; returns how many."""
        out = self.middlebox.release(trio.current_time(), rule, wall=time.time())
        self._deliver(out)
        return len(out.frames)

    def changed(self) -> None:
        """The rules changed: re-plan the timer, recall express connections
        if rules now need their data."""
        self._wake.set()
        self._deliver(self.middlebox.express_recall())

    async def _lane_loop(self) -> None:
        """Install and remove express filters, one at a time, off the loop:
        ``u32`` ones for a lane of mirrored MACs, ``cls_bpf`` ones for a lane
        that rewrites them; either kind is removed by its priority."""
        mb = self.middlebox
        op: Literal["add", "remove"]
        async for op, lane in self._lane_inbox:
            if op == "add" and lane.rewrite is not None:
                work = functools.partial(
                    bpf_lane.add_lane,
                    lane.slot,
                    (lane.client, lane.server),
                    (lane.rewrite.to_server, lane.rewrite.to_client),
                    (mb.front, mb.back),
                )
            elif op == "add":
                work = functools.partial(
                    express.run_tc,
                    express.add_commands(lane.slot, lane.client, lane.server, mb.front, mb.back),
                )
            else:
                work = functools.partial(
                    express.run_tc, express.remove_commands(lane.slot, mb.front, mb.back)
                )
            try:
                await trio.to_thread.run_sync(work)
            except OSError as exc:
                self.lane_errors.append(str(exc))
                self.lane_error_count += 1
                if op == "add":
                    # half-installed: take out what may be there, forward in the proxy
                    undo = express.remove_commands(lane.slot, mb.front, mb.back)
                    await trio.to_thread.run_sync(
                        functools.partial(express.run_tc, undo, check=False)
                    )
                    self._deliver(mb.express_failed(lane, trio.current_time()))
                    continue
            self._deliver(mb.express_done(lane, op, trio.current_time()))

    async def _read_loop(self, iface: Interface) -> None:
        if iface.rx is not None:
            await self._read_ring(iface, iface.rx)
            return
        sock = iface.sock
        name = iface.port.name
        buffer = bytearray(FRAME_BUFFER)
        view = memoryview(buffer)
        anc_size = socket.CMSG_SPACE(_AUXDATA.size) + socket.CMSG_SPACE(_TIMESPEC.size)
        receive = self.middlebox.receive
        on_frame = self.on_frame
        while True:
            await trio.lowlevel.wait_readable(sock)
            for _ in range(BATCH):
                try:
                    size, ancdata, _flags, _addr = sock.recvmsg_into([view], anc_size)
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno in (errno.ENETDOWN, errno.ENXIO):
                        raise
                    continue
                not_ready = False
                arrival = 0.0
                for level, kind, data in ancdata:
                    if level == SOL_PACKET and kind == PACKET_AUXDATA and len(data) >= 4:
                        not_ready = bool(
                            int.from_bytes(data[:4], "little") & TP_STATUS_CSUMNOTREADY
                        )
                    elif level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS:
                        sec, nsec = _TIMESPEC.unpack_from(data)
                        arrival = sec + nsec * 1e-9
                if not arrival:
                    arrival = time.time()  # no stamp (should not happen): now
                frame = view[:size]
                out = receive(
                    name, frame, trio.current_time(), arrival=arrival, csum_not_ready=not_ready
                )
                if on_frame is not None:
                    on_frame(name, frame, out, arrival)
                self._deliver(out)
            await trio.lowlevel.checkpoint()

    async def _read_ring(self, iface: Interface, rx: rxring.RxRing) -> None:
        """Read ``iface``'s receive ring: the same per frame as ``recvmsg``."""
        name = iface.port.name
        receive = self.middlebox.receive
        on_frame = self.on_frame
        deliver = self._deliver
        now = trio.current_time

        def handle(frame: memoryview, arrival: float, not_ready: bool) -> None:
            out = receive(name, frame, now(), arrival=arrival, csum_not_ready=not_ready)
            if on_frame is not None:
                on_frame(name, frame, out, arrival)
            deliver(out)

        await rxring.read(iface.sock, rx, handle, BATCH)

    def _deliver(self, out: Output) -> None:
        interfaces = self.interfaces
        for lane in out.express_add:
            self._lane_ops.send_nowait(("add", lane))
        for lane in out.express_remove:
            self._lane_ops.send_nowait(("remove", lane))
        sent = time.time() if out.records else 0.0
        for port, frame in out.frames:
            try:
                interfaces[port].sender.send(frame)
            except (BlockingIOError, OSError):
                # a full device queue: the frame is lost as on a real link
                self.send_errors += 1
        if out.records:
            self.on_records(stamp_sent(out.records, sent))
        wake = self.middlebox.next_wakeup()
        if wake is not None and wake < self._timer_at:
            self._wake.set()

    async def _timer_loop(self) -> None:
        while True:
            wake = self.middlebox.next_wakeup()
            self._timer_at = wake if wake is not None else float("inf")
            with trio.move_on_at(self._timer_at - EPOLL_RESOLUTION_S):
                await self._wake.wait()
            # the last stretch: yield to the other tasks until it is due,
            # rather than let epoll_wait oversleep it
            while trio.current_time() < self._timer_at and not self._wake.is_set():
                await trio.lowlevel.checkpoint()
            self._wake = trio.Event()
            self._timer_at = float("inf")
            out = self.middlebox.tick(trio.current_time(), time.time())
            self._deliver(out)


def log_records(log: Any) -> Callable[[list[Record]], None]:
    """An ``on_records`` that writes each record on a structlog logger."""

    def write(records: list[Record]) -> None:
        for record in records:
            emit(log, record)

    return write
