"""Run one conversation in a fresh lab and gather every component's events.

The runner builds a lab, starts the server in the server namespace and the
client in the client namespace as processes (``python -m daemons.server``,
``python -m daemons.client``), reads their JSON event lines as they come,
and tears everything down on every exit path.  It never imports the daemons'
internals: the event lines are the interface.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import trio

from tcplab import events, topology
from tcplab.transcript import REORDER_WINDOW_S, Merger
from tcplab.units import format_duration

SERVER_PORT = 7007


@dataclasses.dataclass(frozen=True, slots=True)
class RunOptions:
    server_close: str = "immediate"
    client_close: str = "active"
    send: tuple[str, ...] = ("hello",)
    count: int = 1
    concurrency: int = 1
    ipv6: bool = False
    port: int = SERVER_PORT
    observe_for: float = 2.0
    """How long the daemons keep observing once their conversation is over
    (the client's TIME_WAIT alone lasts 60 s)."""
    observe_interval: float = 0.005
    farewell: str | None = None
    sysctls: Mapping[topology.Side, Mapping[str, str]] = dataclasses.field(default_factory=dict)
    deadline: float = 120.0
    server_extra: tuple[str, ...] = ()
    client_extra: tuple[str, ...] = ()
    forwarding: topology.Forwarding = topology.Forwarding.PROXY
    """Who forwards in the middle: the proxy (default), or the kernel."""
    proxy_args: tuple[str, ...] = ()
    """Rules and options for the proxy (``--drop syn-ack@1``, ``--pace 100ms``…)."""
    pcap: str | None = None
    control: str | None = None
    """The proxy's control socket; default ``/run/tcplab/<lab>.proxy.sock``."""


@dataclasses.dataclass(slots=True)
class RunResult:
    lab_id: str
    events: list[dict[str, Any]]
    client_status: int | None
    server_status: int | None
    proxy_status: int | None
    stray: list[str]
    """Lines from the daemons that were not events (tracebacks, warnings)."""

    def of(self, component: str, name: str | None = None) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events
            if e.get("component") == component and (name is None or e.get("event") == name)
        ]

    def states(self, component: str) -> list[tuple[str, str, str]]:
        """(old, new, source) of every tcp_state event from ``component`` that
        concerns a connection (listeners left out)."""
        return [
            (e["old"], e["new"], e["source"])
            for e in self.of(component, events.TCP_STATE)
            if "-" in str(e.get("conn", ""))
        ]


def daemon_argv(module: str, netns: str, args: list[str]) -> list[str]:
    return [sys.executable, "-m", module, "--netns", netns, "--log-format", "json", *args]


def server_args(lab: topology.Lab, opts: RunOptions) -> list[str]:
    host = lab.addr.server6 if opts.ipv6 else lab.addr.server4
    args = [
        "--listen",
        events.endpoint(host, opts.port),
        "--close",
        opts.server_close,
        "--max-conns",
        str(opts.count),
        "--observe-for",
        format_duration(opts.observe_for),
        "--observe-interval",
        format_duration(opts.observe_interval),
    ]
    if opts.farewell is not None:
        args += ["--farewell", opts.farewell]
    return [*args, *opts.server_extra]


def proxy_args(lab: topology.Lab, opts: RunOptions) -> list[str]:
    args = ["--front", topology.FRONT_IF, "--back", topology.BACK_IF]
    args += ["--control", opts.control or str(control_path(lab))]
    if opts.pcap:
        args += ["--pcap", opts.pcap]
    return [*args, *opts.proxy_args]


def control_path(lab: topology.Lab) -> str:
    """Where a lab's proxy listens for control requests."""
    return str(topology.RECORD_DIR / f"{lab.lab_id}.proxy.sock")


def client_args(lab: topology.Lab, opts: RunOptions) -> list[str]:
    host = lab.addr.server6 if opts.ipv6 else lab.addr.server4
    args = [
        "--connect",
        events.endpoint(host, opts.port),
        "--close",
        opts.client_close,
        "--count",
        str(opts.count),
        "--concurrency",
        str(opts.concurrency),
        "--observe-for",
        format_duration(opts.observe_for),
        "--observe-interval",
        format_duration(opts.observe_interval),
    ]
    for text in opts.send:
        args += ["--send", text]
    return [*args, *opts.client_extra]


class _Proc:
    """A daemon process and the task that reads its lines."""

    def __init__(self, name: str, proc: trio.Process) -> None:
        self.name = name
        self.proc = proc
        self.ready = trio.Event()
        self.exited = trio.Event()


async def _read_lines(
    stream: trio.abc.ReceiveStream,
    on_line: Callable[[bytes], None],
) -> None:
    buf = bytearray()
    async for chunk in stream:
        buf += chunk
        while True:
            end = buf.find(b"\n")
            if end < 0:
                break
            on_line(bytes(buf[:end]))
            del buf[: end + 1]
    if buf:
        on_line(bytes(buf))


async def _first_of(*flags: trio.Event) -> None:
    """Return when any of ``flags`` is set."""
    async with trio.open_nursery() as nursery:
        for flag in flags:

            async def waiter(flag: trio.Event = flag) -> None:
                await flag.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(waiter)


async def run_in_lab(
    lab: topology.Lab,
    opts: RunOptions,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> RunResult:
    """Start server then client in ``lab``; return when both have exited.

    ``on_event`` gets every event line as it comes, in ``ts`` order: lines
    are held for a short window so one from another process with an earlier
    ``ts`` can overtake."""
    collected: list[dict[str, Any]] = []
    stray: list[str] = []
    merger = Merger()
    # one forwarder in the middle, never two (every segment would arrive twice)
    topology.set_forwarding(lab, opts.forwarding)

    def deliver(final: bool = False) -> None:
        ready = merger.drain() if final else merger.pop_ready(time.time())
        if on_event is not None:
            for event in ready:
                on_event(event)

    async def ticker() -> None:
        while True:
            await trio.sleep(REORDER_WINDOW_S / 3)
            deliver()

    def make_sink(who: _Proc | None, name: str) -> Callable[[bytes], None]:
        def sink(raw: bytes) -> None:
            event = events.parse_line(raw)
            if event is None:
                text = raw.decode(errors="replace").rstrip()
                if text:
                    stray.append(f"{name}: {text}")
                return
            collected.append(event)
            merger.push(event)
            if who is not None and event.get("event") == events.DAEMON_READY:
                who.ready.set()

        return sink

    async def start(name: str, argv: list[str], nursery: trio.Nursery) -> _Proc:
        proc = await trio.lowlevel.open_process(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
        )
        handle = _Proc(name, proc)
        stdout, stderr = proc.stdout, proc.stderr
        assert stdout is not None and stderr is not None

        async def pump() -> None:
            async with trio.open_nursery() as inner:
                inner.start_soon(_read_lines, stdout, make_sink(handle, name))
                inner.start_soon(_read_lines, stderr, make_sink(None, name))
            await proc.wait()
            handle.exited.set()

        nursery.start_soon(pump)
        return handle

    server: _Proc | None = None
    client: _Proc | None = None
    proxy: _Proc | None = None
    try:
        with trio.fail_after(opts.deadline):
            async with trio.open_nursery() as outer:
                outer.start_soon(ticker)
                if opts.forwarding is topology.Forwarding.PROXY:
                    proxy = await start(
                        "proxy",
                        daemon_argv("proxy", lab.ns("mbx"), proxy_args(lab, opts)),
                        outer,
                    )
                    with trio.fail_after(15):
                        await _first_of(proxy.ready, proxy.exited)
                    if not proxy.ready.is_set():
                        outer.cancel_scope.cancel()
                async with trio.open_nursery() as nursery:
                    if proxy is not None and not proxy.ready.is_set():
                        return _result(lab, collected, client, server, proxy, stray)
                    server = await start(
                        "server",
                        daemon_argv("daemons.server", lab.ns("srv"), server_args(lab, opts)),
                        nursery,
                    )
                    with trio.fail_after(15):
                        await _first_of(server.ready, server.exited)
                    if server.ready.is_set():
                        client = await start(
                            "client",
                            daemon_argv("daemons.client", lab.ns("cli"), client_args(lab, opts)),
                            nursery,
                        )
                        await client.exited.wait()
                        # The server exits by itself once its sockets are gone or its
                        # observe-for deadline passes; give it that long, then stop it.
                        with trio.move_on_after(opts.observe_for + 5):
                            await server.exited.wait()
                        if not server.exited.is_set():
                            server.proc.send_signal(signal.SIGTERM)
                            with trio.move_on_after(3):
                                await server.exited.wait()
                    if not server.exited.is_set():
                        server.proc.kill()
                if proxy is not None:
                    # the proxy logs its counters as it stops
                    proxy.proc.send_signal(signal.SIGTERM)
                    with trio.move_on_after(5):
                        await proxy.exited.wait()
                outer.cancel_scope.cancel()
    finally:
        for handle in (client, server, proxy):
            if handle is not None and handle.proc.returncode is None:
                handle.proc.kill()
        deliver(final=True)
    return _result(lab, collected, client, server, proxy, stray)


def _result(
    lab: topology.Lab,
    collected: list[dict[str, Any]],
    client: _Proc | None,
    server: _Proc | None,
    proxy: _Proc | None,
    stray: list[str],
) -> RunResult:
    collected.sort(key=lambda e: float(e["ts"]))
    return RunResult(
        lab_id=lab.lab_id,
        events=collected,
        client_status=client.proc.returncode if client else None,
        server_status=server.proc.returncode if server else None,
        proxy_status=proxy.proc.returncode if proxy else None,
        stray=stray,
    )


def scenario_options(sc: Any, *, pace: float | None = None) -> RunOptions:
    """The run a scenario describes (``sc``: :class:`tcplab.scenario.Scenario`)."""
    server, client = sc.server, sc.client
    port = int(server.get("port", SERVER_PORT))
    client_port = int(client.get("port", port))
    ipv6 = bool(client.get("ipv6", False))
    client_extra: list[str] = []
    if client_port != port:
        host = topology.Addressing().server6 if ipv6 else topology.Addressing().server4
        client_extra += ["--connect", events.endpoint(host, client_port)]
    if "connect_timeout" in client:
        client_extra += ["--connect-timeout", format_duration(client["connect_timeout"])]
    server_extra: list[str] = []
    if "idle_timeout" in server:
        server_extra += ["--idle-timeout", format_duration(server["idle_timeout"])]
    proxy_args = sc.proxy_args()
    if pace is not None:
        proxy_args = [a for a in proxy_args if a != "--pace"]
        proxy_args += ["--pace", format_duration(pace)]
    return RunOptions(
        server_close=str(server.get("close", "immediate")),
        client_close=str(client.get("close", "active")),
        send=tuple(client.get("send", ("hello",))),
        count=int(client.get("count", 1)),
        concurrency=int(client.get("concurrency", 1)),
        ipv6=ipv6,
        port=port,
        observe_for=sc.observe_for,
        farewell=server.get("farewell"),
        sysctls=sc.sysctls,
        deadline=sc.deadline,
        server_extra=tuple(server_extra),
        client_extra=tuple(client_extra),
        proxy_args=tuple(proxy_args),
    )


def run(
    opts: RunOptions,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    spec: topology.LabSpec | None = None,
) -> RunResult:
    """Build a lab, run one conversation in it, tear it down (sync entry point)."""
    spec = spec or topology.LabSpec(forwarding=opts.forwarding, sysctls=opts.sysctls)
    with topology.lab(spec) as built, unwrap_interrupt():
        return trio.run(run_in_lab, built, opts, on_event)


@contextlib.contextmanager
def unwrap_interrupt() -> Iterator[None]:
    """Ctrl-C inside a nursery arrives wrapped in an exception group; give the
    caller the plain KeyboardInterrupt it expects."""
    try:
        yield
    except BaseExceptionGroup as group:
        interrupt, _rest = group.split(KeyboardInterrupt)
        if interrupt is not None:
            raise KeyboardInterrupt from group
        raise


def wall_now() -> float:
    return time.time()


def have_net_admin() -> bool:
    """CAP_NET_ADMIN (bit 12) in the effective set, read from /proc."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) & (1 << 12))
    except OSError:
        pass
    return os.geteuid() == 0
