"""Pure bar-stream core: exactly-once, in-order confirmed bars under any interleaving."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.core.bars import Bar
from bot.core.stream import BackfillNeeded, BarStream, Dropped, GapSkipped, PartialBar, StreamEvent

IV = 300_000
T0 = 1_735_689_600_000


def bar(i: int, source: str = "ws") -> Bar:
    return Bar("BTCUSDT", T0 + i * IV, 1.0 + i, 2.0 + i, 0.5 + i, 1.5 + i, 10.0, 15.0, source=source)  # type: ignore[arg-type]


def partial(i: int) -> PartialBar:
    return PartialBar("BTCUSDT", T0 + i * IV, 1.0, 2.0, 0.5, 1.5, 1.0, 1.0, T0 + i * IV + 1)


def bars_of(events: list[StreamEvent]) -> list[int]:
    return [(e.start_ms - T0) // IV for e in events if isinstance(e, Bar)]


def test_contiguous_confirms_are_emitted_in_order() -> None:
    """Confirms that follow each other are emitted at once, partials pass through."""
    s = BarStream("BTCUSDT", IV, next_start_ms=T0)
    out = s.on_ws_partial(partial(0)) + s.on_ws_confirm(bar(0)) + s.on_ws_confirm(bar(1))
    assert bars_of(out) == [0, 1]
    assert isinstance(out[0], PartialBar)
    assert s.next_start_ms == T0 + 2 * IV


def test_duplicate_and_late_confirms_are_dropped() -> None:
    """The same confirm twice is a duplicate; an older one is late; neither is emitted again."""
    s = BarStream("BTCUSDT", IV, next_start_ms=T0)
    s.on_ws_confirm(bar(0))
    s.on_ws_confirm(bar(1))
    dup = s.on_ws_confirm(bar(1))
    late = s.on_ws_confirm(bar(0))
    assert dup == [Dropped("BTCUSDT", T0 + IV, "duplicate", "ws")]
    assert late == [Dropped("BTCUSDT", T0, "late", "ws")]


def test_skip_ahead_holds_the_confirm_and_asks_rest() -> None:
    """A confirm past a gap is held and a bounded REST request returned; the fill releases all in order."""
    s = BarStream("BTCUSDT", IV, next_start_ms=T0)
    out = s.on_ws_confirm(bar(3))
    assert out == [BackfillNeeded("BTCUSDT", T0, T0 + 2 * IV)]
    assert s.held == [T0 + 3 * IV]
    filled = s.on_rest([bar(0, "rest"), bar(1, "rest"), bar(2, "rest")], through_ms=T0 + 2 * IV)
    assert bars_of(filled) == [0, 1, 2, 3]
    assert [e.source for e in filled if isinstance(e, Bar)] == ["rest", "rest", "rest", "ws"]
    assert s.request is None


def test_reconnect_asks_for_everything_after_the_last_bar() -> None:
    """After a reconnect the stream asks REST from the next bar, open-ended; a late ws confirm is dropped."""
    s = BarStream("BTCUSDT", IV, next_start_ms=T0)
    s.on_ws_confirm(bar(0))
    assert s.on_reconnect() == [BackfillNeeded("BTCUSDT", T0 + IV, None)]
    out = s.on_rest([bar(1, "rest"), bar(2, "rest")], through_ms=T0 + 2 * IV)
    assert bars_of(out) == [1, 2]
    assert s.on_ws_confirm(bar(2)) == [Dropped("BTCUSDT", T0 + 2 * IV, "duplicate", "ws")]


def test_exchange_gap_is_skipped_not_invented() -> None:
    """Bars REST vouches do not exist are reported as a gap; nothing is forward-filled."""
    s = BarStream("BTCUSDT", IV, next_start_ms=T0)
    s.on_ws_confirm(bar(4))
    out = s.on_rest([bar(0, "rest")], through_ms=T0 + 3 * IV)
    assert bars_of(out) == [0, 4]
    gaps = [e for e in out if isinstance(e, GapSkipped)]
    assert gaps == [GapSkipped("BTCUSDT", T0 + IV, T0 + 3 * IV, "exchange_missing")]


def test_abandon_emits_held_bars_across_the_gap() -> None:
    """With REST unavailable the held confirms go out in order and the gap is reported as abandoned."""
    s = BarStream("BTCUSDT", IV, next_start_ms=T0)
    s.on_ws_confirm(bar(2))
    s.on_ws_confirm(bar(3))
    out = s.abandon_backfill()
    assert bars_of(out) == [2, 3]
    assert isinstance(out[0], GapSkipped)
    assert out[0].reason == "abandoned"


def test_behind_and_overdue() -> None:
    """A partial of a later bar without the expected confirm marks the stream behind; overdue asks REST."""
    s = BarStream("BTCUSDT", IV, next_start_ms=T0)
    s.on_ws_partial(partial(1))
    assert s.behind
    assert s.overdue() == [BackfillNeeded("BTCUSDT", T0, None)]
    assert not s.behind


def test_stale_partials_are_ignored() -> None:
    """A partial of an emitted bar, or older than the latest partial, is not passed on."""
    s = BarStream("BTCUSDT", IV, next_start_ms=T0)
    s.on_ws_confirm(bar(0))
    assert s.on_ws_partial(partial(0)) == []
    s.on_ws_partial(partial(2))
    assert s.on_ws_partial(partial(1)) == []


def test_misaligned_start_rejected() -> None:
    """The first key must be on the interval grid."""
    with pytest.raises(ValueError, match="multiple of interval_ms"):
        BarStream("BTCUSDT", IV, next_start_ms=T0 + 1)


_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("close"), st.sampled_from(["deliver", "drop", "dup"])),
        st.tuples(st.just("late"), st.integers(1, 5)),
        st.tuples(st.just("partial"), st.integers(0, 1)),
        st.tuples(st.just("reconnect"), st.just(0)),
        st.tuples(st.just("rest"), st.just(0)),
        st.tuples(st.just("overdue"), st.just(0)),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(ops=_OPS, missing=st.sets(st.integers(0, 60), max_size=5))
def test_any_interleaving_yields_each_closed_bar_exactly_once(
    ops: list[tuple[str, int]], missing: set[int]
) -> None:
    """Any mix of ws confirms, drops, duplicates, late re-sends, reconnects, REST pages: each bar once."""
    s = BarStream("BTCUSDT", IV, next_start_ms=T0)
    closed: list[int] = []  # bars the exchange has (indexes); `missing` ones never existed
    emitted: list[int] = []
    n = 0

    def run(events: list[StreamEvent]) -> None:
        emitted.extend(bars_of(events))

    def answer_rest() -> None:
        req = s.request
        if req is None:
            return
        hi = (req.end_ms - T0) // IV if req.end_ms is not None else (closed[-1] if closed else -1)
        lo = (req.start_ms - T0) // IV
        rows = [bar(i, "rest") for i in closed if lo <= i <= hi]
        through = req.end_ms if req.end_ms is not None else (rows[-1].start_ms if rows else req.start_ms - IV)
        run(s.on_rest(rows, through_ms=through))

    for op, arg in ops:
        if op == "close":
            i = n
            n += 1
            if i in missing:
                continue
            closed.append(i)
            if arg != "drop":
                run(s.on_ws_confirm(bar(i)))
            if arg == "dup":
                run(s.on_ws_confirm(bar(i)))
        elif op == "late" and closed:
            run(s.on_ws_confirm(bar(closed[max(0, len(closed) - arg)])))
        elif op == "partial":
            run(s.on_ws_partial(partial(n + arg)))
        elif op == "reconnect":
            run(s.on_reconnect())
        elif op == "rest":
            answer_rest()
        elif op == "overdue":
            run(s.overdue())
    # the shell's end state: a reconnect/overdue fill, answered until nothing is pending
    run(s.on_reconnect())
    for _ in range(10):
        if s.request is None:
            break
        answer_rest()
    assert s.request is None
    assert emitted == closed, f"emitted {emitted} != closed {closed}"
    assert s.held == []
