"""Paper kernel pins: its T-loop, N-loop and step called directly, every output slot, state slot and
attribution entry equal to the former class (tests/oracle_paper.py) or to hand-computed numbers; the
refusals, the array checks and the crediting rules one by one. Short seeded inputs (a few hundred bars), so
the mutation run (docs/mutation.md) can afford them for every mutant."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import oracle_paper as oracle
import pytest

from bot.core.bars import BookTop
from bot.core.kernels import paper as kp
from bot.core.paper import PaperResult, PositionState, kernel_params
from bot.core.params import REGIME_NAMES, PaperConfig

K = kp.SLOTS
TIERS = ("edge", "production", "staging", "research")
STEP_MS = 300_000
CONFIGS = {
    "fixed": PaperConfig(max_units=2, long_threshold_bps=2.0, short_threshold_bps=3.0, slippage_bps=1.0),
    "fixed_mid_maker": PaperConfig(
        long_threshold_bps=1.0,
        short_threshold_bps=3.0,
        fill_price="mid",
        order_type="maker",
        slippage_bps=0.5,
    ),
    "vol_target": PaperConfig(
        max_units=3, long_threshold_bps=2.0, short_threshold_bps=2.0, sizing="vol_target", target_vol_bps=5.0
    ),
    "vol_target_cap_band": PaperConfig(
        max_units=2,
        long_threshold_bps=1.0,
        short_threshold_bps=1.0,
        sizing="vol_target",
        target_vol_bps=8.0,
        max_vol_bps=40.0,
        rebalance_band=0.3,
        fill_price="mid",
        slippage_bps=2.0,
    ),
}


class Inputs:
    """Seeded bars and decisions for one symbol: closes on a random walk with flat stretches, books with
    an empty side now and then, predictions around the thresholds, lognormal vol forecasts, tier and
    regime codes."""

    def __init__(self, n: int, seed: int, *, start_ms: int = 1_700_000_000_000) -> None:
        rng = np.random.default_rng(seed)
        ret = rng.normal(0.0, 0.004, n) * (rng.random(n) > 0.15)
        self.close = (100.0 * np.exp(np.cumsum(ret))).tolist()
        self.start_ms = [start_ms + STEP_MS * (i + int(i > n // 2)) for i in range(n)]
        # a quote around the close, its mid off the close by up to a third of the spread
        below = self.close[0] * rng.uniform(1e-5, 4e-4, n)
        above = below * rng.uniform(0.5, 2.0, n)
        up = rng.random(n)
        self.bid = [0.0 if u < 0.1 else c - b for u, c, b in zip(up, self.close, below, strict=True)]
        self.ask = [0.0 if u > 0.9 else c + a for u, c, a in zip(up, self.close, above, strict=True)]
        self.pred = rng.normal(0.0, 0.0004, n).tolist()
        self.vol = np.exp(rng.normal(math.log(0.002), 0.6, n)).tolist()
        self.tier = rng.integers(0, len(TIERS), n).tolist()
        self.regime = rng.integers(0, len(REGIME_NAMES), n).tolist()

    def book(self, t: int) -> BookTop:
        return BookTop("X", self.start_ms[t], self.bid[t], 1.0, self.ask[t], 1.0)


def _expected_row(cfg: PaperConfig, before: PositionState, r: PaperResult, base: float) -> dict[str, float]:
    """The kernel's output row for oracle result `r` (`before`: the state the bar started from; `base`:
    the price before slippage, for the units held under vol_target)."""
    held = (
        before.units if cfg.sizing == "fixed" or before.qty == 0.0 else before.qty * base / cfg.notional_usd
    )
    row = {
        "R_SIGNAL": float(r.signal),
        "R_POSITION": float(r.position),
        "R_QTY": r.qty,
        "R_N_FILLS": float(len(r.fills)),
        "R_FILL_PRICE": 0.0 if r.fill_price is None else r.fill_price,
        "R_FEE": r.fee_usd,
        "R_REALIZED": r.realized_pnl_usd,
        "R_UNREALIZED": r.unrealized_pnl_usd,
        "R_EQUITY": r.equity_usd,
        "R_BAR_PNL": r.bar_pnl_usd,
        "R_HOLDING": r.holding_pnl_usd,
        "R_HOLDING_TIER": -1.0 if r.holding_tier is None else float(TIERS.index(r.holding_tier)),
        "R_HOLDING_REGIME": -1.0 if r.holding_regime is None else float(REGIME_NAMES.index(r.holding_regime)),
        "R_TRADE_PNL": r.trade_pnl_usd,
        "R_TRADED": 1.0 if r.fills else 0.0,
        "R_HELD": float(held),
    }
    for k, f in enumerate(r.fills):
        base_slot = K["R_FILL0"] + k * K["FILL_WIDTH"]
        row[f"fill{k}"] = base_slot
        row[f"fill{k}_values"] = (
            1.0 if f.side == "buy" else -1.0,
            f.qty,
            f.price,
            f.notional_usd,
            f.fee_usd,
            f.realized_pnl_usd,
        )  # type: ignore[assignment]
    return row


def _check_row(got: list[float], want: dict[str, Any], where: object) -> None:
    for name, value in want.items():
        if name.startswith("fill"):
            if name.endswith("_values"):
                base = want[name.removesuffix("_values")]
                assert tuple(got[base : base + K["FILL_WIDTH"]]) == value, (where, name)
            continue
        assert got[K[name]] == value, (where, name, got[K[name]], value)


def _state_of(st: PositionState) -> np.ndarray:
    """The kernel's state array for an oracle state, built slot by slot."""
    s = kp.new_state()
    if st.last_start_ms is not None:
        s[K["S_HAS_LAST"]], s[K["S_LAST_START_MS"]] = 1.0, st.last_start_ms
    s[K["S_UNITS"]], s[K["S_QTY"]], s[K["S_AVG"]] = st.units, st.qty, st.avg_entry_px
    if st.mark_px is not None:
        s[K["S_HAS_MARK"]], s[K["S_MARK"]] = 1.0, st.mark_px
    s[K["S_REALIZED"]], s[K["S_FEES"]], s[K["S_N_FILLS"]] = st.realized_pnl_usd, st.fees_usd, st.n_fills
    s[K["S_TIER"]] = -1.0 if st.tier is None else TIERS.index(st.tier)
    s[K["S_REGIME"]] = -1.0 if st.regime is None else REGIME_NAMES.index(st.regime)
    return s


def _check_state(s: np.ndarray, st: PositionState) -> None:
    assert s.tolist() == _state_of(st).tolist()


def _attribution(pnl: np.ndarray, names: tuple[str, ...]) -> dict[str, float]:
    return {names[i]: v for i, v in enumerate(pnl.tolist()) if not math.isnan(v)}


START_STATES = {
    "flat": None,
    "long_marked": PositionState(
        "X", 1_600_000_000_000, 2, 2 * 1000.0 / 95.0, 95.0, 99.0, "staging", "volatile", 1.5, 0.25, 4,
        {"staging": 1.0}, {"volatile": 1.0},
    ),
    "short_unmarked": PositionState(
        "X", 1_600_000_000_000, -0.5, -500.0 / 101.0, 101.0, None, "research", "crisis"
    ),
}  # fmt: skip


@pytest.mark.parametrize("start", sorted(START_STATES))
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_run_over_t_bars_writes_every_slot_as_the_oracle(name: str, start: str) -> None:
    """`run` over 250 bars (books with an empty side now and then, a gap, flat stretches) from a flat, a
    marked long or an unmarked short book: every output slot, every fill, the state and the attribution
    equal the former class bar by bar."""
    cfg = CONFIGS[name]
    x = Inputs(250, seed=len(name) + 7 * len(start))
    restored = START_STATES[start]
    ref = oracle.PaperTrader(cfg, positions=None if restored is None else {"X": restored})
    state = kp.new_state() if restored is None else _state_of(restored)
    pnl_tier, pnl_regime = np.full(len(TIERS), np.nan), np.full(len(REGIME_NAMES), np.nan)
    if restored is not None:
        for k, v in restored.pnl_by_tier.items():
            pnl_tier[TIERS.index(k)] = v
        for k, v in restored.pnl_by_regime.items():
            pnl_regime[REGIME_NAMES.index(k)] = v
    out = np.zeros((len(x.close), K["N_OUT"]))
    done = kp.run(
        state,
        kernel_params(cfg),
        np.array(x.start_ms, np.int64),
        np.array(x.close),
        np.array(x.pred),
        np.array(x.vol),
        np.array(x.bid),
        np.array(x.ask),
        np.array(x.tier, np.int64),
        np.array(x.regime, np.int64),
        pnl_tier,
        pnl_regime,
        out,
    )
    assert done == len(x.close)
    n_fills = 0
    for t in range(len(x.close)):
        before = ref.state("X")
        r = ref.on_bar(
            "X", x.start_ms[t], x.close[t], x.pred[t], TIERS[x.tier[t]], REGIME_NAMES[x.regime[t]],
            book=x.book(t), vol_forecast=x.vol[t],
        )  # fmt: skip
        _check_row(out[t].tolist(), _expected_row(cfg, before, r, ref.base_price(x.close[t], x.book(t))), t)
        n_fills += len(r.fills)
    final = ref.state("X")
    _check_state(state, final)
    assert _attribution(pnl_tier, TIERS) == final.pnl_by_tier
    assert _attribution(pnl_regime, REGIME_NAMES) == final.pnl_by_regime
    assert n_fills > 20


@pytest.mark.parametrize("books", [False, True])
def test_run_symbols_steps_every_symbol_and_names_the_first_refused(books: bool) -> None:
    """`run_symbols` over 5 symbols for 150 bar closes equals 5 oracle traders, with books (mid fills) or
    without (fills at the close); a refused bar (a bad close, a repeated bar) is named by its index, the
    others are stepped. The attribution rows are as wide as the codes, not as the symbols."""
    cfg = CONFIGS["vol_target_cap_band"]
    n_sym, n_bars = 5, 150
    xs = [Inputs(n_bars, seed=40 + i) for i in range(n_sym)]
    refs = [oracle.PaperTrader(cfg) for _ in range(n_sym)]
    state = kp.new_state(n_sym)
    pnl_tier, pnl_regime = np.full((n_sym, len(TIERS)), np.nan), np.full((n_sym, len(REGIME_NAMES)), np.nan)
    out = np.zeros((n_sym, K["N_OUT"]))
    params = kernel_params(cfg)
    for t in range(n_bars):
        close = [x.close[t] for x in xs]
        start = [x.start_ms[t] for x in xs]
        bad = {60: (2, "close"), 61: (1, "close"), 90: (3, "repeat"), 120: (1, "repeat")}.get(t)
        if bad is not None:
            i, kind = bad
            if kind == "close":
                close[i] = -close[i]
            else:
                start[i] = xs[i].start_ms[t - 1]
        before = state.copy()
        done = kp.run_symbols(
            state,
            params,
            np.array(start, np.int64),
            np.array(close),
            np.array([x.pred[t] for x in xs]),
            np.array([x.vol[t] for x in xs]),
            np.array([x.bid[t] for x in xs]) if books else np.zeros(0),
            np.array([x.ask[t] for x in xs]) if books else np.zeros(0),
            np.array([x.tier[t] for x in xs], np.int64),
            np.array([x.regime[t] for x in xs], np.int64),
            pnl_tier,
            pnl_regime,
            out,
        )
        assert done == (n_sym if bad is None else bad[0]), t
        for i, x in enumerate(xs):
            if bad is not None and i == bad[0]:
                assert state[i].tolist() == before[i].tolist()
                continue
            prev = refs[i].state("X")
            book = x.book(t) if books else None
            r = refs[i].on_bar(
                "X", start[i], close[i], x.pred[t], TIERS[x.tier[t]], REGIME_NAMES[x.regime[t]],
                book=book, vol_forecast=x.vol[t],
            )  # fmt: skip
            _check_row(
                out[i].tolist(), _expected_row(cfg, prev, r, refs[i].base_price(close[i], book)), (t, i)
            )
    for i in range(n_sym):
        final = refs[i].state("X")
        _check_state(state[i], final)
        assert _attribution(pnl_tier[i], TIERS) == final.pnl_by_tier
        assert _attribution(pnl_regime[i], REGIME_NAMES) == final.pnl_by_regime


@pytest.mark.parametrize(
    ("bad", "status"),
    [("close", "BAD_CLOSE"), ("nan_close", "BAD_CLOSE"), ("repeat", "OUT_OF_ORDER"), ("vol", "BAD_VOL")],
)
def test_run_stops_at_the_first_refused_bar(bad: str, status: str) -> None:
    """`run` returns the index of the first bar `step` refuses, leaves it and later rows unwritten and the
    state as after the bar before; `step` on that bar again returns the reason."""
    cfg = CONFIGS["vol_target"]
    x = Inputs(12, seed=5)
    x.pred = [0.01] * 12  # long on every bar: vol_target needs the forecast
    start = np.array(x.start_ms, np.int64)
    close, vol = np.array(x.close), np.array(x.vol)
    if bad == "close":
        close[7] = 0.0
    elif bad == "nan_close":
        close[7] = math.nan
    elif bad == "repeat":
        start[7] = start[6]
    else:
        vol[7] = 0.0  # (inf too, but plain Python warns on inf - inf inside `run`, where C does not)
    args = (np.array(x.pred), vol, np.zeros(0), np.zeros(0), np.zeros(12, np.int64), np.zeros(12, np.int64))
    state, out = kp.new_state(), np.zeros((12, K["N_OUT"]))
    pnl = (np.full(4, np.nan), np.full(4, np.nan))
    assert kp.run(state, kernel_params(cfg), start, close, *args, *pnl, out) == 7
    assert not out[7:].any()
    ref, ref_out = kp.new_state(), np.zeros((7, K["N_OUT"]))
    ok = kp.run(ref, kernel_params(cfg), start[:7], close[:7], *(a[:7] for a in args), *pnl, ref_out)
    assert ok == 7
    assert state.tolist() == ref.tolist()
    row = np.zeros(K["N_OUT"])
    code = kp.step(
        state, kernel_params(cfg), int(start[7]), float(close[7]), 0.01, float(vol[7]), 0.0, 0.0, 0, 0,
        *pnl, row,
    )  # fmt: skip
    assert code == K[status]
    assert state.tolist() == ref.tolist()
    assert not row.any()


@pytest.mark.parametrize("vol", [0.0, -0.001, math.inf, -math.inf, math.nan])
def test_vol_target_refuses_a_forecast_that_is_not_positive_and_finite(vol: float) -> None:
    """Under vol_target a long or short signal needs a positive finite forecast (BAD_VOL, nothing
    changed); a flat signal and fixed sizing need none."""
    params = kernel_params(CONFIGS["vol_target"])
    state, out, pnl = kp.new_state(), np.zeros(K["N_OUT"]), np.full(1, np.nan)
    for pred in (0.01, -0.01):
        assert kp.step(state, params, 0, 100.0, pred, vol, 0.0, 0.0, 0, 0, pnl, pnl, out) == K["BAD_VOL"]
        assert state.tolist() == kp.new_state().tolist()
    assert kp.step(state, params, 0, 100.0, 0.0, vol, 0.0, 0.0, 0, 0, pnl, pnl, out) == K["OK"]
    fixed = kernel_params(CONFIGS["fixed"])
    assert kp.step(kp.new_state(), fixed, 0, 100.0, 0.01, vol, 0.0, 0.0, 0, 0, pnl, pnl, out) == K["OK"]
    assert out[K["R_POSITION"]] == 2.0


def test_one_bar_by_hand() -> None:
    """Open 2 units long at 100 with 1 bp slippage and 5.5 bps fee, mark at 101, then flip to short at
    102 with a book mid of 101.5: every number computed by hand."""
    cfg = PaperConfig(
        max_units=2,
        notional_usd=1000.0,
        long_threshold_bps=2.0,
        short_threshold_bps=2.0,
        slippage_bps=1.0,
        fill_price="mid",
        taker_fee_bps=5.5,
    )
    params = kernel_params(cfg)
    state, out = kp.new_state(), np.zeros(K["N_OUT"])
    pnl_tier, pnl_regime = np.full(2, np.nan), np.full(4, np.nan)
    # bar 1: no book -> base = close 100; buy 2000 USD at 100.01
    assert kp.step(state, params, 0, 100.0, 0.001, math.nan, 0.0, 0.0, 1, 3, pnl_tier, pnl_regime, out) == 0
    px1 = 100.0 * (1.0 + 1e-4)
    q1 = 2.0 * 1000.0 / px1
    fee1 = q1 * px1 * 5.5e-4
    assert out[K["R_FILL0"] : K["R_FILL0"] + 6].tolist() == [1.0, q1, px1, q1 * px1, fee1, 0.0]
    assert (out[K["R_SIGNAL"]], out[K["R_POSITION"]], out[K["R_QTY"]], out[K["R_N_FILLS"]]) == (1, 2, q1, 1)
    assert (out[K["R_FILL_PRICE"]], out[K["R_FEE"]], out[K["R_REALIZED"]]) == (px1, fee1, 0.0)
    assert out[K["R_TRADE_PNL"]] == q1 * (100.0 - px1) - fee1
    assert out[K["R_UNREALIZED"]] == q1 * (100.0 - px1)
    assert out[K["R_EQUITY"]] == out[K["R_BAR_PNL"]] == 0.0 - fee1 + q1 * (100.0 - px1)
    assert (out[K["R_HOLDING"]], out[K["R_HOLDING_TIER"]], out[K["R_HOLDING_REGIME"]]) == (0.0, -1, -1)
    assert (out[K["R_TRADED"]], out[K["R_HELD"]]) == (1.0, 0.0)
    assert (state[K["S_TIER"]], state[K["S_REGIME"]], state[K["S_AVG"]], state[K["S_N_FILLS"]]) == (
        1,
        3,
        px1,
        1,
    )
    assert pnl_tier[1] == pnl_regime[3] == q1 * (100.0 - px1) - fee1
    assert math.isnan(pnl_tier[0])
    # bar 2: mark at 101, hold (still long)
    equity1 = out[K["R_EQUITY"]]
    assert kp.step(state, params, 1, 101.0, 0.001, math.nan, 0.0, 0.0, 0, 0, pnl_tier, pnl_regime, out) == 0
    assert (out[K["R_N_FILLS"]], out[K["R_TRADED"]], out[K["R_FILL_PRICE"]], out[K["R_FEE"]]) == (0, 0, 0, 0)
    assert (out[K["R_HOLDING"]], out[K["R_HOLDING_TIER"]], out[K["R_HOLDING_REGIME"]]) == (q1 * 1.0, 1, 3)
    assert out[K["R_BAR_PNL"]] == (-fee1 + q1 * (101.0 - px1)) - equity1
    assert (state[K["S_TIER"]], state[K["S_REGIME"]]) == (0, 0)  # the owners: the last holding bar's codes
    assert pnl_tier[1] == q1 * (100.0 - px1) - fee1 + q1
    assert math.isnan(pnl_tier[0])  # the new bar's codes (0, 0) get no trade PnL: there was no trade
    # bar 3: flip at the mid 101.5 (close 102): sell q1 at 101.5*(1-1e-4), then sell 2 units more
    assert (
        kp.step(state, params, 2, 102.0, -0.001, math.nan, 101.0, 102.0, 0, 2, pnl_tier, pnl_regime, out) == 0
    )
    sell = 101.5 * (1.0 - 1e-4)
    q2 = 2.0 * 1000.0 / sell
    leg = q1 * (sell - px1)
    fills = out[K["R_FILL0"] : K["R_FILL0"] + 12].tolist()
    assert fills == [
        -1.0,
        q1,
        sell,
        q1 * sell,
        q1 * sell * 5.5e-4,
        leg,
        -1.0,
        q2,
        sell,
        q2 * sell,
        q2 * sell * 5.5e-4,
        0.0,
    ]
    assert (out[K["R_POSITION"]], out[K["R_QTY"]], out[K["R_REALIZED"]], out[K["R_N_FILLS"]]) == (
        -2,
        -q2,
        leg,
        2,
    )
    assert out[K["R_FEE"]] == q1 * sell * 5.5e-4 + q2 * sell * 5.5e-4
    assert out[K["R_HOLDING"]] == q1 * (102.0 - 101.0)
    assert (state[K["S_AVG"]], state[K["S_REALIZED"]], state[K["S_N_FILLS"]]) == (sell, leg, 3)
    assert (state[K["S_TIER"]], state[K["S_REGIME"]]) == (0, 2)
    assert out[K["R_UNREALIZED"]] == -q2 * (102.0 - sell)
    # bar 4: close the short (flat signal, fixed sizing -> target 0) at the close 100, no book
    assert kp.step(state, params, 3, 100.0, 0.0, math.nan, 0.0, 0.0, 0, 2, pnl_tier, pnl_regime, out) == 0
    buy = 100.0 * (1.0 + 1e-4)
    assert out[K["R_FILL0"] : K["R_FILL0"] + 6].tolist() == [
        1.0,
        q2,
        buy,
        q2 * buy,
        q2 * buy * 5.5e-4,
        q2 * (sell - buy),
    ]
    assert (out[K["R_POSITION"]], out[K["R_QTY"]], out[K["R_UNREALIZED"]]) == (0.0, 0.0, 0.0)
    assert (state[K["S_AVG"]], state[K["S_TIER"]], state[K["S_REGIME"]]) == (0.0, -1, -1)


def test_reducing_keeps_the_rest_and_the_entry() -> None:
    """Under vol_target a long of 3 units reduced to 1.5 (the forecast doubled) sells half the coins and
    keeps the entry; when the price has risen to 120 and the target is 2.5, it buys only the difference
    to the exposure held at 120, at the weighted entry."""
    cfg = PaperConfig(
        max_units=3, long_threshold_bps=1.0, sizing="vol_target", target_vol_bps=30.0, slippage_bps=0.0
    )
    params = kernel_params(cfg)
    state, out, pnl = kp.new_state(), np.zeros(K["N_OUT"]), np.full(1, np.nan)
    assert kp.step(state, params, 0, 100.0, 0.01, 0.001, 0.0, 0.0, 0, 0, pnl, pnl, out) == 0
    q = 3.0 * cfg.notional_usd / 100.0
    assert (state[K["S_UNITS"]], state[K["S_QTY"]]) == (3.0, q)
    assert kp.step(state, params, 1, 100.0, 0.01, 0.002, 0.0, 0.0, 0, 0, pnl, pnl, out) == 0
    assert (out[K["R_HELD"]], out[K["R_POSITION"]], out[K["R_N_FILLS"]]) == (3.0, 30e-4 / 0.002, 1)
    assert out[K["R_FILL0"] + K["X_SIDE"]] == -1.0
    sold = q * ((3.0 - 30e-4 / 0.002) / 3.0)
    assert out[K["R_FILL0"] + K["X_QTY"]] == sold
    assert out[K["R_FILL0"] + K["X_REALIZED"]] == 0.0  # sold at the entry price
    assert (state[K["S_QTY"]], state[K["S_AVG"]]) == (q - sold, 100.0)
    assert kp.step(state, params, 2, 120.0, 0.01, 0.0012, 0.0, 0.0, 0, 0, pnl, pnl, out) == 0
    held = (q - sold) * 120.0 / cfg.notional_usd
    target = 30e-4 / 0.0012
    add = (target - held) * cfg.notional_usd / 120.0
    assert (out[K["R_HELD"]], out[K["R_POSITION"]], out[K["R_N_FILLS"]]) == (held, target, 1)
    assert out[K["R_FILL0"] : K["R_FILL0"] + 3].tolist() == [1.0, add, 120.0]
    assert state[K["S_QTY"]] == (q - sold) + add
    assert state[K["S_AVG"]] == ((q - sold) * 100.0 + add * 120.0) / ((q - sold) + add)
    # a short reduced by the band's complement: buys back a fraction, realises entry - exit
    short = kp.new_state()
    assert kp.step(short, params, 0, 100.0, -0.01, 0.001, 0.0, 0.0, 0, 0, pnl, pnl, out) == 0
    assert kp.step(short, params, 1, 90.0, -0.01, 0.0015, 0.0, 0.0, 0, 0, pnl, pnl, out) == 0
    held = -q * 90.0 / cfg.notional_usd
    target = -(30e-4 / 0.0015)
    bought = q * ((abs(held) - abs(target)) / abs(held))
    assert (out[K["R_HELD"]], out[K["R_POSITION"]]) == (held, target)
    assert out[K["R_FILL0"] : K["R_FILL0"] + 6].tolist() == [
        1.0,
        bought,
        90.0,
        bought * 90.0,
        bought * 90.0 * 5.5e-4,
        bought * (100.0 - 90.0),
    ]
    assert (short[K["S_QTY"]], short[K["S_AVG"]], short[K["S_UNITS"]]) == (-(q - bought), 100.0, target)


def test_signal_target_and_band_edges() -> None:
    """The thresholds are strict; the vol_target size is target/forecast capped at max_units, flat above
    max_vol_bps (its edge included in the size); the band keeps a same-sign position at its edge."""
    p = kernel_params(CONFIGS["vol_target_cap_band"])  # 1 bp each side, 8 bps target, cap 2, 40 bps, 0.3
    assert [kp.signal_of(p, x) for x in (1e-4, 1.0001e-4, -1e-4, -1.0001e-4, 0.0)] == [0, 1, 0, -1, 0]
    assert kp.target_units(p, 1, 0.0008) == 1.0
    assert kp.target_units(p, -1, 0.0016) == -0.5
    assert kp.target_units(p, 1, 0.0001) == 2.0  # capped
    assert kp.target_units(p, -1, 0.004) == -0.0008 / 0.004  # at max_vol_bps: still sized
    assert kp.target_units(p, 1, 0.00401) == 0.0
    assert kp.target_units(p, 0, 0.001) == 0.0
    uncapped = kernel_params(PaperConfig(max_units=2, sizing="vol_target", target_vol_bps=8.0))
    assert kp.target_units(uncapped, 1, 1.0) == 0.0008
    assert kp.target_units(kernel_params(CONFIGS["fixed"]), -1, math.nan) == -2.0
    b = kernel_params(PaperConfig(sizing="vol_target", max_units=3, rebalance_band=0.25))
    assert kp.banded(b, 2.0, 2.5) == 2.0
    assert kp.banded(b, 2.0, 2.5000001) == 2.5000001
    assert kp.banded(b, 2.0, 1.5) == 2.0
    assert kp.banded(b, 2.0, 1.4999999) == 1.4999999
    assert kp.banded(b, -2.0, -2.5) == -2.0
    assert kp.banded(b, -2.0, -1.5) == -2.0
    assert kp.banded(b, -2.0, -1.4999999) == -1.4999999
    assert kp.banded(b, 0.1, -0.1) == -0.1
    assert kp.banded(b, -0.1, 0.1) == 0.1
    assert kp.banded(b, 0.0, 0.1) == 0.1
    assert kp.banded(b, 0.1, 0.0) == 0.0
    assert kp.banded(kernel_params(CONFIGS["fixed"]), 1.0, 1.1) == 1.1


def test_codes_without_a_slot_credit_nothing() -> None:
    """A tier or regime code of -1 or past the end of the attribution array credits nothing, nor does a
    zero PnL; a code with a slot starts from NaN (never credited), then adds. The position's owners are the
    codes of the last bar that held it."""
    params = kernel_params(CONFIGS["fixed"])
    state, out = kp.new_state(), np.zeros(K["N_OUT"])
    pnl_tier, pnl_regime = np.full(2, np.nan), np.full(2, np.nan)
    step = (state, params)
    # open long: its trade PnL (fees, slippage) goes to tier code 2 (no slot) and regime -1 (none)
    assert kp.step(*step, 0, 100.0, 0.01, math.nan, 0.0, 0.0, 2, -1, pnl_tier, pnl_regime, out) == 0
    assert out[K["R_TRADE_PNL"]] != 0.0
    assert (state[K["S_TIER"]], state[K["S_REGIME"]]) == (2.0, -1.0)
    # hold from 100 to 101: the holding PnL goes to the owners (2, -1): nothing
    assert kp.step(*step, 1, 101.0, 0.01, math.nan, 0.0, 0.0, 2, -1, pnl_tier, pnl_regime, out) == 0
    assert out[K["R_HOLDING"]] == state[K["S_QTY"]] * 1.0
    assert (out[K["R_HOLDING_TIER"]], out[K["R_HOLDING_REGIME"]]) == (2.0, -1.0)
    # hold at an unchanged close under codes (1, 1): zero holding and zero trade PnL credit nothing, and
    # the codes become the owners
    assert kp.step(*step, 2, 101.0, 0.01, math.nan, 0.0, 0.0, 1, 1, pnl_tier, pnl_regime, out) == 0
    assert (out[K["R_HOLDING"]], out[K["R_TRADE_PNL"]]) == (0.0, 0.0)
    assert np.isnan(pnl_tier).all()
    assert np.isnan(pnl_regime).all()
    assert (state[K["S_TIER"]], state[K["S_REGIME"]]) == (1.0, 1.0)
    # flip short at 102 under codes (1, 0): the holding goes to the owners (1, 1), the trade to (1, 0)
    qty = state[K["S_QTY"]]
    assert kp.step(*step, 3, 102.0, -0.01, math.nan, 0.0, 0.0, 1, 0, pnl_tier, pnl_regime, out) == 0
    holding, trade = qty * (102.0 - 101.0), out[K["R_TRADE_PNL"]]
    assert out[K["R_HOLDING"]] == holding
    assert trade != 0.0
    assert np.isnan(pnl_tier[0])
    assert pnl_tier[1] == holding + trade
    assert pnl_regime.tolist() == [trade, holding]


_SHAPE_CASES = [
    "params",
    "close",
    "prediction",
    "vol_forecast",
    "bid_px",
    "ask_px",
    "tier",
    "regime",
    "out_rows",
    "out_cols",
    "state",
]


@pytest.mark.parametrize("short", _SHAPE_CASES)
def test_each_short_array_is_refused_by_both_loops(short: str) -> None:
    """Every per-bar array, the parameters, the output's width and the state are checked on their own:
    one of them short is a ValueError from `run` and `run_symbols`, before any bar is stepped."""
    n = 3
    arrays: dict[str, Any] = {
        "params": kernel_params(CONFIGS["fixed"]),
        "close": np.full(n, 100.0),
        "prediction": np.full(n, 0.01),
        "vol_forecast": np.full(n, 0.001),
        "bid_px": np.full(n, 99.0),
        "ask_px": np.full(n, 101.0),
        "tier": np.zeros(n, np.int64),
        "regime": np.zeros(n, np.int64),
    }
    out = np.zeros((n, K["N_OUT"]))
    if short in arrays:
        arrays[short] = arrays[short][:-1]
    elif short == "out_rows":
        out = out[:-1]
    elif short == "out_cols":
        out = np.zeros((n, K["N_OUT"] - 1))
    start = np.arange(n, dtype=np.int64)
    state1 = kp.new_state()[:-1] if short == "state" else kp.new_state()
    with pytest.raises(ValueError, match="shorter than"):
        kp.run(
            state1,
            arrays["params"],
            start,
            *list(arrays.values())[1:],
            np.full(1, np.nan),
            np.full(1, np.nan),
            out,
        )
    assert state1[K["S_HAS_LAST"]] == 0.0
    staten = kp.new_state(n)[:, :-1] if short == "state" else kp.new_state(n)
    pnl = np.full((n, 1), np.nan)
    with pytest.raises(ValueError, match="shorter than"):
        kp.run_symbols(staten, arrays["params"], start, *list(arrays.values())[1:], pnl, pnl, out)
    assert not staten[:, K["S_HAS_LAST"]].any()


@pytest.mark.parametrize("short", ["state_rows", "pnl_tier", "pnl_regime"])
def test_run_symbols_refuses_fewer_rows_than_symbols(short: str) -> None:
    """`run_symbols` needs a state row and attribution rows for every symbol."""
    n = 3
    state = kp.new_state(n - 1 if short == "state_rows" else n)
    pnl_tier = np.full((n - 1 if short == "pnl_tier" else n, 1), np.nan)
    pnl_regime = np.full((n - 1 if short == "pnl_regime" else n, 1), np.nan)
    cols = (np.full(n, 100.0), np.full(n, 0.01), np.full(n, 0.001), np.zeros(0), np.zeros(0))
    codes = (np.zeros(n, np.int64), np.zeros(n, np.int64))
    with pytest.raises(ValueError, match="shorter than"):
        kp.run_symbols(
            state, kernel_params(CONFIGS["fixed"]), np.arange(n, dtype=np.int64), *cols, *codes,
            pnl_tier, pnl_regime, np.zeros((n, K["N_OUT"])),
        )  # fmt: skip


def test_run_with_no_books_and_empty_inputs() -> None:
    """Empty book arrays mean no books (fills at the close), shorter ones are refused; zero bars is zero
    bars, for both loops."""
    params = kernel_params(CONFIGS["fixed_mid_maker"])
    e, ei = np.zeros(0), np.zeros(0, np.int64)
    pnl, pnl3 = np.full(1, np.nan), np.full((3, 1), np.nan)
    assert kp.run(kp.new_state(), params, ei, e, e, e, e, e, ei, ei, pnl, pnl, np.zeros((0, K["N_OUT"]))) == 0
    assert (
        kp.run_symbols(
            kp.new_state(0), params, ei, e, e, e, e, e, ei, ei, np.zeros((0, 1)), np.zeros((0, 1)),
            np.zeros((0, K["N_OUT"])),
        )
        == 0
    )  # fmt: skip
    three = (np.full(3, 100.0), np.full(3, 0.01), np.full(3, math.nan))
    codes = (np.zeros(3, np.int64), np.zeros(3, np.int64))
    start, ask, out3 = np.arange(3, dtype=np.int64), np.full(3, 101.0), np.zeros((3, K["N_OUT"]))
    for bid in (np.full(1, 99.0), np.zeros(2)):  # a book array shorter than the bars is refused
        with pytest.raises(ValueError, match="shorter than"):
            kp.run(kp.new_state(), params, start, *three, bid, ask, *codes, pnl, pnl, out3)
        with pytest.raises(ValueError, match="shorter than"):
            kp.run_symbols(kp.new_state(3), params, start, *three, bid, ask, *codes, pnl3, pnl3, out3)
    # one bar, one book: the mid (100.5) is the base price of the fill
    book = (np.full(1, 100.0), np.full(1, 101.0))
    one_bar = (np.zeros(1, np.int64), np.full(1, 50.0), np.full(1, 0.01), np.full(1, math.nan), *book)
    out1 = np.zeros((1, K["N_OUT"]))
    assert kp.run(kp.new_state(), params, *one_bar, *(c[:1] for c in codes), pnl, pnl, out1) == 1
    assert out1[0, K["R_FILL_PRICE"]] == 100.5 * (1.0 + 0.5e-4)
    out1[:] = 0.0
    pnl1 = np.full((1, 1), np.nan)
    assert kp.run_symbols(kp.new_state(1), params, *one_bar, *(c[:1] for c in codes), pnl1, pnl1, out1) == 1
    assert out1[0, K["R_FILL_PRICE"]] == 100.5 * (1.0 + 0.5e-4)
    state, out = kp.new_state(), np.zeros((1, K["N_OUT"]))
    one = np.ones(1, np.int64)
    assert kp.run(state, params, one, np.full(1, 50.0), np.full(1, 0.01), np.full(1, math.nan), e, e,
                  one, one, pnl, pnl, out) == 1  # fmt: skip
    assert out[0, K["R_FILL_PRICE"]] == 50.0 * (1.0 + 0.5e-4)


def test_make_params_and_new_state() -> None:
    """`make_params` stores each setting in its slot (bps as fractions); `new_state` is flat, unmarked and
    owned by no tier or regime, one row per symbol."""
    p = kp.make_params(
        notional_usd=250.0,
        max_units=3,
        long_threshold_bps=2.0,
        short_threshold_bps=4.0,
        fill_mid=True,
        slippage_bps=1.5,
        fee_bps=5.5,
        vol_target=True,
        target_vol_bps=8.0,
        max_vol_bps=None,
        rebalance_band=0.25,
    )
    want = {
        "C_NOTIONAL": 250.0,
        "C_MAX_UNITS": 3.0,
        "C_LONG_TH": 2.0 * 1e-4,
        "C_SHORT_TH": 4.0 * 1e-4,
        "C_FILL_MID": 1.0,
        "C_SLIP": 1.5 * 1e-4,
        "C_FEE_RATE": 5.5 * 1e-4,
        "C_VOL_TARGET": 1.0,
        "C_TARGET_VOL": 8.0 * 1e-4,
        "C_HAS_MAX_VOL": 0.0,
        "C_MAX_VOL_BPS": 0.0,
        "C_BAND": 0.25,
    }
    assert p.shape == (K["N_PARAMS"],)
    assert p.dtype == np.float64
    assert {k: p[K[k]] for k in want} == want
    q = kp.make_params(
        notional_usd=1.0, max_units=1, long_threshold_bps=0.0, short_threshold_bps=0.0, fill_mid=False,
        slippage_bps=0.0, fee_bps=0.0, vol_target=False, target_vol_bps=0.0, max_vol_bps=40.0,
        rebalance_band=0.0,
    )  # fmt: skip
    assert (q[K["C_FILL_MID"]], q[K["C_VOL_TARGET"]], q[K["C_HAS_MAX_VOL"]], q[K["C_MAX_VOL_BPS"]]) == (
        0.0,
        0.0,
        1.0,
        40.0,
    )
    one = kp.new_state()
    assert one.shape == (K["N_STATE"],)
    assert one.dtype == np.float64
    flat = [0.0] * K["N_STATE"]
    flat[K["S_TIER"]] = flat[K["S_REGIME"]] = -1.0
    assert one.tolist() == flat
    rows = kp.new_state(3)
    assert rows.shape == (3, K["N_STATE"])
    assert rows.tolist() == [flat] * 3


@pytest.mark.parametrize("qty", [1.0, -1.0, 0.5])
def test_bar_pnl_of_a_held_position_by_hand(qty: float) -> None:
    """Holding `qty` coins (exactly one among them) bought at 100 and marked at 105 through a bar closing
    at 110: the holding and bar PnL are qty * 5, the unrealised PnL qty * 10, the equity realised - fees +
    qty * 10."""
    units = 1.0 if qty > 0 else -1.0
    st = PositionState("X", 0, units, qty, 100.0, 105.0, "edge", "normal", 3.0, 1.0, 2)
    state, out, pnl = _state_of(st), np.zeros(K["N_OUT"]), np.full(4, np.nan)
    params = kernel_params(PaperConfig(max_units=1, long_threshold_bps=1.0, short_threshold_bps=1.0))
    pred = 0.01 if qty > 0 else -0.01
    assert kp.step(state, params, 1, 110.0, pred, math.nan, 0.0, 0.0, 0, 1, pnl, pnl, out) == K["OK"]
    assert out[K["R_TRADED"]] == 0.0
    assert (out[K["R_HOLDING"]], out[K["R_BAR_PNL"]]) == (qty * 5.0, qty * 5.0)
    assert (out[K["R_UNREALIZED"]], out[K["R_EQUITY"]]) == (qty * 10.0, 3.0 - 1.0 + qty * 10.0)


def test_run_rows_steps_the_named_rows_of_the_book() -> None:
    """`run_rows`: bar i steps row `rows[i]` of the state and attribution tables (rows in any order; a row
    not named is left alone) and writes `out[i]`, each symbol as its oracle trader, books (mid fills)
    included; a refused bar is named by its index, the others are stepped."""
    cfg = CONFIGS["vol_target_cap_band"]
    xs = [Inputs(120, seed=60 + i) for i in range(3)]
    refs = [oracle.PaperTrader(cfg) for _ in range(3)]
    rows = np.array([1, 3, 0], np.int64)
    state = kp.new_state(4)
    pnl_tier, pnl_regime = np.full((4, len(TIERS)), np.nan), np.full((4, len(REGIME_NAMES)), np.nan)
    out = np.zeros((3, K["N_OUT"]))
    for t in range(120):
        close = [x.close[t] for x in xs]
        start = [x.start_ms[t] for x in xs]
        bad = {50: (1, "close"), 51: (2, "repeat")}.get(t)
        if bad is not None:
            i, kind = bad
            if kind == "close":
                close[i] = 0.0
            else:
                start[i] = xs[i].start_ms[t - 1]
        done = kp.run_rows(
            rows,
            state,
            kernel_params(cfg),
            np.array(start, np.int64),
            np.array(close),
            np.array([x.pred[t] for x in xs]),
            np.array([x.vol[t] for x in xs]),
            np.array([x.bid[t] for x in xs]),
            np.array([x.ask[t] for x in xs]),
            np.array([x.tier[t] for x in xs], np.int64),
            np.array([x.regime[t] for x in xs], np.int64),
            pnl_tier,
            pnl_regime,
            out,
        )
        assert done == (3 if bad is None else bad[0]), t
        for i, x in enumerate(xs):
            if bad is not None and i == bad[0]:
                continue
            prev = refs[i].state("X")
            r = refs[i].on_bar(
                "X", start[i], close[i], x.pred[t], TIERS[x.tier[t]], REGIME_NAMES[x.regime[t]],
                book=x.book(t), vol_forecast=x.vol[t],
            )  # fmt: skip
            _check_row(
                out[i].tolist(), _expected_row(cfg, prev, r, refs[i].base_price(close[i], x.book(t))), t
            )
    for i, r in enumerate(rows):
        final = refs[i].state("X")
        _check_state(state[r], final)
        assert _attribution(pnl_tier[r], TIERS) == final.pnl_by_tier
        assert _attribution(pnl_regime[r], REGIME_NAMES) == final.pnl_by_regime
    assert state[2].tolist() == kp.new_state().tolist()
    assert np.isnan(pnl_tier[2]).all()


def test_run_rows_refuses_bad_rows_and_short_arrays() -> None:
    """A row outside the state or attribution tables, or an array shorter than the bars (or narrower than
    the layout), is a ValueError before any bar; no books is an empty pair; zero bars need no state width."""
    n = 3
    params = kernel_params(CONFIGS["fixed_mid_maker"])
    state = kp.new_state(2)
    pnl = np.full((2, 1), np.nan)

    def call(rows: list[int], **short: Any) -> int:
        a: dict[str, Any] = {
            "state": state,
            "params": params,
            "start": np.array([1, 2, 1], np.int64),
            "close": np.full(n, 100.0),
            "prediction": np.full(n, 0.01),
            "vol": np.full(n, math.nan),
            "bid": np.full(n, 100.0),
            "ask": np.full(n, 101.0),
            "tier": np.zeros(n, np.int64),
            "regime": np.zeros(n, np.int64),
            "pnl_tier": pnl,
            "pnl_regime": pnl,
            "out": np.zeros((n, K["N_OUT"])),
        }
        a.update(short)
        return int(kp.run_rows(np.array(rows, np.int64), *a.values()))

    cases: list[tuple[list[int], dict[str, Any]]] = [
        ([0, 2, 1], {}),
        ([-1, 0, 1], {}),
        ([0, 1, 1], {"state": state[:1]}),
        ([0, 1, 1], {"pnl_tier": pnl[:1]}),
        ([0, 1, 1], {"pnl_regime": pnl[:1]}),
        ([0, 1, 1], {"state": state[:, :-1]}),
        ([0, 1, 1], {"params": params[:-1]}),
        ([0, 1, 1], {"start": np.zeros(2, np.int64)}),
        ([0, 1, 1], {"close": np.ones(2)}),
        ([0, 1, 1], {"prediction": np.ones(2)}),
        ([0, 1, 1], {"vol": np.ones(2)}),
        ([0, 1, 1], {"bid": np.ones(2)}),
        ([0, 1, 1], {"ask": np.ones(2)}),
        ([0, 1, 1], {"tier": np.zeros(2, np.int64)}),
        ([0, 1, 1], {"regime": np.zeros(2, np.int64)}),
        ([0, 1, 1], {"out": np.zeros((2, K["N_OUT"]))}),
        ([0, 1, 1], {"out": np.zeros((3, K["N_OUT"] - 1))}),
    ]
    for rows, short in cases:
        with pytest.raises(ValueError, match="shorter than"):
            call(rows, **short)
    one: dict[str, Any] = {"start": np.ones(1, np.int64), "close": np.ones(1), "prediction": np.ones(1)}
    one |= {"vol": np.ones(1), "bid": np.ones(1), "ask": np.ones(1), "out": np.zeros((1, K["N_OUT"]))}
    one |= {"tier": np.zeros(1, np.int64), "regime": np.zeros(1, np.int64), "state": state[:, :-1]}
    with pytest.raises(ValueError, match="shorter than"):  # one bar is checked as many
        call([0], **one)
    assert state.tolist() == kp.new_state(2).tolist()
    out = np.zeros((n, K["N_OUT"]))
    assert call([0, 1, 0], out=out) == 2  # the third bar repeats row 0's start: refused
    assert out[0, K["R_FILL_PRICE"]] == 100.5 * (1.0 + 0.5e-4)  # the mid of the book
    assert (
        call([0, 1, 1], start=np.array([5, 6, 7], np.int64), bid=np.zeros(0), ask=np.zeros(0), out=out) == 3
    )
    assert out[2, K["R_N_FILLS"]] == 0.0  # row 1 already long: no trade
    assert out[0, K["R_POSITION"]] == 1.0
    e = np.zeros(0)
    narrow = {"state": np.zeros((0, 1)), "out": np.zeros((0, K["N_OUT"])), "pnl_tier": np.zeros((0, 1))}
    empty = {"close": e, "prediction": e, "vol": e, "bid": e, "ask": e, "start": np.zeros(0, np.int64)}
    codes = {"tier": np.zeros(0, np.int64), "regime": np.zeros(0, np.int64)}
    assert call([], **narrow, **empty, **codes) == 0
    a = np.zeros(3)
    assert np.shares_memory(np.asarray(kp.view(a)), a)
