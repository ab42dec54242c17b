"""Each close policy's decisions: what the daemon does next, step by step."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.policies import CLIENT_POLICIES, ClosePolicy
from daemons.closing import (
    Close,
    at_accept,
    at_eof,
    client_close,
    ends_connection,
    is_reset,
    on_line,
    server_close,
)


def conversation(policy_text: str, lines: int, *, farewell: bool = False) -> list[str]:
    """What the server does for a client that sends ``lines`` lines, then its
    FIN (if the server is still there to read it)."""
    policy = ClosePolicy.parse(policy_text)
    done: list[str] = []
    first = at_accept(policy)
    if first == "close":
        return ["close"]
    if first == "shutdown":
        done.append("shutdown")
    echoed = 0
    for _ in range(lines):
        step = on_line(policy, echoed)
        if not step.echo:
            done.append("drop")
            continue
        done.append("echo")
        echoed += 1
        if step.then == "close":
            return [*done, "close"]
        if step.then == "shutdown":
            done.append("shutdown")
    eof = at_eof(policy, farewell=farewell)
    if eof.farewell:
        done.append("farewell")
    return [*done, eof.then]


@pytest.mark.parametrize(
    ("policy", "lines", "expected"),
    [
        ("immediate", 2, ["echo", "echo", "close"]),
        ("abort", 1, ["echo", "close"]),
        ("linger:2s", 1, ["echo", "linger"]),
        ("never", 1, ["echo", "keep"]),
        ("first", 3, ["echo", "close"]),
        ("first:0", 3, ["close"]),
        ("first:2", 3, ["echo", "echo", "close"]),
        ("first:5", 2, ["echo", "echo", "close"]),  # the client's FIN came first
        ("half", 3, ["echo", "shutdown", "drop", "drop", "close"]),
        ("half:0", 2, ["shutdown", "drop", "drop", "close"]),
        ("half:2", 2, ["echo", "echo", "shutdown", "close"]),
        ("half:2", 1, ["echo", "close"]),  # FIN before the second message
    ],
)
def test_each_policy_step_by_step(policy: str, lines: int, expected: list[str]) -> None:
    assert conversation(policy, lines) == expected


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("immediate", ["echo", "farewell", "close"]),
        ("linger:1s", ["echo", "farewell", "linger"]),
        ("never", ["echo", "farewell", "keep"]),
        ("half", ["echo", "shutdown", "close"]),  # our FIN is out: nothing more to say
    ],
)
def test_the_farewell_flows_from_close_wait(policy: str, expected: list[str]) -> None:
    assert conversation(policy, 1, farewell=True) == expected


def test_linger_waits_as_long_as_the_policy_says() -> None:
    step = at_eof(ClosePolicy.parse("linger:300ms"), farewell=False)
    assert (step.then, step.linger_s) == ("linger", pytest.approx(0.3))


@pytest.mark.parametrize(
    ("policy", "farewell", "look"),
    [
        ("immediate", False, False),  # the close at once is looked at instead
        ("abort", False, False),
        ("immediate", True, True),  # the farewell comes between: look now
        ("abort", True, True),
        ("linger:1s", False, True),
        ("never", False, True),
        ("half", False, True),
        ("first:3", False, True),
    ],
)
def test_eof_is_looked_at_unless_a_close_follows_at_once(
    policy: str, farewell: bool, look: bool
) -> None:
    assert at_eof(ClosePolicy.parse(policy), farewell=farewell).look is look


@pytest.mark.parametrize(
    ("policy", "reset", "expected"),
    [
        ("immediate", False, Close(abort=False, facts=("snd_fin", "closed"))),
        ("first", False, Close(abort=False, facts=("snd_fin", "closed"))),
        ("abort", False, Close(abort=True, facts=("reset", "closed"))),
        ("immediate", True, Close(abort=False, facts=("reset", "closed"))),
        ("abort", True, Close(abort=True, facts=("reset", "closed"))),
    ],
)
def test_the_servers_close(policy: str, reset: bool, expected: Close) -> None:
    assert server_close(ClosePolicy.parse(policy), reset=reset) == expected


def test_how_the_close_is_logged() -> None:
    assert Close(abort=True, facts=()).how == "abort"
    assert Close(abort=False, facts=()).how == "close"


@pytest.mark.parametrize("policy", CLIENT_POLICIES)
def test_the_clients_close(policy: str) -> None:
    close = client_close(policy)
    if policy == "abort":
        assert close == Close(abort=True, facts=("reset", "closed"))
    else:
        assert close == Close(abort=False, facts=("snd_fin", "closed"))


def test_a_reset_by_its_errno() -> None:
    assert is_reset("ECONNRESET") and is_reset("EPIPE")
    assert not is_reset("ETIMEDOUT") and not is_reset("EMSGSIZE")


def test_a_connection_the_kernel_ended_by_its_errno() -> None:
    assert all(ends_connection(name) for name in ("ECONNRESET", "EPIPE", "ETIMEDOUT"))
    assert not ends_connection("EMSGSIZE") and not ends_connection("EAGAIN")


@pytest.mark.parametrize("policy", CLIENT_POLICIES)
def test_the_clients_close_after_the_kernel_ended_the_connection(policy: str) -> None:
    # keepalive or TCP_USER_TIMEOUT gave up, or an RST came: close() sends no FIN
    close = client_close(policy, gone=True)
    assert close == Close(abort=policy == "abort", facts=("reset", "closed"))


def test_the_servers_close_with_data_unread_resets() -> None:
    # RFC 2525 2.17: close() with unread data sends RST, not FIN
    close = server_close(ClosePolicy.parse("immediate"), reset=False, unread=True)
    assert close == Close(abort=False, facts=("reset", "closed"))
    assert server_close(ClosePolicy.parse("immediate"), reset=True, unread=True) == Close(
        abort=False, facts=("reset", "closed")
    )


@given(st.sampled_from(["first", "half"]), st.integers(0, 20), st.integers(0, 20))
def test_no_policy_echoes_more_than_it_promised(kind: str, after: int, lines: int) -> None:
    done = conversation(f"{kind}:{after}", lines)
    assert done.count("echo") == min(after, lines)
    if kind == "first":
        assert done[-1] == "close" and "drop" not in done
    else:
        # one shutdown once the N-th echo is out (at once for 0), never more
        assert done.count("shutdown") == (1 if lines >= after else 0)
        assert done.count("drop") == max(0, lines - after)
