"""The express lane: established connections no rule can touch, forwarded by
the middlebox's kernel instead of the proxy.

A Python loop that judges every frame tops out far below what the kernel
forwards; a bulk transfer is mostly data and pure ACK segments that no rule
cares about.  So when the rules cannot match them (no rule on ``data``,
``ack``, ``retransmit`` or every segment, no pace) and the proxy does not
log every segment (``--log-segments control`` or ``none``), an established
connection gets a tc ``u32`` filter per direction on the ingress of the
port it arrives on: segments of that 4-tuple without SYN, FIN or RST are
redirected straight out of the other port (``mirred``).  Everything else —
the handshake, FINs, RSTs, other traffic — still reaches the proxy.

How the proxy sees frames in express mode: a catch-all filter at the
lowest priority *mirrors* every frame that no express filter took to a veth
pair (``mc0x`` → ``mc0y``) that the proxy reads, so a frame is either
taken by the kernel lane or seen by the proxy — never both, never neither,
also while a connection's filters come and go.  (An AF_PACKET socket on the
port itself sees frames before tc does, express or not.)

A ``u32`` lane cannot rewrite Ethernet headers (no ``act_pedit`` here),
so it serves only connections whose frames may cross unchanged: the
middlebox's ports wear mirrored MACs — the client-side port has the
server's MAC and vice versa, as the lab builds them; the proxy checks this
per connection.  Elsewhere (a compose network) a connection's filters are
``cls_bpf`` programs that rewrite the MACs (:mod:`proxy.bpf_prog`), when
the kernel and the proxy's privileges allow them; they sit at the same
priorities and are removed the same way.  Express frames keep
their TTL.  When a FIN or RST of an express connection reaches the proxy,
it removes the connection's filters before forwarding it (a few
milliseconds), so the teardown's ACKs come back through the proxy and are
tagged and logged.

The command builders are pure; :func:`run_tc` is the only I/O.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable

MIRROR_PRIO = 65000
"""The catch-all mirror's priority: after every express filter."""
FIRST_SLOT_PRIO = 100

# TCP flags byte: SYN|FIN|RST (RFC 9293 §3.1) — never express
_CONTROL_FLAGS = 0x07

Endpoint = tuple[str, int]


def shadow_names(port: str) -> tuple[str, str]:
    """The veth pair a port's frames are mirrored through: (tx end, proxy end)."""
    return f"{port}x", f"{port}y"


def setup_commands(port: str) -> list[list[str]]:
    """Make ``port``'s shadow veth and its catch-all mirror (``ip``/``tc``
    argument lists)."""
    tx, rx = shadow_names(port)
    return [
        ["ip", "link", "add", tx, "type", "veth", "peer", "name", rx],
        ["ip", "link", "set", tx, "up"],
        ["ip", "link", "set", rx, "up"],
        ["tc", "qdisc", "add", "dev", port, "clsact"],
        [
            "tc", "filter", "add", "dev", port, "ingress", "prio", str(MIRROR_PRIO),
            "protocol", "all", "u32", "match", "u32", "0", "0",
            "action", "mirred", "egress", "mirror", "dev", tx,
        ],
    ]  # fmt: skip


def teardown_commands(port: str) -> list[list[str]]:
    tx, _ = shadow_names(port)
    return [
        ["tc", "qdisc", "del", "dev", port, "clsact"],
        ["ip", "link", "del", tx],
    ]


def _match(src: Endpoint, dst: Endpoint) -> list[str]:
    if ":" in src[0]:
        return [
            "protocol", "ipv6", "u32",
            "match", "ip6", "src", f"{src[0]}/128", "match", "ip6", "dst", f"{dst[0]}/128",
            "match", "ip6", "protocol", "6", "0xff",
            "match", "ip6", "sport", str(src[1]), "0xffff",
            "match", "ip6", "dport", str(dst[1]), "0xffff",
            # TCP flags: byte 13 of the TCP header, 40 bytes in
            "match", "u8", "0", hex(_CONTROL_FLAGS), "at", "53",
        ]  # fmt: skip
    return [
        "protocol", "ip", "u32",
        "match", "ip", "src", f"{src[0]}/32", "match", "ip", "dst", f"{dst[0]}/32",
        "match", "ip", "protocol", "6", "0xff",
        # no IP options, so the TCP header is 20 bytes in
        "match", "ip", "ihl", "0x5", "0xf",
        "match", "ip", "sport", str(src[1]), "0xffff",
        "match", "ip", "dport", str(dst[1]), "0xffff",
        "match", "u8", "0", hex(_CONTROL_FLAGS), "at", "33",
    ]  # fmt: skip


def add_commands(
    slot: int, client: Endpoint, server: Endpoint, front: str, back: str
) -> list[list[str]]:
    """Filters for one connection: client→server on ``front``, back on ``back``."""
    prio = str(FIRST_SLOT_PRIO + slot)
    redirect = ["action", "mirred", "egress", "redirect", "dev"]
    return [
        ["tc", "filter", "add", "dev", front, "ingress", "prio", prio,
         *_match(client, server), *redirect, back],
        ["tc", "filter", "add", "dev", back, "ingress", "prio", prio,
         *_match(server, client), *redirect, front],
    ]  # fmt: skip


def remove_commands(slot: int, front: str, back: str) -> list[list[str]]:
    prio = str(FIRST_SLOT_PRIO + slot)
    return [["tc", "filter", "del", "dev", dev, "ingress", "prio", prio] for dev in (front, back)]


def run_tc(commands: Iterable[list[str]], *, check: bool = True) -> None:
    """Run ``ip``/``tc`` commands in this namespace (blocking: call from a
    thread).  Raises OSError naming the command that failed."""
    for argv in commands:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if check and done.returncode != 0:
            raise OSError(f"{' '.join(argv)}: {done.stderr.strip()}")
