"""Shared test setup: kernel tests need CAP_NET_ADMIN and skip clearly without it."""

from __future__ import annotations

import os

import pytest


def _have_net_admin() -> bool:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("CapEff:"):
                    caps = int(line.split()[1], 16)
                    # CAP_NET_ADMIN (12) for links and routes, CAP_SYS_ADMIN (21)
                    # for named namespaces (mount of /run/netns/NAME)
                    return bool(caps & (1 << 12)) and bool(caps & (1 << 21))
    except OSError:
        pass
    return False


NET_ADMIN = _have_net_admin()
SKIP_REASON = (
    "needs CAP_NET_ADMIN and CAP_SYS_ADMIN to build network namespaces (run as root; CI does)"
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if NET_ADMIN and os.path.isdir("/proc/sys/net"):
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if "netns" in item.keywords:
            item.add_marker(skip)
