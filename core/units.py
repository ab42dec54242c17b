"""Durations as people write them: ``1.5s``, ``250ms``, ``500us``, ``2m``.

One parser for the whole lab (daemon options, proxy rules, scenario files), so
``linger:2s`` on the server and ``delay = "2s"`` in a rule mean the same thing.
"""

from __future__ import annotations

import argparse
import decimal
import math
import re
from collections.abc import Callable

_UNITS = {
    unit: decimal.Decimal(scale)
    for unit, scale in {
        "us": "0.000001", "µs": "0.000001", "ms": "0.001", "s": "1", "m": "60", "min": "60",
        "h": "3600",
    }.items()
}  # fmt: skip
"""Seconds per unit, exactly: ``25000us`` and ``25ms`` are the same decimal,
so they parse to the same float (with binary scales, 25000 × 1e-6 is
0.024999999999999998 and 25 × 1e-3 is 0.025)."""
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(us|µs|ms|s|min|m|h)\s*$")


def parse_duration(text: str) -> float:
    """``"250ms"`` → 0.25 (seconds).  A unit is required: a bare ``2`` is
    ambiguous (seconds? milliseconds?) and is refused with a hint."""
    match = _DURATION.match(text)
    if match is None:
        hint = ""
        if re.fullmatch(r"\s*\d+(\.\d*)?\s*", text):
            hint = f" (add a unit: {text.strip()}s or {text.strip()}ms)"
        raise ValueError(
            f"bad duration {text!r}: expected a number and a unit (us, ms, s, m, h){hint}"
        )
    value = float(decimal.Decimal(match.group(1)) * _UNITS[match.group(2)])
    if not math.isfinite(value):
        raise ValueError(f"bad duration {text!r}: not finite")
    return value


def format_duration(seconds: float) -> str:
    """Exact to the microsecond: 0.25 → ``250ms``, 2.0 → ``2s``, 1.000001 → ``1000001us``."""
    if seconds == 0:
        return "0s"
    if seconds >= 1 and float(seconds).is_integer():
        return f"{int(seconds)}s"
    ms = seconds * 1000
    if abs(ms - round(ms)) < 1e-9:
        return f"{round(ms)}ms"
    return f"{round(seconds * 1e6)}us"


def duration_argument(maximum: float | None = None) -> Callable[[str], float]:
    """An argparse ``type`` for a duration option (``--interval 5ms``): the
    value in seconds, or an :class:`argparse.ArgumentTypeError` that argparse
    prints after the option's name; ``maximum`` (seconds) bounds it."""

    def parse(text: str) -> float:
        try:
            seconds = parse_duration(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        if maximum is not None and seconds > maximum:
            raise argparse.ArgumentTypeError(f"{text!r}: at most {format_duration(maximum)}")
        return seconds

    return parse
