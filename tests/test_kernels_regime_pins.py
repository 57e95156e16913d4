"""Regime kernel pins: its T-loop (with books), N-loop, step, set_book, classify and holds called directly
with parameter arrays built here from a config, every output equal to the former detector
(tests/oracle_regime.py) or to hand-computed numbers; the array checks and the layout one by one. Short
seeded inputs (a few hundred bars, small windows), so the mutation run (docs/mutation.md) can afford them for
every mutant."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import oracle_regime as oracle
import pytest

from bot.core.bars import Bar, BookTop
from bot.core.kernels import regime as kr
from bot.core.params import REGIME_NAMES, RegimeConfig, RegimeThresholds
from bot.core.regime import RegimeDecision

K = kr.SLOTS
STEP_MS = 300_000
TIERS = ("edge", "production", "staging")
ROUTES = {"calm_trend": "edge", "normal": "production", "volatile": "staging", "crisis": "edge"}


def _cfg(*, hysteresis: float = 0.1, min_dwell: int = 2, use_book: bool = True, signal: str = "vol") -> Any:
    return RegimeConfig(
        vol_window=3,
        trend_window=4,
        volume_window=5,
        vol_long_halflife_bars=6,
        hysteresis=hysteresis,
        min_dwell_bars=min_dwell,
        use_book=use_book,
        routes=ROUTES,
        thresholds=RegimeThresholds(
            vol_calm_max=0.002 if signal == "vol" else 0.8,
            vol_volatile_min=0.005 if signal == "vol" else 1.2,
            vol_crisis_min=0.012 if signal == "vol" else 1.7,
            trend_calm_min=0.3,
            spread_crisis_bps=12.0,
            imbalance_crisis_min=0.6,
        ),
    )


class Kernel:
    """The kernel's arrays for one config: iparams, fparams (from the oracle's resolved thresholds) and
    routes (regime code -> index into TIERS), built slot by slot."""

    def __init__(self, cfg: Any, signal: str, *, interval_ms: int | None = STEP_MS) -> None:
        self.ref = oracle.RegimeDetector({"signal": signal, "thresholds": {}}, cfg, interval_ms=interval_ms)
        th = self.ref.thresholds
        self.iparams = kr.make_iparams(
            vol_window=cfg.vol_window,
            trend_window=cfg.trend_window,
            volume_window=cfg.volume_window,
            interval_ms=interval_ms,
            use_book=cfg.use_book,
            min_dwell_bars=cfg.min_dwell_bars,
        )
        f = np.zeros(K["N_FPARAMS"])
        f[K["P_VOL_CALM_MAX"]] = th.vol_calm_max
        f[K["P_VOL_VOLATILE_MIN"]] = th.vol_volatile_min
        f[K["P_VOL_CRISIS_MIN"]] = th.vol_crisis_min
        f[K["P_TREND_CALM_MIN"]] = th.trend_calm_min
        f[K["P_SPREAD_CRISIS_BPS"]] = th.spread_crisis_bps
        f[K["P_IMBALANCE_CRISIS_MIN"]] = th.imbalance_crisis_min
        f[K["P_VOL_REL"]] = 1.0 if signal == "vol_rel" else 0.0
        f[K["P_LO"]] = 1.0 - cfg.hysteresis
        f[K["P_HI"]] = 1.0 + cfg.hysteresis
        f[K["P_DECAY"]] = 0.5 ** (1.0 / cfg.vol_long_halflife_bars)
        self.fparams = f
        self.routes = np.array([TIERS.index(ROUTES[r]) for r in REGIME_NAMES], np.int64)


def _market(
    n: int, seed: int, *, gaps: bool = True, price: float = 100.0
) -> tuple[list[Bar], list[BookTop | None]]:
    """Bars whose volatility switches between calm, normal, volatile and crisis levels every 20-60 bars,
    with or without a drift, zero volume now and then, an occasional gap; books fresh, stale, one-sided or
    absent. (No flat stretch after a move: there the oracle raises "math domain error", which the kernel
    fixed, tests/test_kernels_regime.py.)"""
    rng = np.random.default_rng(seed)
    bars: list[Bar] = []
    books: list[BookTop | None] = []
    start, sigma, left = 1_700_000_000_000, 0.001, 0
    for i in range(n):
        if left == 0:
            sigma = float(rng.choice([0.00002, 0.0005, 0.002, 0.006, 0.02]))
            drift = float(rng.choice([0.0, 0.0, 0.003, -0.003]))
            left = int(rng.integers(20, 60))
        left -= 1
        start += STEP_MS * (2 if gaps and i % 97 == 50 else 1)
        price *= 1.0 + drift + sigma * float(rng.normal())
        volume = 0.0 if rng.random() < 0.1 else float(np.exp(rng.normal(4.0, 1.0)))
        bars.append(Bar("X", start, price, price, price, price, volume))
        u = rng.random()
        if u < 0.3:
            books.append(None)
        else:
            half = price * float(rng.choice([1e-5, 2e-4, 8e-4]))
            bid_sz, ask_sz = float(rng.choice([0.0, 1.0, 9.0])), float(rng.choice([0.0, 1.0, 2.0]))
            ts = start + (-1 if u < 0.4 else 1000)
            bid = 0.0 if u > 0.95 else price - half
            books.append(BookTop("X", ts, bid, bid_sz, price + half, ask_sz))
    return bars, books


def _check(iout: list[int], fout: list[float], d: RegimeDecision, where: object) -> None:
    """Row of `iout`/`fout` against the oracle's decision `d`."""
    assert REGIME_NAMES[iout[K["O_REGIME"]]] == d.regime, where
    assert TIERS[iout[K["O_TIER"]]] == d.tier, where
    assert REGIME_NAMES[iout[K["O_CANDIDATE"]]] == d.candidate, where
    assert (iout[K["O_CHANGED"]], iout[K["O_WARM"]], iout[K["O_DWELL"]]) == (d.changed, d.warm, d.dwell_bars)
    s = d.signals
    if s is None:
        return
    got = [fout[K[g]] for g in ("G_VOL", "G_VOL_REL", "G_EFFICIENCY", "G_TREND", "G_VOLUME_Z")]
    assert got == [s.vol, s.vol_rel, s.efficiency, s.trend, s.volume_z], where
    assert iout[K["O_BOOK"]] == (s.spread_bps is not None), where
    if s.spread_bps is not None:
        assert (fout[K["G_SPREAD_BPS"]], fout[K["G_IMBALANCE"]]) == (s.spread_bps, s.imbalance), where


@pytest.mark.parametrize(
    ("signal", "hysteresis", "min_dwell", "use_book"),
    [("vol", 0.1, 2, True), ("vol_rel", 0.25, 1, True), ("vol", 0.0, 3, False), ("vol_rel", 0.1, 4, False)],
)
@pytest.mark.parametrize("price", [100.0, 0.5])
def test_run_with_books_equals_the_oracle(
    signal: str, hysteresis: float, min_dwell: int, use_book: bool, price: float
) -> None:
    """`run` over 600 bars (at $100 or at 50 cents) with books applied before their bar: every regime,
    tier, candidate, change flag, dwell, signal and book value equals the former detector's, and every
    regime is visited."""
    cfg = _cfg(hysteresis=hysteresis, min_dwell=min_dwell, use_book=use_book, signal=signal)
    k = Kernel(cfg, signal)
    bars, books = _market(600, seed=int(hysteresis * 100) + min_dwell, price=price)
    istate, fstate = kr.new_state(k.iparams)
    n = len(bars)
    iout, fout = np.full((n, K["N_IOUT"]), -7, np.int64), np.zeros((n, K["N_FOUT"]))
    book_ts = np.array([-1 if b is None else b.ts_ms for b in books], np.int64)
    book = np.array([[0.0] * 4 if b is None else [b.bid_px, b.bid_sz, b.ask_px, b.ask_sz] for b in books])
    done = kr.run(
        istate,
        fstate,
        k.iparams,
        k.fparams,
        k.routes,
        np.array([b.start_ms for b in bars], np.int64),
        np.array([b.close for b in bars]),
        np.array([b.volume for b in bars]),
        book_ts,
        book,
        iout,
        fout,
    )
    assert done == n
    seen = set()
    for t, (bar, top) in enumerate(zip(bars, books, strict=True)):
        if top is not None:
            k.ref.update_book(top)
        d = k.ref.update(bar)
        _check(iout[t].tolist(), fout[t].tolist(), d, t)
        seen.add(d.regime)
    assert seen == set(REGIME_NAMES)
    assert istate[K["I_REGIME"]] == REGIME_NAMES.index(k.ref.regime)
    assert istate[K["I_DWELL"]] == k.ref.dwell_bars


def test_run_symbols_equals_the_oracle_and_names_the_first_bar_out_of_order() -> None:
    """`run_symbols` over 3 symbols (own thresholds each) for 300 bar closes equals 3 oracle detectors;
    bars out of order are refused (state untouched) and the first one is named, the others stepped."""
    signals = ("vol", "vol_rel", "vol")
    cfgs = [_cfg(signal=s) for s in signals]
    ks = [Kernel(c, s) for c, s in zip(cfgs, signals, strict=True)]
    markets = [_market(300, seed=60 + i, gaps=False)[0] for i in range(3)]
    iparams = kr.make_iparams(
        vol_window=3, trend_window=4, volume_window=5, interval_ms=STEP_MS, use_book=True, min_dwell_bars=2
    )
    istate, fstate = kr.new_state(iparams, 3)
    fparams = np.stack([k.fparams for k in ks])
    iout, fout = np.zeros((3, K["N_IOUT"]), np.int64), np.zeros((3, K["N_FOUT"]))
    for t in range(300):
        row = [m[t] for m in markets]
        start = [b.start_ms for b in row]
        bad = {100: [1], 200: [0, 2], 250: [2]}.get(t, [])
        for i in bad:
            start[i] = markets[i][t - 1].start_ms
        before = istate.copy(), fstate.copy()
        done = kr.run_symbols(
            istate,
            fstate,
            iparams,
            fparams,
            ks[0].routes,
            np.array(start, np.int64),
            np.array([b.close for b in row]),
            np.array([b.volume for b in row]),
            iout,
            fout,
        )
        assert done == (bad[0] if bad else 3), t
        for i, k in enumerate(ks):
            if i in bad:
                assert istate[i].tolist() == before[0][i].tolist()
                assert fstate[i].tolist() == before[1][i].tolist()
                continue
            _check(iout[i].tolist(), fout[i].tolist(), k.ref.update(row[i]), (t, i))


def test_run_stops_at_the_first_bar_out_of_order() -> None:
    """`run` returns the index of the first bar not after the previous one; it and later rows are not
    written; a book row with ts -1 is no book, one at 0 a book; an empty book array means no books."""
    cfg = _cfg()
    k = Kernel(cfg, "vol")
    bars, _ = _market(40, seed=3, gaps=False)
    start = np.array([b.start_ms for b in bars], np.int64)
    start[25] = start[24]
    istate, fstate = kr.new_state(k.iparams)
    iout, fout = np.full((40, K["N_IOUT"]), -7, np.int64), np.full((40, K["N_FOUT"]), -7.0)
    close, volume = np.array([b.close for b in bars]), np.array([b.volume for b in bars])
    no_books = (np.zeros(0, np.int64), np.zeros((0, 4)))
    assert (
        kr.run(istate, fstate, k.iparams, k.fparams, k.routes, start, close, volume, *no_books, iout, fout)
        == 25
    )
    assert (iout[25:] == -7).all()
    assert (fout[25:] == -7.0).all()
    assert istate[K["I_LAST_START_MS"]] == start[24]
    assert istate[K["I_HAS_BOOK"]] == 0
    for t in range(25):
        _check(iout[t].tolist(), fout[t].tolist(), k.ref.update(bars[t]), t)
    one = kr.new_state(k.iparams)
    book = (np.zeros(1, np.int64), np.array([[99.0, 3.0, 101.0, 1.0]]))  # one book, stamped at 0
    assert (
        kr.run(*one, k.iparams, k.fparams, k.routes, start[:1], close[:1], volume[:1], *book, iout, fout) == 1
    )
    assert (one[0][K["I_HAS_BOOK"]], one[0][K["I_BOOK_TS_MS"]], one[1][K["F_BOOK_IMBALANCE"]]) == (1, 0, 0.5)
    stale = (np.full(40, -1, np.int64), np.full((40, 4), 100.0))
    i2, f2 = kr.new_state(k.iparams)
    assert kr.run(i2, f2, k.iparams, k.fparams, k.routes, start, close, volume, *stale, iout, fout) == 25
    assert i2[K["I_HAS_BOOK"]] == 0


def test_set_book_spread_and_imbalance_by_hand() -> None:
    """A book is stored with its time, spread in bps of the mid and size imbalance; an empty side gives
    the one-sided values, no sizes an imbalance of 0; without use_book nothing is stored."""
    k = Kernel(_cfg(), "vol")
    istate, fstate = kr.new_state(k.iparams)
    kr.set_book(istate, fstate, k.iparams, 1234, 99.0, 3.0, 101.0, 1.0)
    assert (istate[K["I_HAS_BOOK"]], istate[K["I_BOOK_TS_MS"]]) == (1, 1234)
    assert fstate[K["F_BOOK_SPREAD_BPS"]] == 2.0 / 100.0 * 1e4
    assert fstate[K["F_BOOK_IMBALANCE"]] == 0.5
    kr.set_book(istate, fstate, k.iparams, 1235, 0.0, 0.0, 100.0, 0.0)
    assert (fstate[K["F_BOOK_SPREAD_BPS"]], fstate[K["F_BOOK_IMBALANCE"]]) == (100.0 / 50.0 * 1e4, 0.0)
    kr.set_book(istate, fstate, k.iparams, 1236, 0.4, 1.0, 0.6, 1.0)
    assert fstate[K["F_BOOK_SPREAD_BPS"]] == (0.6 - 0.4) / 0.5 * 1e4  # a sub-dollar mid
    kr.set_book(istate, fstate, k.iparams, 1236, 0.0, 0.0, 0.0, 4.0)
    assert (fstate[K["F_BOOK_SPREAD_BPS"]], fstate[K["F_BOOK_IMBALANCE"]]) == (0.0, -1.0)
    assert istate[K["I_BOOK_TS_MS"]] == 1236
    off = Kernel(_cfg(use_book=False), "vol")
    i2, f2 = kr.new_state(off.iparams)
    kr.set_book(i2, f2, off.iparams, 1234, 99.0, 3.0, 101.0, 1.0)
    fresh = kr.new_state(off.iparams)
    assert (i2.tolist(), f2.tolist()) == (fresh[0].tolist(), fresh[1].tolist())


def test_a_book_is_fresh_from_its_bars_open() -> None:
    """A book stamped at the bar's open is fresh for it (spread and imbalance reported), one stamped a
    millisecond before is not."""
    cfg = _cfg()
    k = Kernel(cfg, "vol")
    bars, _ = _market(30, seed=8, gaps=False)
    istate, fstate = kr.new_state(k.iparams)
    iout, fout = np.zeros(K["N_IOUT"], np.int64), np.zeros(K["N_FOUT"])
    for b in bars:
        kr.set_book(istate, fstate, k.iparams, b.start_ms - 1, 99.0, 1.0, 101.0, 1.0)
        kr.step(istate, fstate, k.iparams, k.fparams, k.routes, b.start_ms, b.close, b.volume, iout, fout)
    assert iout[K["O_WARM"]] == 1
    assert iout[K["O_BOOK"]] == 0
    b = bars[-1]
    kr.set_book(istate, fstate, k.iparams, b.start_ms + STEP_MS, 99.0, 3.0, 101.0, 1.0)
    code = kr.step(
        istate, fstate, k.iparams, k.fparams, k.routes, b.start_ms + STEP_MS, b.close, b.volume, iout, fout
    )
    assert code == K["OK"]
    assert iout[K["O_BOOK"]] == 1
    assert (fout[K["G_SPREAD_BPS"]], fout[K["G_IMBALANCE"]]) == (200.0, 0.5)


def test_step_refuses_a_bar_out_of_order_and_changes_nothing() -> None:
    """A bar is marked absorbed in its slots (1, its start, 1); one at or before the last one is
    OUT_OF_ORDER, state and outputs untouched."""
    k = Kernel(_cfg(), "vol")
    istate, fstate = kr.new_state(k.iparams)
    iout, fout = np.zeros(K["N_IOUT"], np.int64), np.zeros(K["N_FOUT"])
    args = (k.iparams, k.fparams, k.routes)
    assert kr.step(istate, fstate, *args, 0, 100.0, 1.0, iout, fout) == K["OK"]
    assert kr.step(istate, fstate, *args, STEP_MS, 101.0, 1.0, iout, fout) == K["OK"]
    assert (istate[K["I_HAS_LAST"]], istate[K["I_LAST_START_MS"]], istate[K["I_HAS_PREV"]]) == (1, STEP_MS, 1)
    assert (istate[K["I_N_CLOSES"]], istate[K["I_N_R2"]], istate[K["I_N_LVOL"]]) == (2, 1, 2)
    before = istate.copy(), fstate.copy(), iout.copy(), fout.copy()
    for start in (STEP_MS, 0, -STEP_MS):
        assert kr.step(istate, fstate, *args, start, 50.0, 9.0, iout, fout) == K["OUT_OF_ORDER"]
        for a, b in zip((istate, fstate, iout, fout), before, strict=True):
            assert a.tolist() == b.tolist()


def test_a_gap_restarts_the_warm_up_and_keeps_the_regime() -> None:
    """A bar after a gap (spacing not the interval) empties the windows and the long-run level, keeps the
    time, book and regime; interval 0 takes any spacing as contiguous."""
    cfg = _cfg(min_dwell=1)
    k = Kernel(cfg, "vol")
    bars, _ = _market(80, seed=12, gaps=False)
    istate, fstate = kr.new_state(k.iparams)
    iout, fout = np.zeros(K["N_IOUT"], np.int64), np.zeros(K["N_FOUT"])
    args = (k.iparams, k.fparams, k.routes)
    for b in bars:
        kr.step(istate, fstate, *args, b.start_ms, b.close, b.volume, iout, fout)
        k.ref.update(b)
    kr.set_book(istate, fstate, k.iparams, 5, 99.0, 1.0, 101.0, 1.0)
    regime, last = istate[K["I_REGIME"]], bars[-1]
    gap = Bar("X", last.start_ms + 3 * STEP_MS, 90.0, 90.0, 90.0, 90.0, 2.0)
    kr.step(istate, fstate, *args, gap.start_ms, gap.close, gap.volume, iout, fout)
    _check(iout.tolist(), fout.tolist(), k.ref.update(gap), "gap")
    assert istate[K["I_REGIME"]] == regime
    assert (istate[K["I_HAS_BOOK"]], istate[K["I_BOOK_TS_MS"]]) == (1, 5)
    assert istate[K["I_HAS_PREV"]] == 1
    counts = [istate[K[s]] for s in ("I_N_R2", "I_N_ABSDC", "I_N_CLOSES", "I_N_LVOL", "I_N_EFF")]
    assert counts == [0, 0, 1, 1, 0]
    assert fstate[K["F_PREV_CLOSE"]] == 90.0
    lvol = math.log1p(2.0)
    sums = [fstate[K[s]] for s in ("F_R2_S", "F_ABSDC_S", "F_LVOL_S", "F_LVOL_SS", "F_EFF_S")]
    assert sums == [0.0, 0.0, lvol, lvol * lvol, 0.0]
    assert (fstate[K["F_EW_M"]], fstate[K["F_EW_NORM"]]) == (0.0, 0.0)
    assert fstate[K["F_BOOK_SPREAD_BPS"]] == 200.0
    contiguous = Kernel(cfg, "vol", interval_ms=None)
    i2, f2 = kr.new_state(contiguous.iparams)
    for b in [*bars, gap]:
        kr.step(i2, f2, contiguous.iparams, k.fparams, k.routes, b.start_ms, b.close, b.volume, iout, fout)
        d = contiguous.ref.update(b)
    _check(iout.tolist(), fout.tolist(), d, "no gap detection")
    assert i2[K["I_N_R2"]] == 3


def test_classify_and_holds_at_their_edges_by_hand() -> None:
    """Each threshold is inclusive where the detector says so (>= crisis and volatile, <= calm, efficiency
    >=), relaxed by the hysteresis (lo = 0.75, hi = 1.25) when a regime is held."""
    f = Kernel(_cfg(hysteresis=0.25), "vol").fparams
    no = (False, 0.0, False, 0.0)

    def cls(v: float, eff: float, book: tuple[bool, float, bool, float] = no) -> str:
        return str(REGIME_NAMES[kr.classify(f, v, eff, *book)])

    def holds(regime: str, v: float, eff: float, book: tuple[bool, float, bool, float] = no) -> bool:
        return bool(kr.holds(f, REGIME_NAMES.index(regime), v, eff, *book))

    assert [cls(v, 0.3) for v in (0.002, 0.0021, 0.005, 0.012)] == [
        "calm_trend",
        "normal",
        "volatile",
        "crisis",
    ]
    assert cls(0.002, 0.2999) == "normal"
    assert cls(0.001, 0.0, (True, 12.0, False, 0.0)) == "crisis"
    assert cls(0.001, 0.0, (True, 11.99, False, 0.0)) == "normal"
    assert cls(0.005, 0.0, (False, 0.0, True, -0.6)) == "crisis"
    assert cls(0.0049, 0.0, (False, 0.0, True, 0.9)) == "normal"
    assert cls(0.005, 0.0, (False, 0.0, True, 0.59)) == "volatile"
    assert cls(0.005, 0.0, (True, 20.0, False, 0.0)) == "crisis"
    # crisis holds down to 0.75 of its entry levels
    assert holds("crisis", 0.012 * 0.75, 0.0)
    assert not holds("crisis", 0.0089, 0.0)
    assert holds("crisis", 0.0, 0.0, (True, 9.0, False, 0.0))
    assert not holds("crisis", 0.0, 0.0, (True, 8.99, False, 0.0))
    assert holds("crisis", 0.005 * 0.75, 0.0, (False, 0.0, True, 0.45))
    assert not holds("crisis", 0.005 * 0.75, 0.0, (False, 0.0, True, 0.449))
    assert not holds("crisis", 0.0037, 0.0, (False, 0.0, True, 0.9))
    # volatile holds down to 0.75 of its entry, unless crisis holds at 1.25 of its entry
    assert holds("volatile", 0.005 * 0.75, 0.0)
    assert not holds("volatile", 0.0037, 0.0)
    assert holds("volatile", 0.0149, 0.0)
    assert not holds("volatile", 0.012 * 1.25, 0.0)
    assert not holds("volatile", 0.006, 0.0, (True, 15.0, False, 0.0))
    assert holds("volatile", 0.006, 0.0, (True, 14.9, False, 0.0))
    assert not holds("volatile", 0.00625, 0.0, (False, 0.0, True, 0.75))
    assert holds("volatile", 0.00625, 0.0, (False, 0.0, True, 0.749))
    # calm_trend holds up to 1.25 of its vol and down to 0.75 of its efficiency
    assert holds("calm_trend", 0.002 * 1.25, 0.3 * 0.75)
    assert not holds("calm_trend", 0.00251, 0.3)
    assert not holds("calm_trend", 0.001, 0.2249)
    # normal holds unless calm at 0.75 vol / 1.25 efficiency, volatile at 1.25, or crisis at 1.25
    assert holds("normal", 0.002, 0.3)
    assert not holds("normal", 0.002 * 0.75, 0.3 * 1.25)
    assert holds("normal", 0.0015, 0.374)
    assert holds("normal", 0.00151, 0.5)
    assert holds("normal", 0.00624, 0.0)
    assert not holds("normal", 0.005 * 1.25, 0.0)
    assert not holds("normal", 0.001, 0.0, (True, 15.0, False, 0.0))
    assert holds("normal", 0.001, 0.0, (True, 14.9, False, 0.0))


def test_decide_switches_only_after_the_dwell_or_into_crisis() -> None:
    """`decide` keeps a regime for min_dwell bars (crisis enters at once), switches only when the
    regime's own exit levels fail, and counts the dwell; a cold bar just counts."""
    k = Kernel(_cfg(hysteresis=0.25, min_dwell=3), "vol")
    istate, _ = kr.new_state(k.iparams)
    assert istate[K["I_DWELL"]] == 3
    assert istate[K["I_REGIME"]] == REGIME_NAMES.index("normal")
    iout = np.zeros(K["N_IOUT"], np.int64)

    def decide(v: float, eff: float = 0.0, *, warm: bool = True) -> tuple[str, str, int, int]:
        kr.decide(istate, k.iparams, k.fparams, k.routes, warm, v, 99.0, eff, False, 0.0, False, 0.0, iout)
        return (
            REGIME_NAMES[iout[K["O_REGIME"]]],
            REGIME_NAMES[iout[K["O_CANDIDATE"]]],
            int(iout[K["O_CHANGED"]]),
            int(iout[K["O_DWELL"]]),
        )

    assert decide(0.007, warm=False) == ("normal", "normal", 0, 4)
    assert iout[K["O_WARM"]] == 0
    assert decide(0.007) == ("volatile", "volatile", 1, 1)
    assert iout[K["O_WARM"]] == 1
    assert TIERS[iout[K["O_TIER"]]] == "staging"
    assert decide(0.001, 0.5) == ("volatile", "calm_trend", 0, 2)  # dwell 1 < 3
    assert decide(0.001, 0.5) == ("volatile", "calm_trend", 0, 3)
    assert decide(0.004) == ("volatile", "normal", 0, 4)  # volatile holds down to 0.00375
    assert decide(0.0037) == ("normal", "normal", 1, 1)
    assert decide(0.02) == ("crisis", "crisis", 1, 1)  # crisis at once
    assert TIERS[iout[K["O_TIER"]]] == "edge"
    assert decide(0.01) == ("crisis", "volatile", 0, 2)
    assert decide(0.01) == ("crisis", "volatile", 0, 3)
    assert decide(0.01) == ("crisis", "volatile", 0, 4)  # 0.01 >= 0.009: crisis holds
    assert decide(0.008) == ("volatile", "volatile", 1, 1)
    rel = Kernel(_cfg(hysteresis=0.25, min_dwell=1, signal="vol_rel"), "vol_rel")
    i2, _ = kr.new_state(rel.iparams)
    kr.decide(i2, rel.iparams, rel.fparams, rel.routes, True, 99.0, 1.6, 0.0, False, 0.0, False, 0.0, iout)
    assert REGIME_NAMES[iout[K["O_REGIME"]]] == "volatile"  # classified on vol_rel (1.6), not vol


def test_signals_by_hand() -> None:
    """Vol, vol_rel, efficiency, trend and volume z-score of the first warm bar (the 8th: 4 trends need 8
    closes), computed by hand (vol window 3, trend window 4, volume window 5, half-life 6)."""
    cfg = _cfg()
    k = Kernel(cfg, "vol")
    c = [100.0, 101.0, 100.0, 102.0, 103.0, 101.0, 104.0, 104.5]
    volumes = [0.0, 1.0, 3.0, 0.0, 7.0, 2.0, 5.0, 1.0]
    istate, fstate = kr.new_state(k.iparams)
    iout, fout = np.zeros(K["N_IOUT"], np.int64), np.zeros(K["N_FOUT"])
    for t, (close, v) in enumerate(zip(c, volumes, strict=True)):
        assert kr.signals(istate, fstate, k.iparams, k.fparams, t * STEP_MS, close, v, iout, fout) == K["OK"]
        assert iout[K["O_WARM"]] == (t == 7), t
    r = [c[i] / c[i - 1] - 1.0 for i in range(1, 8)]
    ms = sum(x * x for x in r[-3:]) / 3
    d = 0.5 ** (1.0 / 6)
    m = norm = 0.0
    for x in r:
        m, norm = d * m + (1.0 - d) * x * x, d * norm + (1.0 - d)
    trends = [(c[t] - c[t - 4]) / sum(abs(c[i] - c[i - 1]) for i in range(t - 3, t + 1)) for t in range(4, 8)]
    lv = [math.log1p(v) for v in volumes[-5:]]
    mean = sum(lv) / 5
    var = sum(x * x for x in lv) / 5 - mean * mean
    assert fout[K["G_VOL"]] == pytest.approx(math.sqrt(ms), rel=1e-12)
    assert fout[K["G_VOL_REL"]] == pytest.approx(math.sqrt(ms / (m / norm)), rel=1e-12)
    assert fout[K["G_TREND"]] == pytest.approx(trends[-1], rel=1e-12)
    assert fout[K["G_EFFICIENCY"]] == pytest.approx(sum(abs(x) for x in trends) / 4, rel=1e-12)
    assert fout[K["G_VOLUME_Z"]] == pytest.approx((lv[-1] - mean) / math.sqrt(var), rel=1e-12)
    assert iout[K["O_BOOK"]] == 0
    # a flat market: vol 0, vol_rel 1.0 (no long-run level yet), trend and efficiency 0, volume z 0
    flat = Kernel(cfg, "vol")
    i2, f2 = kr.new_state(flat.iparams)
    for t in range(8):
        kr.signals(i2, f2, flat.iparams, flat.fparams, t * STEP_MS, 50.0, 2.0, iout, fout)
    assert iout[K["O_WARM"]] == 1
    assert [fout[K[g]] for g in ("G_VOL", "G_VOL_REL", "G_TREND", "G_EFFICIENCY", "G_VOLUME_Z")] == [
        0.0,
        1.0,
        0.0,
        0.0,
        0.0,
    ]


def test_signals_zero_previous_close_gives_a_zero_return() -> None:
    """A previous close of 0 (not a valid price, but not a crash) gives a return of 0."""
    k = Kernel(_cfg(), "vol")
    istate, fstate = kr.new_state(k.iparams)
    iout, fout = np.zeros(K["N_IOUT"], np.int64), np.zeros(K["N_FOUT"])
    for t, c in enumerate([0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]):
        kr.signals(istate, fstate, k.iparams, k.fparams, t * STEP_MS, c, 1.0, iout, fout)
        if t == 1:
            assert fstate[K["F_R2_S"]] == 0.0
    assert (fstate[K["F_R2_S"]], fstate[K["F_EW_M"]]) == (0.0, 0.0)
    assert iout[K["O_WARM"]] == 1
    assert (fout[K["G_VOL"]], fout[K["G_VOL_REL"]]) == (0.0, 1.0)


def test_layout_make_iparams_and_new_state() -> None:
    """The rings follow the scalars in order (r2, absdc, closes of trend+1, lvol, eff); make_iparams and
    new_state put each value in its slot; new_state's regime is the fallback with its dwell satisfied."""
    assert kr.layout(3, 4, 5) == (10, 13, 17, 22, 27, 31)
    assert K["N_FSCALARS"] == 10
    q = kr.make_iparams(
        vol_window=3, trend_window=4, volume_window=5, interval_ms=None, use_book=False, min_dwell_bars=7
    )
    assert q.dtype == np.int64
    assert q.tolist() == [3, 4, 5, 0, 0, 7, 10, 13, 17, 22, 27, 31]
    q2 = kr.make_iparams(
        vol_window=2, trend_window=2, volume_window=2, interval_ms=60_000, use_book=True, min_dwell_bars=1
    )
    assert q2[K["Q_INTERVAL_MS"]] == 60_000
    assert q2[K["Q_USE_BOOK"]] == 1
    istate, fstate = kr.new_state(q)
    want = [0] * K["N_ISTATE"]
    want[K["I_REGIME"]], want[K["I_DWELL"]] = K["FALLBACK"], 7
    assert istate.dtype == np.int64
    assert fstate.dtype == np.float64
    assert istate.tolist() == want
    assert fstate.tolist() == [0.0] * 31
    rows_i, rows_f = kr.new_state(q, 2)
    assert rows_i.tolist() == [want, want]
    assert rows_f.shape == (2, 31)
    assert not rows_f.any()


_RUN_ARRAYS = (
    "istate",
    "fstate",
    "fparams",
    "routes",
    "close",
    "volume",
    "book_ts",
    "book_rows",
    "book_cols",
)
_OUT_ARRAYS = ("iout_rows", "iout_cols", "fout_rows", "fout_cols")


@pytest.mark.parametrize("short", _RUN_ARRAYS + _OUT_ARRAYS)
def test_run_refuses_each_short_array(short: str) -> None:
    """`run` checks each array on its own (state, parameters, routes, bars, books, outputs): one short is a
    ValueError before any bar."""
    k = Kernel(_cfg(), "vol")
    n = 3
    istate, fstate = kr.new_state(k.iparams)
    a: dict[str, Any] = {
        "istate": istate,
        "fstate": fstate,
        "fparams": k.fparams,
        "routes": k.routes,
        "close": np.full(n, 100.0),
        "volume": np.ones(n),
        "book_ts": np.zeros(n, np.int64),
        "book": np.full((n, 4), 100.0),
        "iout": np.zeros((n, K["N_IOUT"]), np.int64),
        "fout": np.zeros((n, K["N_FOUT"])),
    }
    if short in a:
        a[short] = a[short][:-1]
    else:
        name, axis = short.rsplit("_", 1)
        a[name] = a[name][:-1] if axis == "rows" else a[name][:, :-1]
    start = np.arange(1, n + 1, dtype=np.int64) * STEP_MS
    with pytest.raises(ValueError, match="shorter than"):
        kr.run(
            a["istate"], a["fstate"], k.iparams, a["fparams"], a["routes"], start, a["close"], a["volume"],
            a["book_ts"], a["book"], a["iout"], a["fout"],
        )  # fmt: skip
    assert istate[K["I_HAS_LAST"]] == 0


_SYM_ARRAYS = ("istate_rows", "istate_cols", "fstate_rows", "fstate_cols", "fparams_rows", "fparams_cols")


@pytest.mark.parametrize("short", [*_SYM_ARRAYS, "routes", "close", "volume", *_OUT_ARRAYS])
def test_run_symbols_refuses_each_short_array(short: str) -> None:
    """`run_symbols` checks each array on its own: one short is a ValueError before any symbol."""
    k = Kernel(_cfg(), "vol")
    n = 3
    istate, fstate = kr.new_state(k.iparams, n)
    a: dict[str, Any] = {
        "istate": istate,
        "fstate": fstate,
        "fparams": np.stack([k.fparams] * n),
        "routes": k.routes,
        "close": np.full(n, 100.0),
        "volume": np.ones(n),
        "iout": np.zeros((n, K["N_IOUT"]), np.int64),
        "fout": np.zeros((n, K["N_FOUT"])),
    }
    if short in a:
        a[short] = a[short][:-1]
    else:
        name, axis = short.rsplit("_", 1)
        a[name] = a[name][:-1] if axis == "rows" else a[name][:, :-1]
    with pytest.raises(ValueError, match="shorter than"):
        kr.run_symbols(
            a["istate"], a["fstate"], k.iparams, a["fparams"], a["routes"], np.full(n, STEP_MS, np.int64),
            a["close"], a["volume"], a["iout"], a["fout"],
        )  # fmt: skip
    assert not istate[:, K["I_HAS_LAST"]].any()


def test_run_rows_steps_the_named_rows_of_the_tables() -> None:
    """`run_rows`: bar i steps row `rows[i]` of istate, fstate and fparams (rows in any order; a row not
    named is left alone), each symbol as its oracle detector; bars out of order are refused, the first
    one named, the others stepped."""
    signals = ("vol", "vol_rel", "vol")
    ks = [Kernel(_cfg(signal=s), s) for s in signals]
    markets = [_market(250, seed=80 + i, gaps=False)[0] for i in range(3)]
    rows = np.array([3, 1, 0], np.int64)
    istate, fstate = kr.new_state(ks[0].iparams, 4)
    fparams = np.zeros((4, K["N_FPARAMS"]))
    for i, r in enumerate(rows):
        fparams[r] = ks[i].fparams
    untouched = istate[2].tolist(), fstate[2].tolist()
    iout, fout = np.zeros((3, K["N_IOUT"]), np.int64), np.zeros((3, K["N_FOUT"]))
    for t in range(250):
        row = [m[t] for m in markets]
        start = [b.start_ms for b in row]
        bad = {100: [2], 200: [1, 2]}.get(t, [])
        for i in bad:
            start[i] = markets[i][t - 1].start_ms
        done = kr.run_rows(
            rows,
            istate,
            fstate,
            ks[0].iparams,
            fparams,
            ks[0].routes,
            np.array(start, np.int64),
            np.array([b.close for b in row]),
            np.array([b.volume for b in row]),
            iout,
            fout,
        )
        assert done == (bad[0] if bad else 3), t
        for i, k in enumerate(ks):
            if i not in bad:
                _check(iout[i].tolist(), fout[i].tolist(), k.ref.update(row[i]), (t, i))
    assert (istate[2].tolist(), fstate[2].tolist()) == untouched


def test_run_rows_refuses_bad_rows_and_short_arrays() -> None:
    """A row outside istate, fstate or fparams, or an array shorter than the bars (or narrower than the
    layout), is a ValueError before any bar; zero bars need no particular widths."""
    k = Kernel(_cfg(), "vol")
    n = 3
    istate, fstate = kr.new_state(k.iparams, 2)
    fresh = istate.copy(), fstate.copy()
    fparams = np.stack([k.fparams] * 2)

    def call(rows: list[int], **short: Any) -> int:
        a: dict[str, Any] = {
            "istate": istate,
            "fstate": fstate,
            "fparams": fparams,
            "routes": k.routes,
            "start": np.arange(1, n + 1, dtype=np.int64) * STEP_MS,
            "close": np.full(n, 100.0),
            "volume": np.ones(n),
            "iout": np.zeros((n, K["N_IOUT"]), np.int64),
            "fout": np.zeros((n, K["N_FOUT"])),
        }
        a.update(short)
        return int(
            kr.run_rows(
                np.array(rows, np.int64), a["istate"], a["fstate"], k.iparams, a["fparams"], a["routes"],
                a["start"], a["close"], a["volume"], a["iout"], a["fout"],
            )
        )  # fmt: skip

    cases: list[tuple[list[int], dict[str, Any]]] = [
        ([0, 2, 1], {}),
        ([-1, 0, 1], {}),
        ([0, 1, 1], {"fstate": fstate[:1]}),
        ([0, 1, 1], {"fparams": fparams[:1]}),
        ([0, 1, 1], {"istate": istate[:1]}),
        ([0, 1, 1], {"istate": istate[:, :-1]}),
        ([0, 1, 1], {"fstate": fstate[:, :-1]}),
        ([0, 1, 1], {"fparams": fparams[:, :-1]}),
        ([0, 1, 1], {"routes": k.routes[:-1]}),
        ([0, 1, 1], {"start": np.zeros(2, np.int64)}),
        ([0, 1, 1], {"close": np.ones(2)}),
        ([0, 1, 1], {"volume": np.ones(2)}),
        ([0, 1, 1], {"iout": np.zeros((2, K["N_IOUT"]), np.int64)}),
        ([0, 1, 1], {"iout": np.zeros((3, K["N_IOUT"] - 1), np.int64)}),
        ([0, 1, 1], {"fout": np.zeros((2, K["N_FOUT"]))}),
        ([0, 1, 1], {"fout": np.zeros((3, K["N_FOUT"] - 1))}),
    ]
    for rows, short in cases:
        with pytest.raises(ValueError, match="shorter than"):
            call(rows, **short)
    one = {"start": np.full(1, STEP_MS, np.int64), "close": np.ones(1), "volume": np.ones(1)}
    outs = {"iout": np.zeros((1, K["N_IOUT"]), np.int64), "fout": np.zeros((1, K["N_FOUT"]))}
    narrow_one: list[dict[str, Any]] = [
        {"istate": istate[:, :-1]},
        {"fstate": fstate[:, :-1]},
        {"fparams": fparams[:, :-1]},
        {"iout": np.zeros((1, K["N_IOUT"] - 1), np.int64)},
        {"fout": np.zeros((1, K["N_FOUT"] - 1))},
    ]
    for short in narrow_one:  # one bar is checked as many
        with pytest.raises(ValueError, match="shorter than"):
            call([0], **{**one, **outs, **short})
    assert (istate.tolist(), fstate.tolist()) == (fresh[0].tolist(), fresh[1].tolist())
    # the third bar repeats the first one's row and start: refused, the others stepped
    assert call([0, 1, 0], start=np.array([1, 2, 1], np.int64) * STEP_MS) == 2
    assert (istate[:, K["I_LAST_START_MS"]].tolist(), istate[:, K["I_HAS_LAST"]].tolist()) == (
        [STEP_MS, 2 * STEP_MS],
        [1, 1],
    )
    narrow = {
        "istate": np.zeros((0, 1), np.int64),
        "fstate": np.zeros((0, 1)),
        "fparams": np.zeros((0, 1)),
        "iout": np.zeros((0, 1), np.int64),
        "fout": np.zeros((0, 1)),
    }
    assert call([], **narrow) == 0


def test_step_route_and_the_typed_views() -> None:
    """`step_route` is `step` returning tier * N_REGIMES + regime of its `iout`, -1 for a bar out of order
    (nothing changed); `view_i` and `view_f` hand back their array (or a view of its memory)."""
    k = Kernel(_cfg(min_dwell=1), "vol")
    istate, fstate = kr.new_state(k.iparams)
    ref = kr.new_state(k.iparams)
    iout, fout = np.zeros(K["N_IOUT"], np.int64), np.zeros(K["N_FOUT"])
    ref_out = np.zeros(K["N_IOUT"], np.int64), np.zeros(K["N_FOUT"])
    seen = set()
    for b in _market(200, seed=90, gaps=False)[0]:
        args = (k.iparams, k.fparams, k.routes, b.start_ms, b.close, b.volume)
        route = kr.step_route(istate, fstate, *args, iout, fout)
        assert kr.step(*ref, *args, *ref_out) == K["OK"]
        assert iout.tolist() == ref_out[0].tolist()
        assert route == iout[K["O_TIER"]] * K["N_REGIMES"] + iout[K["O_REGIME"]]
        seen.add(int(iout[K["O_REGIME"]]))
    assert len(seen) > 2
    before = istate.tolist(), fstate.tolist()
    assert (
        kr.step_route(istate, fstate, k.iparams, k.fparams, k.routes, b.start_ms, 1.0, 1.0, iout, fout) == -1
    )
    assert (istate.tolist(), fstate.tolist()) == before
    a, f = np.zeros(3, np.int64), np.zeros(3)
    assert np.shares_memory(np.asarray(kr.view_i(a)), a)
    assert np.shares_memory(np.asarray(kr.view_f(f)), f)
