"""Bar stream behaviours that mutation testing showed unpinned: short REST answers, follow-up requests, gap
ranges, websocket confirms that fill a gap themselves, repeated partials, anchoring and the fill lifecycle."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.core.bars import Bar
from bot.core.stream import BackfillNeeded, BarStream, Dropped, GapSkipped, PartialBar, StreamEvent

SYM = "BTCUSDT"
IV = 300_000
T0 = 1_735_689_600_000


def ms(i: int) -> int:
    """Open time of bar `i`."""
    return T0 + i * IV


def bar(i: int, source: str = "ws") -> Bar:
    """Bar `i`; every field depends on `i`."""
    return Bar(SYM, ms(i), 1.0 + i, 2.0 + i, 0.5 + i, 1.5 + i, 10.0 + i, 15.0 + i, source=source)  # type: ignore[arg-type]


def rest(*idx: int) -> list[Bar]:
    """REST rows for bars `idx`."""
    return [bar(i, "rest") for i in idx]


def partial(i: int, ts: int = 1, close: float = 1.5) -> PartialBar:
    """A `confirm:false` update of bar `i` at `ts` ms into the bar."""
    return PartialBar(SYM, ms(i), 1.0, 2.0, 0.5, close, 1.0, 1.0, ms(i) + ts)


def bars_of(events: list[StreamEvent]) -> list[int]:
    """Indexes of the bars among `events`."""
    return [(e.start_ms - T0) // IV for e in events if isinstance(e, Bar)]


def need(lo: int, hi: int | None) -> BackfillNeeded:
    """A fill request for bars `lo..hi` (None: open-ended)."""
    return BackfillNeeded(SYM, ms(lo), None if hi is None else ms(hi))


# ---- construction and anchoring ----------------------------------------------------------------------------


@pytest.mark.parametrize("interval_ms", [0, -IV])
def test_non_positive_interval_is_rejected_with_the_value(interval_ms: int) -> None:
    """A zero or negative interval raises a ValueError naming the value."""
    with pytest.raises(ValueError, match=f"interval_ms must be a positive number of ms, got {interval_ms}"):
        BarStream(SYM, interval_ms)


def test_one_ms_interval_is_accepted_and_counts_start_at_zero() -> None:
    """The smallest positive interval is valid; a new stream has emitted nothing and holds nothing."""
    s = BarStream(SYM, 1, next_start_ms=5)
    assert (s.emitted, s.held, s.request, s.partial, s.newest_closed_ms) == (0, [], None, None, None)
    assert not s.fill_due
    assert s.take_fill() is None


def test_first_ws_confirm_anchors_an_unanchored_stream() -> None:
    """Without `next_start_ms`, the first confirm is emitted and the next one follows it."""
    s = BarStream(SYM, IV)
    assert s.overdue() == []
    assert s.on_reconnect() == []
    assert bars_of(s.on_ws_confirm(bar(7)) + s.on_ws_confirm(bar(8))) == [7, 8]
    assert (s.next_start_ms, s.emitted) == (ms(9), 2)


def test_first_rest_page_anchors_an_unanchored_stream() -> None:
    """Without `next_start_ms`, the oldest REST row anchors the stream; holes after it are exchange gaps."""
    s = BarStream(SYM, IV)
    out = s.on_rest(rest(5, 3, 4, 8), through_ms=ms(8))
    assert out == [
        *rest(3, 4, 5),
        GapSkipped(SYM, ms(6), ms(7), "exchange_missing"),
        bar(8, "rest"),
    ]
    assert (s.next_start_ms, s.emitted, s.newest_closed_ms) == (ms(9), 4, ms(8))


# ---- partials ----------------------------------------------------------------------------------------------


def test_every_partial_update_of_the_forming_bar_passes_through() -> None:
    """Several updates of one forming bar are all passed on, in order, and the latest is kept."""
    s = BarStream(SYM, IV, next_start_ms=ms(0))
    ups = [partial(0, ts, close) for ts, close in ((1, 1.5), (2, 1.6), (3, 1.4))]
    out = [e for p in ups for e in s.on_ws_partial(p)]
    assert out == ups
    assert s.partial == ups[-1]
    nxt = partial(1, 1)
    assert s.on_ws_partial(nxt) == [nxt]
    assert s.on_ws_partial(partial(1, 2, 9.0)) == [partial(1, 2, 9.0)]


def test_partial_marks_the_previous_bar_closed() -> None:
    """A partial of bar n means bar n-1 has closed (and never moves the mark back)."""
    s = BarStream(SYM, IV, next_start_ms=ms(0))
    s.on_ws_partial(partial(4))
    assert s.newest_closed_ms == ms(3)
    s.on_ws_confirm(bar(0))
    assert s.newest_closed_ms == ms(3)
    s.on_ws_confirm(bar(6))
    assert s.newest_closed_ms == ms(6)


def test_confirm_clears_the_partial_of_its_own_bar_only() -> None:
    """A confirm ends the partial of the same bar; a partial of a later bar stays."""
    s = BarStream(SYM, IV, next_start_ms=ms(0))
    s.on_ws_partial(partial(0))
    s.on_ws_confirm(bar(0))
    assert s.partial is None
    s.on_ws_partial(partial(2))
    s.on_ws_confirm(bar(1))
    assert s.partial == partial(2)


# ---- held confirms, gap fills and their requests -----------------------------------------------------------


def test_held_duplicate_is_dropped_as_duplicate_from_ws() -> None:
    """The same held confirm twice is dropped with its key, reason and source; the request is not repeated."""
    s = BarStream(SYM, IV, next_start_ms=ms(0))
    assert s.on_ws_confirm(bar(3)) == [need(0, 2)]
    assert s.on_ws_confirm(bar(3)) == [Dropped(SYM, ms(3), "duplicate", "ws")]
    assert s.held == [ms(3)]


def test_rest_answer_short_of_a_held_confirm_keeps_the_rest_and_asks_again() -> None:
    """A REST answer stopping before the held confirm emits what came, skips nothing, asks for the rest."""
    s = BarStream(SYM, IV, next_start_ms=ms(0))
    s.on_ws_confirm(bar(5))
    assert s.take_fill() == need(0, 4)
    out = s.on_rest(rest(0, 1, 2), through_ms=ms(2))
    assert out == [*rest(0, 1, 2), need(3, 4)]
    assert s.held == [ms(5)]
    assert s.fill_due
    assert s.take_fill() == need(3, 4)
    out = s.on_rest(rest(3, 4), through_ms=ms(4))
    assert out == [*rest(3, 4), bar(5)]
    assert (s.request, s.fill_due, s.held) == (None, False, [])


def test_empty_rest_answer_short_of_a_held_confirm_asks_again_unchanged() -> None:
    """REST answering nothing (vouching for nothing new) re-asks the same gap and emits nothing."""
    s = BarStream(SYM, IV, next_start_ms=ms(0))
    s.on_ws_confirm(bar(3))
    s.take_fill()
    assert s.on_rest([], through_ms=ms(-1)) == [need(0, 2)]
    assert s.fill_due


def test_rest_vouching_up_to_the_held_confirm_reports_the_exact_gap() -> None:
    """REST vouching for everything before the held confirm but lacking rows reports exactly that range."""
    s = BarStream(SYM, IV, next_start_ms=ms(0))
    s.on_ws_confirm(bar(5))
    s.on_ws_confirm(bar(9))
    out = s.on_rest(rest(0, 1), through_ms=ms(4))
    assert out == [
        *rest(0, 1),
        GapSkipped(SYM, ms(2), ms(4), "exchange_missing"),
        bar(5),
        need(6, 8),
    ]
    assert s.held == [ms(9)]


def test_rest_row_for_a_held_key_wins_and_gap_inside_the_answer_is_exact() -> None:
    """A REST row for a held key replaces the held ws copy; a hole inside the answer is reported exactly."""
    s = BarStream(SYM, IV, next_start_ms=ms(0))
    s.on_ws_confirm(bar(4))
    out = s.on_rest(rest(0, 3, 4), through_ms=ms(4))
    assert out == [bar(0, "rest"), GapSkipped(SYM, ms(1), ms(2), "exchange_missing"), *rest(3, 4)]
    assert s.held == []


def test_rest_rows_beyond_through_or_before_the_next_bar_are_ignored() -> None:
    """Rows past what REST vouches for, or already emitted, are not emitted."""
    s = BarStream(SYM, IV, next_start_ms=ms(2))
    assert s.on_rest(rest(0, 1, 2, 3, 5), through_ms=ms(3)) == rest(2, 3)
    assert s.next_start_ms == ms(4)


def test_ws_confirms_that_fill_the_gap_clear_the_request() -> None:
    """Late ws confirms that fill the requested gap release the held bar and clear the request, so a later
    overdue check asks from the next bar again."""
    s = BarStream(SYM, IV, next_start_ms=ms(0))
    s.on_ws_confirm(bar(2))
    assert s.request == need(0, 1)
    assert bars_of(s.on_ws_confirm(bar(0))) == [0]
    assert s.request == need(0, 1)  # bar 1 is still missing
    assert bars_of(s.on_ws_confirm(bar(1))) == [1, 2]
    assert s.request is None
    assert (s.held, s.fill_due) == ([], False)
    s.on_ws_partial(partial(4))
    assert s.behind
    assert s.overdue() == [need(3, None)]


def test_ws_confirms_that_fill_a_gap_retarget_the_request_to_the_next_gap() -> None:
    """When ws confirms fill the requested gap but a later held confirm waits behind another gap, the request
    names that gap (never a range already emitted)."""
    s = BarStream(SYM, IV, next_start_ms=ms(0))
    s.on_ws_confirm(bar(2))
    s.on_ws_confirm(bar(6))
    assert s.request == need(0, 1)
    out = s.on_ws_confirm(bar(0)) + s.on_ws_confirm(bar(1))
    assert out == [bar(0), bar(1), bar(2), need(3, 5)]
    assert s.take_fill() == need(3, 5)


def test_open_ended_request_survives_contiguous_confirms_and_covers_new_gaps() -> None:
    """A reconnect's open-ended request is not cleared by contiguous confirms nor narrowed by a new gap."""
    s = BarStream(SYM, IV, next_start_ms=ms(0))
    assert s.on_reconnect() == [need(0, None)]
    assert bars_of(s.on_ws_confirm(bar(0))) == [0]
    assert s.request == need(0, None)
    assert s.on_ws_confirm(bar(3)) == []
    assert s.request == need(0, None)


def test_bounded_request_is_widened_by_a_later_held_confirm_only_to_the_first_held() -> None:
    """A second held confirm further ahead does not change the request: it ends before the first held one."""
    s = BarStream(SYM, IV, next_start_ms=ms(0))
    assert s.on_ws_confirm(bar(3)) == [need(0, 2)]
    assert s.on_ws_confirm(bar(6)) == []
    assert s.request == need(0, 2)


# ---- the fill lifecycle ------------------------------------------------------------------------------------


def test_take_fill_marks_in_flight_and_fill_failed_makes_it_due_again() -> None:
    """take_fill hands the request out once; fill_failed re-announces it and makes it due again."""
    s = BarStream(SYM, IV, next_start_ms=ms(0))
    s.on_ws_confirm(bar(2))
    assert s.fill_due
    assert s.take_fill() == need(0, 1)
    assert (s.fill_due, s.take_fill()) == (False, None)
    assert s.overdue() == []  # in flight: nothing to announce
    assert s.fill_failed() == [need(0, 1)]
    assert s.fill_due
    assert s.overdue() == [need(0, 1)]
    assert s.take_fill() == need(0, 1)


def test_fill_failed_without_a_request_announces_nothing() -> None:
    """A failed fill whose request has gone asks for nothing."""
    s = BarStream(SYM, IV, next_start_ms=ms(0))
    assert s.fill_failed() == []
    assert not s.fill_due


def test_reconnect_makes_an_in_flight_fill_due_again() -> None:
    """A fill in flight on a dead connection is due again after the reconnect, widened to open-ended."""
    s = BarStream(SYM, IV, next_start_ms=ms(0))
    s.on_ws_confirm(bar(2))
    s.take_fill()
    assert s.on_reconnect() == [need(0, None)]
    assert s.fill_due
    assert s.take_fill() == need(0, None)
    assert s.on_reconnect() == [need(0, None)]  # announced again, still open-ended
    assert s.fill_due


def test_rest_answer_ends_the_fill_in_flight() -> None:
    """After a REST answer nothing is in flight: a new gap's request is due at once."""
    s = BarStream(SYM, IV, next_start_ms=ms(0))
    s.on_reconnect()
    s.take_fill()
    s.on_rest(rest(0), through_ms=ms(0))
    assert (s.request, s.fill_due) == (None, False)
    s.on_ws_confirm(bar(3))
    assert s.fill_due
    assert s.take_fill() == need(1, 2)


def test_abandon_reports_each_gap_and_ends_the_fill() -> None:
    """Abandoning emits held confirms in order with the exact abandoned ranges and clears the request."""
    s = BarStream(SYM, IV, next_start_ms=ms(0))
    s.on_ws_confirm(bar(2))
    s.on_ws_confirm(bar(3))
    s.on_ws_confirm(bar(6))
    s.take_fill()
    out = s.abandon_backfill()
    assert out == [
        GapSkipped(SYM, ms(0), ms(1), "abandoned"),
        bar(2),
        bar(3),
        GapSkipped(SYM, ms(4), ms(5), "abandoned"),
        bar(6),
    ]
    assert (s.request, s.fill_due, s.held, s.emitted, s.next_start_ms) == (None, False, [], 3, ms(7))
    s.on_ws_confirm(bar(9))
    assert s.take_fill() == need(7, 8)


# ---- properties --------------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    exists=st.lists(st.booleans(), min_size=1, max_size=30),
    ws_seen=st.sets(st.integers(0, 29)),
    pages=st.lists(st.integers(1, 6), min_size=1, max_size=40),
    reconnect=st.booleans(),
)
def test_short_paged_rest_answers_lose_nothing_and_tile_the_grid(
    exists: list[bool], ws_seen: set[int], pages: list[int], reconnect: bool
) -> None:
    """Held ws confirms plus REST answers of any short page size: every existing bar comes out once, in order,
    and the gaps reported are exactly the missing bars, as ranges that tile the grid with the bars."""
    n = len(exists)
    have = [i for i in range(n) if exists[i]]
    s = BarStream(SYM, IV, next_start_ms=ms(0))
    out: list[StreamEvent] = s.on_reconnect() if reconnect else []
    for i in sorted(ws_seen):
        if i < n and exists[i] and i > 0:
            out += s.on_ws_confirm(bar(i))
    for page in [*pages, *([n] * (n + 2))]:
        req = s.take_fill()
        if req is None:
            break
        hi = (req.end_ms - T0) // IV if req.end_ms is not None else n - 1
        lo = (req.start_ms - T0) // IV
        rows = [i for i in have if lo <= i <= hi][:page]
        # as bot.bybit.feed: REST vouches for a bounded range answered in full, else up to its last row
        full = req.end_ms is not None and len([i for i in have if lo <= i <= hi]) <= page
        through = ms(hi) if full else (ms(rows[-1]) if rows else req.start_ms - IV)
        out += s.on_rest(rest(*rows), through_ms=through)
    if s.request is None and s.held:
        out += s.abandon_backfill()
    emitted = bars_of(out)
    covered: list[int] = list(emitted)
    for e in out:
        if isinstance(e, GapSkipped):
            lo, hi = (e.from_ms - T0) // IV, (e.to_ms - T0) // IV
            assert lo <= hi
            assert all(not exists[i] for i in range(lo, hi + 1)), (lo, hi)
            covered += range(lo, hi + 1)
    last = max(emitted, default=-1)
    assert emitted == [i for i in have if i <= last]
    assert sorted(covered) == list(range(last + 1))
    assert s.held == []
    assert s.emitted == len(emitted)


def test_partial_of_a_bar_and_back_keep_every_field() -> None:
    """`PartialBar.of` copies every field of the bar with the update time; `as_bar` gives the ws bar back."""
    b = bar(3)
    p = PartialBar.of(b, ts_ms=ms(3) + 17)
    assert p == PartialBar(SYM, ms(3), 4.0, 5.0, 3.5, 4.5, 13.0, 18.0, ms(3) + 17)
    assert p.as_bar() == b
    assert p.as_bar().source == "ws"
