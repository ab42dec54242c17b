"""The proxy's options as data (pure): :class:`ProxyOptions`, parsed from
``python -m proxy``'s argv and turned back into argv by whoever starts it
(:mod:`core.options`).

The fault options (``--drop/--delay/--hold/--duplicate/--reset RULE``,
``--pace D``) are shared with ``tcplab run`` and ``tcplab lab up``
(:data:`FAULTS`): parsed, and refused naming the bad option, before
anything starts; the proxy gets them as :func:`core.options.to_argv`
writes them.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from core import logs
from core import rules as grammar
from core.options import multi, option
from core.units import format_duration

IFNAMSIZ = 16
"""include/uapi/linux/if.h: an interface name and its NUL."""


def interface_name(text: str) -> str:
    """A Linux interface name (net/core/dev.c ``dev_valid_name``): 1-15
    bytes, no ``/``, ``:`` or white space, not ``.`` or ``..``; and not
    starting with ``-``, which every command line would read as an option."""
    size = len(text.encode())
    bad = not text or size >= IFNAMSIZ or text in (".", "..") or text.startswith("-")
    if bad or any(c in "/:" or c.isspace() for c in text):
        raise ValueError(f"{text[:40]!r} is not an interface name")
    return text


RULE_ACTIONS: tuple[grammar.Action, ...] = ("drop", "delay", "hold", "duplicate", "reset")
"""The rule options, in the order their rules are listed."""
FAULTS: tuple[str, ...] = ("rules", "pace")
"""The fields that say what to break."""
LogSegments = Literal["all", "control", "none"]
LOG_SEGMENT_MODES: tuple[LogSegments, ...] = ("all", "control", "none")
EXPRESS_MODES = ("auto", "on", "off")
RX_RING_MODES = ("off", "auto")


def _rule_parser(action: grammar.Action) -> Callable[[str], grammar.Rule]:
    def parse(text: str) -> grammar.Rule:
        return grammar.parse_cli(action, text)

    parse.__name__ = f"{action} rule"
    return parse


_RULE_HELP: dict[str, str] = {
    "drop": "e.g. syn-ack@1",
    "delay": "RULE=D, e.g. client:fin@1=2s",
    "hold": "keep until released",
    "duplicate": "send twice",
    "reset": "answer with RST both ways",
}


def _flag_of(rule: grammar.Rule) -> str:
    return f"--{rule.action}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProxyOptions:
    """``python -m proxy``."""

    netns: str | None = option("--netns", None, help="enter this network namespace first")
    front: str = option(
        "--front", "mc0", parse=interface_name, help="client-side interface (default mc0)"
    )
    back: str = option(
        "--back", "ms0", parse=interface_name, help="server-side interface (default ms0)"
    )
    rules: tuple[grammar.Rule, ...] = multi(
        [(f"--{action}", _rule_parser(action), _RULE_HELP[action]) for action in RULE_ACTIONS],
        flag_of=_flag_of,
        show=grammar.format_rule,
        metavar="RULE",
    )
    """``--drop syn-ack@1 --delay client:fin@1=2s``…: in the order given,
    which is the order they are tried (:mod:`proxy.rules`)."""
    pace: float | None = option(
        "--pace",
        None,
        parse=grammar.parse_pace,
        show=format_duration,
        metavar="D",
        help="delay every segment by D (slow motion)",
    )
    rules_file: str | None = option(
        "--rules", None, metavar="FILE", help="a TOML file with [[rules]] tables"
    )
    pcap: str | None = option(
        "--pcap", None, metavar="FILE", help="write every frame seen to this pcapng file"
    )
    control: str | None = option(
        "--control", None, metavar="PATH", help="serve the control API on this Unix socket"
    )
    log_segments: LogSegments = option(
        "--log-segments",
        "all",
        choices=LOG_SEGMENT_MODES,
        help="all: every segment; control: handshake, teardown, resets, retransmits "
        "and any segment a rule touched; none",
    )
    express: str = option(
        "--express",
        "auto",
        choices=EXPRESS_MODES,
        help="hand established connections no rule can touch to a kernel fast path "
        "(auto: when --log-segments is not all; see proxy/express.py)",
    )
    rx_ring: str = option(
        "--rx-ring",
        "off",
        choices=RX_RING_MODES,
        help="auto: read frames in blocks from a memory-mapped TPACKET_V3 ring when the "
        "kernel gives one (a lone segment waits up to 1 ms for its block; see "
        "proxy/rxring.py); off: one recvmsg per frame",
    )
    log_format: logs.LogFormat = option("--log-format", "auto", choices=logs.FORMATS)

    @property
    def faults(self) -> dict[str, object]:
        """Only the fault fields (to carry them over to another ProxyOptions)."""
        return {name: getattr(self, name) for name in FAULTS}


def rules_from_file(path: Path) -> list[grammar.Rule]:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise grammar.RuleError(f"{path}: {exc}") from None
    tables = data.get("rules", [])
    if not isinstance(tables, list):
        raise grammar.RuleError(f"{path}: 'rules' must be an array of tables ([[rules]])")
    return [grammar.parse_table(t, f"{path}: [[rules]] #{i}") for i, t in enumerate(tables, 1)]
