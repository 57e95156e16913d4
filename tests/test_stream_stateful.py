"""Stateful search of `BarStream` interleavings: klines, disconnects and REST gap fills in any order.

`StreamMachine` plays the three parties around one stream:

- the exchange: a clock closes one bar per step on a fixed grid (bar `n` is forming); now and then a bar never
  exists (maintenance hole). REST is honest: it vouches only for what it returns (`through_ms` as
  `bot.bybit.feed` computes it for a full answer, the last row returned for a short or empty one);
- the websocket: partial updates of the forming bar (and stale ones), confirms delivered on close, missed,
  repeated, or delivered late and out of order; a disconnect kills any fill in flight, which never lands;
- the shell as `bot.bybit.feed` drives it: one level-triggered filler that `take_fill()`s and answers in
  full, short, empty, with a transient error (`fill_failed`, retried on the same connection), a hard error
  (`fill_failed`, then the socket is closed and a reconnect follows) or gives up (`abandon_backfill`, REST
  banned), woken by every `BackfillNeeded`; the overdue timer calls `overdue()` while the stream is
  `behind`.

Invariants after every step: the output tiles the grid (each bar once, in order, equal to the exchange's;
gaps skipped only where the exchange has no bar or the shell gave up); a pending request is due exactly when
no fill is in flight on the live connection; missing bars without a request are asked for by a reconnect or
the overdue timer; and a healthy connection alone catches up. Teardown: reconnect, serve every fill in full,
every closed bar has come out exactly once, in order.
"""

from __future__ import annotations

import sys
from copy import deepcopy
from dataclasses import replace
from typing import Literal

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from bot.core.bars import Bar, BarSource
from bot.core.stream import BackfillNeeded, BarStream, Dropped, GapSkipped, PartialBar, StreamEvent

SYM = "BTCUSDT"
IV = 300_000
T0 = 1_735_689_600_000


def ms(i: int) -> int:
    """Open time of bar `i`."""
    return T0 + i * IV


def idx(start_ms: int) -> int:
    """Index of the bar opened at `start_ms`."""
    return (start_ms - T0) // IV


def true_bar(i: int, source: BarSource = "ws") -> Bar:
    """The exchange's closed bar `i`; every field depends on `i`, so a wrong bar never passes for it."""
    return Bar(SYM, ms(i), 100.0 + i, 101.0 + i, 99.0 + i, 100.5 + i, 10.0 + i, 1_000.0 + i, source=source)


def forming(i: int, ts_ms: int) -> PartialBar:
    """A `confirm:false` update of bar `i`, with values unlike its close."""
    return PartialBar.of(replace(true_bar(i), close=99.25 + i, volume=1.0 + i), ts_ms=ts_ms)


class Exchange:
    """Bars `0..n-1` have closed (except `holes`, which never existed); bar `n` is forming."""

    def __init__(self) -> None:
        self.n = 0
        self.holes: set[int] = set()

    def has(self, i: int) -> bool:
        """True when bar `i` closed and exists."""
        return 0 <= i < self.n and i not in self.holes

    def answer(self, req: BackfillNeeded, *, limit: int | None) -> tuple[list[Bar], int]:
        """REST rows for `req` and the `through_ms` the shell may pass on; `limit`: only the first rows."""
        hi = self.n - 1 if req.end_ms is None else idx(req.end_ms)
        rows = [true_bar(i, "rest") for i in range(idx(req.start_ms), hi + 1) if self.has(i)]
        if limit is not None:
            rows = rows[:limit]
        through_ms = rows[-1].start_ms if rows else req.start_ms - IV
        # as in bot.bybit.feed: a full answer to a bounded request vouches through its end once closed
        if limit is None and req.end_ms is not None and req.end_ms + IV <= ms(self.n):
            through_ms = req.end_ms
        return rows, through_ms


class Tape:
    """The stream's output: bars and skipped gaps must tile the grid from bar 0, in order, once each."""

    def __init__(self, exchange: Exchange) -> None:
        self.ex = exchange
        self.cursor = 0  # index of the next bar the output must account for
        self.bars: list[int] = []
        self.abandoned: set[int] = set()

    @property
    def missing(self) -> list[int]:
        """Bars the exchange has closed that the stream has neither emitted nor skipped."""
        return [i for i in range(self.cursor, self.ex.n) if self.ex.has(i)]

    def take(self, stream: BarStream, events: list[StreamEvent], *, abandoning: bool = False) -> bool:
        """Check `events` against the exchange; True when a fill request was announced."""
        announced = False
        for ev in events:
            assert ev.symbol == SYM
            if isinstance(ev, Bar):
                i = idx(ev.start_ms)
                assert i == self.cursor, f"bar {i} emitted while bar {self.cursor} is next: {self.bars}"
                assert self.ex.has(i), f"bar {i} emitted but the exchange has no closed bar {i}"
                assert ev.source in ("ws", "rest")
                assert replace(ev, source="ws") == true_bar(i), f"bar {i} is not the exchange's: {ev}"
                self.bars.append(i)
                self.cursor += 1
            elif isinstance(ev, GapSkipped):
                lo, hi = idx(ev.from_ms), idx(ev.to_ms)
                assert lo == self.cursor <= hi < self.ex.n, (
                    f"gap {lo}..{hi} skipped with cursor {self.cursor}"
                )
                if ev.reason == "exchange_missing":
                    real = [i for i in range(lo, hi + 1) if self.ex.has(i)]
                    assert not real, f"bars {real} skipped as missing but the exchange has them"
                else:
                    assert abandoning, f"gap {lo}..{hi} abandoned although the shell did not give up"
                    self.abandoned.update(range(lo, hi + 1))
                self.cursor = hi + 1
            elif isinstance(ev, BackfillNeeded):
                assert ev == stream.request, f"announced {ev}, but the pending request is {stream.request}"
                announced = True
            elif isinstance(ev, Dropped):
                i = idx(ev.start_ms)
                assert i < self.cursor or ev.start_ms in stream.held, f"confirm {i} dropped before its turn"
        assert stream.next_start_ms == ms(self.cursor)
        return announced


Filler = Literal["running", "waiting", "serving"]
Answer = Literal["full", "short", "empty", "transient_error", "error", "banned"]
ANSWERS = st.sampled_from(["full", "short", "empty", "transient_error", "error", "banned"])


class StreamMachine(RuleBasedStateMachine):
    """One symbol's stream between a true exchange, a flaky websocket and the feed's filler."""

    def __init__(self) -> None:
        super().__init__()
        self.ex = Exchange()
        self.tape = Tape(self.ex)
        self.s = BarStream(SYM, IV, next_start_ms=T0)
        self.outstanding: BackfillNeeded | None = None  # the fill taken and not answered on this connection
        self.filler: Filler = "running"
        self.wanted = False  # the feed's `_fill_wanted` event
        self.ts_ms = T0

    # ---- the shell ----------------------------------------------------------------------------------------

    def _apply(self, events: list[StreamEvent], *, abandoning: bool = False) -> None:
        if self.tape.take(self.s, events, abandoning=abandoning):
            self.wanted = True

    def _connect(self) -> None:
        """A new connection: the old one, its filler and any fill in flight on it are gone."""
        self.outstanding = None
        self.filler = "running"
        events = self.s.on_reconnect()
        self._apply(events)
        assert self.s.request is not None
        assert events == [self.s.request], "a reconnect announces the pending request again"
        assert self.s.request.end_ms is None
        assert self.s.fill_due, "stall: a fill died with the old connection and its request is not due again"

    def _served(self) -> None:
        """The filler is done with a fill and goes on (`MarketFeed._filler` waits only if nothing is due)."""
        self.outstanding = None
        self.filler = "running" if self.s.fill_due else "waiting"

    def _answer(self, *, limit: int | None) -> None:
        assert self.outstanding is not None
        rows, through_ms = self.ex.answer(self.outstanding, limit=limit)
        self._apply(self.s.on_rest(rows, through_ms=through_ms))
        self._served()

    def _confirm(self, i: int) -> None:
        self._apply(self.s.on_ws_confirm(true_bar(i)))
        assert i < self.tape.cursor or ms(i) in self.s.held, f"confirm {i} neither emitted nor held"

    def _has_fill(self) -> bool:
        return self.outstanding is not None

    def _filler_can_run(self) -> bool:
        return self.outstanding is None and (
            self.filler == "running" or (self.filler == "waiting" and self.wanted)
        )

    # ---- rules --------------------------------------------------------------------------------------------

    @initialize(closed=st.integers(0, 3), caught_up=st.booleans())
    def connect(self, closed: int, caught_up: bool) -> None:
        """The service connects with `closed` bars it has not seen; `caught_up`: the first fill is done."""
        self.ex.n = closed
        self._connect()
        if caught_up:
            self.filler_pass()
            self._answer(limit=None)

    @rule(how=st.sampled_from(["delivered", "missed", "never_exists"]))
    def bar_closes(self, how: Literal["delivered", "missed", "never_exists"]) -> None:
        """The forming bar closes and the websocket pushes its confirm at once or misses it; or the clock
        moves on but the exchange has no bar for the slot (maintenance)."""
        i = self.ex.n
        self.ex.n += 1
        if how == "never_exists":
            self.ex.holes.add(i)
        elif how == "delivered":
            self._confirm(i)

    @rule(back=st.integers(0, 2))
    def partial(self, back: int) -> None:
        """A `confirm:false` update of the forming bar (`back=0`) or a stale one of an older bar."""
        i = self.ex.n - back
        if i < 0 or i in self.ex.holes:
            return
        self.ts_ms += 1
        p = forming(i, self.ts_ms)
        events = self.s.on_ws_partial(p)
        assert events in ([], [p])
        self._apply(events)

    @precondition(lambda self: self.ex.n > 0)
    @rule(awaited=st.booleans(), back=st.integers(0, 5))
    def confirm_late(self, awaited: bool, back: int) -> None:
        """A closed bar's confirm arrives late: the one the stream awaits (`awaited`, out of order after
        newer ones), or the bar `back` from the newest (a duplicate, a late re-send or a missed one)."""
        missing = self.tape.missing
        i = missing[0] if awaited and missing else max(0, self.ex.n - 1 - back)
        if self.ex.has(i):
            self._confirm(i)

    @rule()
    def disconnect(self) -> None:
        """The websocket dies (a fill in flight dies with it, unanswered) and a new connection comes up."""
        self._connect()

    @precondition(_filler_can_run)
    @rule()
    def filler_pass(self) -> None:
        """The filler runs a pass: clears its wake-up event, takes the due fill or goes to sleep."""
        self.wanted = False
        req = self.s.take_fill()
        if req is None:
            assert not self.s.fill_due
            self.filler = "waiting"
        else:
            assert req == self.s.request
            assert not self.s.fill_due
            self.outstanding = req
            self.filler = "serving"

    @precondition(_has_fill)
    @rule(how=ANSWERS, k=st.integers(1, 3))
    def rest_answers(self, how: Answer, k: int) -> None:
        """The fill in flight is answered: every bar of the request; only the first `k` (REST lags); nothing
        yet; a transient error (retries exhausted: the request is due again and the filler retries it on
        this connection); a hard error (due again, and the feed closes the socket: a reconnect follows); or
        a ban (the shell gives the gap up and the held confirms go out)."""
        if how in ("transient_error", "error"):
            events = self.s.fill_failed()
            self._apply(events)
            assert events == ([self.s.request] if self.s.request is not None else [])
            assert self.s.fill_due == (self.s.request is not None)
            if how == "error":
                self._connect()
            else:
                self._served()
        elif how == "banned":
            self._apply(self.s.abandon_backfill(), abandoning=True)
            assert self.s.request is None
            assert not self.s.held
            self._served()
        else:
            self._answer(limit={"full": None, "short": k, "empty": 0}[how])

    @precondition(_filler_can_run)
    @rule(how=st.sampled_from(["full", "short", "empty"]), k=st.integers(1, 3))
    def filler_serves_at_once(self, how: Answer, k: int) -> None:
        """A filler pass whose fill REST answers before anything else happens (the usual case)."""
        self.filler_pass()
        if self.outstanding is not None:
            self.rest_answers(how, k)

    @precondition(lambda self: self.s.behind)
    @rule()
    def overdue_timer(self) -> None:
        """The stream stayed `behind` for `bar_overdue_s`: the feed calls `overdue()`."""
        self._apply(self.s.overdue())

    # ---- invariants ---------------------------------------------------------------------------------------

    @invariant()
    def no_orphaned_request(self) -> None:
        """A pending request is due exactly when no fill is in flight on the live connection (never
        orphaned, never served twice), and a due request has a filler that is running or woken."""
        s = self.s
        if s.request is not None:
            if self.outstanding is None:
                assert s.fill_due, f"stall: {s.request} is pending, nothing is in flight, yet it is not due"
            else:
                assert not s.fill_due, f"{s.request} offered again while {self.outstanding} is in flight"
            assert s.request.start_ms <= ms(self.tape.cursor), f"{s.request} starts past the next bar"
        if s.fill_due:
            assert self.filler == "running" or self.wanted, "a fill is due but the filler sleeps"
        if s.held:
            assert s.request is not None, f"confirms {s.held} are held with no request to release them"

    @invariant()
    def closed_clock_never_ahead(self) -> None:
        """`newest_closed_ms` (the lag gauge's clock) never claims a bar the exchange has not closed."""
        newest = self.s.newest_closed_ms
        assert newest is None or idx(newest) < self.ex.n

    @invariant()
    def a_gap_without_request_has_a_way_out(self) -> None:
        """Missing bars with no request and no fill in flight: a reconnect asks for them, and so does the
        overdue timer once the forming bar's next update marks the stream `behind`."""
        if not self.tape.missing or self.s.request is not None or self.outstanding is not None:
            return
        want = [BackfillNeeded(SYM, ms(self.tape.cursor), None)]
        after_reconnect = deepcopy(self.s)
        assert after_reconnect.on_reconnect() == want
        assert after_reconnect.fill_due
        timer = deepcopy(self.s)
        timer.on_ws_partial(forming(self.ex.n, self.ts_ms + 1))
        assert timer.behind, f"bars {self.tape.missing} missing but the stream is not behind"
        assert timer.overdue() == want
        assert timer.fill_due

    @invariant()
    def a_healthy_connection_catches_up(self) -> None:
        """Without another disconnect, full REST answers and the overdue timer bring every closed bar.

        A round is one step of the shell; a fill costs at most four (update, timer, take, answer), and held
        confirms split by holes take one bounded fill per hole.
        """
        s, tape = deepcopy((self.s, self.tape))
        pending = self.outstanding
        rounds = 4 * (tape.ex.n + 2)
        for _ in range(rounds):
            if not tape.missing:
                return
            if pending is not None:
                rows, through_ms = tape.ex.answer(pending, limit=None)
                tape.take(s, s.on_rest(rows, through_ms=through_ms))
                pending = None
            elif (req := s.take_fill()) is not None:
                pending = req
            elif s.behind:
                tape.take(s, s.overdue())
            else:
                tape.take(s, s.on_ws_partial(forming(tape.ex.n, self.ts_ms + 1)))
        raise AssertionError(
            f"bars {tape.missing} still missing after {rounds} healthy rounds; stream {vars(s)}"
        )

    def teardown(self) -> None:
        """Final: reconnect, serve every fill with full answers; every closed bar is out once, in order."""
        if sys.exc_info()[1] is not None:
            return  # a step already failed (teardown runs in hypothesis' `finally`): report that failure
        self._connect()
        for _ in range(8):
            req = self.s.take_fill()
            if req is None:
                break
            self.outstanding = req
            self._answer(limit=None)
        s = self.s
        assert s.request is None, f"fills never settle: {vars(s)}"
        assert not s.held
        expected = [i for i in range(self.ex.n) if self.ex.has(i) and i not in self.tape.abandoned]
        assert self.tape.bars == expected, f"emitted {self.tape.bars}, exchange closed {expected}"


def test_any_interleaving_serves_every_closed_bar_once_and_never_stalls() -> None:
    """Random klines, disconnects and fill outcomes: no fill is orphaned, each closed bar comes out once."""
    run_state_machine_as_test(
        StreamMachine, settings=settings(max_examples=200, stateful_step_count=40, deadline=None)
    )
