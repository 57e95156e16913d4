"""Regime kernel: the regime signals and the detector's state machine over plain numeric state arrays.

One symbol's state is an int64 array `istate` (`I_*` slots) and a float64 array `fstate` (`F_*` slots, then
five ring buffers whose offsets depend on the windows: `layout`). Per-symbol thresholds are a float64 row
`fparams` (`P_*`), the shared windows and switches an int64 row `iparams` (`Q_*`), the routes an int64 array
regime code -> tier index. Regimes are codes into `bot.core.params.REGIME_NAMES` (calm_trend 0, normal 1,
volatile 2, crisis 3). `bot.core.regime` builds these arrays once at load and wraps the kernel in the
`RegimeSignals` / `RegimeDetector` API; this module is the only implementation of the per-bar math.

istate (int64):

| slot | name | meaning |
|---|---|---|
| 0 | I_HAS_LAST | 1 once a bar was absorbed |
| 1 | I_LAST_START_MS | start_ms of the last bar |
| 2 | I_HAS_PREV | 1 when F_PREV_CLOSE holds a close since the last (re)start of the warm-up |
| 3-7 | I_N_R2, I_N_ABSDC, I_N_CLOSES, I_N_LVOL, I_N_EFF | values held by each ring |
| 8-12 | I_H_R2, I_H_ABSDC, I_H_CLOSES, I_H_LVOL, I_H_EFF | index of each ring's oldest value |
| 13 | I_REGIME | current regime code |
| 14 | I_DWELL | bars in the current regime, this one included |
| 15 | I_HAS_BOOK | 1 when a book was seen (and `use_book`) |
| 16 | I_BOOK_TS_MS | the book's exchange time |

fstate (float64):

| slot | name | meaning |
|---|---|---|
| 0 | F_PREV_CLOSE | the previous close |
| 1 | F_R2_S | running sum of the squared returns in the vol window |
| 2 | F_ABSDC_S | running sum of the absolute close changes in the trend window (the path length) |
| 3, 4 | F_LVOL_S, F_LVOL_SS | running sum and sum of squares of log1p(volume) in the volume window |
| 5 | F_EFF_S | running sum of the efficiencies in the trend window |
| 6, 7 | F_EW_M, F_EW_NORM | bias-corrected EW mean of r^2: numerator and normaliser |
| 8, 9 | F_BOOK_SPREAD_BPS, F_BOOK_IMBALANCE | the latest book's spread (bps of mid) and size imbalance |
| 10.. | rings | r2, absdc, closes, lvol, eff at the `Q_OFF_*` offsets (lengths: `layout`) |

Outputs of one bar: `iout` (int64, `O_*`: warm, book fresh, regime, tier, changed, candidate, dwell) and
`fout` (float64, `G_*`: vol, vol_rel, efficiency, trend, volume_z, spread_bps, imbalance; valid when warm).

Every float operation is in the order of the former classes (running sums add the new value before they drop
the oldest), so results are bit-for-bit those of the oracle in tests/oracle_regime.py. One deliberate
difference: where the running sum of r^2 ends a rounding error below zero (a window of flat closes after a
move), vol_rel is 0.0 like vol; the former class raised ValueError("math domain error") there.
"""

from __future__ import annotations

from typing import Final

import cython
import numpy as np
import numpy.typing as npt
from cython.cimports.libc.math import log1p, sqrt

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

# --- istate slots
I_HAS_LAST = cython.declare(cython.Py_ssize_t, 0)
I_LAST_START_MS = cython.declare(cython.Py_ssize_t, 1)
I_HAS_PREV = cython.declare(cython.Py_ssize_t, 2)
I_N_R2 = cython.declare(cython.Py_ssize_t, 3)
I_N_ABSDC = cython.declare(cython.Py_ssize_t, 4)
I_N_CLOSES = cython.declare(cython.Py_ssize_t, 5)
I_N_LVOL = cython.declare(cython.Py_ssize_t, 6)
I_N_EFF = cython.declare(cython.Py_ssize_t, 7)
I_H_R2 = cython.declare(cython.Py_ssize_t, 8)
I_H_ABSDC = cython.declare(cython.Py_ssize_t, 9)
I_H_CLOSES = cython.declare(cython.Py_ssize_t, 10)
I_H_LVOL = cython.declare(cython.Py_ssize_t, 11)
I_H_EFF = cython.declare(cython.Py_ssize_t, 12)
I_REGIME = cython.declare(cython.Py_ssize_t, 13)
I_DWELL = cython.declare(cython.Py_ssize_t, 14)
I_HAS_BOOK = cython.declare(cython.Py_ssize_t, 15)
I_BOOK_TS_MS = cython.declare(cython.Py_ssize_t, 16)
N_ISTATE = cython.declare(cython.Py_ssize_t, 17)

# --- fstate scalar slots (the rings follow)
F_PREV_CLOSE = cython.declare(cython.Py_ssize_t, 0)
F_R2_S = cython.declare(cython.Py_ssize_t, 1)
F_ABSDC_S = cython.declare(cython.Py_ssize_t, 2)
F_LVOL_S = cython.declare(cython.Py_ssize_t, 3)
F_LVOL_SS = cython.declare(cython.Py_ssize_t, 4)
F_EFF_S = cython.declare(cython.Py_ssize_t, 5)
F_EW_M = cython.declare(cython.Py_ssize_t, 6)
F_EW_NORM = cython.declare(cython.Py_ssize_t, 7)
F_BOOK_SPREAD_BPS = cython.declare(cython.Py_ssize_t, 8)
F_BOOK_IMBALANCE = cython.declare(cython.Py_ssize_t, 9)
N_FSCALARS = cython.declare(cython.Py_ssize_t, 10)

# --- iparams (shared by every symbol of one config)
Q_VOL_WINDOW = cython.declare(cython.Py_ssize_t, 0)
Q_TREND_WINDOW = cython.declare(cython.Py_ssize_t, 1)
Q_VOLUME_WINDOW = cython.declare(cython.Py_ssize_t, 2)
Q_INTERVAL_MS = cython.declare(cython.Py_ssize_t, 3)  # 0: bars are taken as contiguous
Q_USE_BOOK = cython.declare(cython.Py_ssize_t, 4)
Q_MIN_DWELL = cython.declare(cython.Py_ssize_t, 5)
Q_OFF_R2 = cython.declare(cython.Py_ssize_t, 6)
Q_OFF_ABSDC = cython.declare(cython.Py_ssize_t, 7)
Q_OFF_CLOSES = cython.declare(cython.Py_ssize_t, 8)
Q_OFF_LVOL = cython.declare(cython.Py_ssize_t, 9)
Q_OFF_EFF = cython.declare(cython.Py_ssize_t, 10)
Q_N_FSTATE = cython.declare(cython.Py_ssize_t, 11)
N_IPARAMS = cython.declare(cython.Py_ssize_t, 12)

# --- fparams (per symbol: its resolved thresholds)
P_VOL_CALM_MAX = cython.declare(cython.Py_ssize_t, 0)
P_VOL_VOLATILE_MIN = cython.declare(cython.Py_ssize_t, 1)
P_VOL_CRISIS_MIN = cython.declare(cython.Py_ssize_t, 2)
P_TREND_CALM_MIN = cython.declare(cython.Py_ssize_t, 3)
P_SPREAD_CRISIS_BPS = cython.declare(cython.Py_ssize_t, 4)
P_IMBALANCE_CRISIS_MIN = cython.declare(cython.Py_ssize_t, 5)
P_VOL_REL = cython.declare(cython.Py_ssize_t, 6)  # 1.0: classify on vol_rel (calibration v2); 0.0: on vol
P_LO = cython.declare(cython.Py_ssize_t, 7)  # 1 - hysteresis
P_HI = cython.declare(cython.Py_ssize_t, 8)  # 1 + hysteresis
P_DECAY = cython.declare(cython.Py_ssize_t, 9)  # 0.5 ** (1 / vol_long_halflife_bars)
N_FPARAMS = cython.declare(cython.Py_ssize_t, 10)

# --- iout
O_WARM = cython.declare(cython.Py_ssize_t, 0)
O_BOOK = cython.declare(cython.Py_ssize_t, 1)  # 1: spread/imbalance come from a fresh book
O_REGIME = cython.declare(cython.Py_ssize_t, 2)
O_TIER = cython.declare(cython.Py_ssize_t, 3)
O_CHANGED = cython.declare(cython.Py_ssize_t, 4)
O_CANDIDATE = cython.declare(cython.Py_ssize_t, 5)
O_DWELL = cython.declare(cython.Py_ssize_t, 6)
N_IOUT = cython.declare(cython.Py_ssize_t, 7)

# --- fout
G_VOL = cython.declare(cython.Py_ssize_t, 0)
G_VOL_REL = cython.declare(cython.Py_ssize_t, 1)
G_EFFICIENCY = cython.declare(cython.Py_ssize_t, 2)
G_TREND = cython.declare(cython.Py_ssize_t, 3)
G_VOLUME_Z = cython.declare(cython.Py_ssize_t, 4)
G_SPREAD_BPS = cython.declare(cython.Py_ssize_t, 5)
G_IMBALANCE = cython.declare(cython.Py_ssize_t, 6)
N_FOUT = cython.declare(cython.Py_ssize_t, 7)

# --- regime codes (bot.core.params.REGIME_NAMES order) and step status
CALM_TREND = cython.declare(cython.Py_ssize_t, 0)
NORMAL = cython.declare(cython.Py_ssize_t, 1)
VOLATILE = cython.declare(cython.Py_ssize_t, 2)
CRISIS = cython.declare(cython.Py_ssize_t, 3)
FALLBACK = cython.declare(cython.Py_ssize_t, 1)  # normal
N_REGIMES = cython.declare(cython.Py_ssize_t, 4)
OK = cython.declare(cython.Py_ssize_t, 0)
OUT_OF_ORDER = cython.declare(cython.Py_ssize_t, 1)

#: Every slot, parameter, output and code above by name, for Python callers: compiled, the names above are
#: C constants the module does not export.
SLOTS: Final[dict[str, int]] = {
    "I_HAS_LAST": I_HAS_LAST,
    "I_LAST_START_MS": I_LAST_START_MS,
    "I_HAS_PREV": I_HAS_PREV,
    "I_N_R2": I_N_R2,
    "I_N_ABSDC": I_N_ABSDC,
    "I_N_CLOSES": I_N_CLOSES,
    "I_N_LVOL": I_N_LVOL,
    "I_N_EFF": I_N_EFF,
    "I_H_R2": I_H_R2,
    "I_H_ABSDC": I_H_ABSDC,
    "I_H_CLOSES": I_H_CLOSES,
    "I_H_LVOL": I_H_LVOL,
    "I_H_EFF": I_H_EFF,
    "I_REGIME": I_REGIME,
    "I_DWELL": I_DWELL,
    "I_HAS_BOOK": I_HAS_BOOK,
    "I_BOOK_TS_MS": I_BOOK_TS_MS,
    "N_ISTATE": N_ISTATE,
    "F_PREV_CLOSE": F_PREV_CLOSE,
    "F_R2_S": F_R2_S,
    "F_ABSDC_S": F_ABSDC_S,
    "F_LVOL_S": F_LVOL_S,
    "F_LVOL_SS": F_LVOL_SS,
    "F_EFF_S": F_EFF_S,
    "F_EW_M": F_EW_M,
    "F_EW_NORM": F_EW_NORM,
    "F_BOOK_SPREAD_BPS": F_BOOK_SPREAD_BPS,
    "F_BOOK_IMBALANCE": F_BOOK_IMBALANCE,
    "N_FSCALARS": N_FSCALARS,
    "Q_VOL_WINDOW": Q_VOL_WINDOW,
    "Q_TREND_WINDOW": Q_TREND_WINDOW,
    "Q_VOLUME_WINDOW": Q_VOLUME_WINDOW,
    "Q_INTERVAL_MS": Q_INTERVAL_MS,
    "Q_USE_BOOK": Q_USE_BOOK,
    "Q_MIN_DWELL": Q_MIN_DWELL,
    "Q_OFF_R2": Q_OFF_R2,
    "Q_OFF_ABSDC": Q_OFF_ABSDC,
    "Q_OFF_CLOSES": Q_OFF_CLOSES,
    "Q_OFF_LVOL": Q_OFF_LVOL,
    "Q_OFF_EFF": Q_OFF_EFF,
    "Q_N_FSTATE": Q_N_FSTATE,
    "N_IPARAMS": N_IPARAMS,
    "P_VOL_CALM_MAX": P_VOL_CALM_MAX,
    "P_VOL_VOLATILE_MIN": P_VOL_VOLATILE_MIN,
    "P_VOL_CRISIS_MIN": P_VOL_CRISIS_MIN,
    "P_TREND_CALM_MIN": P_TREND_CALM_MIN,
    "P_SPREAD_CRISIS_BPS": P_SPREAD_CRISIS_BPS,
    "P_IMBALANCE_CRISIS_MIN": P_IMBALANCE_CRISIS_MIN,
    "P_VOL_REL": P_VOL_REL,
    "P_LO": P_LO,
    "P_HI": P_HI,
    "P_DECAY": P_DECAY,
    "N_FPARAMS": N_FPARAMS,
    "O_WARM": O_WARM,
    "O_BOOK": O_BOOK,
    "O_REGIME": O_REGIME,
    "O_TIER": O_TIER,
    "O_CHANGED": O_CHANGED,
    "O_CANDIDATE": O_CANDIDATE,
    "O_DWELL": O_DWELL,
    "N_IOUT": N_IOUT,
    "G_VOL": G_VOL,
    "G_VOL_REL": G_VOL_REL,
    "G_EFFICIENCY": G_EFFICIENCY,
    "G_TREND": G_TREND,
    "G_VOLUME_Z": G_VOLUME_Z,
    "G_SPREAD_BPS": G_SPREAD_BPS,
    "G_IMBALANCE": G_IMBALANCE,
    "N_FOUT": N_FOUT,
    "CALM_TREND": CALM_TREND,
    "NORMAL": NORMAL,
    "VOLATILE": VOLATILE,
    "CRISIS": CRISIS,
    "N_REGIMES": N_REGIMES,
    "OK": OK,
    "OUT_OF_ORDER": OUT_OF_ORDER,
    "FALLBACK": FALLBACK,
}


_SHAPES: Final = (
    "regime kernel: an array is shorter than the layout (new_state, make_iparams and the N_* sizes) or than "
    "the bars given"
)


def layout(vol_window: int, trend_window: int, volume_window: int) -> tuple[int, int, int, int, int, int]:
    """Ring offsets in `fstate` (r2, absdc, closes, lvol, eff) and the length of `fstate`."""
    off_r2 = N_FSCALARS
    off_absdc = off_r2 + vol_window
    off_closes = off_absdc + trend_window
    off_lvol = off_closes + trend_window + 1
    off_eff = off_lvol + volume_window
    return off_r2, off_absdc, off_closes, off_lvol, off_eff, off_eff + trend_window


def make_iparams(
    *,
    vol_window: int,
    trend_window: int,
    volume_window: int,
    interval_ms: int | None,
    use_book: bool,
    min_dwell_bars: int,
) -> I64:
    """The shared int64 parameter row for one config."""
    q = np.zeros(N_IPARAMS, dtype=np.int64)
    q[Q_VOL_WINDOW], q[Q_TREND_WINDOW], q[Q_VOLUME_WINDOW] = vol_window, trend_window, volume_window
    q[Q_INTERVAL_MS] = 0 if interval_ms is None else interval_ms
    q[Q_USE_BOOK] = int(use_book)
    q[Q_MIN_DWELL] = min_dwell_bars
    q[Q_OFF_R2 : Q_N_FSTATE + 1] = layout(vol_window, trend_window, volume_window)
    return q


def new_state(iparams: I64, n: int | None = None) -> tuple[I64, F64]:
    """Fresh (istate, fstate): no bar seen, regime the fallback with its dwell satisfied. `n` symbols gives
    2-D arrays (one row each); None one symbol's 1-D arrays."""
    shape_i = (N_ISTATE,) if n is None else (n, N_ISTATE)
    shape_f = (int(iparams[Q_N_FSTATE]),) if n is None else (n, int(iparams[Q_N_FSTATE]))
    istate = np.zeros(shape_i, dtype=np.int64)
    istate[..., I_REGIME] = FALLBACK
    # the fallback imposes no dwell: the first warm bar may switch at once
    istate[..., I_DWELL] = iparams[Q_MIN_DWELL]
    return istate, np.zeros(shape_f, dtype=np.float64)


@cython.cfunc
@cython.inline
@cython.exceptval(check=False)
def _reset(istate: cython.longlong[:], fstate: cython.double[:]) -> cython.void:
    """Restart the warm-up (a gap): windows, previous close and long-run level; keep time, book, regime."""
    k: cython.Py_ssize_t
    istate[I_HAS_PREV] = 0
    for k in range(I_N_R2, I_H_EFF + 1):
        istate[k] = 0
    for k in range(F_PREV_CLOSE, F_EW_NORM + 1):
        fstate[k] = 0.0


@cython.cfunc
@cython.inline
@cython.exceptval(check=False)
def _push(
    istate: cython.longlong[:],
    fstate: cython.double[:],
    n_slot: cython.Py_ssize_t,
    h_slot: cython.Py_ssize_t,
    off: cython.Py_ssize_t,
    size: cython.Py_ssize_t,
    x: cython.double,
) -> cython.double:
    """Append `x` to a ring; return the value it dropped, 0.0 while the ring was filling. The caller adds `x`
    to its running sum, then subtracts the returned value, as the former RollingWindow did (subtracting 0.0
    leaves any float, -0.0 included, unchanged)."""
    cnt: cython.Py_ssize_t = istate[n_slot]
    h: cython.Py_ssize_t = istate[h_slot]
    old: cython.double
    if cnt < size:
        fstate[off + (h + cnt) % size] = x
        istate[n_slot] = cnt + 1
        return 0.0
    old = fstate[off + h]
    fstate[off + h] = x
    istate[h_slot] = (h + 1) % size
    return old


@cython.ccall
@cython.boundscheck(False)
@cython.wraparound(False)
def set_book(
    istate: cython.longlong[:],
    fstate: cython.double[:],
    iparams: cython.longlong[:],
    ts_ms: cython.longlong,
    bid_px: cython.double,
    bid_sz: cython.double,
    ask_px: cython.double,
    ask_sz: cython.double,
) -> cython.void:
    """Remember a top of book (ignored unless `use_book`): its time, spread in bps of mid and imbalance."""
    mid: cython.double
    total: cython.double
    if iparams[Q_USE_BOOK] == 0:
        return
    mid = 0.5 * (bid_px + ask_px)
    total = bid_sz + ask_sz
    istate[I_HAS_BOOK] = 1
    istate[I_BOOK_TS_MS] = ts_ms
    fstate[F_BOOK_SPREAD_BPS] = (ask_px - bid_px) / mid * 1e4 if mid > 0 else 0.0
    fstate[F_BOOK_IMBALANCE] = (bid_sz - ask_sz) / total if total > 0 else 0.0


@cython.ccall
@cython.boundscheck(False)
@cython.wraparound(False)
def signals(
    istate: cython.longlong[:],
    fstate: cython.double[:],
    iparams: cython.longlong[:],
    fparams: cython.double[:],
    start_ms: cython.longlong,
    close: cython.double,
    volume: cython.double,
    iout: cython.longlong[:],
    fout: cython.double[:],
) -> cython.int:
    """Absorb one confirmed bar into the signal state; `iout[O_WARM]` says whether `fout` holds its signals.

    Returns `OK`, or `OUT_OF_ORDER` (the bar is not newer than the last one; nothing changed).
    """
    vw: cython.Py_ssize_t = iparams[Q_VOL_WINDOW]
    tw: cython.Py_ssize_t = iparams[Q_TREND_WINDOW]
    lw: cython.Py_ssize_t = iparams[Q_VOLUME_WINDOW]
    interval: cython.longlong = iparams[Q_INTERVAL_MS]
    off_closes: cython.Py_ssize_t = iparams[Q_OFF_CLOSES]
    prev: cython.double
    r: cython.double
    x: cython.double
    old: cython.double
    d: cython.double
    lvol: cython.double
    path: cython.double
    trend: cython.double
    ms: cython.double
    long_ms: cython.double
    mean: cython.double
    var: cython.double
    first: cython.double
    had_prev: cython.bint
    if istate[I_HAS_LAST]:
        if start_ms <= istate[I_LAST_START_MS]:
            return OUT_OF_ORDER
        if interval != 0 and start_ms - istate[I_LAST_START_MS] != interval:
            _reset(istate, fstate)
    istate[I_HAS_LAST] = 1
    istate[I_LAST_START_MS] = start_ms
    iout[O_WARM] = 0
    iout[O_BOOK] = 0
    had_prev = istate[I_HAS_PREV] != 0
    prev = fstate[F_PREV_CLOSE]
    fstate[F_PREV_CLOSE] = close
    istate[I_HAS_PREV] = 1
    _push(istate, fstate, I_N_CLOSES, I_H_CLOSES, off_closes, tw + 1, close)
    lvol = log1p(volume)
    old = _push(istate, fstate, I_N_LVOL, I_H_LVOL, iparams[Q_OFF_LVOL], lw, lvol)
    fstate[F_LVOL_S] += lvol
    fstate[F_LVOL_SS] += lvol * lvol
    fstate[F_LVOL_S] -= old
    fstate[F_LVOL_SS] -= old * old
    if had_prev:
        r = close / prev - 1.0 if prev > 0.0 else 0.0
        x = r * r
        old = _push(istate, fstate, I_N_R2, I_H_R2, iparams[Q_OFF_R2], vw, x)
        fstate[F_R2_S] += x
        fstate[F_R2_S] -= old
        d = fparams[P_DECAY]
        fstate[F_EW_M] = d * fstate[F_EW_M] + (1.0 - d) * x
        fstate[F_EW_NORM] = d * fstate[F_EW_NORM] + (1.0 - d)
        x = abs(close - prev)
        old = _push(istate, fstate, I_N_ABSDC, I_H_ABSDC, iparams[Q_OFF_ABSDC], tw, x)
        fstate[F_ABSDC_S] += x
        fstate[F_ABSDC_S] -= old
    if istate[I_N_ABSDC] < tw:
        return OK
    path = fstate[F_ABSDC_S]
    first = fstate[off_closes + istate[I_H_CLOSES]]
    trend = (close - first) / path if path > 0.0 else 0.0
    x = abs(trend)
    old = _push(istate, fstate, I_N_EFF, I_H_EFF, iparams[Q_OFF_EFF], tw, x)
    fstate[F_EFF_S] += x
    fstate[F_EFF_S] -= old
    if istate[I_N_R2] < vw or istate[I_N_EFF] < tw or istate[I_N_LVOL] < lw:
        return OK
    ms = fstate[F_R2_S] / vw
    long_ms = fstate[F_EW_M] / fstate[F_EW_NORM] if fstate[F_EW_NORM] > 0.0 else 0.0
    mean = fstate[F_LVOL_S] / lw
    var = fstate[F_LVOL_SS] / lw - mean * mean
    iout[O_WARM] = 1
    fout[G_VOL] = sqrt(ms) if ms > 0.0 else 0.0
    # a window of flat closes can leave the running sum a rounding error below zero: its vol is 0, not the
    # "math domain error" the former class raised there
    if long_ms > 0.0:
        fout[G_VOL_REL] = sqrt(ms / long_ms) if ms > 0.0 else 0.0
    else:
        fout[G_VOL_REL] = 1.0
    fout[G_EFFICIENCY] = fstate[F_EFF_S] / tw
    fout[G_TREND] = trend
    fout[G_VOLUME_Z] = (lvol - mean) / sqrt(var) if var > 1e-24 else 0.0
    # a book is fresh for this bar when the exchange stamped it at or after the bar's open
    if istate[I_HAS_BOOK] and istate[I_BOOK_TS_MS] >= start_ms:
        iout[O_BOOK] = 1
        fout[G_SPREAD_BPS] = fstate[F_BOOK_SPREAD_BPS]
        fout[G_IMBALANCE] = fstate[F_BOOK_IMBALANCE]
    return OK


@cython.cfunc
@cython.inline
@cython.exceptval(check=False)
def _crisis(
    fparams: cython.double[:],
    v: cython.double,
    has_spread: cython.bint,
    spread_bps: cython.double,
    has_imbalance: cython.bint,
    imbalance: cython.double,
    relax: cython.double,
) -> cython.bint:
    if v >= fparams[P_VOL_CRISIS_MIN] * relax:
        return True
    if has_spread and spread_bps >= fparams[P_SPREAD_CRISIS_BPS] * relax:
        return True
    return (
        has_imbalance
        and abs(imbalance) >= fparams[P_IMBALANCE_CRISIS_MIN] * relax
        and v >= fparams[P_VOL_VOLATILE_MIN] * relax
    )


@cython.ccall
@cython.boundscheck(False)
@cython.wraparound(False)
def classify(
    fparams: cython.double[:],
    v: cython.double,
    efficiency: cython.double,
    has_spread: cython.bint,
    spread_bps: cython.double,
    has_imbalance: cython.bint,
    imbalance: cython.double,
) -> cython.longlong:
    """The regime code the thresholds alone assign (no hysteresis); `v` is the classifying vol signal."""
    if _crisis(fparams, v, has_spread, spread_bps, has_imbalance, imbalance, 1.0):
        return CRISIS
    if v >= fparams[P_VOL_VOLATILE_MIN]:
        return VOLATILE
    if v <= fparams[P_VOL_CALM_MAX] and efficiency >= fparams[P_TREND_CALM_MIN]:
        return CALM_TREND
    return NORMAL


@cython.ccall
@cython.boundscheck(False)
@cython.wraparound(False)
def holds(
    fparams: cython.double[:],
    regime: cython.longlong,
    v: cython.double,
    efficiency: cython.double,
    has_spread: cython.bint,
    spread_bps: cython.double,
    has_imbalance: cython.bint,
    imbalance: cython.double,
) -> cython.bint:
    """Whether `regime`'s conditions still hold at its exit levels (thresholds relaxed by hysteresis)."""
    lo: cython.double = fparams[P_LO]
    hi: cython.double = fparams[P_HI]
    calm: cython.bint
    if regime == CRISIS:
        return _crisis(fparams, v, has_spread, spread_bps, has_imbalance, imbalance, lo)
    if regime == VOLATILE:
        return v >= fparams[P_VOL_VOLATILE_MIN] * lo and not _crisis(
            fparams, v, has_spread, spread_bps, has_imbalance, imbalance, hi
        )
    if regime == CALM_TREND:
        return v <= fparams[P_VOL_CALM_MAX] * hi and efficiency >= fparams[P_TREND_CALM_MIN] * lo
    # normal: neither calm nor volatile nor crisis even when those are made harder to enter
    calm = v <= fparams[P_VOL_CALM_MAX] * lo and efficiency >= fparams[P_TREND_CALM_MIN] * hi
    return (
        not calm
        and v < fparams[P_VOL_VOLATILE_MIN] * hi
        and not _crisis(fparams, v, has_spread, spread_bps, has_imbalance, imbalance, hi)
    )


@cython.ccall
@cython.boundscheck(False)
@cython.wraparound(False)
def decide(
    istate: cython.longlong[:],
    iparams: cython.longlong[:],
    fparams: cython.double[:],
    routes: cython.longlong[:],
    warm: cython.bint,
    vol: cython.double,
    vol_rel: cython.double,
    efficiency: cython.double,
    has_spread: cython.bint,
    spread_bps: cython.double,
    has_imbalance: cython.bint,
    imbalance: cython.double,
    iout: cython.longlong[:],
) -> cython.void:
    """Advance the state machine by one bar given its signals (`warm` False: still warming up) into `iout`:
    leave the regime only after the minimum dwell (an escalation into crisis at once) and only when its own
    conditions fail at the exit levels."""
    current: cython.longlong = istate[I_REGIME]
    candidate: cython.longlong = current
    switch: cython.bint = False
    v: cython.double = vol_rel if fparams[P_VOL_REL] != 0.0 else vol
    if warm:
        candidate = classify(fparams, v, efficiency, has_spread, spread_bps, has_imbalance, imbalance)
        if candidate != current and (istate[I_DWELL] >= iparams[Q_MIN_DWELL] or candidate == CRISIS):
            switch = not holds(
                fparams, current, v, efficiency, has_spread, spread_bps, has_imbalance, imbalance
            )
    if switch:
        istate[I_REGIME] = candidate
        istate[I_DWELL] = 1
    else:
        istate[I_DWELL] += 1
    iout[O_WARM] = warm
    iout[O_REGIME] = istate[I_REGIME]
    iout[O_TIER] = routes[istate[I_REGIME]]
    iout[O_CHANGED] = switch
    iout[O_CANDIDATE] = candidate
    iout[O_DWELL] = istate[I_DWELL]


@cython.ccall
@cython.boundscheck(False)
@cython.wraparound(False)
def step(
    istate: cython.longlong[:],
    fstate: cython.double[:],
    iparams: cython.longlong[:],
    fparams: cython.double[:],
    routes: cython.longlong[:],
    start_ms: cython.longlong,
    close: cython.double,
    volume: cython.double,
    iout: cython.longlong[:],
    fout: cython.double[:],
) -> cython.int:
    """One confirmed bar of one symbol: its signals into `fout`, its regime and tier into `iout`.

    Returns `OK`, or `OUT_OF_ORDER` (nothing changed).
    """
    status: cython.int = signals(istate, fstate, iparams, fparams, start_ms, close, volume, iout, fout)
    if status != OK:
        return status
    decide(
        istate,
        iparams,
        fparams,
        routes,
        iout[O_WARM] != 0,
        fout[G_VOL],
        fout[G_VOL_REL],
        fout[G_EFFICIENCY],
        iout[O_BOOK] != 0,
        fout[G_SPREAD_BPS],
        iout[O_BOOK] != 0,
        fout[G_IMBALANCE],
        iout,
    )
    return OK


@cython.ccall
@cython.exceptval(-1)
@cython.boundscheck(False)
@cython.wraparound(False)
def run(
    istate: cython.longlong[:],
    fstate: cython.double[:],
    iparams: cython.longlong[:],
    fparams: cython.double[:],
    routes: cython.longlong[:],
    start_ms: cython.longlong[:],
    close: cython.double[:],
    volume: cython.double[:],
    book_ts_ms: cython.longlong[:],
    book: cython.double[:, :],
    iout: cython.longlong[:, :],
    fout: cython.double[:, :],
) -> cython.Py_ssize_t:
    """T bars of one symbol: `step` per bar, row t of `iout`/`fout` for bar t.

    Args:
        book_ts_ms: the exchange time of a book seen before bar t (applied before its step), or -1 for
            none; `book` rows are (bid_px, bid_sz, ask_px, ask_sz). Empty arrays: no books.

    Returns:
        The bars absorbed: T, or the index of the first bar out of order (it and later bars untouched).
    """
    n: cython.Py_ssize_t = start_ms.shape[0]
    has_books: cython.bint = book_ts_ms.shape[0] > 0
    # the loops index without bounds checks: every array is checked once, here
    if (
        istate.shape[0] < N_ISTATE
        or fstate.shape[0] < iparams[Q_N_FSTATE]
        or fparams.shape[0] < N_FPARAMS
        or routes.shape[0] < N_REGIMES
        or close.shape[0] < n
        or volume.shape[0] < n
        or (has_books and (book_ts_ms.shape[0] < n or book.shape[0] < n or book.shape[1] < 4))
        or iout.shape[0] < n
        or iout.shape[1] < N_IOUT
        or fout.shape[0] < n
        or fout.shape[1] < N_FOUT
    ):
        raise ValueError(_SHAPES)
    t: cython.Py_ssize_t
    for t in range(n):
        if has_books and book_ts_ms[t] >= 0:
            set_book(istate, fstate, iparams, book_ts_ms[t], book[t, 0], book[t, 1], book[t, 2], book[t, 3])
        if step(istate, fstate, iparams, fparams, routes, start_ms[t], close[t], volume[t], iout[t], fout[t]):
            return t
    return n


@cython.ccall
@cython.exceptval(-1)
@cython.boundscheck(False)
@cython.wraparound(False)
def run_symbols(
    istate: cython.longlong[:, :],
    fstate: cython.double[:, :],
    iparams: cython.longlong[:],
    fparams: cython.double[:, :],
    routes: cython.longlong[:],
    start_ms: cython.longlong[:],
    close: cython.double[:],
    volume: cython.double[:],
    iout: cython.longlong[:, :],
    fout: cython.double[:, :],
) -> cython.Py_ssize_t:
    """One bar close over N symbols: `step` for row i of every array (books go in with `set_book`).

    Returns:
        N, or the index of the first symbol whose bar is out of order (the others are stepped).
    """
    n: cython.Py_ssize_t = start_ms.shape[0]
    bad: cython.Py_ssize_t = n
    i: cython.Py_ssize_t
    status: cython.int
    if (
        istate.shape[0] < n
        or istate.shape[1] < N_ISTATE
        or fstate.shape[0] < n
        or fstate.shape[1] < iparams[Q_N_FSTATE]
        or fparams.shape[0] < n
        or fparams.shape[1] < N_FPARAMS
        or routes.shape[0] < N_REGIMES
        or close.shape[0] < n
        or volume.shape[0] < n
        or iout.shape[0] < n
        or iout.shape[1] < N_IOUT
        or fout.shape[0] < n
        or fout.shape[1] < N_FOUT
    ):
        raise ValueError(_SHAPES)
    for i in range(n):
        status = step(
            istate[i],
            fstate[i],
            iparams,
            fparams[i],
            routes,
            start_ms[i],
            close[i],
            volume[i],
            iout[i],
            fout[i],
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
    istate: cython.longlong[:, :],
    fstate: cython.double[:, :],
    iparams: cython.longlong[:],
    fparams: cython.double[:, :],
    routes: cython.longlong[:],
    start_ms: cython.longlong[:],
    close: cython.double[:],
    volume: cython.double[:],
    iout: cython.longlong[:, :],
    fout: cython.double[:, :],
) -> cython.Py_ssize_t:
    """One bar close over N symbols held as rows of an engine's state tables: bar i steps row `rows[i]` of
    `istate`, `fstate` and `fparams` and writes `iout[i]`, `fout[i]` (books go in with `set_book`).

    Returns:
        N, or the index of the first bar out of order (the others are stepped all the same).
    """
    n: cython.Py_ssize_t = rows.shape[0]
    bad: cython.Py_ssize_t = n
    i: cython.Py_ssize_t
    r: cython.longlong
    status: cython.int
    if (
        (n > 0 and (istate.shape[1] < N_ISTATE or fstate.shape[1] < iparams[Q_N_FSTATE]))
        or (n > 0 and fparams.shape[1] < N_FPARAMS)
        or routes.shape[0] < N_REGIMES
        or start_ms.shape[0] < n
        or close.shape[0] < n
        or volume.shape[0] < n
        or iout.shape[0] < n
        or fout.shape[0] < n
        or (n > 0 and (iout.shape[1] < N_IOUT or fout.shape[1] < N_FOUT))
    ):
        raise ValueError(_SHAPES)
    for i in range(n):
        r = rows[i]
        if r < 0 or r >= istate.shape[0] or r >= fstate.shape[0] or r >= fparams.shape[0]:
            raise ValueError(_SHAPES)
    for i in range(n):
        r = rows[i]
        status = step(
            istate[r], fstate[r], iparams, fparams[r], routes, start_ms[i], close[i], volume[i], iout[i],
            fout[i],
        )  # fmt: skip
        if status != OK and bad == n:
            bad = i
    return bad


@cython.ccall
def view_i(a: cython.longlong[:]) -> object:
    """A typed view of the int64 array `a` (the array itself when uncompiled): passed back to `step` in
    place of the array, it skips the buffer checks a numpy array costs on every call."""
    return a


@cython.ccall
def view_f(a: cython.double[:]) -> object:
    """A typed view of the float64 array `a` (the array itself when uncompiled), as `view_i`."""
    return a


@cython.ccall
@cython.boundscheck(False)
@cython.wraparound(False)
def step_route(
    istate: cython.longlong[:],
    fstate: cython.double[:],
    iparams: cython.longlong[:],
    fparams: cython.double[:],
    routes: cython.longlong[:],
    start_ms: cython.longlong,
    close: cython.double,
    volume: cython.double,
    iout: cython.longlong[:],
    fout: cython.double[:],
) -> cython.longlong:
    """`step`, returning the bar's route as one number: `tier * N_REGIMES + regime` (the codes of `iout`),
    or -1 for a bar out of order (nothing changed). The engine's single-symbol path reads it without
    indexing `iout` from Python."""
    if step(istate, fstate, iparams, fparams, routes, start_ms, close, volume, iout, fout) != OK:
        return -1
    return iout[O_TIER] * N_REGIMES + iout[O_REGIME]
