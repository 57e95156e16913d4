"""Feature kernel pins: `init`, `step`, `run`, `run_symbols` and `view` called directly, every row equal to
the former class (tests/oracle_features.py) on paths that reach the corners the random paths rarely do - a
whole week of calendar features, long flat stretches (every window and EW mean constant), volume jumps and
droughts, gaps - and the status codes, the rejected bars and the layout's zeroing by hand. Short inputs, so
the mutation run (docs/mutation.md) can afford them for every mutant."""

from __future__ import annotations

import math

import numpy as np
import pytest
from oracle_features import OracleFeatureState

from bot.core.bars import Bar
from bot.core.features import FEATURE_INDEX, N_FEATURES, WARMUP_BARS
from bot.core.kernels import features as kernel

STEP_MS = 300_000
DAY_MS = 86_400_000
RTOL, ATOL = 1e-12, 1e-15


def _kernel_rows(bars: list[Bar], interval_ms: int | None) -> tuple[np.ndarray, list[int], np.ndarray]:
    """Rows, status codes and the final state of `step` over `bars` from `init`."""
    state = np.full(kernel.STATE_SLOTS, 7.0)  # init must clear whatever was there
    kernel.init(state, interval_ms or 0)
    rows = np.full((len(bars), N_FEATURES), -7.0)
    codes = [
        kernel.step(state, b.start_ms, b.open, b.high, b.low, b.close, b.volume, rows[t])
        for t, b in enumerate(bars)
    ]
    return rows, codes, state


def _assert_as_oracle(bars: list[Bar], interval_ms: int | None = STEP_MS) -> np.ndarray:
    """`step` equals the oracle bar by bar (rows, warm-up, resets); returns the valid rows."""
    rows, codes, state = _kernel_rows(bars, interval_ms)
    ref = OracleFeatureState(interval_ms=interval_ms)
    valid = []
    for t, b in enumerate(bars):
        want = ref.update(b)
        assert codes[t] == (kernel.ROW if want is not None else kernel.WARMING), t
        if want is None:
            assert np.isnan(rows[t]).all(), t
        else:
            np.testing.assert_allclose(rows[t], want, rtol=RTOL, atol=ATOL, err_msg=str(t))
            valid.append(rows[t])
    assert state[kernel.SLOT["HAS_LAST"]] == (1.0 if bars else 0.0)
    assert state[kernel.SLOT["COUNT"]] == ref.count
    assert state[kernel.SLOT["RESETS"]] == ref.resets
    assert state[kernel.SLOT["LAST_START"]] == ref.last_start_ms
    assert state[kernel.SLOT["INTERVAL"]] == (interval_ms or 0)
    return np.array(valid)


def _walk(
    n: int, seed: int, *, start_ms: int = 0, spacing_ms: int = STEP_MS, price: float = 100.0
) -> list[Bar]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        o = price
        c = o * math.exp(float(rng.normal(0.0, 0.004)))
        h = max(o, c) * (1.0 + float(rng.uniform(0.0, 0.003)))
        lo = min(o, c) * (1.0 - float(rng.uniform(0.0, 0.003)))
        out.append(Bar("X", start_ms + i * spacing_ms, o, h, lo, c, float(rng.uniform(0.5, 50.0))))
        price = c
    return out


def test_calendar_features_over_two_weeks() -> None:
    """Bars 7 h 13 min apart (no gap detection) from Monday 1970-01-05 on: every day of the week and many
    times of day, the hour and weekday harmonics and the weekend flag as the oracle; the flag is 1 on
    Saturdays and Sundays only."""
    spacing = 7 * 3_600_000 + 13 * 60_000
    bars = _walk(WARMUP_BARS + 60, seed=1, start_ms=4 * DAY_MS, spacing_ms=spacing)
    rows = _assert_as_oracle(bars, interval_ms=None)
    flag = rows[:, FEATURE_INDEX["weekend"]]
    days = [(b.start_ms // DAY_MS) % 7 for b in bars[WARMUP_BARS - 1 :]]
    assert set(days) == set(range(7))
    assert flag.tolist() == [1.0 if d in (2, 3) else 0.0 for d in days]  # epoch day 0 was a Thursday
    week = [(b.start_ms // DAY_MS) % 7 / 7.0 for b in bars[WARMUP_BARS - 1 :]]
    np.testing.assert_allclose(
        rows[:, FEATURE_INDEX["dow_sin"]], np.sin(2.0 * math.pi * np.array(week)), atol=1e-15
    )
    np.testing.assert_allclose(
        rows[:, FEATURE_INDEX["dow2_cos"]], np.cos(4.0 * math.pi * np.array(week)), atol=1e-15
    )
    day = [(b.start_ms % DAY_MS) / DAY_MS for b in bars[WARMUP_BARS - 1 :]]
    np.testing.assert_allclose(
        rows[:, FEATURE_INDEX["hour4_sin"]], np.sin(8.0 * math.pi * np.array(day)), atol=1e-14
    )


def test_flat_stretches_zero_volume_and_jumps() -> None:
    """60 flat bars (every return, range and window constant), a walk, 60 flat bars at a new price with
    zero volume, then volume jumps past the +10 clip and back: every row as the oracle; the flat rows
    are exact zeros where the guards say so."""
    flat1 = [Bar("X", i * STEP_MS, 50.0, 50.0, 50.0, 50.0, 5.0) for i in range(60)]
    walk = _walk(60, seed=2, start_ms=60 * STEP_MS)
    p = walk[-1].close
    flat2 = [Bar("X", (120 + i) * STEP_MS, p, p, p, p, 0.0) for i in range(60)]
    vols = [0.0, 1.0, 50.0, 0.5, 1000.0, 1000.0, 0.0, 3.0] * 4
    jumps = [
        Bar("X", (180 + i) * STEP_MS, p, p * 1.001, p * 0.999, p * (1.0 + 0.001 * (i % 3 - 1)), v)
        for i, v in enumerate(vols)
    ]
    rows = _assert_as_oracle([*flat1, *walk, *flat2, *jumps])
    first = rows[0]
    zero = [
        "ret_1", "range_vol", "vol_chg", "mom_5", "ret_48", "rv_6", "rv_12", "rv_24", "rv_48", "vol_ratio",
        "range_z_24", "rsi_14", "body", "upper_wick", "lower_wick", "close_pos",
        "efficiency_24", "trend_24", "dist_ma_24", "dist_ma_48", "ret_lag1", "ret_lag2",
    ]  # fmt: skip
    assert [first[FEATURE_INDEX[name]] for name in zero] == [0.0] * len(zero)
    floor = 0.5 * math.log(1e-5 * 1e-5)  # log vols at their floor
    assert [first[FEATURE_INDEX[name]] for name in ("lrv_ew12", "lpk_ew288", "lgk_ew48", "lpk_1")] == [
        floor
    ] * 4
    vol_chg = rows[-len(vols) :, FEATURE_INDEX["vol_chg"]]
    assert vol_chg.max() == 10.0
    assert vol_chg.min() == -1.0


def test_gaps_reset_and_warm_up_again() -> None:
    """A gap resets everything after COUNT: the next row comes WARMUP_BARS bars later, as the oracle, and
    each gap counts; without gap detection the same bars give rows throughout."""
    bars = _walk(2 * WARMUP_BARS + 30, seed=3)
    gapped = [
        *bars[:70],
        *[Bar("X", b.start_ms + 2 * STEP_MS, b.open, b.high, b.low, b.close, b.volume) for b in bars[70:]],
        *[Bar("X", b.start_ms + 9 * STEP_MS, b.open, b.high, b.low, b.close, b.volume) for b in bars[-3:]],
    ]
    _assert_as_oracle(gapped)
    _, codes, state = _kernel_rows(gapped, STEP_MS)
    assert codes[69] == kernel.ROW
    assert codes[70 : 70 + WARMUP_BARS - 1] == [kernel.WARMING] * (WARMUP_BARS - 1)
    assert codes[70 + WARMUP_BARS - 1] == kernel.ROW
    assert state[kernel.SLOT["RESETS"]] == 2.0
    assert state[kernel.SLOT["COUNT"]] == 3
    _assert_as_oracle(gapped, interval_ms=None)


def test_step_status_codes_and_rejected_bars_by_hand() -> None:
    """WARMING for the first 48 bars, ROW from the 49th; a bar at or before the last one is OUT_OF_ORDER,
    a NaN or infinite field, a price <= 0 or a negative volume BAD_BAR; a rejected bar leaves the state
    as it was and the row NaN; zero volume and o = h = l = c are valid."""
    state, out = np.zeros(kernel.STATE_SLOTS), np.zeros(N_FEATURES)
    kernel.init(state, STEP_MS)
    for t in range(WARMUP_BARS - 1):
        assert kernel.step(state, t * STEP_MS, 10.0, 10.0, 10.0, 10.0, 0.0, out) == kernel.WARMING
        assert np.isnan(out).all()
    before = state.copy()
    t = (WARMUP_BARS - 1) * STEP_MS
    bad = [
        (t - STEP_MS, 10.0, 10.0, 10.0, 10.0, 1.0, kernel.OUT_OF_ORDER),
        (t - 2 * STEP_MS, 10.0, 10.0, 10.0, 10.0, 1.0, kernel.OUT_OF_ORDER),
        (t, math.nan, 10.0, 10.0, 10.0, 1.0, kernel.BAD_BAR),
        (t, 10.0, math.inf, 10.0, 10.0, 1.0, kernel.BAD_BAR),
        (t, 10.0, 10.0, -math.inf, 10.0, 1.0, kernel.BAD_BAR),
        (t, 10.0, 10.0, 10.0, math.nan, 1.0, kernel.BAD_BAR),
        (t, 10.0, 10.0, 10.0, 10.0, math.inf, kernel.BAD_BAR),
        (t, 0.0, 10.0, 10.0, 10.0, 1.0, kernel.BAD_BAR),
        (t, 10.0, 0.0, 10.0, 10.0, 1.0, kernel.BAD_BAR),
        (t, 10.0, 10.0, -1.0, 10.0, 1.0, kernel.BAD_BAR),
        (t, 10.0, 10.0, 0.0, 10.0, 1.0, kernel.BAD_BAR),
        (t, 10.0, 10.0, 10.0, 0.0, 1.0, kernel.BAD_BAR),
        (t, 10.0, 10.0, 10.0, 10.0, -1e-9, kernel.BAD_BAR),
    ]
    for start, o, h, lo, c, v, code in bad:
        out[:] = 0.0
        assert kernel.step(state, start, o, h, lo, c, v, out) == code, (start, o, h, lo, c, v)
        assert np.isnan(out).all()
        assert state.tolist() == before.tolist()
    assert kernel.step(state, t, 10.0, 10.0, 10.0, 10.0, 0.0, out) == kernel.ROW
    assert np.isfinite(out).all()
    assert out[FEATURE_INDEX["ret_1"]] == 0.0
    assert out[FEATURE_INDEX["volume_z_24"]] == 0.0


def test_run_returns_the_first_rejected_bar_and_run_symbols_each_code() -> None:
    """`run` writes row t and status t per bar and stops at the first rejected bar (its index; later rows
    untouched); `run_symbols` steps each symbol's row of the state table, a rejected bar rejecting only
    its own symbol; `view` hands back the array it was given (or a view of its memory)."""
    bars = _walk(70, seed=4)
    cols = [np.array([b.start_ms for b in bars], np.int64)]
    cols += [np.array([getattr(b, f) for b in bars]) for f in ("open", "high", "low", "close", "volume")]
    cols[3][60] = -1.0  # low
    state = np.zeros(kernel.STATE_SLOTS)
    kernel.init(state, STEP_MS)
    out, status = np.full((70, N_FEATURES), -7.0), np.full(70, 9, np.int8)
    assert kernel.run(state, *cols, out, status) == 60
    want_rows, want_codes, want_state = _kernel_rows(bars[:60], STEP_MS)
    assert status[:60].tolist() == want_codes
    assert status[60] == kernel.BAD_BAR
    assert (status[61:] == 9).all()
    np.testing.assert_array_equal(out[:60], want_rows)
    assert np.isnan(out[60]).all()
    assert (out[61:] == -7.0).all()
    assert state.tolist() == want_state.tolist()
    cols[3][60] = bars[60].low
    clean = np.zeros(kernel.STATE_SLOTS)
    kernel.init(clean, STEP_MS)
    assert kernel.run(clean, *cols, out, status) == 70
    states = np.zeros((3, kernel.STATE_SLOTS))
    for i in range(3):
        kernel.init(states[i], STEP_MS if i != 2 else 0)
    series = [_walk(60, seed=10 + i) for i in range(3)]
    rows = np.zeros((3, N_FEATURES))
    codes = np.zeros(3, np.int8)
    for t in range(60):
        row = [s[t] for s in series]
        start = np.array([b.start_ms for b in row], np.int64)
        if t == 55:
            start[0] = series[0][t - 1].start_ms
        cols_t = [np.array([getattr(b, f) for b in row]) for f in ("open", "high", "low", "close", "volume")]
        kernel.run_symbols(states, start, *cols_t, rows, codes)
        # symbol 0: its bar 55 repeats bar 54 (refused), so bar 56 comes after a gap and warms up again
        want0 = kernel.OUT_OF_ORDER if t == 55 else kernel.ROW if 48 <= t < 55 else kernel.WARMING
        assert codes[0] == want0, t
        assert codes[1:].tolist() == [kernel.WARMING if t < 48 else kernel.ROW] * 2, t
    for i in (1, 2):
        want, _, want_state = _kernel_rows(series[i], STEP_MS if i != 2 else None)
        np.testing.assert_array_equal(rows[i], want[-1])
        assert states[i].tolist() == want_state.tolist()
    a = np.zeros(3)
    assert np.shares_memory(np.asarray(kernel.view(a)), a)  # the array itself, or (compiled) a view of it


def test_init_clears_every_slot_and_sets_the_interval() -> None:
    """`init` zeroes all STATE_SLOTS slots (whatever they held) and writes the interval to slot 0."""
    state = np.full(kernel.STATE_SLOTS, 3.5)
    kernel.init(state, 60_000)
    assert state.tolist() == [60_000.0] + [0.0] * (kernel.STATE_SLOTS - 1)
    kernel.init(state, 0)
    assert not state.any()


@pytest.mark.parametrize("seed", [5, 6])
def test_one_random_walk_with_wide_candles(seed: int) -> None:
    """A contiguous walk with wide candles (wicks up to 3 %, bodies both ways) as the oracle."""
    _assert_as_oracle(_walk(WARMUP_BARS + 80, seed=seed))


@pytest.mark.parametrize("price", [0.5, 0.002, 65_000.0])
def test_sub_dollar_and_large_prices(price: float) -> None:
    """Closes around 50 cents, a fifth of a cent and 65,000 are bars like any other, as the oracle."""
    _assert_as_oracle(_walk(WARMUP_BARS + 30, seed=7, price=price))


def test_volume_surprise_once_the_long_normaliser_reaches_one() -> None:
    """After about 15,000 bars the half-life-288 normaliser of log volume rounds to exactly 1.0; the
    surprise is still log1p(volume) minus the mean (here the state is set there directly: m = 2, norm = 1)."""
    state, out = np.zeros(kernel.STATE_SLOTS), np.zeros(N_FEATURES)
    kernel.init(state, STEP_MS)
    for b in _walk(WARMUP_BARS, seed=8):
        kernel.step(state, b.start_ms, b.open, b.high, b.low, b.close, b.volume, out)
    state[kernel.SLOT["EW_LVOL"]], state[kernel.SLOT["EW_LVOL"] + 1] = 2.0, 1.0
    t = WARMUP_BARS * STEP_MS
    assert kernel.step(state, t, 100.0, 101.0, 99.0, 100.5, 20.0, out) == kernel.ROW
    assert out[FEATURE_INDEX["lvolume_surprise"]] == math.log1p(20.0) - 2.0


def _columns(bars: list[Bar]) -> list[np.ndarray]:
    cols = [np.array([b.start_ms for b in bars], np.int64)]
    return cols + [
        np.array([getattr(b, f) for b in bars]) for f in ("open", "high", "low", "close", "volume")
    ]


def test_run_rows_steps_the_named_rows_of_a_state_table() -> None:
    """`run_rows`: bar i steps `states[rows[i]]` (rows in any order; a row not named is left alone) and
    writes `out[i]`, `status[i]`, each symbol as the oracle; a refused bar is named by its index and the
    others are stepped all the same."""
    series = [_walk(60, seed=20 + i) for i in range(3)]
    table = np.zeros((4, kernel.STATE_SLOTS))
    for r in range(4):
        kernel.init(table[r], STEP_MS)
    rows = np.array([2, 0, 3], np.int64)
    refs = [OracleFeatureState(interval_ms=STEP_MS) for _ in range(3)]
    for t in range(60):
        bars = [s[t] for s in series]
        cols = _columns(bars)
        if t == 55:
            cols[0][1] = series[1][t - 1].start_ms  # symbol 1 (row 0) repeats its last bar
        out, status = np.full((3, N_FEATURES), -7.0), np.full(3, 9, np.int8)
        assert kernel.run_rows(rows, table, *cols, out, status) == (1 if t == 55 else 3), t
        for i, b in enumerate(bars):
            if t == 55 and i == 1:
                assert status[i] == kernel.OUT_OF_ORDER
                assert np.isnan(out[i]).all()
                continue
            want = refs[i].update(b)
            assert status[i] == (kernel.WARMING if want is None else kernel.ROW), (t, i)
            if want is not None:
                np.testing.assert_allclose(out[i], want, rtol=RTOL, atol=ATOL)
    assert table[1].tolist() == [float(STEP_MS)] + [0.0] * (kernel.STATE_SLOTS - 1)
    assert [table[r, kernel.SLOT["COUNT"]] for r in rows] == [ref.count for ref in refs]


def test_run_rows_refuses_bad_rows_and_short_arrays() -> None:
    """A row outside the table, or an array shorter than the bars (or narrower than the layout), is a
    ValueError before any bar is stepped; zero bars need no particular widths."""
    bars = _walk(3, seed=30)
    table = np.zeros((2, kernel.STATE_SLOTS))
    for r in range(2):
        kernel.init(table[r], STEP_MS)
    fresh = table.copy()
    rows = np.array([0, 1, 0], np.int64)
    for bad_rows in ([0, 2, 1], [-1, 0, 1]):
        with pytest.raises(ValueError, match=r"row -?\d+ outside the state table of 2 rows"):
            kernel.run_rows(
                np.array(bad_rows, np.int64), table, *_columns(bars), np.zeros((3, 50)), np.zeros(3, np.int8)
            )
    for k in range(6):
        cols = _columns(bars)
        cols[k] = cols[k][:2]
        with pytest.raises(ValueError, match=r"^feature kernel: an array is shorter than the bars given"):
            kernel.run_rows(rows, table, *cols, np.zeros((3, N_FEATURES)), np.zeros(3, np.int8))
    short_outs = [
        (np.zeros((2, N_FEATURES)), np.zeros(3, np.int8)),
        (np.zeros((3, N_FEATURES - 1)), np.zeros(3, np.int8)),
        (np.zeros((3, N_FEATURES)), np.zeros(2, np.int8)),
    ]
    for out, status in short_outs:
        with pytest.raises(ValueError, match="shorter than"):
            kernel.run_rows(rows, table, *_columns(bars), out, status)
    with pytest.raises(ValueError, match="shorter than"):
        kernel.run_rows(
            rows, table[:, :-1].copy(), *_columns(bars), np.zeros((3, N_FEATURES)), np.zeros(3, np.int8)
        )
    one = np.zeros(1, np.int64)
    for out1, states1 in (
        (np.zeros((1, N_FEATURES - 1)), table),
        (np.zeros((1, N_FEATURES)), table[:, :-1].copy()),
    ):
        with pytest.raises(ValueError, match="shorter than"):  # one bar is checked as many
            kernel.run_rows(one, states1, *_columns(bars[:1]), out1, np.zeros(1, np.int8))
    assert table.tolist() == fresh.tolist()
    none = np.zeros(0, np.int64)
    empty = (none, *(np.zeros(0) for _ in range(5)))
    assert kernel.run_rows(none, np.zeros((0, 1)), *empty, np.zeros((0, 1)), np.zeros(0, np.int8)) == 0
