"""The board without a browser or a lab: what it makes of a recorded run,
how its API checks what it is sent, and that nothing gets in without the
token."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from core import events
from core.events import Record, TcpState
from tcplab import causality, runner, scenario, topology
from tcplab.board import api, serve
from tcplab.board.app import _sse, make_app
from tcplab.board.backends import RunsBackend
from tcplab.board.hub import Hub
from tcplab.board.model import BoardModel, coalesce, shed
from tcplab.board.service import Board
from tcplab.ladder_layout import rows

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "timeline"


def recorded(name: str = "lost-last-ack") -> list[Record]:
    lines = (FIXTURES / f"{name}.jsonl").read_text().splitlines()
    return [r for r in (events.parse_record(line) for line in lines) if r is not None]


def fed(model: BoardModel, records: list[Record]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for placed in causality.order(records):
        out += model.feed(placed)
    out += model.run_done({"en": []})
    return out


# --- the model -----------------------------------------------------------------


def test_the_board_draws_the_rows_the_terminal_draws_in_both_languages() -> None:
    records = recorded()
    messages = fed(BoardModel(), records)
    drawn = [m for m in messages if m["type"] == "row"]
    expected = rows(records, "en")
    assert [(m["kind"], m["conn"]) for m in drawn] == [(r.kind, r.conn) for r in expected]
    assert [m["n"] for m in drawn] == list(range(len(drawn)))
    chinese = [m for m in drawn if m["svg"]["zh"] != m["svg"]["en"]]
    assert chinese, "no row is drawn differently in Chinese"
    assert any("重传" in m["svg"]["zh"] for m in drawn)  # the retransmitted FIN
    assert sum(m["kind"] == "segment" for m in drawn) == sum(r.kind == "segment" for r in expected)


def test_a_late_page_gets_what_happened_but_never_more_than_the_kept_rows() -> None:
    records = recorded()
    model = BoardModel(kept_rows=5)
    live = [m for m in fed(model, records) if m["type"] == "row"]
    replay = model.replay()
    hello = replay[0]
    assert hello["type"] == "hello" and hello["rows_total"] == len(live)
    assert hello["rows_folded"] == len(live) - 5
    assert [m for m in replay if m["type"] == "row"] == live[-5:]


def test_sockets_left_in_time_wait_count_down_from_the_kernels_timer() -> None:
    model = BoardModel()
    messages = fed(model, recorded())
    client = [m for m in messages if m["type"] == "sockets" and m["side"] == "client"][-1]
    (left,) = client["sockets"]
    assert left["state"] == "TIME_WAIT"
    assert left["expires_at"] is not None and left["expires_at"] > left["since"]
    server = [m for m in messages if m["type"] == "sockets" and m["side"] == "server"][-1]
    assert all(s["state"] == "LISTEN" for s in server["sockets"])


def test_a_new_run_forgets_the_last_runs_sockets_and_starts_its_own_clock() -> None:
    model = BoardModel()
    fed(model, recorded())
    out = model.new_run("lost-syn", {"en": "title", "zh": "标题"}, {"en": "x", "zh": "y"})
    assert out[0]["status"] == "running"
    assert all(m["sockets"] == [] for m in out if m["type"] == "sockets")
    assert any(m["type"] == "divider" and m["scenario"] == "lost-syn" for m in out)


def test_a_run_is_told_to_the_page_in_both_languages() -> None:
    model = BoardModel()
    (run, divider, *_) = model.new_run("lost-syn", {"en": "Lost", "zh": "丢失"}, {"en": "x"})
    assert run["title"] == divider["title"] == {"en": "Lost", "zh": "丢失"}
    assert run["failures"] == {"en": [], "zh": []}
    (done,) = [m for m in model.run_done({"en": ["e"], "zh": ["中"]}) if m["type"] == "run"]
    assert done["status"] == "failed" and done["failures"] == {"en": ["e"], "zh": ["中"]}
    assert model.replay()[1] == done
    assert model.run_done({"en": [], "zh": []})[-1]["status"] == "passed"


def test_a_run_reported_from_outside_is_in_english() -> None:
    model = BoardModel()
    start = events.ScenarioStart(ts=1.0, component="client", scenario="x", title="A title")
    (run, divider, *_) = model.feed(causality.Placed(start, 1.0, False))
    assert run["title"] == divider["title"] == {"en": "A title"}
    done = events.RunDone(
        ts=2.0, component="runner", scenario="x", client_status=0, server_status=0,
        proxy_status=0, failures=("client: no",), violations=(),
    )  # fmt: skip
    (last,) = [m for m in model.feed(causality.Placed(done, 2.0, False)) if m["type"] == "run"]
    assert last["failures"] == {"en": ["client: no"]} and last["status"] == "failed"


def test_the_boards_terminal_speaks_the_boards_language() -> None:
    sc = scenario.load(scenario.find("lost-syn"))
    echo = io.StringIO()
    board = Board("t", lang="zh", echo=echo)
    sent: list[dict[str, Any]] = []
    board.on_message = sent.append
    board.run_started(sc)
    board.run_finished(sc, {"en": ["client: expected exit status 0, saw 1"],
                            "zh": ["客户端：退出状态应为 0，实际为 1"]})  # fmt: skip
    said = echo.getvalue()
    assert f"lost-syn: {sc.title_zh}" in said and sc.title not in said
    assert "有 1 项预期未满足：\n  ✗ 客户端：退出状态应为 0，实际为 1" in said
    runs = [m for m in sent if m["type"] == "run"]
    assert runs[0]["title"] == {"en": sc.title, "zh": sc.title_zh}
    assert runs[0]["teaches"] == {"en": sc.teaches, "zh": sc.teaches_zh}
    assert runs[-1]["failures"]["zh"] == ["客户端：退出状态应为 0，实际为 1"]
    english = io.StringIO()
    board = Board("t", echo=english)
    board.run_started(sc)
    board.run_finished(sc, {"en": [], "zh": []})
    assert f"lost-syn: {sc.title}" in english.getvalue()
    assert english.getvalue().rstrip().endswith("every expectation held ✓")


async def test_the_boards_runs_are_checked_in_both_languages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sc = scenario.load(scenario.find("lost-last-ack"))
    lab = topology.Lab(lab_id="t", forwarding=topology.Forwarding.PROXY)
    monkeypatch.setattr(topology, "create", lambda spec: lab)
    monkeypatch.setattr(topology, "destroy", lambda lab_id: [])

    async def run_in_lab(lab: Any, opts: Any, on_event: Any, window: float) -> Any:
        return runner.RunResult(
            lab_id="t",
            records=recorded(),
            client_status=1,
            server_status=0,
            proxy_status=0,
            stray=[],
            timed_out=True,
        )

    monkeypatch.setattr(runner, "run_in_lab", run_in_lab)
    told: list[dict[str, list[str]]] = []
    async with trio.open_nursery() as nursery:
        runs = RunsBackend(nursery, lambda placed: None, lambda sc: None,
                           lambda sc, failures: told.append(failures))  # fmt: skip
        runs.start(sc)
        await runs.wait_idle()
    (failures,) = told
    assert failures == {
        "en": ["the run did not end within its deadline", "client: expected exit status 0, saw 1"],
        "zh": ["运行没有在时限内结束", "客户端：退出状态应为 0，实际为 1"],
    }


def test_thousands_of_connections_keep_the_model_bounded() -> None:
    model = BoardModel(kept_rows=50)
    base = [r for r in recorded() if isinstance(r, TcpState)]
    for i in range(3000):
        for r in base:
            model.feed(causality.Placed(dataclasses.replace(r, conn=f"{r.conn}-{i}"), r.ts, False))
    assert len(model.replay()) < 50 + 20
    assert all(len(side) <= 4 * 200 for side in model.sockets.values())


# --- the API's bodies -------------------------------------------------------------


def test_a_rule_in_the_cli_grammar_becomes_the_control_request() -> None:
    payload, rule = api.add_request({"action": "drop", "rule": "server:syn-ack@1"})
    assert payload == {"op": "add", "action": "drop", "rule": "server:syn-ack@1"}
    assert rule.name == "drop-server:syn-ack@1"


@pytest.mark.parametrize(
    ("body", "status", "field", "says"),
    [
        ({"action": "drop", "rule": "syn-ak@1"}, 422, "rule", "did you mean 'syn-ack'"),
        ({"action": "explode", "rule": "syn"}, 422, "action", "unknown action"),
        ({"rule": "syn"}, 400, "action", "'action' is required"),
        ({"action": "drop", "rule": 3}, 400, "rule", "must be a string"),
        ({"action": "drop", "rule": "syn", "when": 1}, 400, "when", "unknown field"),
        ({"table": "x"}, 400, "table", "must be an object"),
        ({"action": "delay", "rule": "fin@1=forever"}, 422, "rule", "forever"),
    ],
)
def test_a_bad_rule_is_refused_naming_the_field(
    body: dict[str, Any], status: int, field: str, says: str
) -> None:
    with pytest.raises(api.ApiError) as refused:
        api.add_request(body)
    assert refused.value.status == status
    assert refused.value.as_body()["field"] == field
    assert says in str(refused.value)


@pytest.mark.parametrize("raw", [b"{", b"[1]", b"\xff\xfe", b"x" * (api.MAX_BODY + 1)])
def test_a_body_that_is_not_a_json_object_is_refused(raw: bytes) -> None:
    with pytest.raises(api.ApiError) as refused:
        api.parse_body(raw)
    assert refused.value.status in (400, 413)


def test_pace_and_release_bodies() -> None:
    assert api.pace_request({"value": "250ms"}) == {"op": "pace", "value": "250ms"}
    assert api.pace_request({"value": None}) == {"op": "pace", "value": None}
    with pytest.raises(api.ApiError, match="bad duration") as refused:
        api.pace_request({"value": "slow"})
    assert refused.value.field == "value"
    assert api.release_request({}) == {"op": "release", "rule": None}


@pytest.mark.parametrize(
    ("text", "remote", "ok"),
    [
        ("127.0.0.1:8080", False, True),
        ("[::1]:0", False, True),
        ("localhost:9000", False, True),
        ("0.0.0.0:8080", False, False),
        ("0.0.0.0:8080", True, True),
        ("192.0.2.7:80", False, False),
        ("127.0.0.1:http", False, False),
        ("127.0.0.1:70000", False, False),
        ("8080", False, False),
    ],
)
def test_the_board_binds_loopback_unless_told(text: str, remote: bool, ok: bool) -> None:
    if ok:
        host, _port = serve.parse_listen(text, allow_remote=remote)
        assert (serve.remote_warning(host) is None) == (not remote)
    else:
        with pytest.raises(serve.ListenError):
            serve.parse_listen(text, allow_remote=remote)


# --- the app -------------------------------------------------------------------------


class FakeProxy:
    """A middlebox that answers as the proxy's control socket does."""

    can_run = False

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    async def request(self, payload: dict[str, Any], field: str | None = None) -> dict[str, Any]:
        self.requests.append(payload)
        if payload["op"] == "rm":
            return api.proxy_answer({"ok": False, "error": "rm: no rule named 'x'"}, field)
        if payload["op"] == "add":
            return {"name": "drop-server:syn-ack@1"}
        return {"rules": [], "pace": None, "counters": {"frames": 3}}

    async def run(self, name: str) -> None:
        raise api.ApiError(409, "scenario", "not here")

    def busy(self) -> str | None:
        return None


def client_for(board: Board) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=make_app(board))
    return httpx.AsyncClient(transport=transport, base_url="http://board")


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/"), ("GET", "/api/rules"), ("POST", "/api/rules"), ("GET", "/api/events"),
     ("DELETE", "/api/rules/x"), ("GET", "/nowhere"), ("POST", "/api/run")],
)  # fmt: skip
async def test_nothing_without_the_token(method: str, path: str) -> None:
    board = Board("s3cret")
    board.backend = FakeProxy()
    async with client_for(board) as client:
        for headers in ({}, {"authorization": "Bearer wrong"}):
            answer = await client.request(method, path, headers=headers)
            assert answer.status_code == 401
            assert "token" in answer.json()["error"]
        answer = await client.request(method, f"{path}?token=s3cre")
        assert answer.status_code == 401


async def test_the_api_goes_to_the_middlebox_and_names_what_was_wrong() -> None:
    board = Board("s3cret")
    proxy = FakeProxy()
    board.backend = proxy
    auth = {"authorization": "Bearer s3cret"}
    async with client_for(board) as client:
        page = await client.get("/?token=s3cret")
        assert page.status_code == 200 and '"s3cret"' in page.text
        assert "http://" not in page.text.replace("http://www.w3.org", "")  # nothing fetched
        added = await client.post(
            "/api/rules", json={"action": "drop", "rule": "server:syn-ack@1"}, headers=auth
        )
        assert added.status_code == 201 and added.json() == {"name": "drop-server:syn-ack@1"}
        bad = await client.post("/api/rules", json={"action": "drop", "rule": "nope"}, headers=auth)
        assert bad.status_code == 422 and bad.json()["field"] == "rule"
        huge = await client.post("/api/rules", content=b"x" * (api.MAX_BODY * 4), headers=auth)
        assert huge.status_code == 413
        gone = await client.delete("/api/rules/x", headers=auth)
        assert gone.status_code == 404 and "no rule named" in gone.json()["error"]
        counters = await client.get("/api/counters", headers=auth)
        assert counters.json()["proxy"]["counters"] == {"frames": 3}
        refused = await client.post("/api/run", json={"scenario": "lost-syn"}, headers=auth)
        assert refused.status_code == 409 and refused.json()["field"] == "scenario"
    # the bad rule never reached the middlebox
    assert [r["op"] for r in proxy.requests] == ["add", "rm", "rules"]


async def test_the_stream_replays_then_goes_on_live() -> None:
    board = Board("t")
    records = recorded()
    ordered = causality.order(records)
    for placed in ordered[:10]:
        board.placed(placed)
    got: list[dict[str, Any]] = []
    replay = board.model.replay()
    assert any(m["type"] == "row" for m in replay)

    async def more(stream: Any) -> None:
        chunk = await stream.__anext__()
        for event in chunk.decode().split("\n\n"):
            if event.startswith("data: "):
                got.append(json.loads(event[len("data: ") :]))

    with trio.fail_after(5):
        stream = _sse(board, "pages", replay)
        assert (await stream.__anext__()).startswith(b":")
        while len(got) < len(coalesce(replay)):
            await more(stream)
        assert got == coalesce(replay)
        # what comes after the replay is live
        for placed in ordered[10:]:
            board.placed(placed)
        last = board.model.rows_total - 1
        while not any(m.get("type") == "row" and m["n"] == last for m in got):
            await more(stream)
        await stream.aclose()  # type: ignore[attr-defined]
    numbers = [m["n"] for m in got if m.get("type") == "row"]
    assert numbers == list(range(len(numbers)))


async def test_a_script_that_falls_behind_is_cut_off_not_queued_for() -> None:
    hub = Hub(buffer=4)
    async with hub.listen() as slow:
        hub.publish(range(10))
        assert hub.cut_off == 1 and hub.listeners == 0
        received = [slow.receive_nowait() for _ in range(4)]
        assert received == [0, 1, 2, 3]
        with pytest.raises(trio.EndOfChannel):
            await slow.receive()


async def test_a_page_that_falls_behind_loses_its_oldest_rows_counted_never_the_present() -> None:
    hub = Hub(buffer=8, shed=lambda batch: shed(batch, keep_rows=3))
    async with hub.listen() as slow:
        hub.publish([{"type": "run", "status": "running"}])
        hub.publish({"type": "row", "n": n} for n in range(20))
        hub.publish([{"type": "sockets", "side": "client", "sockets": [n]} for n in range(3)])
        assert hub.cut_off == 0 and hub.listeners == 1
        got = []
        with contextlib.suppress(trio.WouldBlock):
            while True:
                got.append(slow.receive_nowait())
    rows = [m["n"] for m in got if m["type"] == "row"]
    assert rows == sorted(rows) and rows[-1] == 19  # the newest always arrive
    assert got[0] == {"type": "run", "status": "running"}
    assert [m for m in got if m["type"] == "sockets"][-1]["sockets"] == [2]
    assert hub.shed_rows == 20 - len(rows) == slow.take_skipped()
    assert len(got) <= 8


def test_a_batch_keeps_only_the_rows_a_page_keeps() -> None:
    batch = [{"type": "divider", "n": 0}, *({"type": "row", "n": n} for n in range(1, 11))]
    kept, gone = shed(batch, keep_rows=4)
    assert gone == 6
    assert kept == [batch[0], *batch[-4:]]
    assert shed(batch, keep_rows=40) == (batch, 0)


def test_a_burst_keeps_only_each_sides_last_table() -> None:
    batch = [
        {"type": "sockets", "side": "client", "sockets": [1]},
        {"type": "row", "n": 0},
        {"type": "sockets", "side": "server", "sockets": []},
        {"type": "sockets", "side": "client", "sockets": [1, 2]},
    ]
    assert coalesce(batch) == batch[1:]


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("https://lab.example/board/", "https://lab.example/board"),
        ("ftp://127.0.0.1", None),
        ("http://", None),
        ("http://host:99999", None),
        ("http://host/?token=x", None),
        ("http://host/\x1b[2J", None),
        ("http://host /x", None),
    ],
)
def test_a_public_url_is_an_http_address_the_token_can_be_added_to(
    text: str, ok: str | None
) -> None:
    if ok is None:
        with pytest.raises(ValueError):
            serve.public_url(text)
    else:
        assert serve.public_url(text) == ok
