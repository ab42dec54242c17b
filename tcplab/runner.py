"""Run one conversation in a fresh lab and gather every component's events.

The runner builds a lab, starts the server in the server namespace and the
client in the client namespace as processes (``python -m daemons.server``,
``python -m daemons.client``), reads their JSON event lines as they come
(:mod:`tcplab.daemon_io`), parses each into a typed record
(:mod:`core.events`), and tears everything down on every exit path.  It
never imports the daemons' internals: the event lines are the interface.

Each observer is asked to read the kernel's tracepoints too
(``--trace tcplab-<lab>-<side>``); where tracefs cannot be used it says so
in its ``observer_start`` and polls alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar, cast

import trio

from core import options
from core.events import App, Record, TcpState
from core.policies import ClosePolicy
from core.rules import Rule
from core.units import format_duration
from daemons.options import ClientOptions, ServerOptions
from proxy.options import ProxyOptions
from tcplab import topology
from tcplab.causality import Placed
from tcplab.daemon_io import Daemon, Gatherer, first_of, start_daemon
from tcplab.scenario.model import Scenario
from tcplab.transcript import REORDER_WINDOW_S

R = TypeVar("R", bound=Record)

SERVER_PORT = 7007


@dataclasses.dataclass(frozen=True, slots=True)
class RunOptions:
    server_close: str = "immediate"
    client_close: str = "active"
    send: tuple[str, ...] = ("hello",)
    send_bytes: int | None = None
    """The client writes this many bytes instead of the ``send`` lines (None: the lines)."""
    count: int = 1
    concurrency: int = 1
    ipv6: bool = False
    port: int = SERVER_PORT
    client_port: int | None = None
    """Where the client connects, when not ``port`` (a closed port: refused)."""
    observe_for: float = 2.0
    """How long the daemons keep observing once their conversation is over
    (the client's TIME_WAIT alone lasts 60 s)."""
    observe_interval: float = 0.005
    farewell: str | None = None
    sysctls: Mapping[topology.Side, Mapping[str, str]] = dataclasses.field(default_factory=dict)
    deadline: float = 120.0
    idle_timeout: float | None = None
    """The server drops a connection silent this long (None: its default)."""
    connect_timeout: float | None = None
    """The client gives up connecting after this long (None: its default)."""
    reply_timeout: float | None = None
    """The client gives up on a connection's exchange after this long (None: its default)."""
    forwarding: topology.Forwarding = topology.Forwarding.PROXY
    """Who forwards in the middle: the proxy (default), or the kernel."""
    proxy: ProxyOptions = dataclasses.field(default_factory=ProxyOptions)
    """Rules, pace, segment logging, capture for the proxy; the runner fills
    in its namespace, interfaces and control socket (default
    ``/run/tcplab/<lab>.proxy.sock``)."""
    trace: bool = True
    """Ask the observers to read the kernel's tracepoints too."""
    unread: float | None = None
    """The server reads nothing and closes this long after accepting (None: it echoes)."""
    reuseaddr: bool = True
    """The server sets SO_REUSEADDR on its listener."""
    no_accept: bool = False
    """The server listens but never calls accept()."""
    backlog: int | None = None
    """The server's listen() backlog (None: the namespace's somaxconn)."""
    restart: bool = False
    """Once the server has exited, start it again (the same options) and
    stop it once it is listening: whether it can bind its port again."""
    keepalive_idle: float | None = None
    """The client turns keepalive on with this TCP_KEEPIDLE (None: off)."""
    keepalive_interval: float | None = None
    keepalive_count: int | None = None
    user_timeout: float | None = None
    """The client's TCP_USER_TIMEOUT (None: not set)."""


@dataclasses.dataclass(slots=True)
class RunResult:
    lab_id: str
    records: list[Record]
    """Every component's records as they arrived: each component's own in the
    order it logged them (:meth:`by_time` sorts)."""
    client_status: int | None
    server_status: int | None
    """The server's exit status; in a run that restarts it, the restarted server's."""
    proxy_status: int | None
    stray: list[str]
    """Lines from the daemons that were not events (tracebacks, warnings)."""
    lab: topology.Lab | None = None
    timed_out: bool = False
    """The run's deadline passed before the daemons were done."""

    def by_time(self) -> list[Record]:
        return sorted(self.records, key=lambda r: r.ts)

    def of(self, component: str, kind: type[R]) -> list[R]:
        """``component``'s records of one type, in order."""
        return [r for r in self.records if r.component == component and isinstance(r, kind)]

    def app(self, component: str, name: str) -> list[App]:
        """``component``'s ``app_*`` records of one kind (``app_close``…)."""
        return [r for r in self.of(component, App) if r.kind == name]

    def named(self, component: str, name: str) -> list[Record]:
        return [r for r in self.records if r.component == component and r.event == name]

    def states(self, component: str) -> list[tuple[str, str, str]]:
        """(old, new, source) of every tcp_state record from ``component`` that
        concerns a connection (listeners left out)."""
        return [(r.old, r.new, r.source) for r in self.of(component, TcpState) if not r.is_listener]


def daemon_argv(module: str, opts: Any) -> list[str]:
    """The command line that starts ``module`` with ``opts`` (its options
    dataclass: :mod:`daemons.options`, :mod:`proxy.options`)."""
    return [sys.executable, "-m", module, *options.to_argv(opts)]


SERVER_OBSERVE_MARGIN_S = 0.5
"""The server watches its sockets this much longer than the client does
(only when some are left): what its exit does to them — the FIN of a
connection it never closed — then comes after the client's observer has
stopped, every time, not in a race between two deadlines that begin
milliseconds apart.  The client's report is of the conversation."""


def server_options(
    opts: RunOptions, host: str, netns: str | None = None, trace: str | None = None
) -> ServerOptions:
    """The server a run asks for, listening on ``host`` (in a lab: its
    server address; in a container: any)."""
    server = ServerOptions(
        netns=netns,
        log_format="json",
        listen=(host, opts.port),
        close=ClosePolicy.parse(opts.server_close),
        max_conns=opts.count,
        observe_for=opts.observe_for + SERVER_OBSERVE_MARGIN_S,
        observe_interval=opts.observe_interval,
        farewell=opts.farewell,
        trace=trace if opts.trace else None,
        unread=opts.unread,
        reuseaddr=opts.reuseaddr,
        no_accept=opts.no_accept,
        backlog=opts.backlog,
    )
    if opts.idle_timeout is not None:
        server = dataclasses.replace(server, idle_timeout=opts.idle_timeout)
    return server


def client_options(
    opts: RunOptions, host: str, netns: str | None = None, trace: str | None = None
) -> ClientOptions:
    """The client a run asks for, connecting to ``host``."""
    client = ClientOptions(
        netns=netns,
        log_format="json",
        connect=(host, opts.client_port or opts.port),
        close=opts.client_close,
        send=opts.send,
        send_bytes=opts.send_bytes,
        count=opts.count,
        concurrency=opts.concurrency,
        observe_for=opts.observe_for,
        observe_interval=opts.observe_interval,
        trace=trace if opts.trace else None,
        keepalive_idle=opts.keepalive_idle,
        keepalive_interval=opts.keepalive_interval,
        keepalive_count=opts.keepalive_count,
        user_timeout=opts.user_timeout,
    )
    if opts.connect_timeout is not None:
        client = dataclasses.replace(client, connect_timeout=opts.connect_timeout)
    if opts.reply_timeout is not None:
        client = dataclasses.replace(client, reply_timeout=opts.reply_timeout)
    return client


def lab_server_options(lab: topology.Lab, opts: RunOptions) -> ServerOptions:
    host = lab.addr.server(opts.ipv6)
    return server_options(opts, host, lab.ns("srv"), lab.trace_instance("srv"))


def lab_client_options(lab: topology.Lab, opts: RunOptions) -> ClientOptions:
    host = lab.addr.server(opts.ipv6)
    return client_options(opts, host, lab.ns("cli"), lab.trace_instance("cli"))


def proxy_options(lab: topology.Lab, opts: RunOptions) -> ProxyOptions:
    return dataclasses.replace(
        opts.proxy,
        netns=lab.ns("mbx"),
        log_format="json",
        front=topology.FRONT_IF,
        back=topology.BACK_IF,
        control=opts.proxy.control or control_path(lab),
    )


def control_path(lab: topology.Lab) -> str:
    """Where a lab's proxy listens for control requests."""
    return str(topology.proxy_control_path(lab.lab_id))


READY_TIMEOUT_S = 15
"""How long a daemon may take to say it is ready (or to exit trying)."""


def keeps_back_syns(rules: Iterable[Rule]) -> bool:
    """Whether a rule may hold or delay a client's SYN (tag syn; retransmit when sent
    again; none: any) past its conversation: an old duplicate (RFC 793 figure 9)."""
    kept = [r for r in rules if r.action in ("delay", "hold") and r.match.from_ != "server"]
    return any(r.match.tag in (None, "syn", "retransmit") for r in kept)


class _Run:
    """One run in a lab: which daemons start, in what order, and how each is
    stopped; what they say is gathered in ``lines``."""

    def __init__(
        self,
        lab: topology.Lab,
        opts: RunOptions,
        on_event: Callable[[Placed], None] | None,
        window: float = REORDER_WINDOW_S,
    ) -> None:
        self.lab = lab
        self.opts = opts
        self.lines = Gatherer(on_event, window)
        self.server: Daemon | None = None
        self.restarted: Daemon | None = None
        self.client: Daemon | None = None
        self.proxy: Daemon | None = None

    async def run(self) -> None:
        """Proxy (when it forwards), server, client; then stop them in turn."""
        async with trio.open_nursery() as outer:
            outer.start_soon(self.lines.ticker)
            forwards = self.opts.forwarding is topology.Forwarding.PROXY
            if forwards and not await self.start_proxy(outer):
                outer.cancel_scope.cancel()
                return
            async with trio.open_nursery() as nursery:
                await self.converse(nursery)
            if self.proxy is not None:
                await self.stop_proxy(self.proxy)
            outer.cancel_scope.cancel()

    async def start_proxy(self, nursery: trio.Nursery) -> bool:
        """Start the proxy; whether it came up (rather than exiting)."""
        argv = daemon_argv("proxy", proxy_options(self.lab, self.opts))
        self.proxy = proxy = await start_daemon("proxy", argv, nursery, self.lines)
        with trio.fail_after(READY_TIMEOUT_S):
            await first_of(proxy.ready, proxy.exited)
        return proxy.ready.is_set()

    async def converse(self, nursery: trio.Nursery) -> None:
        """The server, then the client once the server is ready; return when
        both are done (the server stopped if it does not end by itself)."""
        server_opts = lab_server_options(self.lab, self.opts)
        if keeps_back_syns(self.opts.proxy.rules):  # a closed port would refuse the late SYN
            server_opts = dataclasses.replace(server_opts, max_conns=None)
        argv = daemon_argv("daemons.server", server_opts)
        self.server = server = await start_daemon("server", argv, nursery, self.lines)
        with trio.fail_after(READY_TIMEOUT_S):
            await first_of(server.ready, server.exited)
        if server.ready.is_set():
            argv = daemon_argv("daemons.client", lab_client_options(self.lab, self.opts))
            self.client = client = await start_daemon("client", argv, nursery, self.lines)
            await client.exited.wait()
            await self.stop_server(server)
        if not server.exited.is_set():
            server.proc.kill()
        if self.opts.restart and server.ready.is_set():
            await self.restart_server(nursery)

    async def restart_server(self, nursery: trio.Nursery) -> None:
        """The server again, with the same options, once the first has
        exited: it binds its port or fails (EADDRINUSE); if it comes up it
        is stopped at once.  It runs without an observer: the sockets of the
        port are the first server's, and its report of them stands."""
        first = lab_server_options(self.lab, self.opts)
        argv = daemon_argv("daemons.server", dataclasses.replace(first, observer=False, trace=None))
        self.restarted = again = await start_daemon("server", argv, nursery, self.lines)
        with trio.fail_after(READY_TIMEOUT_S):
            await first_of(again.ready, again.exited)
        if not again.exited.is_set():
            again.proc.send_signal(signal.SIGTERM)
            with trio.move_on_after(5):
                await again.exited.wait()

    async def stop_server(self, server: Daemon) -> None:
        # The server exits by itself once its sockets are gone or its
        # observe-for deadline passes; give it that long, then stop it.
        with trio.move_on_after(self.opts.observe_for + 5):
            await server.exited.wait()
        if not server.exited.is_set():
            server.proc.send_signal(signal.SIGTERM)
            with trio.move_on_after(3):
                await server.exited.wait()

    async def stop_proxy(self, proxy: Daemon) -> None:
        # the proxy logs its counters as it stops
        proxy.proc.send_signal(signal.SIGTERM)
        with trio.move_on_after(5):
            await proxy.exited.wait()

    def kill_all(self) -> None:
        """Whatever is still running, on every way out."""
        for handle in (self.client, self.server, self.restarted, self.proxy):
            if handle is not None and handle.proc.returncode is None:
                handle.proc.kill()

    def result(self) -> RunResult:
        server = self.restarted or self.server
        return RunResult(
            lab_id=self.lab.lab_id,
            lab=self.lab,
            records=self.lines.records,
            client_status=self.client.proc.returncode if self.client else None,
            server_status=server.proc.returncode if server else None,
            proxy_status=self.proxy.proc.returncode if self.proxy else None,
            stray=self.lines.stray,
        )


async def run_in_lab(
    lab: topology.Lab,
    opts: RunOptions,
    on_event: Callable[[Placed], None] | None = None,
    *,
    window: float = REORDER_WINDOW_S,
) -> RunResult:
    """Start server then client in ``lab``; return when both have exited.

    ``on_event`` gets every record as it comes, in causal order: records are
    held for a short ``window`` so one from another process with an earlier
    ``ts``, or a poll that reports a cause late, can overtake."""
    run = _Run(lab, opts, on_event, window)
    # one forwarder in the middle, never two (every segment would arrive twice)
    topology.set_forwarding(lab, opts.forwarding)
    deadline = trio.CancelScope(deadline=trio.current_time() + opts.deadline)
    try:
        with deadline:
            await run.run()
    finally:
        run.kill_all()
        run.lines.deliver(final=True)
    result = run.result()
    if deadline.cancelled_caught:
        result.timed_out = True
        # the daemons were killed: their exit statuses say nothing
        result.stray.append(
            f"runner: the run did not end within its deadline ({format_duration(opts.deadline)}); "
            "the daemons were stopped"
        )
    return result


def scenario_options(sc: Scenario, *, pace: float | None = None) -> RunOptions:
    """The run a scenario describes; ``pace``, when given, replaces the
    scenario's."""
    server, client = sc.server, sc.client
    port = int(server.get("port", SERVER_PORT))
    client_port = int(client.get("port", port))
    return RunOptions(
        server_close=str(server.get("close", "immediate")),
        client_close=str(client.get("close", "active")),
        send=tuple(client.get("send", ("hello",))),
        send_bytes=client.get("send_bytes"),
        count=int(client.get("count", 1)),
        concurrency=int(client.get("concurrency", 1)),
        ipv6=bool(client.get("ipv6", False)),
        port=port,
        client_port=client_port if client_port != port else None,
        observe_for=sc.observe_for,
        farewell=server.get("farewell"),
        # the spec allows only the sides as keys
        sysctls=cast(Mapping[topology.Side, Mapping[str, str]], sc.sysctls),
        deadline=sc.deadline,
        idle_timeout=server.get("idle_timeout"),
        connect_timeout=client.get("connect_timeout"),
        reply_timeout=client.get("reply_timeout"),
        proxy=sc.proxy_options(pace=pace),
        unread=server.get("unread"),
        reuseaddr=bool(server.get("reuseaddr", True)),
        no_accept=bool(server.get("no_accept", False)),
        backlog=server.get("backlog"),
        restart=bool(server.get("restart", False)),
        keepalive_idle=client.get("keepalive_idle"),
        keepalive_interval=client.get("keepalive_interval"),
        keepalive_count=client.get("keepalive_count"),
        user_timeout=client.get("user_timeout"),
    )


def run(
    opts: RunOptions,
    on_event: Callable[[Placed], None] | None = None,
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


def have_net_admin() -> bool:
    """CAP_NET_ADMIN (bit 12) in the effective set, read from /proc."""
    with contextlib.suppress(OSError), open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) & (1 << 12))
    return os.geteuid() == 0
