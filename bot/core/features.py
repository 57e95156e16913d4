"""The one feature implementation, used live and offline.

`FeatureState.update(bar)` is pure and incremental: it returns the full feature vector (ordered as
`FEATURE_NAMES`) for the newest confirmed bar, or `None` while warming up. Offline datasets are built
by replaying this same class over the bars, so training and live inference can never disagree.

A time gap (a bar that does not follow the previous one by exactly `interval_ms`) resets the state:
no window ever spans a gap and features warm up again after it.

All arithmetic is plain Python floats on O(1) running sums, because the live path computes one row
every few minutes and numpy's per-call overhead would dominate.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

from bot.core.bars import Bar
from bot.core.rolling import EwMean, RollingWindow, copy_state

FEATURE_VERSION: Final = "2"

#: Every feature, in vector order. Units: returns and ranges are fractions of price; z-scores are unitless.
FEATURE_NAMES: Final[tuple[str, ...]] = (
    # the seed chapter's four (§7)
    "ret_1",  # (c_t - c_{t-1}) / c_{t-1}
    "range_vol",  # (h_t - l_t) / c_t
    "vol_chg",  # (v_t - v_{t-1}) / v_{t-1}, clipped to [-1, 10]; 0 when v_{t-1} == 0
    "mom_5",  # c_t / c_{t-5} - 1
    # multi-horizon returns
    "ret_3",
    "ret_12",
    "ret_24",
    "ret_48",
    # realised volatility: sqrt(mean(ret_1^2)) over the window
    "rv_6",
    "rv_12",
    "rv_24",
    "rv_48",
    "vol_ratio",  # rv_6 / rv_48 - 1
    # z-scores of the newest bar against the last 24
    "range_z_24",
    "volume_z_24",  # on log1p(volume)
    "rsi_14",  # (gains - losses) / (gains + losses) over 14 closes: (RSI - 50) / 50
    # candle shape, as fractions of the bar's range (0 when high == low)
    "body",
    "upper_wick",
    "lower_wick",
    "close_pos",  # 2 * (c - l) / (h - l) - 1
    # trend
    "efficiency_24",  # signed Kaufman efficiency: (c_t - c_{t-24}) / sum |dc|
    "trend_24",  # mean(ret_1) / rv_24 * sqrt(24)
    "dist_ma_24",  # c / SMA_24 - 1
    "dist_ma_48",
    "ret_lag1",
    "ret_lag2",
    # UTC calendar of the bar's start
    "hour_sin",
    "hour_cos",
    "dow_sin",
    "dow_cos",
    # volatility history up to a day of bars, log scale (log of a per-bar vol, a fraction): exponentially
    # weighted means with half-lives of 12, 48 and 288 bars, bias-corrected so they are defined from the
    # first bar (see `EwMean`); scale-free across symbols up to a level shift
    "lrv_ew12",  # log sqrt(EW mean of r^2), r = log(c_t / c_{t-1})
    "lrv_ew48",
    "lrv_ew288",
    "lpk_ew12",  # Parkinson: log sqrt(EW mean of log(h/l)^2 / (4 ln 2))
    "lpk_ew48",
    "lpk_ew288",
    "lgk_ew12",  # Garman-Klass: log sqrt(EW mean of 0.5 log(h/l)^2 - (2 ln 2 - 1) log(c/o)^2)
    "lgk_ew48",
    "lgk_ew288",
    "lpk_1",  # the newest bar's Parkinson vol, log: log(|log(h/l)| / sqrt(4 ln 2)), floored
    "lvolume_surprise",  # log1p(v_t) - EW mean of log1p(v) (half-life 288 bars, before this bar)
    # intraday seasonality beyond the first harmonic, and the week
    "hour2_sin",  # sin(2 * 2 pi * day_frac)
    "hour2_cos",
    "hour3_sin",
    "hour3_cos",
    "hour4_sin",
    "hour4_cos",
    "dow2_sin",  # second weekly harmonic (day resolution)
    "dow2_cos",
    "weekend",  # 1 on Saturday and Sunday UTC, else 0
)
N_FEATURES: Final = len(FEATURE_NAMES)
FEATURE_INDEX: Final[dict[str, int]] = {name: i for i, name in enumerate(FEATURE_NAMES)}

#: Bars needed before the first vector (the longest window is 48 returns, i.e. 49 closes; the EW features
#: are defined from the first bar, so the day-long half-life does not raise it).
WARMUP_BARS: Final = 49

_NEWEST_BAR: Final = ("ret_1", "range_vol", "vol_chg", "body", "upper_wick", "lower_wick", "close_pos")
_SEED: Final = ("ret_1", "range_vol", "vol_chg", "mom_5")
_PRICE_VOLUME: Final = (
    *_SEED,
    "ret_3",
    "ret_12",
    "rv_6",
    "rv_24",
    "vol_ratio",
    "range_z_24",
    "volume_z_24",
    "rsi_14",
    "body",
    "close_pos",
    "efficiency_24",
    "ret_lag1",
)
_CALENDAR: Final = (
    "hour_sin",
    "hour_cos",
    "dow_sin",
    "dow_cos",
    "hour2_sin",
    "hour2_cos",
    "hour3_sin",
    "hour3_cos",
    "hour4_sin",
    "hour4_cos",
    "dow2_sin",
    "dow2_cos",
    "weekend",
)
_LOG_VOL: Final = (
    "lrv_ew12",
    "lrv_ew48",
    "lrv_ew288",
    "lpk_ew12",
    "lpk_ew48",
    "lpk_ew288",
    "lgk_ew12",
    "lgk_ew48",
    "lgk_ew288",
    "lpk_1",
    "lvolume_surprise",
)
_HOUR_123: Final = ("hour_sin", "hour_cos", "hour2_sin", "hour2_cos", "hour3_sin", "hour3_cos")
_FEATURES_V1: Final = FEATURE_NAMES[:30]
#: The edge tier's set: the newest bar, cheap log vol history (an hour, four hours, a day; Parkinson's
#: range estimate at the two short ones) and the first two intraday harmonics: what HAR-RV + time of day
#: knows, in 16 inputs.
_EDGE_VOL: Final = (
    *_NEWEST_BAR,
    "lrv_ew12",
    "lrv_ew48",
    "lrv_ew288",
    "lpk_ew12",
    "lpk_ew48",
    "hour_sin",
    "hour_cos",
    "hour2_sin",
    "hour2_cos",
)

#: Named subsets a tier can be trained on (config `[tiers.*].features`). Order follows FEATURE_NAMES.
FEATURE_SETS: Final[dict[str, tuple[str, ...]]] = {
    "research": FEATURE_NAMES,
    "no_calendar": tuple(n for n in FEATURE_NAMES if n not in _CALENDAR),
    "v1": _FEATURES_V1,
    "price_volume": tuple(n for n in FEATURE_NAMES if n in _PRICE_VOLUME),
    "price_volume_vol": tuple(
        n for n in FEATURE_NAMES if n in _PRICE_VOLUME or n in _LOG_VOL or n in _HOUR_123
    ),
    "vol_core": tuple(n for n in FEATURE_NAMES if n in _NEWEST_BAR or n in _LOG_VOL or n in _HOUR_123[:4]),
    "edge_vol": tuple(n for n in FEATURE_NAMES if n in _EDGE_VOL),
    "seed": tuple(n for n in FEATURE_NAMES if n in _SEED),
    "newest_bar": tuple(n for n in FEATURE_NAMES if n in _NEWEST_BAR),
}

_DAY_MS: Final = 86_400_000
_TWO_PI: Final = 2.0 * math.pi
#: Half-lives (bars) of the exponentially weighted vol features: an hour, four hours and a day of 5m bars.
EW_HALF_LIVES: Final[tuple[int, int, int]] = (12, 48, 288)
#: Floor of every log-vol feature's vol (a fraction per bar, 0.1 bp): a flat stretch or bar stays finite.
LOG_VOL_FLOOR: Final = 1e-5
_LOG_VOL_FLOOR_VAR: Final = LOG_VOL_FLOOR * LOG_VOL_FLOOR
_PK_NORM: Final = 1.0 / (4.0 * math.log(2.0))  # Parkinson: E[log(h/l)^2] = 4 ln 2 * sigma^2
_GK_CLOSE: Final = 2.0 * math.log(2.0) - 1.0


def feature_indices(names: Sequence[str]) -> npt.NDArray[np.intp]:
    """Column indices of `names` in the full vector; raises KeyError naming an unknown feature."""
    missing = [n for n in names if n not in FEATURE_INDEX]
    if missing:
        raise KeyError(f"unknown feature(s) {missing}; known: {list(FEATURE_NAMES)}")
    return np.array([FEATURE_INDEX[n] for n in names], dtype=np.intp)


def resolve_feature_set(name: str) -> tuple[str, ...]:
    """Feature names of a named set; raises KeyError listing the known sets."""
    try:
        return FEATURE_SETS[name]
    except KeyError:
        raise KeyError(f"unknown feature set {name!r}; known: {sorted(FEATURE_SETS)}") from None


def log_vol(var: float) -> float:
    """`log(sqrt(var))` with the vol floored at `LOG_VOL_FLOOR` (a per-bar variance in, a log vol out)."""
    return 0.5 * math.log(var if var > _LOG_VOL_FLOOR_VAR else _LOG_VOL_FLOOR_VAR)


def _zscore(x: float, w: RollingWindow) -> float:
    sd = w.std()
    return (x - w.mean()) / sd if sd > 0.0 else 0.0


class FeatureState:
    """Incremental feature computer for one symbol.

    Args:
        interval_ms: expected spacing of bars; a different spacing is a gap and resets the state.
            `None` disables gap detection (bars are taken as contiguous).
    """

    def __init__(self, *, interval_ms: int | None = None) -> None:
        self.interval_ms = interval_ms
        self.last_start_ms: int | None = None
        self.resets = 0
        self._reset()

    def _reset(self) -> None:
        self._closes: deque[float] = deque(maxlen=WARMUP_BARS)
        self._prev_volume: float | None = None
        self._rets: deque[float] = deque(maxlen=3)
        self._r6, self._r12, self._r24, self._r48 = (
            RollingWindow(6),
            RollingWindow(12),
            RollingWindow(24),
            RollingWindow(48),
        )
        self._absdc24 = RollingWindow(24)
        self._gain14 = RollingWindow(14)
        self._loss14 = RollingWindow(14)
        self._range24 = RollingWindow(24)
        self._lvol24 = RollingWindow(24)
        self._c24 = RollingWindow(24)
        self._c48 = RollingWindow(48)
        self._ew_rv = [EwMean(h) for h in EW_HALF_LIVES]  # r^2, r the one-bar log return
        self._ew_pk = [EwMean(h) for h in EW_HALF_LIVES]  # Parkinson variance of each bar
        self._ew_gk = [EwMean(h) for h in EW_HALF_LIVES]  # Garman-Klass variance of each bar
        self._ew_lvol = EwMean(EW_HALF_LIVES[-1])  # log1p(volume)
        self.count = 0

    def copy(self) -> FeatureState:
        """An independent copy of the state (windows copied): `update` on it leaves this one untouched."""
        new = copy_state(self)
        new._ew_rv = [e.copy() for e in self._ew_rv]
        new._ew_pk = [e.copy() for e in self._ew_pk]
        new._ew_gk = [e.copy() for e in self._ew_gk]
        return new

    @property
    def warm(self) -> bool:
        """True once the next `update` (without a gap) returns a vector."""
        return self.count >= WARMUP_BARS - 1

    def update(self, bar: Bar) -> npt.NDArray[np.float64] | None:
        """Absorb a confirmed bar; return its feature vector, or `None` while warming up.

        Raises:
            ValueError: the bar is not newer than the previous one (the stream must be ordered).
        """
        if self.last_start_ms is not None:
            if bar.start_ms <= self.last_start_ms:
                raise ValueError(
                    f"{bar.symbol}: bar start_ms={bar.start_ms} is not after the previous "
                    f"{self.last_start_ms}"
                )
            if self.interval_ms is not None and bar.start_ms - self.last_start_ms != self.interval_ms:
                self._reset()
                self.resets += 1
        self.last_start_ms = bar.start_ms

        o, h, lo, c, v = bar.open, bar.high, bar.low, bar.close, bar.volume
        closes = self._closes
        prev_close = closes[-1] if closes else None
        closes.append(c)
        self._c24.push(c)
        self._c48.push(c)
        rng = (h - lo) / c
        self._range24.push(rng)
        lvol = math.log1p(v)
        self._lvol24.push(lvol)
        ew_lvol = self._ew_lvol
        volume_surprise = lvol - ew_lvol.mean() if not ew_lvol.empty else 0.0
        ew_lvol.push(lvol)
        log_hl = math.log(h / lo)
        log_co = math.log(c / o)
        pk_var = log_hl * log_hl * _PK_NORM
        gk_var = 0.5 * log_hl * log_hl - _GK_CLOSE * log_co * log_co  # >= 0: |log(c/o)| <= log(h/l)
        for e_pk, e_gk in zip(self._ew_pk, self._ew_gk, strict=True):
            e_pk.push(pk_var)
            e_gk.push(gk_var)
        prev_volume = self._prev_volume
        self._prev_volume = v
        self.count += 1
        if prev_close is None:
            return None

        r = c / prev_close - 1.0
        lr = math.log(c / prev_close)
        for e in self._ew_rv:
            e.push(lr * lr)
        self._rets.append(r)
        for w in (self._r6, self._r12, self._r24, self._r48):
            w.push(r)
        dc = c - prev_close
        self._absdc24.push(abs(dc))
        self._gain14.push(dc if dc > 0.0 else 0.0)
        self._loss14.push(-dc if dc < 0.0 else 0.0)
        if len(closes) < WARMUP_BARS:
            return None

        vol_chg = 0.0
        if prev_volume is not None and prev_volume > 0.0:
            vol_chg = min(max((v - prev_volume) / prev_volume, -1.0), 10.0)
        rv6, rv12, rv24, rv48 = self._r6.rms(), self._r12.rms(), self._r24.rms(), self._r48.rms()
        hl = h - lo
        if hl > 0.0:
            body = (c - o) / hl
            upper = (h - (o if o > c else c)) / hl
            lower = ((o if o < c else c) - lo) / hl
            close_pos = 2.0 * (c - lo) / hl - 1.0
        else:
            body = upper = lower = close_pos = 0.0
        gains, losses = self._gain14.s, self._loss14.s
        rsi = (gains - losses) / (gains + losses) if gains + losses > 0.0 else 0.0
        path = self._absdc24.s
        eff = (c - closes[-25]) / path if path > 0.0 else 0.0
        trend = self._r24.mean() / rv24 * math.sqrt(24.0) if rv24 > 0.0 else 0.0
        rets = self._rets
        lag1 = rets[-2] if len(rets) >= 2 else 0.0
        lag2 = rets[-3] if len(rets) >= 3 else 0.0
        day_frac = (bar.start_ms % _DAY_MS) / _DAY_MS
        day = bar.start_ms // _DAY_MS
        week_frac = (day % 7) / 7.0
        ew_rv, ew_pk, ew_gk = self._ew_rv, self._ew_pk, self._ew_gk
        return np.array(
            (
                r,
                rng,
                vol_chg,
                c / closes[-6] - 1.0,
                c / closes[-4] - 1.0,
                c / closes[-13] - 1.0,
                c / closes[-25] - 1.0,
                c / closes[-49] - 1.0,
                rv6,
                rv12,
                rv24,
                rv48,
                rv6 / rv48 - 1.0 if rv48 > 0.0 else 0.0,
                _zscore(rng, self._range24),
                _zscore(lvol, self._lvol24),
                rsi,
                body,
                upper,
                lower,
                close_pos,
                eff,
                trend,
                c / self._c24.mean() - 1.0,
                c / self._c48.mean() - 1.0,
                lag1,
                lag2,
                math.sin(_TWO_PI * day_frac),
                math.cos(_TWO_PI * day_frac),
                math.sin(_TWO_PI * week_frac),
                math.cos(_TWO_PI * week_frac),
                log_vol(ew_rv[0].mean()),
                log_vol(ew_rv[1].mean()),
                log_vol(ew_rv[2].mean()),
                log_vol(ew_pk[0].mean()),
                log_vol(ew_pk[1].mean()),
                log_vol(ew_pk[2].mean()),
                log_vol(ew_gk[0].mean()),
                log_vol(ew_gk[1].mean()),
                log_vol(ew_gk[2].mean()),
                log_vol(pk_var),
                volume_surprise,
                math.sin(2.0 * _TWO_PI * day_frac),
                math.cos(2.0 * _TWO_PI * day_frac),
                math.sin(3.0 * _TWO_PI * day_frac),
                math.cos(3.0 * _TWO_PI * day_frac),
                math.sin(4.0 * _TWO_PI * day_frac),
                math.cos(4.0 * _TWO_PI * day_frac),
                math.sin(2.0 * _TWO_PI * week_frac),
                math.cos(2.0 * _TWO_PI * week_frac),
                1.0 if day % 7 in (2, 3) else 0.0,  # epoch day 0 (1970-01-01) was a Thursday
            ),
            dtype=np.float64,
        )


def replay_features(
    bars: Sequence[Bar], *, interval_ms: int | None = None
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Run `FeatureState` over `bars` in order.

    Returns:
        `(X, valid)`: X has one row per bar (NaN rows where warming up), valid marks rows with features.
    """
    state = FeatureState(interval_ms=interval_ms)
    out = np.full((len(bars), N_FEATURES), np.nan, dtype=np.float64)
    valid = np.zeros(len(bars), dtype=np.bool_)
    for i, bar in enumerate(bars):
        vec = state.update(bar)
        if vec is not None:
            out[i] = vec
            valid[i] = True
    return out, valid
