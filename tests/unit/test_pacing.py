"""How often the observer polls, where its dumps run, when trace reads wait,
when an owner's note is worth a lookup."""

from __future__ import annotations

import pytest

from daemons.pacing import (
    MAX_POLL_INTERVAL,
    POLL_COST_WINDOW,
    THREAD_DUMP_S,
    TRACE_BUSY,
    TRACE_GATHER_S,
    PollPacer,
    dump_in_thread,
    looks_after_note,
    poll_interval,
    trace_gather_s,
)


def test_polls_back_off_when_they_get_dear() -> None:
    assert poll_interval(0.005, 0.0001) == 0.005  # a lab's handful of sockets
    assert poll_interval(0.005, 0.004) == pytest.approx(0.04)  # thousands
    assert poll_interval(0.005, 0.5) == MAX_POLL_INTERVAL  # never slower than this
    assert poll_interval(1.0, 0.5) == 1.0  # nor faster than asked


def test_the_pacer_starts_at_the_configured_interval() -> None:
    assert PollPacer(0.005).first() == 0.005


def test_one_preempted_poll_is_not_a_dear_dump() -> None:
    pacer = PollPacer(0.005)
    assert pacer.after(0.0001) == 0.005
    # a GC pass made one poll take 20 ms: the cheapest recent one counts
    assert pacer.after(0.02) == 0.005


def test_dear_dumps_back_off_until_they_leave_the_window() -> None:
    pacer = PollPacer(0.005)
    pauses = [pacer.after(0.004) for _ in range(POLL_COST_WINDOW)]
    assert pauses == [pytest.approx(0.04)] * POLL_COST_WINDOW
    # cheap polls again: one is enough, it is the cheapest in the window
    assert pacer.after(0.0001) == 0.005


def test_a_cheap_poll_ages_out_of_the_window() -> None:
    pacer = PollPacer(0.005)
    pacer.after(0.0001)
    for _ in range(POLL_COST_WINDOW - 1):
        assert pacer.after(0.01) == 0.005  # the cheap one is still in view
    assert pacer.after(0.01) == pytest.approx(0.1)  # now it is not


def test_only_slow_dumps_move_to_a_thread() -> None:
    assert not dump_in_thread(0.0)
    assert not dump_in_thread(THREAD_DUMP_S)
    assert dump_in_thread(THREAD_DUMP_S * 2)


def test_trace_reads_wait_only_after_a_burst() -> None:
    assert trace_gather_s(0) == 0.0
    assert trace_gather_s(TRACE_BUSY - 1) == 0.0
    assert trace_gather_s(TRACE_BUSY) == TRACE_GATHER_S
    assert trace_gather_s(10 * TRACE_BUSY) == TRACE_GATHER_S


def test_an_owners_action_is_looked_at_while_its_state_lasts() -> None:
    assert looks_after_note(("rcv_fin",), "ESTABLISHED", True, traced=False)
    assert looks_after_note((), None, True, traced=False)  # an accept of an unknown socket
    assert looks_after_note((), "SYN_RECV", True, traced=False)


def test_no_look_the_trace_or_the_owner_makes_needless() -> None:
    assert not looks_after_note(("rcv_fin",), "ESTABLISHED", True, traced=True)
    assert not looks_after_note(("rcv_fin",), "ESTABLISHED", False, traced=False)
    # accept() of a connection a dump already saw established changed nothing
    assert not looks_after_note((), "ESTABLISHED", True, traced=False)
