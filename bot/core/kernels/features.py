# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""The feature kernel: the 50 features of `bot.core.features` (FEATURE_VERSION "2") over a float64 state.

`step` absorbs one bar of one symbol; `run` loops it over T bars (offline dataset building, backtests);
`run_symbols` loops it over N symbols for a bar-close burst. The loops call `step`, so there is one formula.
Pure-Python-mode Cython: compiled at install (setup.py), and still plain Python when not compiled (tests,
mutation testing). `bot.core.features.FeatureState` is the typed wrapper the rest of the product uses.

State layout of one symbol (`STATE_SLOTS` float64 slots; N symbols are the rows of an [N, STATE_SLOTS]
array). A window is `[pushes, sum, sum of squares, ring of n values]`: value k (0-based since the last reset)
sits at ring slot k % n, and the sums are updated in the order of the former `RollingWindow` (now the oracle
tests/oracle_rolling.py: add the new value, then subtract the one leaving), so results equal the former Python
class to the last bit. An
exponentially weighted mean is `[m, norm]` (see `EwMean` in tests/oracle_rolling.py).

    slot  width  name        holds
       0      1  INTERVAL    expected bar spacing, ms; 0 = no gap detection (written by `init`)
       1      1  HAS_LAST    1.0 once a bar was absorbed (LAST_START is then valid)
       2      1  LAST_START  start_ms of the newest bar (exact: epoch ms < 2^53)
       3      1  RESETS      gaps seen, each of which reset everything from COUNT on
       4      1  COUNT       bars absorbed since the last reset (or since `init`)
       5      1  PREV_VOL    volume of the previous bar
       6     49  CLOSES      ring of the last 49 closes
      55      9  R6          window of the last 6 one-bar returns c_t / c_{t-1} - 1
      64     15  R12         ... 12 returns
      79     27  R24         ... 24 returns
     106     51  R48         ... 48 returns
     157     27  ABSDC24     |c_t - c_{t-1}|, 24 bars
     184     17  GAIN14      max(c_t - c_{t-1}, 0), 14 bars
     201     17  LOSS14      max(c_{t-1} - c_t, 0), 14 bars
     218     27  RANGE24     (h - l) / c, 24 bars
     245     27  LVOL24      log1p(volume), 24 bars
     272     27  C24         closes, 24 bars
     299     51  C48         closes, 48 bars
     350      6  EW_RV       EW means of r^2 (r the one-bar log return), half-lives 12, 48, 288: [m, norm] x 3
     356      6  EW_PK       EW means of the Parkinson variance log(h/l)^2 / (4 ln 2), same half-lives
     362      6  EW_GK       EW means of the Garman-Klass variance, same half-lives
     368      2  EW_LVOL     EW mean of log1p(volume), half-life 288
     370         STATE_SLOTS

Status codes (`step`'s return, `run`'s and `run_symbols`' `status`): ROW (1) the bar's 50 features are in
`out`; WARMING (0) the bar was absorbed, no features yet (`out` is NaN); OUT_OF_ORDER (-1) the bar does not
start after the previous one; BAD_BAR (-2) a field is NaN or infinite, a price is <= 0 or the volume < 0.
A rejected bar leaves the state untouched and `out` NaN, so no NaN ever reaches a model unannounced.
"""

from __future__ import annotations

import math

import cython
from cython.cimports.libc.math import cos, fabs, isfinite, log, log1p, sin, sqrt

# The state layout (the table above): C constants in the compiled module.
INTERVAL = cython.declare(cython.Py_ssize_t, 0)
HAS_LAST = cython.declare(cython.Py_ssize_t, 1)
LAST_START = cython.declare(cython.Py_ssize_t, 2)
RESETS = cython.declare(cython.Py_ssize_t, 3)
COUNT = cython.declare(cython.Py_ssize_t, 4)
PREV_VOL = cython.declare(cython.Py_ssize_t, 5)
CLOSES = cython.declare(cython.Py_ssize_t, 6)
R6 = cython.declare(cython.Py_ssize_t, 55)
R12 = cython.declare(cython.Py_ssize_t, 64)
R24 = cython.declare(cython.Py_ssize_t, 79)
R48 = cython.declare(cython.Py_ssize_t, 106)
ABSDC24 = cython.declare(cython.Py_ssize_t, 157)
GAIN14 = cython.declare(cython.Py_ssize_t, 184)
LOSS14 = cython.declare(cython.Py_ssize_t, 201)
RANGE24 = cython.declare(cython.Py_ssize_t, 218)
LVOL24 = cython.declare(cython.Py_ssize_t, 245)
C24 = cython.declare(cython.Py_ssize_t, 272)
C48 = cython.declare(cython.Py_ssize_t, 299)
EW_RV = cython.declare(cython.Py_ssize_t, 350)
EW_PK = cython.declare(cython.Py_ssize_t, 356)
EW_GK = cython.declare(cython.Py_ssize_t, 362)
EW_LVOL = cython.declare(cython.Py_ssize_t, 368)
N_SLOTS = cython.declare(cython.Py_ssize_t, 370)

#: The table above as data, visible from Python: (name, first slot, width). A test checks it tiles the state.
LAYOUT: tuple[tuple[str, int, int], ...] = (
    ("INTERVAL", INTERVAL, 1),
    ("HAS_LAST", HAS_LAST, 1),
    ("LAST_START", LAST_START, 1),
    ("RESETS", RESETS, 1),
    ("COUNT", COUNT, 1),
    ("PREV_VOL", PREV_VOL, 1),
    ("CLOSES", CLOSES, 49),
    ("R6", R6, 3 + 6),
    ("R12", R12, 3 + 12),
    ("R24", R24, 3 + 24),
    ("R48", R48, 3 + 48),
    ("ABSDC24", ABSDC24, 3 + 24),
    ("GAIN14", GAIN14, 3 + 14),
    ("LOSS14", LOSS14, 3 + 14),
    ("RANGE24", RANGE24, 3 + 24),
    ("LVOL24", LVOL24, 3 + 24),
    ("C24", C24, 3 + 24),
    ("C48", C48, 3 + 48),
    ("EW_RV", EW_RV, 6),
    ("EW_PK", EW_PK, 6),
    ("EW_GK", EW_GK, 6),
    ("EW_LVOL", EW_LVOL, 2),
)
#: First slot of each entry of LAYOUT, by name (the C constants above are not visible from Python).
SLOT: dict[str, int] = {name: first for name, first, _ in LAYOUT}
STATE_SLOTS: int = N_SLOTS
#: Width of a feature row (`bot.core.features.N_FEATURES`, checked there at import).
N_OUT: int = 50
#: Bars since a reset before the first row: 48 returns need 49 closes (`bot.core.features.WARMUP_BARS`).
WARMUP: int = 49

ROW: int = 1
WARMING: int = 0
OUT_OF_ORDER: int = -1
BAD_BAR: int = -2

_WARMUP = cython.declare(cython.Py_ssize_t, 49)
_NAN = cython.declare(cython.double, math.nan)
_DAY_MS = cython.declare(cython.longlong, 86_400_000)
_TWO_PI = cython.declare(cython.double, 2.0 * math.pi)
_SQRT24 = cython.declare(cython.double, math.sqrt(24.0))
# EW decays for half-lives 12, 48 and 288 bars (`bot.core.features.EW_HALF_LIVES`), as EwMean computes them.
_D12 = cython.declare(cython.double, 0.5 ** (1.0 / 12))
_D48 = cython.declare(cython.double, 0.5 ** (1.0 / 48))
_D288 = cython.declare(cython.double, 0.5 ** (1.0 / 288))
_LOG_VOL_FLOOR_VAR = cython.declare(cython.double, 1e-5 * 1e-5)  # `bot.core.features.LOG_VOL_FLOOR` squared
_PK_NORM = cython.declare(cython.double, 1.0 / (4.0 * math.log(2.0)))
_GK_CLOSE = cython.declare(cython.double, 2.0 * math.log(2.0) - 1.0)


@cython.cfunc
@cython.inline
def _push(state: cython.double[::1], base: cython.Py_ssize_t, n: cython.Py_ssize_t, x: cython.double) -> None:
    """Push `x` into the window at `base` (n values): sums first add `x`, then drop the value leaving."""
    k: cython.Py_ssize_t = cython.cast(cython.Py_ssize_t, state[base])
    slot: cython.Py_ssize_t = base + 3 + k % n
    state[base + 1] += x
    state[base + 2] += x * x
    if k >= n:
        old: cython.double = state[slot]
        state[base + 1] -= old
        state[base + 2] -= old * old
    state[slot] = x
    state[base] = k + 1


@cython.cfunc
@cython.inline
def _len(state: cython.double[::1], base: cython.Py_ssize_t, n: cython.Py_ssize_t) -> cython.double:
    k: cython.double = state[base]
    return k if k < n else cython.cast(cython.double, n)


@cython.cfunc
@cython.inline
def _mean(state: cython.double[::1], base: cython.Py_ssize_t, n: cython.Py_ssize_t) -> cython.double:
    return state[base + 1] / _len(state, base, n)


@cython.cfunc
@cython.inline
def _rms(state: cython.double[::1], base: cython.Py_ssize_t, n: cython.Py_ssize_t) -> cython.double:
    ms: cython.double = state[base + 2] / _len(state, base, n)
    return sqrt(ms) if ms > 0.0 else 0.0


@cython.cfunc
@cython.inline
def _zscore(
    state: cython.double[::1], base: cython.Py_ssize_t, n: cython.Py_ssize_t, x: cython.double
) -> cython.double:
    """`(x - mean) / std` over the window at `base`; 0 when the window is flat (variance <= 1e-30)."""
    length: cython.double = _len(state, base, n)
    m: cython.double = state[base + 1] / length
    var: cython.double = state[base + 2] / length - m * m
    if var <= 1e-30:
        return 0.0
    return (x - state[base + 1] / length) / sqrt(var)


@cython.cfunc
@cython.inline
def _ew_push(state: cython.double[::1], base: cython.Py_ssize_t, d: cython.double, x: cython.double) -> None:
    state[base] = d * state[base] + (1.0 - d) * x
    state[base + 1] = d * state[base + 1] + (1.0 - d)


@cython.cfunc
@cython.inline
def _ew_mean(state: cython.double[::1], base: cython.Py_ssize_t) -> cython.double:
    norm: cython.double = state[base + 1]
    return state[base] / norm if norm > 0.0 else 0.0


@cython.cfunc
@cython.inline
def _log_vol(var: cython.double) -> cython.double:
    """`log(sqrt(var))` with the vol floored at 1e-5 (`bot.core.features.log_vol`)."""
    return 0.5 * log(var if var > _LOG_VOL_FLOOR_VAR else _LOG_VOL_FLOOR_VAR)


@cython.cfunc
@cython.inline
def _close_back(state: cython.double[::1], count: cython.Py_ssize_t, k: cython.Py_ssize_t) -> cython.double:
    """closes[-k] with `count` closes since the reset (k <= min(count, 49))."""
    return state[CLOSES + (count - k) % _WARMUP]


@cython.cfunc
@cython.inline
def _nan_row(out: cython.double[::1]) -> None:
    i: cython.Py_ssize_t
    for i in range(50):
        out[i] = _NAN


@cython.ccall
def view(a: cython.double[::1]) -> object:
    """A typed view of the float64 array `a` (the array itself when uncompiled): passed back to `step` in
    place of the array, it skips the buffer checks a numpy array costs on every call (~80 ns each)."""
    return a


@cython.ccall
def init(state: cython.double[::1], interval_ms: cython.longlong) -> None:
    """Zero `state` (STATE_SLOTS slots) for a new symbol; `interval_ms` 0 disables gap detection."""
    i: cython.Py_ssize_t
    for i in range(N_SLOTS):
        state[i] = 0.0
    state[INTERVAL] = cython.cast(cython.double, interval_ms)


@cython.ccall
def step(
    state: cython.double[::1],
    start_ms: cython.longlong,
    o: cython.double,
    h: cython.double,
    lo: cython.double,
    c: cython.double,
    v: cython.double,
    out: cython.double[::1],
) -> cython.int:
    """Absorb one bar (start in epoch ms; open, high, low, close; volume) of one symbol into `state`.

    Returns:
        ROW with the features in `out` (N_OUT values, FEATURE_NAMES order); WARMING (out NaN);
        OUT_OF_ORDER or BAD_BAR: the bar is rejected, the state untouched and `out` NaN.
    """
    i: cython.Py_ssize_t
    interval: cython.longlong
    last: cython.longlong = 0
    if state[HAS_LAST] != 0.0:
        last = cython.cast(cython.longlong, state[LAST_START])
        if start_ms <= last:
            _nan_row(out)
            return -1  # OUT_OF_ORDER
    if not (isfinite(o) and isfinite(h) and isfinite(lo) and isfinite(c) and isfinite(v)):
        _nan_row(out)
        return -2  # BAD_BAR
    if o <= 0.0 or h <= 0.0 or lo <= 0.0 or c <= 0.0 or v < 0.0:
        _nan_row(out)
        return -2  # BAD_BAR
    if state[HAS_LAST] != 0.0:
        interval = cython.cast(cython.longlong, state[INTERVAL])
        if interval != 0 and start_ms - last != interval:
            for i in range(COUNT, N_SLOTS):
                state[i] = 0.0
            state[RESETS] += 1.0
    state[HAS_LAST] = 1.0
    state[LAST_START] = cython.cast(cython.double, start_ms)

    n: cython.Py_ssize_t = cython.cast(cython.Py_ssize_t, state[COUNT])
    prev_close: cython.double = state[CLOSES + (n - 1) % _WARMUP] if n > 0 else 0.0
    state[CLOSES + n % _WARMUP] = c
    _push(state, C24, 24, c)
    _push(state, C48, 48, c)
    rng: cython.double = (h - lo) / c
    _push(state, RANGE24, 24, rng)
    lvol: cython.double = log1p(v)
    _push(state, LVOL24, 24, lvol)
    volume_surprise: cython.double = lvol - _ew_mean(state, EW_LVOL) if state[EW_LVOL + 1] != 0.0 else 0.0
    _ew_push(state, EW_LVOL, _D288, lvol)
    log_hl: cython.double = log(h / lo)
    log_co: cython.double = log(c / o)
    pk_var: cython.double = log_hl * log_hl * _PK_NORM
    gk_var: cython.double = 0.5 * log_hl * log_hl - _GK_CLOSE * log_co * log_co  # >= 0 for a valid candle
    _ew_push(state, EW_PK, _D12, pk_var)
    _ew_push(state, EW_PK + 2, _D48, pk_var)
    _ew_push(state, EW_PK + 4, _D288, pk_var)
    _ew_push(state, EW_GK, _D12, gk_var)
    _ew_push(state, EW_GK + 2, _D48, gk_var)
    _ew_push(state, EW_GK + 4, _D288, gk_var)
    prev_volume: cython.double = state[PREV_VOL]
    state[PREV_VOL] = v
    count: cython.Py_ssize_t = n + 1
    state[COUNT] = cython.cast(cython.double, count)
    if n == 0:
        _nan_row(out)
        return 0  # WARMING

    r: cython.double = c / prev_close - 1.0
    lr: cython.double = log(c / prev_close)
    _ew_push(state, EW_RV, _D12, lr * lr)
    _ew_push(state, EW_RV + 2, _D48, lr * lr)
    _ew_push(state, EW_RV + 4, _D288, lr * lr)
    _push(state, R6, 6, r)
    _push(state, R12, 12, r)
    _push(state, R24, 24, r)
    _push(state, R48, 48, r)
    dc: cython.double = c - prev_close
    _push(state, ABSDC24, 24, fabs(dc))
    _push(state, GAIN14, 14, dc if dc > 0.0 else 0.0)
    _push(state, LOSS14, 14, -dc if dc < 0.0 else 0.0)
    if count < _WARMUP:
        _nan_row(out)
        return 0  # WARMING

    vol_chg: cython.double = 0.0
    if prev_volume > 0.0:
        vol_chg = min(max((v - prev_volume) / prev_volume, -1.0), 10.0)
    rv6: cython.double = _rms(state, R6, 6)
    rv12: cython.double = _rms(state, R12, 12)
    rv24: cython.double = _rms(state, R24, 24)
    rv48: cython.double = _rms(state, R48, 48)
    hl: cython.double = h - lo
    body: cython.double = 0.0
    upper: cython.double = 0.0
    lower: cython.double = 0.0
    close_pos: cython.double = 0.0
    if hl > 0.0:
        body = (c - o) / hl
        upper = (h - (o if o > c else c)) / hl
        lower = ((o if o < c else c) - lo) / hl
        close_pos = 2.0 * (c - lo) / hl - 1.0
    gains: cython.double = state[GAIN14 + 1]
    losses: cython.double = state[LOSS14 + 1]
    path: cython.double = state[ABSDC24 + 1]
    c25: cython.double = _close_back(state, count, 25)
    # returns pushed so far: count - 1; the newest at ring slot (count - 2) % 6
    lag1: cython.double = state[R6 + 3 + (count - 3) % 6]
    lag2: cython.double = state[R6 + 3 + (count - 4) % 6]
    day: cython.longlong = start_ms // _DAY_MS
    day_frac: cython.double = cython.cast(cython.double, start_ms % _DAY_MS) / cython.cast(
        cython.double, _DAY_MS
    )
    week_day: cython.longlong = day % 7
    week_frac: cython.double = cython.cast(cython.double, week_day) / 7.0

    out[0] = r
    out[1] = rng
    out[2] = vol_chg
    out[3] = c / _close_back(state, count, 6) - 1.0
    out[4] = c / _close_back(state, count, 4) - 1.0
    out[5] = c / _close_back(state, count, 13) - 1.0
    out[6] = c / c25 - 1.0
    out[7] = c / _close_back(state, count, 49) - 1.0
    out[8] = rv6
    out[9] = rv12
    out[10] = rv24
    out[11] = rv48
    out[12] = rv6 / rv48 - 1.0 if rv48 > 0.0 else 0.0
    out[13] = _zscore(state, RANGE24, 24, rng)
    out[14] = _zscore(state, LVOL24, 24, lvol)
    out[15] = (gains - losses) / (gains + losses) if gains + losses > 0.0 else 0.0
    out[16] = body
    out[17] = upper
    out[18] = lower
    out[19] = close_pos
    out[20] = (c - c25) / path if path > 0.0 else 0.0
    out[21] = _mean(state, R24, 24) / rv24 * _SQRT24 if rv24 > 0.0 else 0.0
    out[22] = c / _mean(state, C24, 24) - 1.0
    out[23] = c / _mean(state, C48, 48) - 1.0
    out[24] = lag1
    out[25] = lag2
    out[26] = sin(_TWO_PI * day_frac)
    out[27] = cos(_TWO_PI * day_frac)
    out[28] = sin(_TWO_PI * week_frac)
    out[29] = cos(_TWO_PI * week_frac)
    out[30] = _log_vol(_ew_mean(state, EW_RV))
    out[31] = _log_vol(_ew_mean(state, EW_RV + 2))
    out[32] = _log_vol(_ew_mean(state, EW_RV + 4))
    out[33] = _log_vol(_ew_mean(state, EW_PK))
    out[34] = _log_vol(_ew_mean(state, EW_PK + 2))
    out[35] = _log_vol(_ew_mean(state, EW_PK + 4))
    out[36] = _log_vol(_ew_mean(state, EW_GK))
    out[37] = _log_vol(_ew_mean(state, EW_GK + 2))
    out[38] = _log_vol(_ew_mean(state, EW_GK + 4))
    out[39] = _log_vol(pk_var)
    out[40] = volume_surprise
    out[41] = sin(2.0 * _TWO_PI * day_frac)
    out[42] = cos(2.0 * _TWO_PI * day_frac)
    out[43] = sin(3.0 * _TWO_PI * day_frac)
    out[44] = cos(3.0 * _TWO_PI * day_frac)
    out[45] = sin(4.0 * _TWO_PI * day_frac)
    out[46] = cos(4.0 * _TWO_PI * day_frac)
    out[47] = sin(2.0 * _TWO_PI * week_frac)
    out[48] = cos(2.0 * _TWO_PI * week_frac)
    out[49] = 1.0 if week_day == 2 or week_day == 3 else 0.0  # epoch day 0 (1970-01-01) was a Thursday
    return 1  # ROW


@cython.ccall
def run(
    state: cython.double[::1],
    start_ms: cython.longlong[::1],
    o: cython.double[::1],
    h: cython.double[::1],
    lo: cython.double[::1],
    c: cython.double[::1],
    v: cython.double[::1],
    out: cython.double[:, ::1],
    status: cython.schar[::1],
) -> cython.Py_ssize_t:
    """`step` over T bars of one symbol in order: row t of `out` [T, N_OUT] and `status[t]` for bar t.

    Returns:
        T, or the index of the first rejected bar (its status says why; later rows are not written).
    """
    t: cython.Py_ssize_t
    code: cython.int
    for t in range(start_ms.shape[0]):
        code = step(state, start_ms[t], o[t], h[t], lo[t], c[t], v[t], out[t])
        status[t] = code
        if code < 0:
            return t
    return start_ms.shape[0]


@cython.ccall
def run_symbols(
    states: cython.double[:, ::1],
    start_ms: cython.longlong[::1],
    o: cython.double[::1],
    h: cython.double[::1],
    lo: cython.double[::1],
    c: cython.double[::1],
    v: cython.double[::1],
    out: cython.double[:, ::1],
    status: cython.schar[::1],
) -> None:
    """`step` for one bar of each of N symbols (a bar-close burst): symbol i's state is `states[i]`, its
    bar the i-th entry of each field array, its row `out[i]` and its code `status[i]` (a rejected bar
    rejects only that symbol's bar)."""
    i: cython.Py_ssize_t
    for i in range(start_ms.shape[0]):
        status[i] = step(states[i], start_ms[i], o[i], h[i], lo[i], c[i], v[i], out[i])


@cython.ccall
def run_rows(
    rows: cython.longlong[::1],
    states: cython.double[:, ::1],
    start_ms: cython.longlong[::1],
    o: cython.double[::1],
    h: cython.double[::1],
    lo: cython.double[::1],
    c: cython.double[::1],
    v: cython.double[::1],
    out: cython.double[:, ::1],
    status: cython.schar[::1],
) -> cython.Py_ssize_t:
    """`step` for one bar of each of N symbols held as rows of an engine's state table: bar i steps
    `states[rows[i]]` and writes `out[i]` and `status[i]` (a rejected bar rejects only that symbol's bar).

    Returns:
        N, or the index of the first rejected bar (the others are stepped all the same).

    Raises:
        ValueError: a row index is outside `states`, or an array is shorter than the bars given.
    """
    n: cython.Py_ssize_t = rows.shape[0]
    i: cython.Py_ssize_t
    r: cython.longlong
    bad: cython.Py_ssize_t = n
    if (
        start_ms.shape[0] < n
        or o.shape[0] < n
        or h.shape[0] < n
        or lo.shape[0] < n
        or c.shape[0] < n
        or v.shape[0] < n
        or out.shape[0] < n
        or status.shape[0] < n
        or (n > 0 and (out.shape[1] < N_OUT or states.shape[1] < N_SLOTS))
    ):
        raise ValueError("feature kernel: an array is shorter than the bars given or the layout")
    for i in range(n):
        r = rows[i]
        if r < 0 or r >= states.shape[0]:
            raise ValueError(f"feature kernel: row {r} outside the state table of {states.shape[0]} rows")
    for i in range(n):
        status[i] = step(states[rows[i]], start_ms[i], o[i], h[i], lo[i], c[i], v[i], out[i])
        if status[i] < 0 and bad == n:
            bad = i
    return bad
