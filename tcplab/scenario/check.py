"""Checking a finished run against a scenario's expectations (pure): each
expectation that did not hold, in words, in English or Chinese.

Every sentence comes from :data:`MESSAGES`, one template per language, so
the two say the same thing with the same numbers.  The English ones are
what ``run_done`` records carry (and what ``tcplab verify`` prints)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from core import events
from core.events import CLOSED, App, ObserverStop, Record, Segment, TcpState
from tcplab import connview
from tcplab.scenario.model import Scenario, SegmentExpect, SideExpect

LANGS = ("en", "zh")

MESSAGES: Mapping[str, Mapping[str, str]] = {
    # words that fill the sentences
    "client": {"en": "client", "zh": "客户端"},
    "server": {"en": "server", "zh": "服务端"},
    "none": {"en": "none", "zh": "无"},
    "at": {"en": "t={ms:+.1f} ms", "zh": "t={ms:+.1f} 毫秒"},
    "list": {"en": ", ", "zh": "、"},
    # the run as a whole
    "deadline": {"en": "the run did not end within its deadline", "zh": "运行没有在时限内结束"},
    "deadline_of": {"en": "the run did not end within its deadline ({deadline})",
                    "zh": "运行没有在时限（{deadline}）内结束"},
    "no_lab": {"en": "the lab could not be built: {why}", "zh": "实验环境搭建失败：{why}"},
    # the lines that end a run's report
    "held": {"en": "every expectation held ✓", "zh": "全部预期成立 ✓"},
    "not_met": {"en": "{n} expectation(s) not met:", "zh": "有 {n} 项预期未满足："},
    "causal": {"en": "causal order: {violation}", "zh": "因果顺序：{violation}"},
    # a side: [expect.client], [expect.server]
    "exit": {"en": "{side}: expected exit status {want}, saw {saw}",
             "zh": "{side}：退出状态应为 {want}，实际为 {saw}"},
    "connection": {"en": "{side}: expected connection {want}, saw {saw}",
                   "zh": "{side}：应有第 {want} 个连接，实际只有 {saw} 个"},
    "errors": {"en": "{side}: expected errors {want}, saw {saw}",
               "zh": "{side}：应出现错误 {want}，实际出现的是 {saw}"},
    "errors_none": {"en": "{side}: expected errors {want}, saw none",
                    "zh": "{side}：应出现错误 {want}，实际一个也没有出现"},
    "final": {"en": "{side}: expected {want} left at the end, saw {saw}",
              "zh": "{side}：结束时应剩下 {want}，实际剩下 {saw}"},
    "final_empty": {"en": "{side}: expected no sockets left at the end, saw {saw}",
                    "zh": "{side}：结束时不应剩下套接字，实际剩下 {saw}"},
    "final_gone": {"en": "{side}: expected {want} left at the end, saw none",
                   "zh": "{side}：结束时应剩下 {want}，实际一个也没剩下"},
    "no_counters": {"en": "{side}: expected kernel counters, the observer reported none",
                    "zh": "{side}：应有内核计数器的读数，观察进程却没有报告"},
    "counter": {"en": "{side}: expected {name} to rise by at least {least}, saw {rose:+d}",
                "zh": "{side}：{name} 应至少增加 {least}，实际变化 {rose:+d}"},
    "states": {"en": "{side}: expected states {want}, saw {saw}",
               "zh": "{side}：状态序列应为 {want}，实际为 {saw}"},
    "inferred": {"en": "{side}: {extra} only inferred (too quick for the poller); allowed "
                       "inferred: {allowed}",
                 "zh": "{side}：{extra} 只是推断出来的（变化太快，轮询没看到）；"
                       "允许推断的状态：{allowed}"},
    "never_left": {"en": "{side}: expected to see it leave {state} (at least {least:g} ms)",
                   "zh": "{side}：应看到它离开 {state}（至少停留 {least:g} 毫秒）"},
    "min_in": {"en": "{side}: expected at least {least:g} ms in {state}, saw {stayed:.1f} ms "
                     "({at})",
               "zh": "{side}：应在 {state} 停留至少 {least:g} 毫秒，"
                     "实际 {stayed:.1f} 毫秒（{at}）"},
    "max_in": {"en": "{side}: expected at most {most:g} ms in {state}, saw {stayed:.1f} ms ({at})",
               "zh": "{side}：在 {state} 停留应不超过 {most:g} 毫秒，"
                     "实际 {stayed:.1f} 毫秒（{at}）"},
    "listener": {"en": "{side}: expected listener states {want}, saw {saw}",
                 "zh": "{side}：监听套接字的状态序列应为 {want}，实际为 {saw}"},
    "listener_of": {"en": "{side}: expected listener states {want}, saw {saw} ({conn})",
                    "zh": "{side}：监听套接字的状态序列应为 {want}，实际为 {saw}（{conn}）"},
    "reset_never_in": {"en": "{side}: expected an RST to end the connection in {state}, it was "
                             "never in {state}",
                       "zh": "{side}：连接应在 {state} 中因收到 RST 而结束，它却从未进入 {state}"},
    "reset_stayed": {"en": "{side}: expected an RST to end the connection in {state}, it did not "
                           "leave {state}",
                     "zh": "{side}：连接应在 {state} 中因收到 RST 而结束，它却没有离开 {state}"},
    "reset_went": {"en": "{side}: expected an RST to end the connection in {state}, it went to "
                         "{new} ({at})",
                   "zh": "{side}：连接应在 {state} 中因收到 RST 而结束，它却转入了 {new}（{at}）"},
    "reset_none": {"en": "{side}: expected an RST to end the connection in {state}, none reached "
                         "it before it closed ({at})",
                   "zh": "{side}：连接应在 {state} 中因收到 RST 而结束，可在它关闭（{at}）"
                         "之前没有 RST 到达"},
    "no_timer": {"en": "{side}: expected the {state} timer to restart, saw no {state} timer",
                 "zh": "{side}：{state} 的计时器应重新启动，却没有看到 {state} 的计时器"},
    "timer_unseen": {"en": "{side}: expected the {state} timer to restart, saw neither {state} "
                           "end nor its timer at the end",
                     "zh": "{side}：{state} 的计时器应重新启动，却既没看到 {state} 结束，"
                           "结束时也没看到它的计时器"},
    "timer_ran_on": {"en": "{side}: expected the {state} timer to restart (to end at least "
                           "{least:g} ms later than its timer said when {state} began), saw "
                           "{later:+.1f} ms",
                     "zh": "{side}：{state} 的计时器应重新启动（{state} 应比进入时计时器"
                           "所说的至少晚 {least:g} 毫秒结束），实际相差 {later:+.1f} 毫秒"},
    # [[expect.segments]]
    # (a segment in Chinese: "客户端发出的 syn（非 retransmit）（drop）")
    "sent_by": {"en": "{side} ", "zh": "{side}发出的 "},
    "sent_by_any": {"en": "", "zh": "任一方发出的 "},
    "segment_not": {"en": " (not {tag})", "zh": "（非 {tag}）"},
    "segment_any": {"en": "segment", "zh": "报文段"},
    "verdict": {"en": " {verdict}", "zh": "（{verdict}）"},
    "count": {"en": "segments: expected {count} × {what}, saw {saw}",
              "zh": "报文段：应恰好有 {count} 个{what}，实际 {saw} 个"},
    "not_seen": {"en": "segments: expected {what}, not seen",
                 "zh": "报文段：应出现{what}，却没有看到"},
    "not_seen_after": {"en": "segments: expected {what} after {at}, not seen",
                       "zh": "报文段：{at}之后应出现{what}，却没有看到"},
    "gap": {"en": "segments: expected {what} {low:g}–{high:g} ms after the previous one, saw "
                  "{gap:.1f} ms ({at})",
            "zh": "报文段：上一个之后 {low:g}–{high:g} 毫秒内应出现{what}，"
                  "实际间隔 {gap:.1f} 毫秒（{at}）"},
}  # fmt: skip
"""Every sentence the checker says: key → language → template
(:meth:`str.format` fields)."""


def say(lang: str, key: str, **fields: object) -> str:
    """The message ``key`` in ``lang`` (English where it has no such language)."""
    templates = MESSAGES[key]
    return templates.get(lang, templates["en"]).format(**fields)


def _fmt_t(ts: float, t0: float, lang: str = "en") -> str:
    return say(lang, "at", ms=(ts - t0) * 1000)


def _join(items: Sequence[str], lang: str) -> str:
    return say(lang, "list").join(items)


def outcome(failures: Sequence[str], violations: Sequence[str] = (), lang: str = "en") -> list[str]:
    """The lines that end a run's report: the expectations that were not
    met (or that all were), then the records that broke causal order."""
    if failures:
        lines = [say(lang, "not_met", n=len(failures)), *(f"  ✗ {f}" for f in failures)]
    else:
        lines = [say(lang, "held")]
    return lines + [f"  ✗ {say(lang, 'causal', violation=v)}" for v in violations]


def check(
    sc: Scenario,
    records: Sequence[Record],
    statuses: Mapping[str, int | None],
    lang: str = "en",
) -> list[str]:
    """Every expectation that did not hold, in words in ``lang`` (``en`` or
    ``zh``; empty: the run passed).  ``records`` in the order they arrived
    (each component's own in order)."""
    segs = sorted((r for r in records if isinstance(r, Segment)), key=lambda r: r.ts)
    t0 = connview.time_zero(records)
    failures: list[str] = []
    for side, want in (("client", sc.expect_client), ("server", sc.expect_server)):
        failures += _check_side(side, want, records, segs, statuses.get(side), t0, lang)
    failures += _check_segments(sc.expect_segments, segs, t0, lang)
    return failures


def check_in_all(
    sc: Scenario, records: Sequence[Record], statuses: Mapping[str, int | None]
) -> dict[str, list[str]]:
    """:func:`check` in every language, by language."""
    return {lang: check(sc, records, statuses, lang) for lang in LANGS}


def _check_side(
    side: str,
    want: SideExpect,
    records: Sequence[Record],
    segs: Sequence[Segment],
    status: int | None,
    t0: float,
    lang: str = "en",
) -> list[str]:
    who = say(lang, side)
    out: list[str] = []
    if want.exit is not None and status != want.exit:
        out.append(say(lang, "exit", side=who, want=want.exit, saw=status))
    # the run, for this side, ends with its observer's last report; what the
    # kernel does with sockets the program kept, as it exits, comes after
    observed = connview.until_stop(records, side)
    stops = [r for r in records if isinstance(r, ObserverStop) and r.component == side]
    stop = stops[-1] if stops else None
    if want.listener is not None:
        out += _check_listener(side, want.listener, observed, lang)
    per_connection = (
        want.states is not None
        or want.min_in
        or want.max_in
        or want.reset_in
        or want.timer_restarted
    )
    if per_connection:
        conns = connview.paths(observed, side)
        if len(conns) < want.connection:
            out.append(say(lang, "connection", side=who, want=want.connection, saw=len(conns)))
            return out
        path = conns[want.connection - 1]
        out += _check_path(side, want, path, t0, lang)
        for state in want.reset_in:
            out += _check_reset_in(side, state, path, segs, t0, lang)
        for state, least in want.timer_restarted.items():
            out += _check_timer_restarted(side, state, least, path, observed, stop, lang)
    if want.errors:
        seen = {
            str(r.how)
            for r in records
            if isinstance(r, App) and r.component == side and r.kind == events.APP_ERROR
        }
        missing = [name for name in want.errors if name not in seen]
        if missing:
            key = "errors" if seen else "errors_none"
            saw = _join(sorted(seen), lang)
            out.append(say(lang, key, side=who, want=_join(missing, lang), saw=saw))
    if want.counters:
        out += _check_counters(side, want.counters, stop, lang)
    if want.final is not None:
        remaining = stop.remaining if stop is not None else ()
        states = sorted(str(sock.get("state")) for sock in remaining)
        if states != sorted(want.final):
            key = "final_empty" if not want.final else "final" if states else "final_gone"
            wanted = _join(sorted(want.final), lang)
            out.append(say(lang, key, side=who, want=wanted, saw=_join(states, lang)))
    return out


def _check_counters(
    side: str, want: Mapping[str, int], stop: ObserverStop | None, lang: str = "en"
) -> list[str]:
    """The namespace's kernel counters rose by at least so much while its
    observer watched (``observer_stop``'s ``counters``)."""
    who = say(lang, side)
    if stop is None or stop.counters is None:
        return [say(lang, "no_counters", side=who)]
    out = []
    for name, least in want.items():
        rose = stop.counters.get(name, 0)
        if rose < least:
            out.append(say(lang, "counter", side=who, name=name, least=least, rose=rose))
    return out


def _check_path(
    side: str, want: SideExpect, path: connview.ConnPath, t0: float, lang: str = "en"
) -> list[str]:
    """The connection's states and the time it spent in them."""
    who = say(lang, side)
    out: list[str] = []
    walked = path.states
    if want.states is not None:
        expected = [s for s in want.states if s not in want.may_skip or s in walked]
        if walked != expected:
            out.append(
                say(lang, "states", side=who, want=" → ".join(expected), saw=" → ".join(walked))
            )
        inferred = {r.new for r in path.records if r.source == "inferred"}
        extra = sorted(inferred - want.may_infer)
        if extra:
            allowed = _join(sorted(want.may_infer), lang) or say(lang, "none")
            out.append(say(lang, "inferred", side=who, extra=_join(extra, lang), allowed=allowed))
    for state, least in want.min_in.items():
        left = path.left(state)
        if left is None or left.in_old_ms is None:
            out.append(say(lang, "never_left", side=who, state=state, least=least * 1000))
        elif left.in_old_ms < least * 1000:
            out.append(
                say(lang, "min_in", side=who, state=state, least=least * 1000,
                    stayed=left.in_old_ms, at=_fmt_t(left.ts, t0, lang))
            )  # fmt: skip
    for state, most in want.max_in.items():
        left = path.left(state)
        if left is not None and left.in_old_ms is not None and left.in_old_ms > most * 1000:
            out.append(
                say(lang, "max_in", side=who, state=state, most=most * 1000,
                    stayed=left.in_old_ms, at=_fmt_t(left.ts, t0, lang))
            )  # fmt: skip
    return out


def _check_listener(
    side: str, want: tuple[str, ...], observed: Sequence[Record], lang: str = "en"
) -> list[str]:
    """The states of the side's (first) listening socket, in order."""
    listeners = connview.listener_states(observed, side)
    walked = [CLOSED]
    for record in listeners:
        if record.conn == listeners[0].conn and record.new != walked[-1]:
            walked.append(record.new)
    if walked == list(want):
        return []
    said = {"side": say(lang, side), "want": " → ".join(want), "saw": " → ".join(walked)}
    if listeners:
        return [say(lang, "listener_of", conn=listeners[0].conn, **said)]
    return [say(lang, "listener", **said)]


def _check_reset_in(
    side: str,
    state: str,
    path: connview.ConnPath,
    segs: Sequence[Segment],
    t0: float,
    lang: str = "en",
) -> list[str]:
    """The connection left ``state`` for CLOSED because of an RST it
    received: one reached it (at the middlebox, delivered) after it entered
    ``state`` and before it was seen to leave."""
    said = {"side": say(lang, side), "state": state}
    entered, left = path.entered(state), path.left(state)
    if entered is None:
        return [say(lang, "reset_never_in", **said)]
    if left is None:
        return [say(lang, "reset_stayed", **said)]
    if left.shown_new != CLOSED:
        return [say(lang, "reset_went", new=left.shown_new, at=_fmt_t(left.ts, t0, lang), **said)]
    toward = "s2c" if side == "client" else "c2s"
    resets = [
        s
        for s in segs
        if s.conn == path.conn
        and s.dir == toward
        and "R" in s.flags
        and s.delivered
        and entered.earliest <= s.ts <= left.ts
    ]
    if resets:
        return []
    return [say(lang, "reset_none", at=_fmt_t(left.ts, t0, lang), **said)]


def _check_timer_restarted(
    side: str,
    state: str,
    least: float,
    path: connview.ConnPath,
    observed: Sequence[Record],
    stop: ObserverStop | None,
    lang: str = "en",
) -> list[str]:
    """The connection stayed in ``state`` at least ``least`` longer than the
    state's timer said when it was entered: the timer was restarted (a
    TIME_WAIT re-arms its 60 s when it acknowledges a retransmitted FIN).
    Where the state ends: when it was seen to leave it (a kernel timer fires
    late, never early), or, still in it at the end, the observer's last
    report of the time left."""
    said = {"side": say(lang, side), "state": state}
    began = next(
        (
            r
            for r in observed
            if isinstance(r, TcpState)
            and r.conn == path.conn
            and r.shown_new == state
            and r.expires_ms is not None
        ),
        None,
    )
    if began is None:
        return [say(lang, "no_timer", **said)]
    assert began.expires_ms is not None
    promised = began.ts + began.expires_ms / 1000
    left = path.left(state)
    if left is not None:
        ended = left.earliest
    else:
        last = next(
            (
                sock
                for sock in (stop.remaining if stop is not None else ())
                if sock.get("conn") == path.conn
                and sock.get("state") == state
                and isinstance(sock.get("expires_ms"), int | float)
            ),
            None,
        )
        if last is None or stop is None:
            return [say(lang, "timer_unseen", **said)]
        ended = stop.ts + float(last["expires_ms"]) / 1000
    later = ended - promised
    if later >= least:
        return []
    return [say(lang, "timer_ran_on", least=least * 1000, later=later * 1000, **said)]


def _matches(want: SegmentExpect, seg: Segment) -> bool:
    if want.side is not None and seg.dir != ("c2s" if want.side == "client" else "s2c"):
        return False
    if any(tag not in seg.tags for tag in want.tags):
        return False
    if any(tag in seg.tags for tag in want.without):
        return False
    if want.flags is not None and seg.flags != want.flags:
        return False
    return want.verdict is None or seg.verdict == want.verdict


def _describe(want: SegmentExpect, lang: str) -> str:
    """The expected segment in words (:meth:`SegmentExpect.describe` in
    English): whose, its roles or flags, and the middlebox's verdict."""
    if lang == "en":
        return want.describe()
    who = say(lang, "sent_by", side=say(lang, want.side)) if want.side else say(lang, "sent_by_any")
    what = "+".join(want.tags) or (want.flags or say(lang, "segment_any"))
    what += "".join(say(lang, "segment_not", tag=tag) for tag in want.without)
    verdict = say(lang, "verdict", verdict=want.verdict) if want.verdict else ""
    return f"{who}{what}{verdict}"


def _check_segments(
    wants: tuple[SegmentExpect, ...], segs: list[Segment], t0: float, lang: str = "en"
) -> list[str]:
    out: list[str] = []
    position = 0
    previous: Segment | None = None
    for want in wants:
        if want.count is not None:
            # a count is about the whole run, not a step in the sequence
            found = sum(1 for e in segs if _matches(want, e))
            if found != want.count:
                out.append(
                    say(lang, "count", count=want.count, what=_describe(want, lang), saw=found)
                )
            continue
        hit = next((i for i in range(position, len(segs)) if _matches(want, segs[i])), None)
        if hit is None:
            what = _describe(want, lang)
            if previous is None:
                out.append(say(lang, "not_seen", what=what))
            else:
                out.append(say(lang, "not_seen_after", what=what, at=_fmt_t(previous.ts, t0, lang)))
            continue
        seg = segs[hit]
        if want.after is not None and previous is not None:
            gap = seg.ts - previous.ts
            low, high = want.after
            if not low <= gap <= high:
                out.append(
                    say(lang, "gap", what=_describe(want, lang), low=low * 1000, high=high * 1000,
                        gap=gap * 1000, at=_fmt_t(seg.ts, t0, lang))
                )  # fmt: skip
        previous = seg
        position = hit + 1
    return out
