"""The board's web app: the page, its live stream, and the rules API
(Starlette on trio; run by :mod:`tcplab.board.serve`).

Every route needs the board's token — in the query (``?token=``, as the
printed URL has it) or as ``Authorization: Bearer TOKEN`` — since the page
and the API change a live lab's faults; anything without it gets 401.

The API, shaped like toxiproxy's:

=========================  ==========================================
``GET /api/rules``          the rules, their counts, the pace
``POST /api/rules``         ``{"action": "drop", "rule": "server:syn-ack@1"}``
``DELETE /api/rules/NAME``  remove one
``POST /api/release``       let held segments go (``{"rule": NAME}``: one rule's)
``POST /api/pace``          ``{"value": "200ms"}`` (``null``: off)
``GET /api/counters``       the middlebox's counters and the board's
``GET /api/events``         server-sent events: the JSON records, live
``GET /api/scenarios``      the catalogue
``POST /api/run``           ``{"scenario": NAME}``: run one (when the board runs them)
=========================  ==========================================
"""

from __future__ import annotations

import contextlib
import hmac
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tcplab import timeline
from tcplab.board import api
from tcplab.board.model import shed
from tcplab.board.service import Board

PAGE = Path(__file__).with_name("static") / "board.html"
HEARTBEAT_S = 15.0
"""A comment line this often keeps proxies and the browser from giving up
on a quiet stream."""


def authorised(request: Request, token: str) -> bool:
    given = request.query_params.get("token", "")
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        given = header[7:].strip()
    return bool(given) and hmac.compare_digest(given.encode(), token.encode())


async def _body(request: Request) -> dict[str, Any]:
    """The request's JSON object, read no further than :data:`api.MAX_BODY`
    (a bigger body is refused as it arrives, not after it is all in memory)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > api.MAX_BODY:
        raise api.ApiError(413, None, f"the body is {declared} bytes; at most {api.MAX_BODY}")
    raw = bytearray()
    async with contextlib.aclosing(request.stream()) as chunks:
        async for chunk in chunks:
            raw += chunk
            if len(raw) > api.MAX_BODY:
                raise api.ApiError(413, None, f"the body is over {api.MAX_BODY} bytes")
    return api.parse_body(bytes(raw))


async def _api_error(_request: Request, exc: Exception) -> Response:
    """A request the API refuses: its status and a JSON error naming the field."""
    assert isinstance(exc, api.ApiError)
    return JSONResponse(exc.as_body(), status_code=exc.status)


MAX_BATCH = 512
"""Messages sent in one write: a burst goes out in a few writes, not one
write (and one wake-up of the page) each."""


def encode_events(batch: list[Any]) -> bytes:
    """Server-sent events, one ``data:`` line each."""
    return "".join(
        f"data: {json.dumps(m, ensure_ascii=False, separators=(',', ':'))}\n\n" for m in batch
    ).encode()


async def _sse(board: Board, hub_name: str, first: list[Any]) -> AsyncIterator[bytes]:
    hub = board.pages if hub_name == "pages" else board.records
    yield b": tcplab board\n\n"
    async with hub.listen(first) as messages:
        while True:
            with trio.move_on_after(HEARTBEAT_S) as quiet:
                try:
                    batch = [await messages.receive()]
                except trio.EndOfChannel:
                    # cut off for falling behind: the page reconnects and
                    # its replay gives it the present
                    return
            if quiet.cancelled_caught:
                yield b": still here\n\n"
                continue
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(messages.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            # more rows than a page keeps: the older ones would only be
            # folded there, so they are counted and not sent
            batch, gone = shed(batch)
            hub.shed_rows += gone
            skipped = messages.take_skipped() + gone
            if skipped:
                batch.insert(0, {"type": "skipped", "rows": skipped})
            yield encode_events(batch)


class Routes:
    """The handlers, on one board."""

    def __init__(self, board: Board) -> None:
        self.board = board

    async def backend_call(
        self, payload: dict[str, Any], field: str | None = None
    ) -> dict[str, Any]:
        if self.board.backend is None:
            raise api.ApiError(503, None, "the board has no middlebox to talk to yet")
        return await self.board.backend.request(payload, field)

    async def page(self, request: Request) -> Response:
        lang = request.query_params.get("lang", self.board.lang)
        text = PAGE.read_text(encoding="utf-8")
        text = text.replace("/*PAGE_CSS*/", timeline.PAGE_CSS)
        text = text.replace("__TOKEN__", json.dumps(self.board.token))
        text = text.replace("__LANG__", json.dumps(lang if lang in ("en", "zh") else "en"))
        geometry = {
            "width": timeline.SVG_WIDTH,
            "row_h": timeline.ROW_H,
            "lanes": timeline.LANES,
            "kept_rows": self.board.model.kept_rows,
        }
        text = text.replace("__GEOMETRY__", json.dumps(geometry))
        return HTMLResponse(text, headers={"cache-control": "no-store"})

    async def ladder(self, request: Request) -> Response:
        return _stream(_sse(self.board, "pages", self.board.model.replay()))

    async def events(self, request: Request) -> Response:
        return _stream(_sse(self.board, "records", []))

    # an ApiError raised by a handler becomes its 4xx/5xx JSON answer
    # (make_app's exception handler)

    async def rules_list(self, request: Request) -> Response:
        answer = await self.backend_call({"op": "rules"})
        return JSONResponse({"rules": answer.get("rules", []), "pace": answer.get("pace")})

    async def rules_add(self, request: Request) -> Response:
        payload, _rule = api.add_request(await _body(request))
        answer = await self.backend_call(payload, "rule" if "rule" in payload else "table")
        return JSONResponse(answer, status_code=201)

    async def rules_remove(self, request: Request) -> Response:
        name = api.rule_name(request.path_params["name"])
        await self.backend_call({"op": "rm", "name": name}, "name")
        return Response(status_code=204)

    async def release(self, request: Request) -> Response:
        payload = api.release_request(await _body(request))
        return JSONResponse(await self.backend_call(payload, "rule"))

    async def pace(self, request: Request) -> Response:
        payload = api.pace_request(await _body(request))
        return JSONResponse(await self.backend_call(payload, "value"))

    async def counters(self, request: Request) -> Response:
        try:
            answer = await self.backend_call({"op": "rules"})
        except api.ApiError as exc:
            answer = {"error": str(exc)}
        keep = ("counters", "held", "delayed", "flows", "drops_unlogged", "control", "error")
        proxy = {k: v for k, v in answer.items() if k in keep}
        return JSONResponse({"proxy": proxy, "board": self.board.counters()})

    async def scenarios(self, request: Request) -> Response:
        from tcplab import scenario

        listed = []
        for path in scenario.catalogue():
            try:
                sc = scenario.load(path)
            except scenario.ScenarioError:
                continue
            listed.append({"name": path.stem, "title": sc.title})
        can_run = self.board.backend is not None and self.board.backend.can_run
        busy = self.board.backend.busy() if self.board.backend is not None else None
        return JSONResponse({"scenarios": listed, "can_run": can_run, "running": busy})

    async def run(self, request: Request) -> Response:
        body = await _body(request)
        name = body.get("scenario")
        if not isinstance(name, str) or not name:
            raise api.ApiError(400, "scenario", "'scenario' (a catalogue name) is required")
        if self.board.backend is None:
            raise api.ApiError(503, None, "the board has no lab to run it in")
        await self.board.backend.run(name)
        return JSONResponse({"running": name}, status_code=202)


def make_app(board: Board) -> TokenGate:
    """The app for ``board``."""
    routes = Routes(board)
    table = [
        Route("/", routes.page),
        Route("/api/ladder", routes.ladder),
        Route("/api/events", routes.events),
        Route("/api/rules", routes.rules_list, methods=["GET"]),
        Route("/api/rules", routes.rules_add, methods=["POST"]),
        Route("/api/rules/{name}", routes.rules_remove, methods=["DELETE"]),
        Route("/api/release", routes.release, methods=["POST"]),
        Route("/api/pace", routes.pace, methods=["POST"]),
        Route("/api/counters", routes.counters, methods=["GET"]),
        Route("/api/scenarios", routes.scenarios, methods=["GET"]),
        Route("/api/run", routes.run, methods=["POST"]),
    ]
    app = Starlette(routes=table, exception_handlers={api.ApiError: _api_error})
    return TokenGate(app, board.token)


class TokenGate:
    """Every HTTP request needs the token, whatever its path: a 401 with a
    JSON error otherwise (before routing, so an unknown path says 401 too)."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not authorised(Request(scope), self.token):
            denied = JSONResponse(
                {"error": "a token is needed: open the URL the board printed (…/?token=…)"},
                status_code=401,
                headers={"www-authenticate": "Bearer"},
            )
            await denied(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _stream(body: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(
        body,
        media_type="text/event-stream",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )
