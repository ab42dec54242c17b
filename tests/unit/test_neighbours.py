"""The neighbour table and route cache stay bounded whatever arrives."""

from __future__ import annotations

import ipaddress
import random
import tracemalloc

from proxy import neighbours
from proxy.neighbours import (
    GC_STALE_TIME,
    MAX_NEIGHBOURS,
    MAX_PENDING_HOPS,
    NeighbourTable,
    Port,
    Route,
    RouteTable,
)

FRONT = Port(
    "mc0",
    bytes.fromhex("02000000000a"),
    1500,
    (ipaddress.ip_interface("192.0.2.254/24"), ipaddress.ip_interface("2001:db8:1::ff/64")),
)
BACK = Port(
    "ms0",
    bytes.fromhex("02000000000b"),
    1500,
    (ipaddress.ip_interface("198.51.100.254/24"), ipaddress.ip_interface("2001:db8:2::ff/64")),
)
HOST_MAC = bytes.fromhex("020000000001")


def random_sources(count: int, seed: int = 1) -> list[str]:
    """``count`` distinct random addresses in 2001:db8:1::/64 (on-link on mc0)."""
    rng = random.Random(seed)
    found: dict[str, None] = {}
    while len(found) < count:
        host = rng.getrandbits(64).to_bytes(8, "big").hex()
        found[f"2001:db8:1:0:{host[:4]}:{host[4:8]}:{host[8:12]}:{host[12:]}"] = None
    return list(found)


def table() -> NeighbourTable:
    return NeighbourTable([FRONT, BACK])


def test_a_flood_of_random_on_link_sources_stays_bounded_in_entries_and_memory() -> None:
    t = table()
    sources = random_sources(20_000)
    tracemalloc.start()
    try:
        for i, ip in enumerate(sources):
            t.learn_passive("mc0", ip, HOST_MAC, i * 1e-5)
        grown, _peak = tracemalloc.get_traced_memory()  # what is still held
    finally:
        tracemalloc.stop()
    assert t.sizes() == {"mc0": MAX_NEIGHBOURS, "ms0": 0}
    assert t.evicted == len(sources) - MAX_NEIGHBOURS
    # 4,096 entries: about a megabyte (unbounded, these 20,000 took 6.5 MB)
    print(f"20,000 random sources: the table holds {grown / 1e6:.2f} MB")
    assert grown < 2.5e6, f"neighbour table grew by {grown / 1e6:.1f} MB"
    # the most recent sources are the ones kept
    assert t.lookup("mc0", sources[-1], 1.0) == HOST_MAC
    assert t.lookup("mc0", sources[0], 1.0) is None


def test_least_recently_used_goes_first_and_a_used_entry_stays() -> None:
    t = table()
    t.learn("mc0", "192.0.2.1", HOST_MAC, 0.0)
    for i, ip in enumerate(random_sources(3 * MAX_NEIGHBOURS)):
        now = 0.001 * (i + 1)
        if i % 1000 == 0:
            # the real client's frames are being forwarded: it is in use
            assert t.lookup("mc0", "192.0.2.1", now) == HOST_MAC
        t.learn("mc0", ip, HOST_MAC, now)
    assert len(t) == MAX_NEIGHBOURS
    assert t.lookup("mc0", "192.0.2.1", 13.0) == HOST_MAC
    # an entry nobody used is gone
    u = table()
    u.learn("mc0", "192.0.2.1", HOST_MAC, 0.0)
    for i, ip in enumerate(random_sources(MAX_NEIGHBOURS)):
        u.learn("mc0", ip, HOST_MAC, 0.001 * (i + 1))
    assert u.lookup("mc0", "192.0.2.1", 5.0) is None


def test_entries_unused_for_gc_stale_time_are_forgotten_first() -> None:
    t = table()
    sources = random_sources(MAX_NEIGHBOURS)
    for ip in sources:
        t.learn("mc0", ip, HOST_MAC, 0.0)
    for ip in sources[: MAX_NEIGHBOURS // 2]:
        t.lookup("mc0", ip, 30.0)  # used at 30 s
    # at 70 s the half unused since 0 is past gc_stale_time; the other is not
    t.learn("mc0", "192.0.2.7", HOST_MAC, 30.0 + GC_STALE_TIME - 20.0)
    assert len(t) == MAX_NEIGHBOURS // 2 + 1
    assert all(t.lookup("mc0", ip, 71.0) == HOST_MAC for ip in sources[: MAX_NEIGHBOURS // 2])
    # and expire() does the same without a new entry
    assert t.expire(30.0 + GC_STALE_TIME + 42.0) == MAX_NEIGHBOURS // 2 + 1
    assert len(t) == 0


def test_a_pinned_next_hop_is_never_evicted() -> None:
    t = table()
    t.pin("ms0", "198.51.100.1")
    t.learn("ms0", "198.51.100.1", HOST_MAC, 0.0)
    for i in range(2 * MAX_NEIGHBOURS):
        t.learn("ms0", f"2001:db8:2::{i + 16:x}", HOST_MAC, 0.01 * i)
    assert t.sizes()["ms0"] == MAX_NEIGHBOURS
    assert t.lookup("ms0", "198.51.100.1", 100.0) == HOST_MAC
    t.expire(100.0 + 10 * GC_STALE_TIME)
    assert t.sizes()["ms0"] == 1
    assert t.lookup("ms0", "198.51.100.1", 200.0) == HOST_MAC


def test_the_middlebox_pins_the_next_hop_of_its_static_routes() -> None:
    from proxy.middlebox import Middlebox

    default = Route(ipaddress.ip_network("0.0.0.0/0"), "ms0", ipaddress.ip_address("198.51.100.9"))
    routes = RouteTable([FRONT, BACK], [default])
    assert routes.gateways() == [("ms0", "198.51.100.9")]
    mb = Middlebox([FRONT, BACK], routes=routes)
    mb.neighbours.learn("ms0", "198.51.100.9", HOST_MAC, 0.0)
    for i in range(MAX_NEIGHBOURS + 10):
        mb.neighbours.learn("ms0", f"198.51.100.{i % 250 + 1}", HOST_MAC, 0.0)
        mb.neighbours.learn("ms0", f"2001:db8:2::{i + 16:x}", HOST_MAC, 0.0)
    assert mb.neighbours.lookup("ms0", "198.51.100.9", 1.0) == HOST_MAC


def test_unresolved_next_hops_are_bounded_and_the_waiting_ones_kept() -> None:
    t = table()
    sent = 0
    refusals: list[str] = []
    hops = random_sources(10 * MAX_PENDING_HOPS)
    for ip in hops:
        solicits, refused = t.enqueue("mc0", ip, b"frame", 0.0)
        sent += len(solicits)
        if refused is not None:
            refusals.append(refused)
    assert t.pending_hops() == MAX_PENDING_HOPS
    assert sent == MAX_PENDING_HOPS  # a flood cannot make us solicit more
    assert len(refusals) == len(hops) - MAX_PENDING_HOPS == t.unresolved_drops
    assert "wait for a MAC already" in refusals[0]
    # the first one waited, and its frames go when it resolves
    assert t.learn("mc0", hops[0], HOST_MAC, 0.5) == [("mc0", b"frame", HOST_MAC)]
    # after RESOLVE_ATTEMPTS the rest are given up, making room again
    for now in (1.0, 2.0, 3.0, 4.0):
        t.tick(now)
    assert t.pending_hops() == 0
    assert t.enqueue("mc0", hops[-1], b"frame", 5.0)[1] is None


def test_per_hop_queue_is_bounded_and_refusals_say_why() -> None:
    t = table()
    results = [t.enqueue("ms0", "198.51.100.1", b"x", 0.0) for _ in range(100)]
    refused = [r for _, r in results if r is not None]
    assert len(refused) == 100 - neighbours.PENDING_PER_HOP
    assert "frames wait for 198.51.100.1's MAC" in refused[0]


def test_a_port_without_an_address_of_the_family_still_gives_up() -> None:
    v4_only = Port("mc0", FRONT.mac, 1500, (ipaddress.ip_interface("192.0.2.254/24"),))
    t = NeighbourTable([v4_only])
    assert t.enqueue("mc0", "2001:db8:1::1", b"x", 0.0) == ([], None)
    dropped = 0
    for now in (1.0, 2.0, 3.0, 4.0):
        dropped += t.tick(now)[1]
    assert dropped == 1 and t.next_due() is None


def test_route_cache_is_bounded() -> None:
    routes = RouteTable([FRONT, BACK])
    for ip in random_sources(3 * neighbours.ROUTE_CACHE):
        found = routes.lookup(ip)
        assert found is not None and found[0] == "mc0"
    assert len(routes._cache) <= neighbours.ROUTE_CACHE
    assert routes.lookup("198.51.100.1") == ("ms0", "198.51.100.1")
    assert routes.lookup("203.0.113.1") is None
