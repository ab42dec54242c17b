from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.units import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1.5s", 1.5), ("250ms", 0.25), ("500us", 0.0005), ("2m", 120), ("1h", 3600), (".5s", 0.5)],
)
def test_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "hint"), [("2", "add a unit"), ("fast", "number and a unit"), ("-1s", "")]
)
def test_parse_rejects_with_a_reason(text: str, hint: str) -> None:
    with pytest.raises(ValueError, match=f"bad duration.*{hint}"):
        parse_duration(text)


@given(st.integers(0, 10**7))
def test_format_round_trips_whole_microseconds(us: int) -> None:
    seconds = us / 1e6
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds, abs=1e-9)
