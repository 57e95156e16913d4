"""The slow oracle of the feature kernel: the pure-Python `FeatureState` the product used until issue 21.

`bot.core.features.FeatureState` is now a thin wrapper over the compiled kernel
(`bot.core.kernels.features`); this is the former class, kept verbatim (running windows of
`tests/oracle_rolling.py`, deques, one object per accumulator) so tests/test_feature_kernel.py can prove the
kernel equal to it on real and synthetic bars. Nothing in bot/ or offline/ imports it.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import Final

import numpy as np
import numpy.typing as npt
from oracle_rolling import EwMean, RollingWindow, copy_state

from bot.core.bars import Bar
from bot.core.features import EW_HALF_LIVES, LOG_VOL_FLOOR, N_FEATURES, WARMUP_BARS

_DAY_MS: Final = 86_400_000
_TWO_PI: Final = 2.0 * math.pi
_LOG_VOL_FLOOR_VAR: Final = LOG_VOL_FLOOR * LOG_VOL_FLOOR
_PK_NORM: Final = 1.0 / (4.0 * math.log(2.0))  # Parkinson: E[log(h/l)^2] = 4 ln 2 * sigma^2
_GK_CLOSE: Final = 2.0 * math.log(2.0) - 1.0


def log_vol(var: float) -> float:
    """`log(sqrt(var))` with the vol floored at `LOG_VOL_FLOOR` (a per-bar variance in, a log vol out)."""
    return 0.5 * math.log(var if var > _LOG_VOL_FLOOR_VAR else _LOG_VOL_FLOOR_VAR)


def _zscore(x: float, w: RollingWindow) -> float:
    sd = w.std()
    return (x - w.mean()) / sd if sd > 0.0 else 0.0


class OracleFeatureState:
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

    def copy(self) -> OracleFeatureState:
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


def oracle_replay(
    bars: Sequence[Bar], *, interval_ms: int | None = None
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Run `OracleFeatureState` over `bars` in order.

    Returns:
        `(X, valid)`: X has one row per bar (NaN rows where warming up), valid marks rows with features.
    """
    state = OracleFeatureState(interval_ms=interval_ms)
    out = np.full((len(bars), N_FEATURES), np.nan, dtype=np.float64)
    valid = np.zeros(len(bars), dtype=np.bool_)
    for i, bar in enumerate(bars):
        vec = state.update(bar)
        if vec is not None:
            out[i] = vec
            valid[i] = True
    return out, valid
