"""The kernel's TCP counters in one network namespace, as ``nstat`` names
them (``TcpExtListenOverflows``), and what a run moved (pure, but for
:func:`read`).

``/proc/net/netstat`` and ``/proc/net/snmp`` hold pairs of lines, a header
and its values, per group (``TcpExt:``, ``Tcp:``…); ``nstat`` names a
counter by its group and field run together, and so does the lab.  They are
per namespace: a thread reads those of the namespace it is in.

A run's counters are the difference between two reads, before and after;
only what moved is kept (a counter that went backwards — the namespace was
new, or a gauge like ``TcpCurrEstab`` fell — is a change too).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

SOURCES = ("/proc/thread-self/net/netstat", "/proc/thread-self/net/snmp")
"""Where the counters of the reading thread's namespace are."""

GROUPS = ("TcpExt", "Tcp")
"""The groups kept: TCP's (``IpExt``, ``Udp``… are not the lab's)."""

SHOWN = (
    "TcpExtListenOverflows",
    "TcpExtListenDrops",
    "TcpExtTCPReqQFullDrop",
    "TcpExtTCPReqQFullDoCookies",
    "TcpExtSyncookiesSent",
    "TcpExtSyncookiesRecv",
    "TcpExtSyncookiesFailed",
    "TcpExtTCPTimeWaitOverflow",
    "TcpExtTW",
    "TcpExtTCPAbortOnData",
    "TcpExtTCPAbortOnClose",
    "TcpExtTCPAbortOnLinger",
    "TcpExtTCPAbortOnTimeout",
    "TcpExtTCPAbortOnMemory",
    "TcpExtTCPKeepAlive",
    "TcpExtTCPSynRetrans",
    "TcpExtTCPTimeouts",
    "TcpExtTCPWinProbe",
    "TcpExtTCPAbortFailed",
    "TcpAttemptFails",
    "TcpEstabResets",
    "TcpOutRsts",
    "TcpRetransSegs",
)
"""The counters a ladder shows when they move: the ones an ops class reads
(``include/uapi/linux/snmp.h`` names each ``LINUX_MIB_…``)."""


def parse(text: str) -> dict[str, int]:
    """One file's counters of :data:`GROUPS`, by ``nstat`` name.  A header
    whose values line is missing or of another length is skipped."""
    out: dict[str, int] = {}
    lines = text.splitlines()
    for header, values in zip(lines[::2], lines[1::2], strict=False):
        group, _, names = header.partition(":")
        vgroup, _, numbers = values.partition(":")
        if group != vgroup or group not in GROUPS:
            continue
        fields, counts = names.split(), numbers.split()
        if len(fields) != len(counts):
            continue
        for field, count in zip(fields, counts, strict=True):
            try:
                out[group + field] = int(count)
            except ValueError:
                continue
    return out


def moved(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    """What changed between two reads, and by how much (new counters count
    from zero)."""
    return {
        name: after[name] - before.get(name, 0)
        for name in sorted(after)
        if after[name] != before.get(name, 0)
    }


def shown(changes: Mapping[str, int], names: Iterable[str] = SHOWN) -> list[tuple[str, int]]:
    """The changes a ladder shows, in :data:`SHOWN`'s order."""
    return [(name, changes[name]) for name in names if changes.get(name)]


def read(sources: Iterable[str] = SOURCES) -> dict[str, int]:
    """The counters now, in the reader's namespace (empty where ``/proc``
    does not say)."""
    out: dict[str, int] = {}
    for source in sources:
        try:
            out.update(parse(Path(source).read_text()))
        except OSError:
            continue
    return out
