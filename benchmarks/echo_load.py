"""5,000 clients at once against the echo server: tcplab's server with its
observer, the same without it, and a minimal echo server, side by side.

Run as root from the repository root::

    .venv/bin/python benchmarks/echo_load.py [--conns 5000] [--rounds 3]

It builds one lab with kernel forwarding (the middlebox is not what is
measured), then alternates, ``--rounds`` times, the servers below, each
started afresh in the server namespace and loaded by the same generator:

- ``default``: ``python -m daemons.server`` with its default options — the
  observer on (sock_diag polling and exact lookups), JSON event lines to a
  file;
- ``trace``: the same with ``--trace`` (the tracepoint source too, as
  ``tcplab run`` starts it);
- ``no-observer``: the same with ``--no-observer`` (JSON event lines still);
- ``minimal``: a minimal asyncio echo server in this file — no observer,
  no logging — listening with the same backlog.

The load generator is a process in the client namespace (this file,
``--role load``; asyncio and plain sockets, not the project's client).  It
opens ``--conns`` connections at once (RLIMIT_NOFILE raised), each sends one
line and reads the echo; then every fifth closes with SO_LINGER 0 (RST) and
the rest close normally.  Per connection it records the outcome (the errno
name of a failure; one not done within ``--timeout``, 10 s as the project's
client allows, is ETIMEDOUT), connect time and echo latency.

Reported per server (medians over the rounds; failures summed; latency
percentiles over every round's connections):

- failed connections (target: 0 at default options);
- the rate: completed conversations per second, from the first connect to
  the last echo (target: observer on ≥ 0.8 × observer off);
- total time: first connect to last close (target: ≤ 2 × minimal);
- connect and echo latency p50/p99;
- the server's RSS when ready and after the load (and its peak), and the
  CPU time it used (user + system, the kernel's work for its sockets too);
- for tcplab's server, from its own log: the accept rate (accepts per
  second between its first and last ``app_accept``), and the ``tcp_state``
  records against the expected — each completed connection's server socket
  goes CLOSED → SYN_RECV → ESTABLISHED → CLOSE_WAIT → LAST_ACK → CLOSED
  (5 transitions), or → ESTABLISHED → CLOSED for one the client reset (3);
  ``complete`` counts connections whose reported path is exactly that.

Everything is cleaned up: the servers are killed in ``finally``, the lab is
removed by its context manager.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import os
import resource
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PORT = 7007
LINE = b"hello from the load generator\n"
MODES = ("default", "trace", "no-observer", "minimal")
EXPECTED_NORMAL = ["CLOSED", "SYN_RECV", "ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"]
EXPECTED_RESET = ["CLOSED", "SYN_RECV", "ESTABLISHED", "CLOSED"]


# --- helpers that run in the child processes -------------------------------------


def raise_nofile(needed: int) -> None:
    """At least ``needed`` descriptors (root may raise the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
            return
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))


def enter(ns: str | None) -> None:
    if ns:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from core import netns

        netns.enter(ns)


def errname(exc: BaseException) -> str:
    code = getattr(exc, "errno", None)
    if isinstance(code, int) and code in errno.errorcode:
        return errno.errorcode[code]
    if isinstance(exc, TimeoutError):
        return "ETIMEDOUT"
    return type(exc).__name__


async def load(
    host: str, port: int, conns: int, rst_every: int, limit_s: float, hold: bool
) -> dict[str, Any]:
    """``conns`` conversations at once; one result per connection."""
    loop = asyncio.get_running_loop()
    results: list[dict[str, Any]] = []
    echoed = asyncio.Event()
    pending = conns
    open_now = 0
    peak = 0
    family = socket.AF_INET6 if ":" in host else socket.AF_INET

    def one_done() -> None:
        nonlocal pending
        pending -= 1
        if pending == 0:
            echoed.set()

    async def one(number: int) -> None:
        nonlocal open_now, peak
        rst = rst_every > 0 and number % rst_every == rst_every - 1
        rec: dict[str, Any] = {"rst": rst, "ok": False}
        results.append(rec)
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        counted = False
        started = time.perf_counter()
        rec["start"] = time.time()
        try:
            async with asyncio.timeout(limit_s):
                try:
                    await loop.sock_connect(sock, (host, port))
                finally:
                    with contextlib.suppress(OSError):
                        rec["port"] = sock.getsockname()[1]
                connected = time.perf_counter()
                rec["connect_ms"] = (connected - started) * 1000
                open_now += 1
                counted = True
                peak = max(peak, open_now)
                await loop.sock_sendall(sock, LINE)
                got = b""
                while not got.endswith(b"\n"):
                    data = await loop.sock_recv(sock, 4096)
                    if not data:
                        raise ConnectionError(errno.ECONNABORTED, "EOF before the echo")
                    got += data
                rec["echo_ms"] = (time.perf_counter() - connected) * 1000
                rec["echoed"] = time.time()
                if got != LINE:
                    rec["error"] = "MISMATCH"
                else:
                    rec["ok"] = True
                one_done()
                if hold:
                    await echoed.wait()
        except TimeoutError:
            rec["error"] = "ETIMEDOUT"
        except OSError as exc:
            rec["error"] = errname(exc)
        finally:
            if "echoed" not in rec:
                one_done()
            if rst:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
            rec["closed"] = time.time()
            if counted:
                open_now -= 1

    t0 = time.time()
    await asyncio.gather(*(one(n) for n in range(conns)))
    return {"started": t0, "ended": time.time(), "peak_open": peak, "conns": results}


async def minimal_server(host: str, port: int, backlog: int) -> None:
    """The reference: an asyncio echo server, no observer, no logging."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                writer.write(line)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, port, backlog=backlog, reuse_address=True)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def child_main(args: argparse.Namespace) -> int:
    enter(args.netns)
    host, _, port = args.address.rpartition(":")
    host = host.strip("[]")
    if args.role == "load":
        raise_nofile(args.conns + 256)
        out = asyncio.run(
            load(host, int(port), args.conns, args.rst_every, args.timeout, args.hold)
        )
        json.dump(out, sys.stdout)
        return 0
    raise_nofile(args.conns + 256)
    # a quiet exit on SIGTERM
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    asyncio.run(minimal_server(host, int(port), args.backlog))
    return 0


# --- the benchmark proper ------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of ``pid`` in KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields.get("VmRSS", 0), fields.get("VmHWM", 0)


def cpu_s(pid: int) -> float:
    """User + system CPU time ``pid`` has used, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def started(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A server process with its output in ``log``; killed on the way out."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def wait_ready(proc: subprocess.Popen[bytes], log: Path, marker: bytes, limit: float = 20) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if marker in log.read_bytes():
            return
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}): {log.read_text()[-2000:]}")
        time.sleep(0.02)
    raise RuntimeError(f"server not ready within {limit} s: {log.read_text()[-2000:]}")


def settle(log: Path, quiet_s: float = 1.0, limit: float = 30.0) -> None:
    """Wait until the server's log stops growing (its observer has reported
    the teardowns) for ``quiet_s``."""
    deadline = time.monotonic() + limit
    size, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now = log.stat().st_size
        if now != size:
            size, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        time.sleep(0.1)


def server_argv(mode: str, ns: str, address: str, backlog: int, trace: str) -> list[str]:
    me = str(Path(__file__).resolve())
    if mode == "minimal":
        return [sys.executable, me, "--role", "minimal", "--netns", ns, "--address", address,
                "--backlog", str(backlog)]  # fmt: skip
    from core import options
    from daemons.options import ServerOptions, endpoint

    server = ServerOptions(
        netns=ns,
        listen=endpoint(address),
        trace=trace if mode == "trace" else None,
        observer=mode != "no-observer",
    )
    return [sys.executable, "-m", "daemons.server", *options.to_argv(server)]


def analyse_log(log: Path, conns: list[dict[str, Any]], client: str, server: str) -> dict[str, Any]:
    """The server's own account: accept rate and tcp_state records."""
    from core import events
    from tcplab import connview

    records = [r for r in map(events.parse_record, log.read_bytes().splitlines()) if r]
    accepts = [r.ts for r in records if isinstance(r, events.App) and r.kind == "app_accept"]
    states = [r for r in records if isinstance(r, events.TcpState) and not r.is_listener]
    paths = {p.conn: p for p in connview.paths(records, "server")}
    expected = got = complete = 0
    for rec in conns:
        if not rec["ok"] or "port" not in rec:
            continue
        want = EXPECTED_RESET if rec["rst"] else EXPECTED_NORMAL
        expected += len(want) - 1
        path = paths.get(events.conn_id(client, rec["port"], server, PORT))
        if path is None:
            continue
        got += len(path.states) - 1
        complete += path.states == want
    stops = [r for r in records if isinstance(r, events.ObserverStop)]
    span = max(accepts) - min(accepts) if len(accepts) > 1 else float("nan")
    return {
        "accepts": len(accepts),
        "accept_rate": (len(accepts) - 1) / span if span == span and span > 0 else float("nan"),
        "tcp_state_records": len(states),
        "transitions": got,
        "expected": expected,
        "complete": complete,
        "log_messages": sum(1 for r in records if isinstance(r, events.LogMessage)),
        "polls": stops[0].polls if stops else None,
        "lookups": stops[0].lookups if stops else None,
        "trace_lost": stops[0].trace_lost if stops else None,
    }


def one_round(
    lab: Any, mode: str, args: argparse.Namespace, backlog: int, workdir: Path
) -> dict[str, Any]:
    address = f"{lab.addr.server4}:{PORT}"
    log = workdir / f"{mode}.log"
    argv = server_argv(mode, lab.ns("srv"), address, backlog, lab.trace_instance("srv"))
    marker = b"ready" if mode == "minimal" else b'"daemon_ready"'
    me = str(Path(__file__).resolve())
    with started(argv, log) as proc:
        wait_ready(proc, log, marker)
        time.sleep(0.2)  # the observer's first polls, the interpreter warm
        rss_before, _ = rss_kib(proc.pid)
        cpu_before = cpu_s(proc.pid)
        loader = subprocess.run(
            [sys.executable, me, "--role", "load", "--netns", lab.ns("cli"), "--address",
             address, "--conns", str(args.conns), "--rst-every", str(args.rst_every),
             "--timeout", str(args.timeout), *(["--hold"] if args.hold else [])],
            capture_output=True, check=False, timeout=args.timeout * 3 + 60,
        )  # fmt: skip
        if loader.returncode != 0:
            raise RuntimeError(f"load generator failed: {loader.stderr.decode()[-3000:]}")
        out = json.loads(loader.stdout)
        if mode != "minimal":
            settle(log)
        rss_after, rss_peak = rss_kib(proc.pid)
        cpu = cpu_s(proc.pid) - cpu_before
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    conns = out["conns"]
    ok = [c for c in conns if c["ok"]]
    failed: dict[str, int] = {}
    for c in conns:
        if not c["ok"]:
            failed[c.get("error", "?")] = failed.get(c.get("error", "?"), 0) + 1
    last_echo = max((c["echoed"] for c in ok), default=out["ended"])
    result: dict[str, Any] = {
        "mode": mode,
        "ok": len(ok),
        "failed": sum(failed.values()),
        "errors": failed,
        "total_s": max(c["closed"] for c in conns) - out["started"],
        "rate": len(ok) / (last_echo - out["started"]) if ok else 0.0,
        "connect_ms": [c["connect_ms"] for c in conns if "connect_ms" in c],
        "echo_ms": [c["echo_ms"] for c in ok],
        "rss_before": rss_before,
        "rss_after": rss_after,
        "rss_peak": rss_peak,
        "peak_open": out["peak_open"],
        "cpu_s": cpu,
        "exit": proc.returncode,
    }
    if mode != "minimal":
        result.update(analyse_log(log, conns, lab.addr.client4, lab.addr.server4))
    log.unlink()
    return result


def describe(r: dict[str, Any]) -> str:
    text = (
        f"{r['mode']:<12} ok {r['ok']:>5} failed {r['failed']:>4} "
        f"total {r['total_s']:6.2f} s  rate {r['rate']:7.0f}/s  cpu {r['cpu_s']:5.2f} s  "
        f"echo p50 {percentile(r['echo_ms'], 0.5):7.1f} "
        f"p99 {percentile(r['echo_ms'], 0.99):7.1f} ms"
        f"  RSS {r['rss_before'] / 1024:5.1f} → {r['rss_after'] / 1024:5.1f} MiB"
    )
    if r["errors"]:
        text += f"  errors {r['errors']}"
    if "expected" in r:
        text += f"  tcp_state {r['transitions']}/{r['expected']} complete {r['complete']}"
    if r.get("polls") is not None:
        text += f"  polls {r['polls']} lookups {r['lookups']}"
        if r.get("trace_lost"):
            text += f" trace_lost {r['trace_lost']}"
    return text


def table(results: dict[str, list[dict[str, Any]]]) -> None:
    med = statistics.median
    head = (
        f"{'server':<12} {'failed':>6} {'total s':>8} {'conv/s':>7} {'accept/s':>8} {'cpu s':>6} "
        f"{'conn p50':>8} {'p99':>7} {'echo p50':>8} {'p99':>7} "
        f"{'RSS ready':>9} {'after':>6} {'peak':>6}  {'tcp_state got/expected':>22} {'complete':>9}"
    )
    print(head)
    for mode, rs in results.items():
        if not rs:
            continue
        connect = [x for r in rs for x in r["connect_ms"]]
        echo = [x for r in rs for x in r["echo_ms"]]
        if "expected" in rs[0]:
            got = sum(r["transitions"] for r in rs)
            want = sum(r["expected"] for r in rs)
            states = f"{got}/{want}"
            complete = f"{sum(r['complete'] for r in rs)}/{sum(r['ok'] for r in rs)}"
            accept = f"{med(r['accept_rate'] for r in rs):8.0f}"
        else:
            states, complete, accept = "-", "-", f"{'-':>8}"
        print(
            f"{mode:<12} {sum(r['failed'] for r in rs):>6} {med(r['total_s'] for r in rs):8.2f} "
            f"{med(r['rate'] for r in rs):7.0f} {accept} {med(r['cpu_s'] for r in rs):6.2f} "
            f"{percentile(connect, 0.5):6.1f}ms {percentile(connect, 0.99):5.0f}ms "
            f"{percentile(echo, 0.5):6.1f}ms {percentile(echo, 0.99):5.0f}ms "
            f"{med(r['rss_before'] for r in rs) / 1024:7.1f}Mi "
            f"{med(r['rss_after'] for r in rs) / 1024:4.0f}Mi "
            f"{med(r['rss_peak'] for r in rs) / 1024:4.0f}Mi  {states:>22} {complete:>9}"
        )  # fmt: skip


def ratios(results: dict[str, list[dict[str, Any]]]) -> None:
    med = statistics.median

    def paired(a: str, b: str, key: str) -> list[float]:
        return [
            x[key] / y[key]
            for x, y in zip(results.get(a, []), results.get(b, []), strict=False)
            if y[key]
        ]

    failed = sum(r["failed"] for r in results.get("default", []))
    print(f"failed connections at default options: {failed} (target 0)")
    print("ratios: the median of each round's ratio, [the ratio of the medians]")
    for mode in ("default", "trace"):
        if results.get(mode) and results.get("no-observer"):
            rate = paired(mode, "no-observer", "rate")
            acc = paired(mode, "no-observer", "accept_rate")
            mine = med(r["rate"] for r in results[mode])
            off = med(r["rate"] for r in results["no-observer"])
            acc_mine = med(r["accept_rate"] for r in results[mode])
            acc_off = med(r["accept_rate"] for r in results["no-observer"])
            print(
                f"{mode}: rate {mine:.0f}/s vs observer off {off:.0f}/s, ratio {med(rate):.2f} "
                f"[{mine / off:.2f}]; the server's accept rate {acc_mine:.0f}/s vs "
                f"{acc_off:.0f}/s, ratio {med(acc):.2f} [{acc_mine / acc_off:.2f}] "
                f"(target >= 0.8)"
            )
        if results.get(mode) and results.get("minimal"):
            total = paired(mode, "minimal", "total_s")
            mine = med(r["total_s"] for r in results[mode])
            minimal = med(r["total_s"] for r in results["minimal"])
            print(
                f"{mode}: total {mine:.2f} s vs minimal {minimal:.2f} s, ratio {med(total):.2f} "
                f"[{mine / minimal:.2f}] (target <= 2.0)"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--conns", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--rst-every", type=int, default=5, help="every Nth closes with RST (5: 20%%)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        help="seconds a conversation may take, connect to echo (default 10, as the "
        "project's client: --connect-timeout and --reply-timeout)",
    )
    parser.add_argument(
        "--hold", action="store_true", help="each connection stays open until all have echoed"
    )
    parser.add_argument("--modes", default=",".join(MODES), help=f"of {','.join(MODES)}")
    parser.add_argument("--json", metavar="FILE", help="also write every round's figures here")
    # the child processes
    parser.add_argument("--role", choices=["load", "minimal"], help=argparse.SUPPRESS)
    parser.add_argument("--netns", help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    parser.add_argument("--backlog", type=int, default=4096, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        return child_main(args)
    if os.geteuid() != 0:
        print("needs root (it builds a lab)", file=sys.stderr)
        return 1
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if unknown := set(modes) - set(MODES):
        parser.error(f"unknown modes: {sorted(unknown)}")

    from core import tracefs
    from tcplab import topology

    if "trace" in modes and tracefs.unavailable_reason() is not None:
        print(f"no tracefs ({tracefs.unavailable_reason()}): mode trace left out")
        modes.remove("trace")
    spec = topology.LabSpec(
        forwarding=topology.Forwarding.KERNEL,
        sysctls={
            # the client's TIME_WAIT of earlier rounds must not run it out of ports
            "cli": {"net.ipv4.ip_local_port_range": "1024 65000", "net.ipv4.tcp_tw_reuse": "1"}
        },
    )
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    with topology.lab(spec) as lab, tempfile.TemporaryDirectory() as tmp:
        backlog = int(topology.read_sysctl(lab.ns("srv"), "net.core.somaxconn"))
        print(
            f"lab {lab.lab_id} (kernel forwarding); {args.conns} connections at once, "
            f"1 in {args.rst_every} closed with RST; {args.rounds} alternating rounds; "
            f"server namespace somaxconn {backlog} (the minimal server's backlog)",
            flush=True,
        )
        for i in range(args.rounds):
            for mode in modes:
                r = one_round(lab, mode, args, backlog, Path(tmp))
                results[mode].append(r)
                print(f"round {i + 1}: {describe(r)}", flush=True)
    print()
    table(results)
    print()
    ratios(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
