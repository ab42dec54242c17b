"""A lab as values (pure): its id, namespaces, address plan, interfaces,
what to build; which sysctls may be set (only per-namespace ``net.*``)."""

from __future__ import annotations

import dataclasses
import enum
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from core.tracefs import TRACE_PREFIX

PREFIX = "tl"
Side = Literal["cli", "mbx", "srv"]
SIDES: tuple[Side, ...] = ("cli", "mbx", "srv")

# IFA_F_NODAD, include/uapi/linux/if_addr.h
IFA_F_NODAD = 0x02


class Forwarding(enum.Enum):
    """Who moves packets between the two halves of the lab."""

    KERNEL = "kernel"
    PROXY = "proxy"


class TopologyError(RuntimeError):
    """The lab could not be built (what failed is in the message)."""


MAX_SLOT = 253
"""Slots 1…253: .254 is the middlebox, .255 broadcast."""


@dataclasses.dataclass(frozen=True, slots=True)
class Addressing:
    """The address plan (documentation ranges, RFC 5737 / RFC 3849) of the
    lab in ``slot``."""

    slot: int = 1
    mbx_front4: str = "192.0.2.254"
    mbx_back4: str = "198.51.100.254"
    prefix4: int = 24
    mbx_front6: str = "2001:db8:1::ff"
    mbx_back6: str = "2001:db8:2::ff"
    prefix6: int = 64

    def __post_init__(self) -> None:
        if not 1 <= self.slot <= MAX_SLOT:
            raise TopologyError(f"lab slot {self.slot} is out of range (1-{MAX_SLOT})")

    @property
    def client4(self) -> str:
        return f"192.0.2.{self.slot}"

    @property
    def server4(self) -> str:
        return f"198.51.100.{self.slot}"

    @property
    def client6(self) -> str:
        return f"2001:db8:1::{self.slot:x}"

    @property
    def server6(self) -> str:
        return f"2001:db8:2::{self.slot:x}"

    def server(self, ipv6: bool = False) -> str:
        return self.server6 if ipv6 else self.server4

    def client(self, ipv6: bool = False) -> str:
        return self.client6 if ipv6 else self.client4


ADDR = Addressing()
CLIENT_IF, FRONT_IF, BACK_IF, SERVER_IF = "cli0", "mc0", "ms0", "srv0"


@dataclasses.dataclass(frozen=True, slots=True)
class LabSpec:
    """What to build.  ``sysctls`` maps a side to ``{"net.ipv4.tcp_fin_timeout":
    "5", …}`` — only ``net.*`` keys, which are per namespace."""

    forwarding: Forwarding = Forwarding.KERNEL
    sysctls: Mapping[Side, Mapping[str, str]] = dataclasses.field(default_factory=dict)
    lab_id: str | None = None
    persistent: bool = False
    """Kept after the creating process exits (``tcplab lab up``)."""
    mirrored_macs: bool = True
    """The middlebox's ports wear the endpoints' mirrored MACs; False: the
    random ones their veths were made with, as Docker gives its
    interfaces (the proxy's express lane must then rewrite MACs)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Lab:
    """A built lab: its id and namespace names."""

    lab_id: str
    forwarding: Forwarding
    addr: Addressing = ADDR

    def ns(self, side: Side) -> str:
        return f"{PREFIX}{self.lab_id}-{side}"

    def trace_instance(self, side: Side) -> str:
        """The ftrace instance the observer of ``side`` opens."""
        return f"{TRACE_PREFIX}{self.lab_id}-{side}"

    @property
    def namespaces(self) -> tuple[str, str, str]:
        return (self.ns("cli"), self.ns("mbx"), self.ns("srv"))

    def describe(self) -> dict[str, Any]:
        a = self.addr
        return {
            "lab": self.lab_id,
            "slot": a.slot,
            "forwarding": self.forwarding.value,
            "client": {
                "netns": self.ns("cli"),
                "if": CLIENT_IF,
                "ipv4": a.client4,
                "ipv6": a.client6,
            },
            "middlebox": {
                "netns": self.ns("mbx"),
                "front": {"if": FRONT_IF, "ipv4": a.mbx_front4, "ipv6": a.mbx_front6},
                "back": {"if": BACK_IF, "ipv4": a.mbx_back4, "ipv6": a.mbx_back6},
            },
            "server": {
                "netns": self.ns("srv"),
                "if": SERVER_IF,
                "ipv4": a.server4,
                "ipv6": a.server6,
            },
        }


def new_lab_id() -> str:
    """Six hex digits: short enough to read, enough to run labs side by side."""
    return secrets.token_hex(3)


def validate_sysctl_key(key: str) -> Path:
    """``net.ipv4.tcp_fin_timeout`` → its /proc/sys path, inside a namespace.

    Only ``net.*`` keys are per network namespace; anything else would change
    the host, so it is refused."""
    parts = key.split(".")
    if (
        len(parts) < 3
        or parts[0] != "net"
        or any(not p or "/" in p or p in ("..", ".") for p in parts)
    ):
        raise TopologyError(f"sysctl {key!r}: only per-namespace net.* keys may be set")
    return Path("/proc/sys", *parts)
