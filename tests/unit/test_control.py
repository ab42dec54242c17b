"""The control API's request handling (no socket)."""

from __future__ import annotations

import ipaddress

from proxy import control, neighbours
from proxy.middlebox import Middlebox


def controller() -> tuple[control.Controller, list[str | None]]:
    port = neighbours.Port("mc0", b"\x02" * 6, 1500, (ipaddress.ip_interface("192.0.2.254/24"),))
    released: list[str | None] = []

    def release(rule: str | None) -> int:
        released.append(rule)
        return 3

    return control.Controller(Middlebox([port]), release=release), released


def test_add_list_remove() -> None:
    c, _ = controller()
    assert c.handle({"op": "add", "action": "drop", "rule": "syn-ack@1"}) == {
        "ok": True,
        "name": "drop-syn-ack@1",
    }
    table = {"action": "delay", "tag": "fin", "delay": "2s", "name": "slow-fin"}
    assert c.handle({"op": "add", "table": table})["name"] == "slow-fin"
    status = c.handle({"op": "rules"})
    assert [r["rule"] for r in status["rules"]] == ["syn-ack@1", "fin=2s"]
    assert status["counters"]["frames_in"] == 0
    assert c.handle({"op": "rm", "name": "slow-fin"}) == {"ok": True, "name": "slow-fin"}
    assert c.handle({"op": "clear"}) == {"ok": True}
    assert c.handle({"op": "rules"})["rules"] == []


def test_release_and_pace() -> None:
    c, released = controller()
    assert c.handle({"op": "release", "rule": "hold-fin@1"}) == {"ok": True, "released": 3}
    assert released == ["hold-fin@1"]
    assert c.handle({"op": "pace", "value": "250ms"}) == {"ok": True, "pace": "250ms"}
    assert c.handle({"op": "pace", "value": None}) == {"ok": True, "pace": None}


def test_bad_requests_get_reasons() -> None:
    c, _ = controller()
    assert "JSON object" in c.handle([1, 2])["error"]
    assert "unknown op 'explode'" in c.handle({"op": "explode"})["error"]
    bad = c.handle({"op": "add", "action": "drop", "rule": "synack@1"})
    assert not bad["ok"] and "did you mean 'syn-ack'" in bad["error"]
    assert "no rule named 'x'" in c.handle({"op": "rm", "name": "x"})["error"]
    assert "'name'" in c.handle({"op": "rm"})["error"]
    assert "bad duration" in c.handle({"op": "pace", "value": "fast"})["error"]
