"""Integration tests: every one of them builds real namespaces; all are
marked ``netns`` (skipped without CAP_NET_ADMIN), and each checks that it left
no namespace, record or process behind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tcplab import topology


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.netns)


def lab_leftovers() -> set[str]:
    return {n for names in topology.lab_namespaces().values() for n in names}


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
