"""``python -m proxy``: the middlebox daemon.

    python -m proxy --netns tl1a2b3c-mbx --front mc0 --back ms0 \\
        --drop syn-ack@1 --delay client:fin@1=2s --pace 100ms \\
        --pcap run.pcapng --control /run/tcplab/1a2b3c.proxy.sock

Forwards every frame between ``--front`` (the client side) and ``--back``
(the server side), applies the rules, logs a ``segment`` event per TCP
segment, serves the control socket, and on SIGTERM / Ctrl-C logs
``daemon_done`` with its counters and exits 0.  Exit 2: bad arguments or
rules (the message names which); nothing was started.  Exit 1: an error
stopped it; ``daemon_done`` then says ``status: error`` and what it was.

The control socket is a side door: if it fails (it should not: see
:mod:`proxy.control`'s limits), the failure is logged and forwarding goes on
without it.
"""

from __future__ import annotations

import dataclasses
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from core import logs, netns, options, proc
from core.events import DaemonDone, DaemonReady, ExpressUnavailable, LogMessage, emit
from core.rules import RuleError
from proxy import bpf_lane, capture, control, express, forward, rules, rxring
from proxy.controller import Controller
from proxy.middlebox import Middlebox, Output
from proxy.neighbours import Port, RouteTable
from proxy.options import ProxyOptions, rules_from_file


def parse_args(argv: list[str] | None) -> ProxyOptions:
    return options.from_argv(
        ProxyOptions,
        argv,
        prog="python -m proxy",
        description="tcplab middlebox: forwards frames, applies faults",
    )


def _express_setup(ports: list[str]) -> None:
    for port in ports:
        # leftovers of a proxy that was killed before it could clean up
        express.run_tc(express.teardown_commands(port), check=False)
        express.run_tc(express.setup_commands(port))


def _express_teardown(ports: list[str]) -> None:
    for port in ports:
        express.run_tc(express.teardown_commands(port), check=False)


async def _serve_control(
    sock: trio.socket.SocketType, path: Path, controller: Controller, log: Any
) -> None:
    """The control socket, whose failure never stops the forwarding: it is
    logged, and the proxy forwards on without it."""
    try:
        await control.serve_socket(sock, path, controller)
    except Exception as exc:
        emit(
            log,
            LogMessage(
                ts=time.time(),
                message=f"control socket {path} failed; forwarding goes on without it: {exc!r}",
                log_level="error",
                logger="proxy.control",
            ),
        )


@dataclasses.dataclass(slots=True)
class Outcome:
    """What :func:`amain` got to log, for :func:`main` (which must not log a
    second ``daemon_done``)."""

    logged_done: bool = False


def describe_error(exc: BaseException) -> str:
    """One line for an exception, looking inside trio's exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe_error(inner) for inner in exc.exceptions)
    text = str(exc)
    return text if isinstance(exc, OSError | ValueError) and text else repr(exc)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _build_middlebox(args: ProxyOptions, engine: rules.RuleEngine) -> tuple[Middlebox, list[Port]]:
    """The middlebox for ``--front`` and ``--back``, with this namespace's
    routes and the neighbours its kernel knows already (read once, before
    forwarding starts)."""
    ports, routes, known = forward.discover([args.front, args.back])
    middlebox = Middlebox(
        ports,
        routes=RouteTable(ports, routes),
        engine=engine,
        log_segments=args.log_segments,
    )
    for port_name, ip, mac in known:
        middlebox.neighbours.learn(port_name, ip, mac, trio.current_time())
    return middlebox, ports


async def _setup_express(args: ProxyOptions, log: Any, names: list[str]) -> tuple[bool, bool]:
    """Whether the express lane runs, and whether it can rewrite MACs.

    It is set up when ``--express on``, or ``auto`` while not every segment
    is logged.  If tc cannot set it up, ``on`` raises and ``auto`` logs why
    and goes on without it.  Then a trivial eBPF program is loaded and
    attached for a moment: if that fails (no CAP_BPF, a seccomp filter, a
    kernel without cls_bpf), the lane serves only connections whose MACs are
    mirrored, and the record says why."""
    if not (args.express == "on" or (args.express == "auto" and args.log_segments != "all")):
        return False, False
    try:
        await trio.to_thread.run_sync(_express_setup, names)
    except OSError as exc:
        await trio.to_thread.run_sync(_express_teardown, names)
        if args.express == "on":
            raise
        # no tc, or a kernel without clsact/u32/mirred: every frame
        # through the proxy, which is correct, only slower
        emit(log, ExpressUnavailable(ts=time.time(), reason=str(exc)))
        return False, False
    try:
        await trio.to_thread.run_sync(bpf_lane.probe, names[0])
    except OSError as exc:
        reason = f"no MAC-rewriting lane (cls_bpf): {exc}"
        emit(log, ExpressUnavailable(ts=time.time(), reason=reason, available="mirrored"))
        return True, False
    return True, True


def _open_interfaces(
    ports: list[Port], lane: bool, ring: bool, log: Any
) -> list[forward.Interface]:
    """A packet socket per port.  With the express lane the proxy reads
    the port's shadow veth (what the lane does not pass on) and sends on
    the port itself.  With ``ring``, frames are read from a receive ring
    (:mod:`proxy.rxring`); where the kernel refuses one, with ``recvmsg``,
    and why is logged once."""
    interfaces = []
    refused: list[str] = []
    for port in ports:
        name = express.shadow_names(port.name)[1] if lane else port.name
        sock, index, rx = _open_receiver(name, ring, refused)
        iface = forward.Interface(port, index, sock, rx=rx)
        interfaces.append(iface)
        if lane:
            iface.send_sock, _ = forward.open_packet_socket(port.name, receive=False)
    if refused:
        message = "no receive ring, reading one frame per recvmsg: " + "; ".join(refused)
        emit(
            log,
            LogMessage(ts=time.time(), message=message, log_level="warning", logger="proxy.rxring"),
        )
    return interfaces


def _open_receiver(
    name: str, ring: bool, refused: list[str]
) -> tuple[Any, int, rxring.RxRing | None]:
    """The receiving socket of interface ``name``, with its ring if ``ring``
    and the kernel sets one up; if not, why is added to ``refused``."""
    if ring:
        rings: list[rxring.RxRing] = []
        try:
            sock, index = forward.open_packet_socket(
                name, before_bind=lambda s: rings.append(rxring.attach(s))
            )
            return sock, index, rings[0]
        except OSError as exc:
            for rx in rings:
                rx.close()
            refused.append(f"{name}: {exc}")
    sock, index = forward.open_packet_socket(name)
    return sock, index, None


def _open_capture(pcap: str | None, names: list[str]) -> capture.PcapWriter | None:
    """The ``--pcap`` writer; its file is opened once, before forwarding
    starts, and closed by :func:`_close`."""
    if not pcap:
        return None
    return capture.PcapWriter(Path(pcap).open("wb"), names)


def _capture_frames(
    writer: capture.PcapWriter,
) -> Callable[[str, bytes | bytearray | memoryview, Output, float], None]:
    """The forwarder's ``on_frame``: each frame read goes in the capture
    with its verdict as a comment, and so does every frame it made the
    proxy inject."""

    def on_frame(
        port: str, frame: bytes | bytearray | memoryview, out: Output, arrival: float
    ) -> None:
        writer.write(port, frame, capture.comment_for(out.segment), timestamp=arrival)
        for injected_port, injected, record in out.injected:
            writer.write(
                injected_port,
                injected,
                capture.comment_for(record),
                inbound=False,
                timestamp=arrival,
            )

    return on_frame


async def _start_control(
    nursery: trio.Nursery,
    path: str | Path,
    middlebox: Middlebox,
    forwarder: forward.Forwarder,
    log: Any,
) -> None:
    """Bind the control socket and serve it in ``nursery``.  A socket that
    cannot be made stops the proxy before it starts (raised); one that fails
    later does not (:func:`_serve_control`)."""
    controller = Controller(
        middlebox,
        release=forwarder.release,
        changed=forwarder.changed,
        log=log,
    )
    control_sock = await control.bind(path)
    nursery.start_soon(_serve_control, control_sock, Path(path), controller, log)


def _ready(args: ProxyOptions, engine: rules.RuleEngine, middlebox: Middlebox) -> DaemonReady:
    return DaemonReady(
        ts=time.time(),
        front=args.front,
        back=args.back,
        rules=tuple(engine.describe()),
        pace_ms=engine.pace * 1000 if engine.pace else None,
        control=str(args.control) if args.control else None,
        pcap=str(args.pcap) if args.pcap else None,
        log_segments=args.log_segments,
        express=middlebox.express_enabled,
        express_rewrite=middlebox.express_rewrite if middlebox.express_enabled else None,
    )


async def _forward_until_signal(
    args: ProxyOptions,
    log: Any,
    engine: rules.RuleEngine,
    middlebox: Middlebox,
    forwarder: forward.Forwarder,
) -> str:
    """Forward and serve the control socket until SIGTERM or SIGINT; the
    status to log: ``terminated`` or ``interrupted``."""
    status = "ok"
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:

            async def on_signal() -> None:
                nonlocal status
                async for signum in signals:
                    status = "terminated" if signum == signal.SIGTERM else "interrupted"
                    nursery.cancel_scope.cancel()

            nursery.start_soon(on_signal)
            await nursery.start(forwarder.run)
            if args.control:
                await _start_control(nursery, args.control, middlebox, forwarder, log)
            emit(log, _ready(args, engine, middlebox))
            # keep the signal receiver installed for as long as we forward
            await trio.sleep_forever()
    return status


async def _close(
    interfaces: list[forward.Interface],
    lane: bool,
    names: list[str],
    writer: capture.PcapWriter | None,
) -> None:
    """Close what :func:`amain` opened, however it ends; the express lane's
    tc filters come off even when the proxy is cancelled."""
    for iface in interfaces:
        iface.close()
    if lane:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(_express_teardown, names)
    if writer is not None:
        writer.stream.close()


async def amain(
    args: ProxyOptions,
    log: Any,
    engine: rules.RuleEngine,
    outcome: Outcome | None = None,
) -> int:
    middlebox, ports = _build_middlebox(args, engine)
    names = [p.name for p in ports]
    lane, rewrite = await _setup_express(args, log, names)
    middlebox.express_enabled, middlebox.express_rewrite = lane, rewrite
    interfaces = _open_interfaces(ports, lane, args.rx_ring == "auto", log)
    writer = _open_capture(args.pcap, names)
    middlebox.describe_every_segment = writer is not None
    forwarder = forward.Forwarder(
        middlebox,
        interfaces,
        on_records=forward.log_records(log),
        on_frame=_capture_frames(writer) if writer else None,
    )
    status = "ok"
    error: str | None = None
    try:
        status = await _forward_until_signal(args, log, engine, middlebox, forwarder)
    except BaseException as exc:
        status, error = "error", describe_error(exc)
        raise
    finally:
        await _close(interfaces, lane, names, writer)
        emit(
            log,
            DaemonDone(
                ts=time.time(),
                status=status,
                counters=dict(middlebox.counters),
                held_lost=len(middlebox.held),
                delayed_lost=len(middlebox.delayed),
                send_errors=forwarder.send_errors,
                express_errors=tuple(forwarder.lane_errors) or None,
                captured=writer.packets if writer else None,
                error=error,
            ),
        )
        if outcome is not None:
            outcome.logged_done = True
    return 0


def main(argv: list[str] | None = None) -> int:
    proc.die_with_parent()  # when a run started us; `lab up` does not ask
    args = parse_args(argv)
    try:
        parsed = list(args.rules)
        if args.rules_file:
            parsed = rules_from_file(Path(args.rules_file)) + parsed
        engine = rules.RuleEngine(parsed, pace=args.pace)
    except RuleError as exc:
        print(f"proxy: {exc}", file=sys.stderr)
        return 2
    if args.netns:
        try:
            netns.enter(args.netns)
        except OSError as exc:
            print(f"proxy: cannot enter network namespace {args.netns!r}: {exc}", file=sys.stderr)
            return 2
    logs.configure("proxy", args.log_format)
    log = logs.get_logger()
    outcome = Outcome()
    try:
        return trio.run(amain, args, log, engine, outcome)
    except Exception as exc:
        message = describe_error(exc)
        if not outcome.logged_done:
            emit(log, DaemonDone(ts=time.time(), status="error", error=message))
        if not all(isinstance(leaf, OSError | ValueError) for leaf in _leaves(exc)):
            traceback.print_exception(exc)  # a bug: the whole story
        print(f"proxy: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
