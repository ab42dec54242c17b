"""One lab side per container: ``tcplab role server|proxy|client``.

In ``compose.yaml`` each container is one namespace of the lab: the same
picture as the local lab, with Docker's networks as the two links.  A role
prepares its container the way :mod:`tcplab.topology` prepares a namespace —
finds its interface by subnet (Docker names them eth0, eth1 in whatever
order), turns TX checksum offload, TSO and GSO off on the endpoints, routes
the other subnet through the middlebox — and then runs the daemon of that
side with the options of a scenario (``SCENARIO``, default ``tour``):

- ``server``: ``python -m daemons.server``, serving forever with the
  scenario's server policy;
- ``proxy``: ``python -m proxy`` with the scenario's rules and a control
  socket the client (and an instructor, ``docker compose exec proxy tcplab
  proxy …``) can reach;
- ``client``: loops: for each scenario of the tour, puts its rules into the
  proxy through the control socket, runs ``python -m daemons.client`` with
  its options, pauses, and again.

Every daemon logs its JSON event lines on stdout, so ``docker compose logs``
reads as the story.  The role runs each daemon as its child and relays those
lines (:class:`Relay`): to its own stdout, unchanged, and to the board
container through the Unix socket that ``TCPLAB_BOARD_SOCKET`` names on the
shared volume (:mod:`core.recordsink`; unset: stdout only).  Sending to the
board never blocks or fails the lab.  A signal to the role (``docker compose
stop``) is passed on to the daemon running, whose last lines are still
relayed.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import signal
import subprocess
import sys
import time
from types import FrameType
from typing import IO, Any

from core.proc import child_env
from core.recordsink import RecordSink
from core.units import format_duration
from proxy.options import LOG_SEGMENT_MODES, LogSegments, ProxyOptions
from tcplab import runner
from tcplab import scenario as scenariomod

CLIENT_SUBNET = "192.0.2.0/24"
SERVER_SUBNET = "198.51.100.0/24"
PROXY_FRONT = "192.0.2.254"
PROXY_BACK = "198.51.100.254"
SERVER_ADDR = "198.51.100.10"
PORT = 7007
CONTROL = "/run/tcplab/proxy.sock"
TOUR = ("handshake-and-teardown", "lost-fin")
"""The default tour: one textbook connection, one with a lost FIN (both use
the same server policy, so one server serves them)."""


def interface_in(subnet: str) -> str:
    """The name of this container's interface with an address in ``subnet``."""
    from pyroute2 import IPRoute

    network = ipaddress.ip_network(subnet)
    with IPRoute() as ip:
        for msg in ip.get_addr():
            address = msg.get_attr("IFA_ADDRESS")
            if address and ipaddress.ip_address(address) in network:
                found: str = ip.get_links(msg["index"])[0].get_attr("IFLA_IFNAME")
                return found
    raise RuntimeError(f"no interface with an address in {subnet}")


def prepare_endpoint(own_subnet: str, other_subnet: str, via: str) -> str:
    """Offloads off, route to the other side through the middlebox."""
    from pyroute2 import IPRoute

    from tcplab import topology

    ifname = interface_in(own_subnet)
    topology.offloads_off(None, ifname)
    with IPRoute() as ip:
        index = ip.link_lookup(ifname=ifname)[0]
        ip.route("replace", dst=other_subnet, gateway=via, oif=index)
    return ifname


def log_segments(value: str) -> LogSegments:
    """The proxy's ``--log-segments`` from ``LOG_SEGMENTS`` (compose.yaml):
    ``control`` unless told otherwise — the handshake, teardown, resets,
    retransmits and every segment a rule touches are logged, the rest
    counted, and established connections no rule needs may take the
    express lane; ``all`` logs every data segment too, at a cost."""
    value = value.strip() or "control"
    if value not in LOG_SEGMENT_MODES:
        raise ValueError(f"LOG_SEGMENTS={value!r}: expected one of {', '.join(LOG_SEGMENT_MODES)}")
    return value


def scenarios(names: str) -> list[scenariomod.Scenario]:
    wanted = TOUR if names in ("", "tour") else tuple(n.strip() for n in names.split(","))
    return [scenariomod.load(scenariomod.find(name)) for name in wanted]


def server_argv(sc: scenariomod.Scenario) -> list[str]:
    """The server for a whole tour: the first scenario's policy, on every
    address, serving every connection (no count), observing as it goes."""
    opts = runner.scenario_options(sc)
    server = runner.server_options(opts, "0.0.0.0")
    server = dataclasses.replace(server, max_conns=None, observe_for=None)
    return runner.daemon_argv("daemons.server", server)


def client_argv(sc: scenariomod.Scenario, server: str) -> list[str]:
    opts = runner.scenario_options(sc)
    return runner.daemon_argv("daemons.client", runner.client_options(opts, server))


def rule_tables(sc: scenariomod.Scenario) -> list[dict[str, Any]]:
    """The scenario's rules as control-API tables, named ``<scenario>/<n>`` so
    the client can later remove exactly these (and leave an instructor's)."""
    out = []
    for i, rule in enumerate(sc.rules, 1):
        table: dict[str, Any] = {"action": rule.action, "name": f"{sc.name}/{i}"}
        if rule.match.tag is not None:
            table["tag"] = rule.match.tag
        if rule.match.from_ is not None:
            table["from"] = rule.match.from_
        if rule.match.nth is not None:
            table["nth"] = sorted(rule.match.nth)
        if rule.match.conn is not None:
            table["conn"] = rule.match.conn
        if rule.delay is not None:
            table["delay"] = format_duration(rule.delay)
        out.append(table)
    return out


def apply_rules(sc: scenariomod.Scenario, path: str, previous: scenariomod.Scenario | None) -> None:
    """Swap the previous scenario's rules in the proxy for this one's
    (through its control socket); rules added by hand stay."""
    from core import control

    if previous is not None:
        for table in rule_tables(previous):
            control.request(path, {"op": "rm", "name": table["name"]})
    for table in rule_tables(sc):
        answer = control.request(path, {"op": "add", "table": table})
        if not answer.get("ok"):
            raise RuntimeError(f"proxy refused a rule of {sc.name}: {answer.get('error')}")
    pace = format_duration(sc.pace) if sc.pace else None
    control.request(path, {"op": "pace", "value": pace})


class Relay:
    """Runs the role's daemons, one at a time, each line of their stdout
    copied to ``out`` as it comes and, when complete, sent to ``sink``.

    The daemon's stderr (tracebacks, warnings) is left to go straight to the
    container's log; only stdout carries event lines.
    """

    def __init__(self, sink: RecordSink, out: IO[bytes] | None = None) -> None:
        self.sink = sink
        self.out = sys.stdout.buffer if out is None else out
        self.child: subprocess.Popen[bytes] | None = None
        self.stopping: int | None = None
        """The signal that asked the role to stop, once one has."""

    def install_signals(self) -> None:
        """Pass SIGTERM, SIGINT and SIGHUP on to the running daemon (the
        container's init sends them to this process only)."""
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.stopping = signum
        child = self.child
        if child is None or child.returncode is not None:
            raise SystemExit(128 + signum)  # between daemons: nothing to wait for
        try:
            child.send_signal(signum)  # it ends; run() relays its last lines
        except ProcessLookupError:
            pass

    def run(self, argv: list[str]) -> int:
        """Run ``argv`` to its end, relaying its stdout; its exit status
        (128 + N when killed by signal N, as a shell reports it)."""
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            env=child_env(),  # the daemon ends with this process, whatever kills it
        )
        self.child = proc
        try:
            assert proc.stdout is not None
            with proc.stdout:
                for raw in iter(proc.stdout.readline, b""):
                    self.line(raw)
            code = proc.wait()
        finally:
            self.child = None
        return 128 - code if code < 0 else code

    def line(self, raw: bytes) -> None:
        """One line to stdout, as it is, and to the board if it is whole (a
        last line cut short by the daemon's end is not a record)."""
        self.out.write(raw)
        self.out.flush()
        if raw.endswith(b"\n") and raw.strip():
            self.sink.send(raw)


def run_role(role: str, names: str, pause: float, once: bool) -> int:
    """Prepare this container for ``role`` and run its daemon(s)."""
    tour = scenarios(names)
    first = tour[0]
    if role not in ("server", "proxy", "client"):
        raise ValueError(f"unknown role {role!r} (server, proxy, client)")
    # checked before the container is touched
    segments = log_segments(os.environ.get("LOG_SEGMENTS", "")) if role == "proxy" else "control"
    with RecordSink.from_env() as sink:
        relay = Relay(sink)
        relay.install_signals()
        if role == "server":
            prepare_endpoint(SERVER_SUBNET, CLIENT_SUBNET, PROXY_BACK)
            return relay.run(server_argv(first))
        if role == "proxy":
            front = interface_in(CLIENT_SUBNET)
            back = interface_in(SERVER_SUBNET)
            os.makedirs(os.path.dirname(CONTROL), exist_ok=True)
            # the client puts each scenario's rules in through the control socket
            proxy = ProxyOptions(
                log_format="json",
                front=front,
                back=back,
                control=CONTROL,
                log_segments=segments,
            )
            return relay.run(runner.daemon_argv("proxy", proxy))
        prepare_endpoint(CLIENT_SUBNET, SERVER_SUBNET, PROXY_FRONT)
        server = os.environ.get("TCPLAB_SERVER", SERVER_ADDR)
        previous: scenariomod.Scenario | None = None
        while True:
            for sc in tour:
                if os.path.exists(CONTROL) and (previous is None or previous is not sc):
                    apply_rules(sc, CONTROL, previous)
                    previous = sc
                relay.line(announcement(sc))
                relay.run(client_argv(sc, server))
                if relay.stopping is not None:
                    return 128 + relay.stopping
                if once and sc is tour[-1]:
                    return 0
                time.sleep(pause)


def announcement(sc: scenariomod.Scenario) -> bytes:
    """One JSON line announcing the scenario, so the logs read as chapters."""
    import json

    from core import events

    record = events.ScenarioStart(
        ts=time.time(), component="client", scenario=sc.name, title=sc.title
    )
    return (json.dumps(events.to_fields(record), ensure_ascii=False) + "\n").encode()
