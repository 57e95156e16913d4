"""Paper kernel: prediction -> target position -> fills, fees, realised/unrealised PnL, over a state array.

One symbol's book is a float64 array `state` (`S_*` slots); the config is a float64 row `params` (`C_*`,
`make_params`); one bar's result is a float64 row `out` (`R_*`, then up to two fills of `FILL_WIDTH` values
at `R_FILL0`). Tiers and regimes are integer codes chosen by the caller (-1: none); the per-code PnL
attribution goes to `pnl_tier` / `pnl_regime`, where NaN means "never credited" (the former dicts' missing
key). `bot.core.paper.PaperTrader` wraps `step` with the names and records; this module is the only
implementation of the per-bar math (the policy itself is documented there).

state (float64):

| slot | name | meaning |
|---|---|---|
| 0 | S_HAS_LAST | 1.0 once a bar was decided |
| 1 | S_LAST_START_MS | start_ms of the last decided bar (exact: < 2**53) |
| 2 | S_UNITS | signed position in units of `notional_usd` |
| 3 | S_QTY | signed coins |
| 4 | S_AVG | average entry price (0 when flat) |
| 5 | S_HAS_MARK | 1.0 once marked |
| 6 | S_MARK | the last close |
| 7 | S_REALIZED | realised PnL since the book began (USD, gross of fees) |
| 8 | S_FEES | fees since the book began (USD) |
| 9 | S_N_FILLS | fills since the book began |
| 10 | S_TIER | code of the tier owning the position (-1: flat or none) |
| 11 | S_REGIME | code of the regime owning the position (-1: flat or none) |

out (float64), one bar:

| slot | name | meaning |
|---|---|---|
| 0 | R_SIGNAL | +1 / -1 / 0 |
| 1 | R_POSITION | units after the bar |
| 2 | R_QTY | coins after the bar |
| 3 | R_N_FILLS | fills this bar (0-2) |
| 4 | R_FILL_PRICE | the last fill's price (valid when R_N_FILLS > 0) |
| 5 | R_FEE | this bar's fees |
| 6 | R_REALIZED | this bar's realised PnL (gross of fees) |
| 7 | R_UNREALIZED | unrealised PnL after the bar |
| 8 | R_EQUITY | equity after the bar |
| 9 | R_BAR_PNL | equity change = R_HOLDING + R_TRADE_PNL |
| 10 | R_HOLDING | PnL of the position carried into the bar |
| 11, 12 | R_HOLDING_TIER, R_HOLDING_REGIME | its owners' codes (-1: nothing carried) |
| 13 | R_TRADE_PNL | fees and slippage against the close |
| 14 | R_TRADED | 1.0 when the position was changed (0.0: the held position was kept) |
| 15 | R_HELD | units held before trading (at this bar's price under vol_target) |
| 16.. | fills | per fill: side (+1 buy, -1 sell), qty (coins), price, notional, fee, realised leg |

Every float operation is in the order of the former class (tests/oracle_paper.py), so results are equal bit
for bit.
"""

from __future__ import annotations

from typing import Final

import cython
import numpy as np
import numpy.typing as npt
from cython.cimports.libc.math import isfinite

F64 = npt.NDArray[np.float64]

# --- state slots
S_HAS_LAST = cython.declare(cython.Py_ssize_t, 0)
S_LAST_START_MS = cython.declare(cython.Py_ssize_t, 1)
S_UNITS = cython.declare(cython.Py_ssize_t, 2)
S_QTY = cython.declare(cython.Py_ssize_t, 3)
S_AVG = cython.declare(cython.Py_ssize_t, 4)
S_HAS_MARK = cython.declare(cython.Py_ssize_t, 5)
S_MARK = cython.declare(cython.Py_ssize_t, 6)
S_REALIZED = cython.declare(cython.Py_ssize_t, 7)
S_FEES = cython.declare(cython.Py_ssize_t, 8)
S_N_FILLS = cython.declare(cython.Py_ssize_t, 9)
S_TIER = cython.declare(cython.Py_ssize_t, 10)
S_REGIME = cython.declare(cython.Py_ssize_t, 11)
N_STATE = cython.declare(cython.Py_ssize_t, 12)

# --- params
C_NOTIONAL = cython.declare(cython.Py_ssize_t, 0)  # notional_usd of one unit
C_MAX_UNITS = cython.declare(cython.Py_ssize_t, 1)
C_LONG_TH = cython.declare(cython.Py_ssize_t, 2)  # long_threshold_bps * 1e-4
C_SHORT_TH = cython.declare(cython.Py_ssize_t, 3)  # short_threshold_bps * 1e-4
C_FILL_MID = cython.declare(cython.Py_ssize_t, 4)  # 1.0: fill at the book mid when one is given
C_SLIP = cython.declare(cython.Py_ssize_t, 5)  # slippage_bps * 1e-4
C_FEE_RATE = cython.declare(cython.Py_ssize_t, 6)  # (taker or maker) fee_bps * 1e-4
C_VOL_TARGET = cython.declare(cython.Py_ssize_t, 7)  # 1.0: vol_target sizing; 0.0: fixed
C_TARGET_VOL = cython.declare(cython.Py_ssize_t, 8)  # target_vol_bps * 1e-4
C_HAS_MAX_VOL = cython.declare(cython.Py_ssize_t, 9)
C_MAX_VOL_BPS = cython.declare(cython.Py_ssize_t, 10)
C_BAND = cython.declare(cython.Py_ssize_t, 11)  # rebalance_band
N_PARAMS = cython.declare(cython.Py_ssize_t, 12)

# --- out
R_SIGNAL = cython.declare(cython.Py_ssize_t, 0)
R_POSITION = cython.declare(cython.Py_ssize_t, 1)
R_QTY = cython.declare(cython.Py_ssize_t, 2)
R_N_FILLS = cython.declare(cython.Py_ssize_t, 3)
R_FILL_PRICE = cython.declare(cython.Py_ssize_t, 4)
R_FEE = cython.declare(cython.Py_ssize_t, 5)
R_REALIZED = cython.declare(cython.Py_ssize_t, 6)
R_UNREALIZED = cython.declare(cython.Py_ssize_t, 7)
R_EQUITY = cython.declare(cython.Py_ssize_t, 8)
R_BAR_PNL = cython.declare(cython.Py_ssize_t, 9)
R_HOLDING = cython.declare(cython.Py_ssize_t, 10)
R_HOLDING_TIER = cython.declare(cython.Py_ssize_t, 11)
R_HOLDING_REGIME = cython.declare(cython.Py_ssize_t, 12)
R_TRADE_PNL = cython.declare(cython.Py_ssize_t, 13)
R_TRADED = cython.declare(cython.Py_ssize_t, 14)
R_HELD = cython.declare(cython.Py_ssize_t, 15)
R_FILL0 = cython.declare(cython.Py_ssize_t, 16)
FILL_WIDTH = cython.declare(cython.Py_ssize_t, 6)
N_OUT = cython.declare(cython.Py_ssize_t, 28)
# within a fill
X_SIDE = cython.declare(cython.Py_ssize_t, 0)
X_QTY = cython.declare(cython.Py_ssize_t, 1)
X_PRICE = cython.declare(cython.Py_ssize_t, 2)
X_NOTIONAL = cython.declare(cython.Py_ssize_t, 3)
X_FEE = cython.declare(cython.Py_ssize_t, 4)
X_REALIZED = cython.declare(cython.Py_ssize_t, 5)

# --- step status
OK = cython.declare(cython.int, 0)
BAD_CLOSE = cython.declare(cython.int, 1)  # close not positive (or NaN)
OUT_OF_ORDER = cython.declare(cython.int, 2)  # bar not newer than the last decided one
BAD_VOL = cython.declare(cython.int, 3)  # vol_target sizing without a positive finite vol forecast

#: Every slot, parameter, output and status above by name, for Python callers: compiled, the names above are
#: C constants the module does not export.
SLOTS: Final[dict[str, int]] = {
    "S_HAS_LAST": S_HAS_LAST,
    "S_LAST_START_MS": S_LAST_START_MS,
    "S_UNITS": S_UNITS,
    "S_QTY": S_QTY,
    "S_AVG": S_AVG,
    "S_HAS_MARK": S_HAS_MARK,
    "S_MARK": S_MARK,
    "S_REALIZED": S_REALIZED,
    "S_FEES": S_FEES,
    "S_N_FILLS": S_N_FILLS,
    "S_TIER": S_TIER,
    "S_REGIME": S_REGIME,
    "N_STATE": N_STATE,
    "C_NOTIONAL": C_NOTIONAL,
    "C_MAX_UNITS": C_MAX_UNITS,
    "C_LONG_TH": C_LONG_TH,
    "C_SHORT_TH": C_SHORT_TH,
    "C_FILL_MID": C_FILL_MID,
    "C_SLIP": C_SLIP,
    "C_FEE_RATE": C_FEE_RATE,
    "C_VOL_TARGET": C_VOL_TARGET,
    "C_TARGET_VOL": C_TARGET_VOL,
    "C_HAS_MAX_VOL": C_HAS_MAX_VOL,
    "C_MAX_VOL_BPS": C_MAX_VOL_BPS,
    "C_BAND": C_BAND,
    "N_PARAMS": N_PARAMS,
    "R_SIGNAL": R_SIGNAL,
    "R_POSITION": R_POSITION,
    "R_QTY": R_QTY,
    "R_N_FILLS": R_N_FILLS,
    "R_FILL_PRICE": R_FILL_PRICE,
    "R_FEE": R_FEE,
    "R_REALIZED": R_REALIZED,
    "R_UNREALIZED": R_UNREALIZED,
    "R_EQUITY": R_EQUITY,
    "R_BAR_PNL": R_BAR_PNL,
    "R_HOLDING": R_HOLDING,
    "R_HOLDING_TIER": R_HOLDING_TIER,
    "R_HOLDING_REGIME": R_HOLDING_REGIME,
    "R_TRADE_PNL": R_TRADE_PNL,
    "R_TRADED": R_TRADED,
    "R_HELD": R_HELD,
    "R_FILL0": R_FILL0,
    "FILL_WIDTH": FILL_WIDTH,
    "N_OUT": N_OUT,
    "X_SIDE": X_SIDE,
    "X_QTY": X_QTY,
    "X_PRICE": X_PRICE,
    "X_NOTIONAL": X_NOTIONAL,
    "X_FEE": X_FEE,
    "X_REALIZED": X_REALIZED,
    "OK": OK,
    "BAD_CLOSE": BAD_CLOSE,
    "OUT_OF_ORDER": OUT_OF_ORDER,
    "BAD_VOL": BAD_VOL,
}


_SHAPES: Final = (
    "paper kernel: an array is shorter than the layout (new_state, make_params and the N_* sizes) or than "
    "the bars given"
)


def make_params(
    *,
    notional_usd: float,
    max_units: int,
    long_threshold_bps: float,
    short_threshold_bps: float,
    fill_mid: bool,
    slippage_bps: float,
    fee_bps: float,
    vol_target: bool,
    target_vol_bps: float,
    max_vol_bps: float | None,
    rebalance_band: float,
) -> F64:
    """The float64 parameter row (the products are the ones the former class formed on every bar)."""
    p = np.zeros(N_PARAMS, dtype=np.float64)
    p[C_NOTIONAL] = notional_usd
    p[C_MAX_UNITS] = max_units
    p[C_LONG_TH] = long_threshold_bps * 1e-4
    p[C_SHORT_TH] = short_threshold_bps * 1e-4
    p[C_FILL_MID] = float(fill_mid)
    p[C_SLIP] = slippage_bps * 1e-4
    p[C_FEE_RATE] = fee_bps * 1e-4
    p[C_VOL_TARGET] = float(vol_target)
    p[C_TARGET_VOL] = target_vol_bps * 1e-4
    p[C_HAS_MAX_VOL] = float(max_vol_bps is not None)
    p[C_MAX_VOL_BPS] = 0.0 if max_vol_bps is None else max_vol_bps
    p[C_BAND] = rebalance_band
    return p


def new_state(n: int | None = None) -> F64:
    """A flat, unmarked book: one symbol's 1-D state, or `n` rows."""
    st = np.zeros((N_STATE,) if n is None else (n, N_STATE), dtype=np.float64)
    st[..., S_TIER] = -1.0
    st[..., S_REGIME] = -1.0
    return st


@cython.cfunc
@cython.inline
@cython.exceptval(check=False)
def _credit(pnl: cython.double[:], code: cython.longlong, value: cython.double) -> cython.void:
    """Add `value` to `pnl[code]` unless the code is none (or has no slot) or the value zero (NaN: never
    credited yet)."""
    if code < 0 or code >= pnl.shape[0] or value == 0.0:
        return
    if pnl[code] != pnl[code]:
        pnl[code] = value
    else:
        pnl[code] += value


@cython.cfunc
@cython.inline
@cython.exceptval(check=False)
def _fill(
    out: cython.double[:],
    k: cython.Py_ssize_t,
    side: cython.double,
    q: cython.double,
    px: cython.double,
    fee_rate: cython.double,
    realized_leg: cython.double,
) -> cython.double:
    """Write fill `k` into `out`; return its fee."""
    base: cython.Py_ssize_t = R_FILL0 + k * FILL_WIDTH
    notional: cython.double = q * px
    fee: cython.double = notional * fee_rate
    out[base + X_SIDE] = side
    out[base + X_QTY] = q
    out[base + X_PRICE] = px
    out[base + X_NOTIONAL] = notional
    out[base + X_FEE] = fee
    out[base + X_REALIZED] = realized_leg
    return fee


@cython.ccall
@cython.boundscheck(False)
@cython.wraparound(False)
def signal_of(params: cython.double[:], prediction: cython.double) -> cython.int:
    """+1 long, -1 short, 0 flat for a predicted return (fraction); the thresholds are strict."""
    if prediction > params[C_LONG_TH]:
        return 1
    if prediction < -params[C_SHORT_TH]:
        return -1
    return 0


@cython.ccall
@cython.boundscheck(False)
@cython.wraparound(False)
def target_units(params: cython.double[:], signal: cython.int, vol_forecast: cython.double) -> cython.double:
    """Target units for a signal (`+-max_units`, or under vol_target `target_vol / vol_forecast` capped at
    `max_units`, flat above `max_vol_bps`). The forecast must be positive and finite (`step` checks it)."""
    t: cython.double
    m: cython.double = params[C_MAX_UNITS]
    if params[C_VOL_TARGET] == 0.0 or signal == 0:
        return signal * m
    if params[C_HAS_MAX_VOL] != 0.0 and vol_forecast * 1e4 > params[C_MAX_VOL_BPS]:
        return 0.0
    t = params[C_TARGET_VOL] / vol_forecast
    return signal * (m if m < t else t)


@cython.ccall
@cython.boundscheck(False)
@cython.wraparound(False)
def banded(params: cython.double[:], units: cython.double, target: cython.double) -> cython.double:
    """Under vol_target, keep a same-sign position (`units`) whose target moved less than the rebalance
    band (edge included); otherwise, and under fixed sizing, the target."""
    if (
        params[C_VOL_TARGET] != 0.0
        and units != 0.0
        and target != 0.0
        and (units > 0.0) == (target > 0.0)
        and abs(target - units) <= params[C_BAND] * abs(units)
    ):
        return units
    return target


@cython.ccall
@cython.boundscheck(False)
@cython.wraparound(False)
def step(
    state: cython.double[:],
    params: cython.double[:],
    start_ms: cython.longlong,
    close: cython.double,
    prediction: cython.double,
    vol_forecast: cython.double,
    bid_px: cython.double,
    ask_px: cython.double,
    tier: cython.longlong,
    regime: cython.longlong,
    pnl_tier: cython.double[:],
    pnl_regime: cython.double[:],
    out: cython.double[:],
) -> cython.int:
    """Decide, fill and mark one confirmed bar of one symbol: holding PnL of the carried position, trade
    towards the signal's target (reduce or close first, then open or add), then the new state into `state`
    and this bar's result into `out`.

    Args:
        vol_forecast: forecast per-bar vol (fraction); NaN for none (fixed sizing ignores it).
        bid_px, ask_px: the book's top under `fill_price = "mid"`; a non-positive side (0.0: no book) fills
            at the close.
        tier, regime: codes credited in `pnl_tier` / `pnl_regime` and stored as the position's owners
            (-1: credit nothing).

    Returns:
        `OK`, or `BAD_CLOSE` / `OUT_OF_ORDER` / `BAD_VOL` with nothing changed.
    """
    vol_target: cython.bint = params[C_VOL_TARGET] != 0.0
    notional: cython.double = params[C_NOTIONAL]
    slip: cython.double = params[C_SLIP]
    fee_rate: cython.double = params[C_FEE_RATE]
    units0: cython.double = state[S_UNITS]
    qty0: cython.double = state[S_QTY]
    has_mark: cython.bint = state[S_HAS_MARK] != 0.0
    sig: cython.int
    target: cython.double
    base: cython.double
    held: cython.double
    units: cython.double
    qty: cython.double
    avg: cython.double
    frac: cython.double
    q: cython.double
    px: cython.double
    leg: cython.double
    fee: cython.double
    remaining: cython.double
    new_abs: cython.double
    unreal0: cython.double
    equity0: cython.double
    holding: cython.double = 0.0
    holding_tier: cython.longlong = -1
    holding_regime: cython.longlong = -1
    realized: cython.double = 0.0
    trade_pnl: cython.double = 0.0
    fees: cython.double = 0.0
    unreal: cython.double
    equity: cython.double
    n: cython.Py_ssize_t = 0
    if not close > 0.0:
        return BAD_CLOSE
    if state[S_HAS_LAST] != 0.0 and start_ms <= state[S_LAST_START_MS]:
        return OUT_OF_ORDER
    sig = signal_of(params, prediction)
    # positive and finite (NaN fails the first test)
    if vol_target and sig != 0 and not (vol_forecast > 0.0 and isfinite(vol_forecast)):
        return BAD_VOL
    unreal0 = qty0 * (state[S_MARK] - state[S_AVG]) if qty0 != 0.0 and has_mark else 0.0
    equity0 = state[S_REALIZED] - state[S_FEES] + unreal0
    if qty0 != 0.0:
        holding = qty0 * (close - state[S_MARK]) if has_mark else 0.0
        holding_tier = cython.cast(cython.longlong, state[S_TIER])
        holding_regime = cython.cast(cython.longlong, state[S_REGIME])
    base = close
    if params[C_FILL_MID] != 0.0 and bid_px > 0.0 and ask_px > 0.0:
        base = 0.5 * (bid_px + ask_px)
    held = units0 if not vol_target or qty0 == 0.0 else qty0 * base / notional
    target = target_units(params, sig, vol_forecast)
    target = banded(params, held, target)
    units, qty, avg = held, qty0, state[S_AVG]
    if target != units:
        if units != 0.0 and (target == 0.0 or (target > 0.0) != (units > 0.0) or abs(target) < abs(units)):
            frac = (
                1.0
                if target == 0.0 or (target > 0.0) != (units > 0.0)
                else (abs(units) - abs(target)) / abs(units)
            )
            q = abs(qty) * frac
            if qty > 0.0:  # sell
                px = base * (1.0 - slip)
                leg = q * (px - avg)
                fee = _fill(out, n, -1.0, q, px, fee_rate, leg)
                trade_pnl += q * (px - close) - fee
            else:  # buy
                px = base * (1.0 + slip)
                leg = q * (avg - px)
                fee = _fill(out, n, 1.0, q, px, fee_rate, leg)
                trade_pnl += q * (close - px) - fee
            fees += fee
            n += 1
            realized += leg
            remaining = abs(qty) - q
            if frac == 1.0:
                units = 0.0
                qty = 0.0
            else:
                units = target
                qty = remaining if qty > 0.0 else -remaining
            if qty == 0.0:
                avg = 0.0
        if target != units:
            # open or add (units is 0 or has target's sign with a smaller size)
            px = base * (1.0 + slip) if target > 0.0 else base * (1.0 - slip)
            q = abs(target - units) * notional / px
            new_abs = abs(qty) + q
            avg = (abs(qty) * avg + q * px) / new_abs
            qty = new_abs if target > 0.0 else -new_abs
            units = target
            if target > 0.0:
                fee = _fill(out, n, 1.0, q, px, fee_rate, 0.0)
                trade_pnl += q * (close - px) - fee
            else:
                fee = _fill(out, n, -1.0, q, px, fee_rate, 0.0)
                trade_pnl += q * (px - close) - fee
            fees += fee
            n += 1
    _credit(pnl_tier, holding_tier, holding)
    _credit(pnl_regime, holding_regime, holding)
    _credit(pnl_tier, tier, trade_pnl)
    _credit(pnl_regime, regime, trade_pnl)
    state[S_HAS_LAST] = 1.0
    state[S_LAST_START_MS] = start_ms
    state[S_UNITS] = units
    state[S_QTY] = qty
    state[S_AVG] = avg
    state[S_HAS_MARK] = 1.0
    state[S_MARK] = close
    state[S_TIER] = tier if units != 0.0 else -1.0
    state[S_REGIME] = regime if units != 0.0 else -1.0
    state[S_REALIZED] += realized
    state[S_FEES] += fees
    state[S_N_FILLS] += n
    unreal = qty * (close - avg) if qty != 0.0 else 0.0
    equity = state[S_REALIZED] - state[S_FEES] + unreal
    out[R_SIGNAL] = sig
    out[R_POSITION] = units
    out[R_QTY] = qty
    out[R_N_FILLS] = n
    out[R_FILL_PRICE] = out[R_FILL0 + (n - 1) * FILL_WIDTH + X_PRICE] if n > 0 else 0.0
    out[R_FEE] = fees
    out[R_REALIZED] = realized
    out[R_UNREALIZED] = unreal
    out[R_EQUITY] = equity
    out[R_BAR_PNL] = equity - equity0
    out[R_HOLDING] = holding
    out[R_HOLDING_TIER] = holding_tier
    out[R_HOLDING_REGIME] = holding_regime
    out[R_TRADE_PNL] = trade_pnl
    out[R_TRADED] = 1.0 if target != held else 0.0
    out[R_HELD] = held
    return OK


@cython.cfunc
@cython.exceptval(-1)
def _check_bars(
    n: cython.Py_ssize_t,
    params: cython.double[:],
    close: cython.double[:],
    prediction: cython.double[:],
    vol_forecast: cython.double[:],
    bid_px: cython.double[:],
    ask_px: cython.double[:],
    tier: cython.longlong[:],
    regime: cython.longlong[:],
    out: cython.double[:, :],
) -> cython.int:
    """Raise ValueError unless every per-bar array of a loop has `n` entries (the loops index without
    bounds checks: every array is checked once, before them)."""
    books: cython.bint = bid_px.shape[0] > 0
    if (
        params.shape[0] < N_PARAMS
        or close.shape[0] < n
        or prediction.shape[0] < n
        or vol_forecast.shape[0] < n
        or (books and (bid_px.shape[0] < n or ask_px.shape[0] < n))
        or tier.shape[0] < n
        or regime.shape[0] < n
        or out.shape[0] < n
        or out.shape[1] < N_OUT
    ):
        raise ValueError(_SHAPES)
    return 0


@cython.ccall
@cython.exceptval(-1)
@cython.boundscheck(False)
@cython.wraparound(False)
def run(
    state: cython.double[:],
    params: cython.double[:],
    start_ms: cython.longlong[:],
    close: cython.double[:],
    prediction: cython.double[:],
    vol_forecast: cython.double[:],
    bid_px: cython.double[:],
    ask_px: cython.double[:],
    tier: cython.longlong[:],
    regime: cython.longlong[:],
    pnl_tier: cython.double[:],
    pnl_regime: cython.double[:],
    out: cython.double[:, :],
) -> cython.Py_ssize_t:
    """T bars of one symbol: `step` per bar, row t of `out` for bar t (empty `bid_px`/`ask_px`: no books).

    Returns:
        T, or the index of the first bar `step` refused (it and later bars untouched; `step` on it again
        returns the reason).
    """
    n: cython.Py_ssize_t = start_ms.shape[0]
    books: cython.bint = bid_px.shape[0] > 0
    t: cython.Py_ssize_t
    status: cython.int
    _check_bars(n, params, close, prediction, vol_forecast, bid_px, ask_px, tier, regime, out)
    if state.shape[0] < N_STATE:
        raise ValueError(_SHAPES)
    for t in range(n):
        status = step(
            state,
            params,
            start_ms[t],
            close[t],
            prediction[t],
            vol_forecast[t],
            bid_px[t] if books else 0.0,
            ask_px[t] if books else 0.0,
            tier[t],
            regime[t],
            pnl_tier,
            pnl_regime,
            out[t],
        )
        if status != OK:
            return t
    return n


@cython.ccall
@cython.exceptval(-1)
@cython.boundscheck(False)
@cython.wraparound(False)
def run_symbols(
    state: cython.double[:, :],
    params: cython.double[:],
    start_ms: cython.longlong[:],
    close: cython.double[:],
    prediction: cython.double[:],
    vol_forecast: cython.double[:],
    bid_px: cython.double[:],
    ask_px: cython.double[:],
    tier: cython.longlong[:],
    regime: cython.longlong[:],
    pnl_tier: cython.double[:, :],
    pnl_regime: cython.double[:, :],
    out: cython.double[:, :],
) -> cython.Py_ssize_t:
    """One bar close over N symbols: `step` for row i of every array (empty `bid_px`/`ask_px`: no books).

    Returns:
        N, or the index of the first symbol `step` refused (the others are stepped).
    """
    n: cython.Py_ssize_t = start_ms.shape[0]
    books: cython.bint = bid_px.shape[0] > 0
    bad: cython.Py_ssize_t = n
    i: cython.Py_ssize_t
    status: cython.int
    _check_bars(n, params, close, prediction, vol_forecast, bid_px, ask_px, tier, regime, out)
    if state.shape[0] < n or state.shape[1] < N_STATE or pnl_tier.shape[0] < n or pnl_regime.shape[0] < n:
        raise ValueError(_SHAPES)
    for i in range(n):
        status = step(
            state[i],
            params,
            start_ms[i],
            close[i],
            prediction[i],
            vol_forecast[i],
            bid_px[i] if books else 0.0,
            ask_px[i] if books else 0.0,
            tier[i],
            regime[i],
            pnl_tier[i],
            pnl_regime[i],
            out[i],
        )
        if status != OK and bad == n:
            bad = i
    return bad


@cython.ccall
@cython.exceptval(-1)
@cython.boundscheck(False)
@cython.wraparound(False)
def run_rows(
    rows: cython.longlong[:],
    state: cython.double[:, :],
    params: cython.double[:],
    start_ms: cython.longlong[:],
    close: cython.double[:],
    prediction: cython.double[:],
    vol_forecast: cython.double[:],
    bid_px: cython.double[:],
    ask_px: cython.double[:],
    tier: cython.longlong[:],
    regime: cython.longlong[:],
    pnl_tier: cython.double[:, :],
    pnl_regime: cython.double[:, :],
    out: cython.double[:, :],
) -> cython.Py_ssize_t:
    """One bar close over N symbols held as rows of a book's tables: bar i steps row `rows[i]` of `state`,
    `pnl_tier` and `pnl_regime` and writes `out[i]` (empty `bid_px`/`ask_px`: no books).

    Returns:
        N, or the index of the first bar `step` refused (the others are stepped all the same).
    """
    n: cython.Py_ssize_t = rows.shape[0]
    books: cython.bint = bid_px.shape[0] > 0
    bad: cython.Py_ssize_t = n
    i: cython.Py_ssize_t
    r: cython.longlong
    status: cython.int
    _check_bars(n, params, close, prediction, vol_forecast, bid_px, ask_px, tier, regime, out)
    if start_ms.shape[0] < n or (n > 0 and state.shape[1] < N_STATE):
        raise ValueError(_SHAPES)
    for i in range(n):
        r = rows[i]
        if r < 0 or r >= state.shape[0] or r >= pnl_tier.shape[0] or r >= pnl_regime.shape[0]:
            raise ValueError(_SHAPES)
    for i in range(n):
        r = rows[i]
        status = step(
            state[r],
            params,
            start_ms[i],
            close[i],
            prediction[i],
            vol_forecast[i],
            bid_px[i] if books else 0.0,
            ask_px[i] if books else 0.0,
            tier[i],
            regime[i],
            pnl_tier[r],
            pnl_regime[r],
            out[i],
        )
        if status != OK and bad == n:
            bad = i
    return bad


@cython.ccall
def view(a: cython.double[:]) -> object:
    """A typed view of the float64 array `a` (the array itself when uncompiled): passed back to `step` in
    place of the array, it skips the buffer checks a numpy array costs on every call."""
    return a
