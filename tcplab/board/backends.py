"""Where the board's rule operations and runs go (trio shells).

:class:`ProxyBackend`: a middlebox that is already running (compose's proxy
container, ``tcplab lab up``'s background proxy): every operation is the
control request ``tcplab proxy …`` would send, over its Unix socket.

:class:`RunsBackend`: the board runs catalogue scenarios itself, each in a
lab of its own as ``tcplab run NAME`` does.  A run's proxy lives only as long
as the run, so the board keeps the rules it was given (the *standing* rules)
and hands them to every run's proxy after the scenario's own; during a run
each operation also goes to that run's proxy, as a control request, at once.
Rules are checked with the same grammar either way (:mod:`core.rules`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

import trio

from core import control, rules
from core.units import format_duration
from tcplab import runner, topology
from tcplab.board.api import ApiError, proxy_answer
from tcplab.causality import Placed

LIVE_WINDOW_S = 0.02
"""How long the board holds a record for one from another process to
overtake it: shorter than the terminal's (a page is redrawn in place, and a
room watches the arrows appear).  A daemon's line is written within
:data:`core.logs.MAX_DELAY_S` (5 ms) of the fact it reports; measured at the
teaching pace, ``logged_ts - ts`` of every ``tcp_state`` and ``segment`` is
at most 3 ms (p99 2.5 ms), so 20 ms leaves a wide margin while a page shows
an arrow about 30 ms after the segment passed (with 40 ms: about 50)."""


class Backend(Protocol):
    """What the board's API needs of whatever runs the middlebox."""

    can_run: bool

    async def request(
        self, payload: dict[str, Any], field: str | None = None
    ) -> dict[str, Any]: ...

    async def run(self, name: str) -> None: ...

    def busy(self) -> str | None: ...


async def _control(path: str, payload: dict[str, Any]) -> dict[str, Any]:
    try:
        return await trio.to_thread.run_sync(control.request, path, payload)
    except control.ProxyUnreachable as exc:
        raise ApiError(503, None, f"the proxy does not answer: {exc}") from None
    except OSError as exc:
        raise ApiError(503, None, f"the proxy's control socket: {exc}") from None


class ProxyBackend:
    """A running proxy, reached at ``path``."""

    can_run = False

    def __init__(self, path: str) -> None:
        self.path = path

    async def request(self, payload: dict[str, Any], field: str | None = None) -> dict[str, Any]:
        return proxy_answer(await _control(self.path, payload), field)

    async def run(self, name: str) -> None:
        raise ApiError(
            409,
            "scenario",
            "this board watches a lab it does not run (its client picks the scenarios: "
            "SCENARIO=NAME docker compose up)",
        )

    def busy(self) -> str | None:
        return None


@dataclasses.dataclass
class Standing:
    """The rules and pace the board gives every run's proxy."""

    rules: list[rules.Rule] = dataclasses.field(default_factory=list)
    pace: float | None = None

    def describe(self) -> list[dict[str, Any]]:
        return [
            {
                "name": r.name,
                "action": r.action,
                "tag": r.match.tag or "any",
                "from": r.match.from_,
                "nth": sorted(r.match.nth) if r.match.nth else None,
                "conn": r.match.conn,
                "delay": format_duration(r.delay) if r.delay is not None else None,
                "rule": rules.format_rule(r),
                "matched": 0,
                "fired": 0,
            }
            for r in self.rules
        ]


class RunsBackend:
    """The board runs scenarios, one at a time, in labs of their own.

    ``on_event`` gets every record of a run in causal order; ``started`` and
    ``finished`` are told of each run (the scenario; then its failures, by
    language: ``{"en": [...], "zh": [...]}``)."""

    can_run = True

    def __init__(
        self,
        nursery: trio.Nursery,
        on_event: Callable[[Placed], None],
        started: Callable[[Any], None],
        finished: Callable[[Any, dict[str, list[str]]], None],
    ) -> None:
        self.nursery = nursery
        self.on_event = on_event
        self.started = started
        self.finished = finished
        self.standing = Standing()
        self.running: str | None = None
        self._lab: topology.Lab | None = None
        self._idle = trio.Event()
        self._idle.set()

    async def wait_idle(self) -> None:
        """Return once no run is under way."""
        while self.running is not None:
            await self._idle.wait()

    def busy(self) -> str | None:
        return self.running

    # --- rules -----------------------------------------------------------------

    async def request(self, payload: dict[str, Any], field: str | None = None) -> dict[str, Any]:
        op = payload["op"]
        answer = self._standing(payload, field)
        live = self._live_path()
        if live is not None:
            try:
                answer = proxy_answer(await _control(live, payload), field)
            except ApiError as exc:
                # a rule the run's proxy never had (it was added before
                # the run) is still removed from the standing ones
                if not (op == "rm" and exc.status == 404):
                    raise
        if op == "rules" and live is None:
            answer = {"rules": self.standing.describe(), "pace": _pace(self.standing.pace),
                      "counters": {}, "held": {}, "running": None}  # fmt: skip
        return answer

    def _standing(self, payload: dict[str, Any], field: str | None) -> dict[str, Any]:
        op = payload["op"]
        kept = self.standing
        if op == "add":
            if "table" in payload:
                rule = rules.parse_table(payload["table"], "'table'")
            else:
                rule = rules.parse_cli(payload["action"], payload["rule"])
            if any(r.name == rule.name for r in kept.rules):
                raise ApiError(409, field, f"a rule named {rule.name!r} is already there")
            kept.rules.append(rule)
            return {"name": rule.name}
        if op == "rm":
            name = payload["name"]
            if not any(r.name == name for r in kept.rules) and self._live_path() is None:
                known = ", ".join(r.name for r in kept.rules) or "none"
                raise ApiError(404, "name", f"no rule named {name!r} (rules: {known})")
            kept.rules = [r for r in kept.rules if r.name != name]
            return {"name": name}
        if op == "clear":
            kept.rules = []
            return {}
        if op == "pace":
            value = payload.get("value")
            kept.pace = rules.parse_pace(value) if value else None
            return {"pace": value}
        if op == "release":
            return {"released": 0}
        return {}

    def _live_path(self) -> str | None:
        if self.running is None or self._lab is None:
            return None
        path = runner.control_path(self._lab)
        return path if topology.proxy_control_path(self._lab.lab_id).exists() else None

    # --- runs ------------------------------------------------------------------

    async def run(self, name: str) -> None:
        """Start scenario ``name`` (in the background); refused while one runs."""
        from tcplab import scenario

        if self.running is not None:
            raise ApiError(409, "scenario", f"{self.running} is still running")
        # only the catalogue's: a name from a page is never a path
        paths = {path.stem: path for path in scenario.catalogue()}
        if name not in paths:
            raise ApiError(404, "scenario", f"no scenario {name[:60]!r} in the catalogue")
        try:
            sc = scenario.load(paths[name])
        except (scenario.ScenarioError, OSError) as exc:
            raise ApiError(422, "scenario", str(exc)) from None
        self.start(sc)

    def start(self, sc: Any) -> None:
        """Run the loaded scenario ``sc`` in the background."""
        if self.running is not None:
            raise ApiError(409, "scenario", f"{self.running} is still running")
        self.running = sc.name
        self._idle = trio.Event()
        self.nursery.start_soon(self._run, sc)

    async def _run(self, sc: Any) -> None:
        from tcplab.scenario.check import LANGS, check_in_all, say

        opts = runner.scenario_options(sc, pace=self.standing.pace)
        opts = dataclasses.replace(
            opts,
            proxy=dataclasses.replace(
                opts.proxy, rules=opts.proxy.rules + tuple(self.standing.rules)
            ),
        )
        spec = topology.LabSpec(forwarding=opts.forwarding, sysctls=opts.sysctls)
        self.started(sc)
        failures: dict[str, list[str]] = {lang: [] for lang in LANGS}
        try:
            self._lab = await trio.to_thread.run_sync(topology.create, spec)
            result = await runner.run_in_lab(self._lab, opts, self.on_event, window=LIVE_WINDOW_S)
            statuses = {"client": result.client_status, "server": result.server_status}
            failures = check_in_all(sc, result.records, statuses)
            if result.timed_out:
                for lang, said in failures.items():
                    said.insert(0, say(lang, "deadline"))
        except (topology.TopologyError, OSError) as exc:
            failures = {lang: [say(lang, "no_lab", why=exc)] for lang in LANGS}
        finally:
            lab, self._lab = self._lab, None
            if lab is not None:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(topology.destroy, lab.lab_id)
            self.running = None
            self._idle.set()
        self.finished(sc, failures)


def _pace(value: float | None) -> str | None:
    return format_duration(value) if value else None
