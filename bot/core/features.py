"""The one feature implementation, used live and offline: names, sets, version, and the typed wrapper.

The arithmetic is the compiled kernel `bot.core.kernels.features` (one `step` per bar over a float64 state
array, looped over T bars and over N symbols). `FeatureState.update(bar)` is pure and incremental: it
returns the full feature vector (ordered as `FEATURE_NAMES`) for the newest confirmed bar, or `None` while
warming up. Offline datasets and backtests call the T-bar loop once per symbol (`replay_features`,
`features_of_arrays`), so training and live inference run the same code and can never disagree.

A time gap (a bar that does not follow the previous one by exactly `interval_ms`) resets the state:
no window ever spans a gap and features warm up again after it. A bar that does not start after the
previous one, or with a NaN/infinite field, a price <= 0 or a volume < 0, raises `ValueError` and leaves
the state untouched (zero volume is valid: `vol_chg` is then 0 on the next bar), so no NaN reaches a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

from bot.core.bars import Bar
from bot.core.kernels import features as _kernel

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

#: Half-lives (bars) of the exponentially weighted vol features: an hour, four hours and a day of 5m bars.
EW_HALF_LIVES: Final[tuple[int, int, int]] = (12, 48, 288)
#: Floor of every log-vol feature's vol (a fraction per bar, 0.1 bp): a flat stretch or bar stays finite.
LOG_VOL_FLOOR: Final = 1e-5

if _kernel.N_OUT != N_FEATURES or _kernel.WARMUP != WARMUP_BARS:
    raise ImportError(
        f"bot.core.kernels.features computes {_kernel.N_OUT} features with warm-up {_kernel.WARMUP}; "
        f"FEATURE_NAMES has {N_FEATURES} and WARMUP_BARS is {WARMUP_BARS}: rebuild the kernels "
        "(pip install -e .) or fix the kernel"
    )

F64 = npt.NDArray[np.float64]
_HAS_LAST, _LAST_START, _RESETS, _COUNT = (
    _kernel.SLOT[n] for n in ("HAS_LAST", "LAST_START", "RESETS", "COUNT")
)


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


def rejected(code: int, symbol: str, start_ms: int, last_start_ms: int | None, fields: str) -> ValueError:
    """The error of a bar the feature kernel rejected with status `code` (`fields`: its values, printed)."""
    if code == _kernel.OUT_OF_ORDER:
        return ValueError(f"{symbol}: bar start_ms={start_ms} is not after the previous {last_start_ms}")
    return ValueError(
        f"{symbol}: bar start_ms={start_ms} rejected: prices must be finite and > 0 and volume finite "
        f"and >= 0, got {fields}"
    )


class FeatureState:
    """Incremental feature computer for one symbol: a float64 state array stepped by the feature kernel.

    Args:
        interval_ms: expected spacing of bars; a different spacing is a gap and resets the state.
            `None` disables gap detection (bars are taken as contiguous).
    """

    __slots__ = ("_out", "_out_view", "_state_view", "interval_ms", "state")

    def __init__(self, *, interval_ms: int | None = None) -> None:
        if interval_ms is not None and interval_ms <= 0:
            raise ValueError(f"interval_ms must be a positive number of ms or None, got {interval_ms}")
        self.interval_ms = interval_ms
        #: The kernel's state (layout: the table in bot/core/kernels/features.py).
        self.state: F64 = np.empty(_kernel.STATE_SLOTS, dtype=np.float64)
        _kernel.init(self.state, interval_ms or 0)
        self._views()

    def _views(self) -> None:
        self._out: F64 = np.empty(N_FEATURES, dtype=np.float64)
        self._state_view = _kernel.view(self.state)
        self._out_view = _kernel.view(self._out)

    @property
    def last_start_ms(self) -> int | None:
        """start_ms of the newest absorbed bar (None before the first)."""
        return int(self.state[_LAST_START]) if self.state[_HAS_LAST] else None

    @property
    def resets(self) -> int:
        """Gaps seen so far (each one reset the state)."""
        return int(self.state[_RESETS])

    @property
    def count(self) -> int:
        """Bars absorbed since the last reset."""
        return int(self.state[_COUNT])

    def copy(self) -> FeatureState:
        """An independent copy of the state: `update` on it leaves this one untouched."""
        new = FeatureState.__new__(FeatureState)
        new.interval_ms = self.interval_ms
        new.state = self.state.copy()
        new._views()
        return new

    @property
    def warm(self) -> bool:
        """True once the next `update` (without a gap) returns a vector."""
        return self.count >= WARMUP_BARS - 1

    def update(self, bar: Bar) -> F64 | None:
        """Absorb a confirmed bar; return its feature vector (a new array), or `None` while warming up.

        Raises:
            ValueError: the bar is not newer than the previous one (the stream must be ordered), or a
                field is NaN/infinite, a price <= 0 or the volume < 0; the state is left untouched.
        """
        code = _kernel.step(
            self._state_view, bar.start_ms, bar.open, bar.high, bar.low, bar.close, bar.volume, self._out_view
        )
        if code == _kernel.ROW:
            return self._out.copy()
        if code == _kernel.WARMING:
            return None
        raise rejected(code, bar.symbol, bar.start_ms, self.last_start_ms, _fields(bar))


def _fields(bar: Bar) -> str:
    return f"open={bar.open} high={bar.high} low={bar.low} close={bar.close} volume={bar.volume}"


def features_of_arrays(
    start_ms: npt.NDArray[np.int64],
    open_: F64,
    high: F64,
    low: F64,
    close: F64,
    volume: F64,
    *,
    interval_ms: int | None = None,
    symbol: str = "",
) -> tuple[F64, npt.NDArray[np.bool_]]:
    """The features of one symbol's T bars (arrays of equal length, in time order), in one kernel call.

    Returns:
        `(X, valid)`: X [T, N_FEATURES] (NaN rows where warming up), valid marks rows with features.

    Raises:
        ValueError: a bar out of order or with a bad field (as `FeatureState.update`), naming its index.
    """
    t_bars = int(start_ms.shape[0])
    state = FeatureState(interval_ms=interval_ms)
    out = np.empty((t_bars, N_FEATURES), dtype=np.float64)
    status = np.zeros(t_bars, dtype=np.int8)
    as_f64 = [np.ascontiguousarray(a, dtype=np.float64) for a in (open_, high, low, close, volume)]
    starts = np.ascontiguousarray(start_ms, dtype=np.int64)
    done = _kernel.run(state.state, starts, *as_f64, out, status)
    if done < t_bars:
        o, h, lo, c, v = (float(a[done]) for a in as_f64)
        fields = f"open={o} high={h} low={lo} close={c} volume={v}"
        last = int(starts[done - 1]) if done else None
        err = rejected(int(status[done]), symbol, int(starts[done]), last, fields)
        raise ValueError(f"bar {done} of {t_bars}: {err}")
    return out, status == _kernel.ROW


def replay_features(
    bars: Sequence[Bar], *, interval_ms: int | None = None
) -> tuple[F64, npt.NDArray[np.bool_]]:
    """`features_of_arrays` over a list of bars (one symbol, in order).

    Returns:
        `(X, valid)`: X has one row per bar (NaN rows where warming up), valid marks rows with features.
    """
    n = len(bars)
    start_ms = np.fromiter((b.start_ms for b in bars), dtype=np.int64, count=n)
    fields = [
        np.fromiter((getattr(b, f) for b in bars), dtype=np.float64, count=n)
        for f in ("open", "high", "low", "close", "volume")
    ]
    return features_of_arrays(
        start_ms, *fields, interval_ms=interval_ms, symbol=bars[0].symbol if bars else ""
    )
