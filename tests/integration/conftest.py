"""Integration tests: every one of them builds real namespaces; all are
marked ``netns`` (skipped without CAP_NET_ADMIN), and each checks that it left
no namespace, record or process behind."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from core import netns
from tcplab import topology


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.netns)


def descends_from_us(pid: int) -> bool:
    me = os.getpid()
    for _ in range(64):
        if pid == me:
            return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[-1].split()[1])
        if pid <= 1:
            return False
    return False


SESSION_TAG = f"pytest-{os.getpid()}-{secrets.token_hex(3)}"
"""Every lab this session's processes make carries it in its record."""
os.environ[topology.RUN_TAG_ENV] = SESSION_TAG


def ours(lab_id: str) -> bool:
    """A lab this test session is answerable for: made by this process or a
    child of it (its record carries the session's tag — also when its owner
    was killed), or with no record at all.  Labs of another program running
    at the same time (a `tcplab verify`, another test session, the runs that
    session kills on purpose) are not."""
    record = topology.read_record(lab_id)
    if record is None:
        return True
    pid = record.get("owner_pid")
    if isinstance(pid, int) and topology.owner_alive(record):
        return descends_from_us(pid)
    return record.get("tag") in (SESSION_TAG, None)


def lab_leftovers() -> set[str]:
    """This session's lab namespaces that exist now.  A lab torn down by
    another program between the listing and the look at its record (its
    namespaces go first, then its record) would look ownerless: so each
    namespace is checked again after its record was read."""
    found = {
        n for lab_id, names in topology.lab_namespaces().items() if ours(lab_id) for n in names
    }
    return {n for n in found if netns.exists(n)}


@pytest.fixture(autouse=True)
def no_leftovers() -> Iterator[None]:
    """Fail a test that leaves a lab namespace it made."""
    before = lab_leftovers()
    yield
    after = lab_leftovers()
    leaked = after - before
    assert not leaked, f"namespaces left behind: {sorted(leaked)}"


@pytest.fixture
def lab() -> Iterator[topology.Lab]:
    with topology.lab() as built:
        yield built
