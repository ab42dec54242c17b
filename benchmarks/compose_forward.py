"""The compose stack's bulk throughput through the proxy container, against
the same containers with kernel forwarding, in the same run.

Run as root from the repository root, with Docker and Compose v2::

    BASE_IMAGE=local/python-base COMPOSE_BAKE=false \\
        .venv/bin/python benchmarks/compose_forward.py [--rounds 3] [--megabytes 100]

It brings up ``compose.yaml`` as its own project (``tcplab-bench``) with the
client container idle (``sleep``: no tour runs, so the transfer is the only
traffic; its route through the proxy is set as its role would set it), and
alternates, ``--rounds`` times:

- **proxy**: the proxy service as compose.yaml has it (``tcplab role
  proxy``, ``LOG_SEGMENTS`` as given, default ``control``);
- **kernel**: the same proxy container recreated with ``ip_forward=1`` and
  no proxy process: the kernel routes between the two networks.

Each measurement is one TCP connection from the client container to a sink
in the server container: ``--megabytes`` written with ``sendall``, timed by
the sink from its first byte to EOF.  Printed: each round, the medians, the
ratio proxy ÷ kernel, and which lane the proxy's bytes took — the express
lane (its ``express_connections`` counter grew) or every frame through
Python (with the reason the proxy logged for having no express lane).
The stack is taken down at the end (``down -v``), whatever happens.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "tcplab-bench"
SINK_PORT = 9000
SERVER = "198.51.100.10"

IDLE_CLIENT = """
services:
  client:
    entrypoint: ["sleep"]
    command: ["infinity"]
"""
KERNEL_PROXY = """
services:
  proxy:
    entrypoint: ["sleep"]
    command: ["infinity"]
    sysctls:
      net.ipv4.ip_forward: "1"
      net.ipv4.conf.all.send_redirects: "0"
    healthcheck:
      disable: true
"""

SINK = f"""
import socket, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", {SINK_PORT}))
s.listen(1)
print("listening", flush=True)
c, _ = s.accept()
buf = bytearray(1 << 20)
n, first = 0, None
while True:
    k = c.recv_into(buf)
    if first is None:
        first = time.perf_counter()
    if not k:
        break
    n += k
print(n, time.perf_counter() - first, flush=True)
"""

SEND = f"""
import socket, sys
data = b"x" * (1 << 20)
s = socket.create_connection(("{SERVER}", {SINK_PORT}), timeout=60)
for _ in range(int(sys.argv[1])):
    s.sendall(data)
s.shutdown(socket.SHUT_WR)
s.recv(1)
"""

REACH = f"""
import socket
socket.create_connection(("{SERVER}", 7007), timeout=1).close()
"""

PREPARE_CLIENT = (
    "from tcplab import roles; "
    "roles.prepare_endpoint(roles.CLIENT_SUBNET, roles.SERVER_SUBNET, roles.PROXY_FRONT)"
)


class Stack:
    """``docker compose`` on the benchmark's project, with override files."""

    def __init__(self, files: list[Path], env: dict[str, str]) -> None:
        self.files = files
        self.env = env

    def argv(self, *args: str, kernel: bool = False) -> list[str]:
        files = ["-f", str(ROOT / "compose.yaml")]
        for path in self.files[: 2 if kernel else 1]:
            files += ["-f", str(path)]
        return ["docker", "compose", "-p", PROJECT, *files, *args]

    def run(self, *args: str, kernel: bool = False, timeout: float = 600) -> str:
        done = subprocess.run(
            self.argv(*args, kernel=kernel),
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"docker compose {' '.join(args)}: {done.stderr.strip()[-2000:]}")
        return done.stdout

    def python(self, service: str, code: str, *argv: str) -> str:
        return self.run("exec", "-T", service, "python3", "-c", code, *argv)


def bulk(stack: Stack, megabytes: int) -> float:
    """Bits per second, client container to server container."""
    sink = subprocess.Popen(
        stack.argv("exec", "-T", "server", "python3", "-c", SINK),
        cwd=ROOT,
        env=stack.env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert sink.stdout is not None
        if sink.stdout.readline().strip() != "listening":
            raise RuntimeError("the sink in the server container did not start")
        stack.python("client", SEND, str(megabytes))
        received, seconds = sink.stdout.readline().split()
        sink.wait(60)
    finally:
        if sink.poll() is None:
            sink.kill()
            sink.wait()
    if int(received) != megabytes << 20:
        raise RuntimeError(f"the sink got {received} bytes of {megabytes << 20}")
    return int(received) * 8 / float(seconds)


def counters(stack: Stack) -> dict[str, int]:
    """The proxy's counters (``tcplab proxy rules``)."""
    out = stack.run("exec", "-T", "proxy", "tcplab", "proxy", "rules")
    for line in out.splitlines():
        if line.startswith("counters:"):
            pairs = [p.strip().split("=") for p in line.removeprefix("counters:").split(",")]
            return {k: int(v) for k, v in pairs if k}
    return {}


def no_lane_reason(stack: Stack) -> str | None:
    """Why the proxy runs without its express lane, as it logged it."""
    for line in stack.run("logs", "--no-log-prefix", "proxy").splitlines():
        if '"express_unavailable"' in line:
            try:
                return str(json.loads(line).get("reason"))
            except ValueError:
                return line
    return None


def use(stack: Stack, mode: str) -> None:
    """Recreate the proxy container as ``mode`` (proxy or kernel) and wait
    until it forwards."""
    kernel = mode == "kernel"
    wait = [] if kernel else ["--wait"]  # the kernel's proxy has no healthcheck
    stack.run("up", "-d", "--no-deps", "--force-recreate", *wait, "proxy", kernel=kernel)
    deadline = time.monotonic() + 60
    while True:  # the endpoints' neighbour entries point at the old container
        try:
            stack.python("client", REACH)
            return
        except (RuntimeError, subprocess.TimeoutExpired):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--megabytes", type=int, default=100)
    args = parser.parse_args()
    env = {**os.environ, "COMPOSE_BAKE": os.environ.get("COMPOSE_BAKE", "false")}
    env.setdefault("LOG_SEGMENTS", "control")
    with tempfile.TemporaryDirectory(prefix="compose-forward-") as tmp:
        files = [Path(tmp) / "idle-client.yaml", Path(tmp) / "kernel-proxy.yaml"]
        files[0].write_text(IDLE_CLIENT)
        files[1].write_text(KERNEL_PROXY)
        stack = Stack(files, env)
        print(f"LOG_SEGMENTS={env['LOG_SEGMENTS']}; load average {load()}", flush=True)
        try:
            stack.run("up", "-d", "--build", "--wait", "server", "proxy", "client", timeout=1200)
            stack.python("client", PREPARE_CLIENT)
            return measure(stack, args)
        finally:
            stack.run("down", "-v", "--remove-orphans", timeout=300)


def measure(stack: Stack, args: argparse.Namespace) -> int:
    tput: dict[str, list[float]] = {"proxy": [], "kernel": []}
    lanes: list[int] = []
    for i in range(args.rounds):
        line = []
        for mode in ("proxy", "kernel"):
            use(stack, mode)
            before = counters(stack) if mode == "proxy" else {}
            tput[mode].append(bulk(stack, args.megabytes))
            if mode == "proxy":
                after = counters(stack)
                lanes.append(
                    after.get("express_connections", 0) - before.get("express_connections", 0)
                )
            line.append(f"{mode} {tput[mode][-1] / 1e9:.2f} Gbit/s")
        print(f"round {i + 1}: " + " | ".join(line), flush=True)
    use(stack, "proxy")
    reason = no_lane_reason(stack)
    ratios = [p / k for p, k in zip(tput["proxy"], tput["kernel"], strict=True)]
    if all(lanes):
        lane = "the express lane (the proxy container's kernel forwarded the data)"
    else:
        lane = "every frame through Python" + (f" (no express lane: {reason})" if reason else "")
    print()
    print(f"{args.rounds} alternating rounds, {args.megabytes} MB each; medians; load {load()}")
    print(
        f"compose bulk: proxy {statistics.median(tput['proxy']) / 1e9:.2f} Gbit/s vs kernel "
        f"forwarding {statistics.median(tput['kernel']) / 1e9:.2f} Gbit/s, "
        f"ratio {statistics.median(ratios):.2f}; lane: {lane}"
    )
    return 0


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


if __name__ == "__main__":
    sys.exit(main())
