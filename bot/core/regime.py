"""Pure regime detector: incremental signals, calibrated thresholds, hysteresis, and tier routing.

Signals (per confirmed bar, all from exchange data, no clock):

- `vol`: realised volatility, `sqrt(mean(r^2))` of simple close-to-close returns over `vol_window` bars
  (a fraction per bar, like the features' `rv_*`).
- `vol_rel`: `vol` over the symbol's own long-run level, `sqrt` of an exponentially weighted mean of `r^2`
  with half-life `vol_long_halflife_bars` (bias-corrected, so defined from the first return). It is
  self-normalising: 1.0 is the symbol's usual volatility whatever its scale, so one calibration serves a
  symbol the family never saw. Calibration version 2 classifies on it; version 1 (absolute `vol`) still loads.
- `trend`: signed Kaufman efficiency `(c_t - c_{t-n}) / sum |dc|` over `trend_window` bars, in [-1, 1]
  (+-1 = a straight line, 0 = pure chop); `efficiency`, the trend strength used to classify, is the mean of
  `|trend|` over the last `trend_window` bars (one bar's efficiency is too noisy and made calm_trend flap).
- `volume_z`: volume surprise, the z-score of the newest bar's `log1p(volume)` against the last
  `volume_window` bars (informational: reported and logged, not used to classify).
- `spread_bps`, `imbalance`: from the latest `BookTop` seen during the bar, when `use_book` is on.

Regimes, from the calibrated thresholds (`RegimeThresholdValues`; `vol` below is the calibration's volatility
signal, `vol_rel` for version 2):

- `crisis`: `vol >= vol_crisis_min`, or (book on) `spread_bps >= spread_crisis_bps`, or
  (book on) `|imbalance| >= imbalance_crisis_min` while `vol >= vol_volatile_min` (a one-sided book alone
  is common at the top level; it only means crisis in an already volatile market).
- `volatile`: `vol >= vol_volatile_min`.
- `calm_trend`: `vol <= vol_calm_max` and `efficiency >= trend_calm_min`.
- `normal`: everything else, and the fallback while the signals warm up.

Hysteresis: the detector leaves its current regime only when (a) at least `min_dwell_bars` bars have passed
since it entered it - except an escalation *into* crisis, which is immediate because crisis routes to the
most capable tier - and (b) the current regime's own conditions fail even with every threshold relaxed by the
fraction `hysteresis` in its favour (the exit levels), e.g. volatile is kept while `vol >= 0.9 *
vol_volatile_min` and `vol < 1.1 * vol_crisis_min` at `hysteresis = 0.1`.

Calibration and threshold resolution (`RegimeThresholdValues.resolve`, `resolve_routes`) live in
`bot.core.thresholds`; `Signals`, `RegimeThresholdValues` and `resolve_routes` are re-exported here.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from bot.core.bars import Bar, BookTop
from bot.core.kernels import regime as _k
from bot.core.params import REGIME_NAMES, RegimeConfig
from bot.core.tables import RegimeDecision as RegimeDecision
from bot.core.thresholds import THRESHOLD_KEYS
from bot.core.thresholds import RegimeThresholdValues as RegimeThresholdValues
from bot.core.thresholds import Signals as Signals
from bot.core.thresholds import resolve_routes as resolve_routes

_S = _k.SLOTS
_I_HAS_LAST, _I_LAST_START_MS, _I_HAS_BOOK = _S["I_HAS_LAST"], _S["I_LAST_START_MS"], _S["I_HAS_BOOK"]
_I_N_R2, _I_N_EFF, _I_N_LVOL = _S["I_N_R2"], _S["I_N_EFF"], _S["I_N_LVOL"]
_I_REGIME, _I_DWELL = _S["I_REGIME"], _S["I_DWELL"]
_O_WARM, _O_BOOK, _O_REGIME, _O_TIER = _S["O_WARM"], _S["O_BOOK"], _S["O_REGIME"], _S["O_TIER"]
_O_CHANGED, _O_CANDIDATE, _O_DWELL = _S["O_CHANGED"], _S["O_CANDIDATE"], _S["O_DWELL"]
_G_VOL, _G_VOL_REL, _G_EFF, _G_TREND = _S["G_VOL"], _S["G_VOL_REL"], _S["G_EFFICIENCY"], _S["G_TREND"]
_G_VOLUME_Z, _G_SPREAD, _G_IMB = _S["G_VOLUME_Z"], _S["G_SPREAD_BPS"], _S["G_IMBALANCE"]
_P_THRESHOLDS = tuple(_S[f"P_{k.upper()}"] for k in THRESHOLD_KEYS)
_P_VOL_REL, _P_LO, _P_HI, _P_DECAY = _S["P_VOL_REL"], _S["P_LO"], _S["P_HI"], _S["P_DECAY"]
_REGIME_CODE: Final = {name: code for code, name in enumerate(REGIME_NAMES)}


class RegimeSignals:
    """Incremental regime signals for one symbol (the state arrays of `bot.core.kernels.regime`).

    Args:
        cfg: windows and `use_book`.
        interval_ms: expected bar spacing; a different spacing is a gap and restarts the warm-up.
            None takes bars as contiguous.
    """

    def __init__(self, cfg: RegimeConfig, *, interval_ms: int | None = None) -> None:
        self.cfg = cfg
        self.interval_ms = interval_ms
        self._iparams = _k.make_iparams(
            vol_window=cfg.vol_window,
            trend_window=cfg.trend_window,
            volume_window=cfg.volume_window,
            interval_ms=interval_ms,
            use_book=cfg.use_book,
            min_dwell_bars=cfg.min_dwell_bars,
        )
        # thresholds (written by RegimeDetector) and the long-run level's decay
        self._fparams = np.zeros(_k.SLOTS["N_FPARAMS"], dtype=np.float64)
        self._fparams[_P_DECAY] = 0.5 ** (1.0 / cfg.vol_long_halflife_bars)
        self._istate, self._fstate = _k.new_state(self._iparams)
        self._iout = np.zeros(_k.SLOTS["N_IOUT"], dtype=np.int64)
        self._fout = np.zeros(_k.SLOTS["N_FOUT"], dtype=np.float64)
        self._book_symbol: str | None = None

    def copy(self) -> RegimeSignals:
        """An independent copy of the state (arrays copied, config shared)."""
        new = copy.copy(self)
        for name in ("_fparams", "_istate", "_fstate", "_iout", "_fout"):
            setattr(new, name, getattr(self, name).copy())
        return new

    @property
    def last_start_ms(self) -> int | None:
        """start_ms of the last bar absorbed (None before the first)."""
        return int(self._istate[_I_LAST_START_MS]) if self._istate[_I_HAS_LAST] else None

    @property
    def warm(self) -> bool:
        """True once every window is full (the last `update` returned signals)."""
        i, cfg = self._istate, self.cfg
        return bool(
            i[_I_N_R2] == cfg.vol_window
            and i[_I_N_EFF] == cfg.trend_window
            and i[_I_N_LVOL] == cfg.volume_window
        )

    def update_book(self, book: BookTop) -> None:
        """Remember the latest top of book (ignored unless `cfg.use_book`)."""
        if self.cfg.use_book:
            self._book_symbol = book.symbol
            _k.set_book(
                self._istate,
                self._fstate,
                self._iparams,
                book.ts_ms,
                book.bid_px,
                book.bid_sz,
                book.ask_px,
                book.ask_sz,
            )

    def _absorb(self, bar: Bar, routes: npt.NDArray[np.int64] | None) -> bool:
        """Run the kernel on `bar` (signals only, or with `routes` the detector's step too); True when warm.

        Raises:
            ValueError: the bar is not newer than the previous one.
        """
        i = self._istate
        # a book of another symbol is never fresh for this bar (kept for later bars all the same)
        foreign = bool(i[_I_HAS_BOOK]) and self._book_symbol != bar.symbol
        if foreign:
            i[_I_HAS_BOOK] = 0
        if routes is None:
            status = _k.signals(
                i,
                self._fstate,
                self._iparams,
                self._fparams,
                bar.start_ms,
                bar.close,
                bar.volume,
                self._iout,
                self._fout,
            )
        else:
            status = _k.step(
                i,
                self._fstate,
                self._iparams,
                self._fparams,
                routes,
                bar.start_ms,
                bar.close,
                bar.volume,
                self._iout,
                self._fout,
            )
        if foreign:
            i[_I_HAS_BOOK] = 1
        if status != _k.SLOTS["OK"]:
            raise ValueError(
                f"{bar.symbol}: expected bars in time order, got start_ms={bar.start_ms} "
                f"after {int(i[_I_LAST_START_MS])}"
            )
        return bool(self._iout[_O_WARM])

    def _signals(self) -> Signals:
        """The signals of the bar just absorbed (warm)."""
        f = self._fout.tolist()
        book = bool(self._iout[_O_BOOK])
        return Signals(
            vol=f[_G_VOL],
            efficiency=f[_G_EFF],
            trend=f[_G_TREND],
            volume_z=f[_G_VOLUME_Z],
            spread_bps=f[_G_SPREAD] if book else None,
            imbalance=f[_G_IMB] if book else None,
            vol_rel=f[_G_VOL_REL],
        )

    def update(self, bar: Bar) -> Signals | None:
        """Absorb a confirmed bar; return its signals, or None while warming up.

        Raises:
            ValueError: the bar is not newer than the previous one.
        """
        return self._signals() if self._absorb(bar, None) else None


def _run_bars(
    state: RegimeSignals, routes: npt.NDArray[np.int64], bars: Sequence[Bar]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """One call of the regime kernel's T-bar loop over `bars` (no books) from `state`: (iout, fout) rows.

    Raises:
        ValueError: a bar is not newer than the previous one.
    """
    n = len(bars)
    iout = np.zeros((n, _k.SLOTS["N_IOUT"]), dtype=np.int64)
    fout = np.zeros((n, _k.SLOTS["N_FOUT"]), dtype=np.float64)
    done = _k.run(
        state._istate,
        state._fstate,
        state._iparams,
        state._fparams,
        routes,
        np.fromiter((b.start_ms for b in bars), dtype=np.int64, count=n),
        np.fromiter((b.close for b in bars), dtype=np.float64, count=n),
        np.fromiter((b.volume for b in bars), dtype=np.float64, count=n),
        np.zeros(0, dtype=np.int64),
        np.zeros((0, 4), dtype=np.float64),
        iout,
        fout,
    )
    if done < n:
        raise ValueError(
            f"{bars[done].symbol}: expected bars in time order, got start_ms={bars[done].start_ms} "
            f"after {bars[done - 1].start_ms}"
        )
    return iout, fout


def replay_signals(
    bars: Sequence[Bar], cfg: RegimeConfig, *, interval_ms: int | None = None
) -> list[Signals]:
    """Signals of every warm bar of `bars` (bar-only: no book), in one kernel call over all of them.

    Raises:
        ValueError: a bar is not newer than the previous one.
    """
    state = RegimeSignals(cfg, interval_ms=interval_ms)
    # the regimes are not wanted here: every regime routes to tier 0
    iout, fout = _run_bars(state, np.zeros(len(REGIME_NAMES), dtype=np.int64), bars)
    return [
        Signals(
            vol=f[_G_VOL],
            efficiency=f[_G_EFF],
            trend=f[_G_TREND],
            volume_z=f[_G_VOLUME_Z],
            vol_rel=f[_G_VOL_REL],
        )
        for f in fout[iout[:, _O_WARM] != 0].tolist()
    ]


class RegimeDetector:
    """Regime state machine for one symbol: `update(bar) -> RegimeDecision` (a wrapper of
    `bot.core.kernels.regime.step` over the symbol's state arrays).

    Args:
        calibration: `manifest.json["regime_calibration"]` (from `calibrate`).
        cfg: windows, hysteresis, dwell, routes and threshold overrides.
        interval_ms: expected bar spacing (a gap restarts the signal warm-up; the regime is kept).
        symbol: the symbol decided, for its own calibration (None, or not calibrated: the pooled one).
        routes: the regime -> tier map (`resolve_routes`); None takes `cfg.routes`, which must then be a
            table.
    """

    def __init__(
        self,
        calibration: Mapping[str, Any],
        cfg: RegimeConfig,
        *,
        interval_ms: int | None = None,
        symbol: str | None = None,
        routes: Mapping[str, str] | None = None,
    ) -> None:
        self.cfg = cfg
        self.signals = RegimeSignals(cfg, interval_ms=interval_ms)
        p = self.signals._fparams
        p[_P_LO] = 1.0 - cfg.hysteresis
        p[_P_HI] = 1.0 + cfg.hysteresis
        self._routes = np.zeros(len(REGIME_NAMES), dtype=np.int64)
        self._tiers: tuple[str, ...] = ()
        self.thresholds = RegimeThresholdValues.resolve(calibration, cfg, symbol=symbol)
        self.routes = resolve_routes(cfg.routes if routes is None else routes, None)

    @property
    def thresholds(self) -> RegimeThresholdValues:
        """The resolved thresholds; setting them (a hot reload) rewrites the kernel's parameter row."""
        return self._thresholds

    @thresholds.setter
    def thresholds(self, th: RegimeThresholdValues) -> None:
        p = self.signals._fparams
        for slot, key in zip(_P_THRESHOLDS, THRESHOLD_KEYS, strict=True):
            p[slot] = getattr(th, key)
        p[_P_VOL_REL] = 1.0 if th.vol_signal == "vol_rel" else 0.0
        self._thresholds = th

    @property
    def routes(self) -> dict[str, str]:
        """The regime -> tier map; setting it rewrites the kernel's route array."""
        return self._route_map

    @routes.setter
    def routes(self, routes: Mapping[str, str]) -> None:
        tiers = tuple(dict.fromkeys(routes[r] for r in REGIME_NAMES))
        self._routes[:] = [tiers.index(routes[r]) for r in REGIME_NAMES]
        self._tiers = tiers
        self._route_map = dict(routes)

    @property
    def regime(self) -> str:
        """The current regime."""
        return REGIME_NAMES[int(self.signals._istate[_I_REGIME])]

    @property
    def dwell_bars(self) -> int:
        """Bars in the current regime, the latest included."""
        return int(self.signals._istate[_I_DWELL])

    def copy(self) -> RegimeDetector:
        """An independent copy of the detector state (thresholds and config shared)."""
        new = copy.copy(self)
        new.signals = self.signals.copy()
        new._routes = self._routes.copy()
        return new

    def kernel_params(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """Copies of the regime kernel's parameter rows for this detector's config and symbol: `(iparams,
        fparams)` (windows and switches; resolved thresholds, hysteresis and decay). The backtest's
        one-call pass (`bot.sim.policy_pass`) runs `bot.core.kernels.regime.run` with them."""
        return self.signals._iparams.copy(), self.signals._fparams.copy()

    def route(self, regime: str) -> str:
        """Tier name configured for `regime`."""
        return self._route_map[regime]

    def update_book(self, book: BookTop) -> None:
        """Feed a top-of-book update (used only when `cfg.use_book`)."""
        self.signals.update_book(book)

    @staticmethod
    def _book(s: Signals) -> tuple[bool, float, bool, float]:
        return (
            s.spread_bps is not None,
            0.0 if s.spread_bps is None else s.spread_bps,
            s.imbalance is not None,
            0.0 if s.imbalance is None else s.imbalance,
        )

    def classify(self, s: Signals) -> str:
        """The regime the thresholds alone assign to `s` (no hysteresis)."""
        code = _k.classify(self.signals._fparams, self.thresholds.level(s), s.efficiency, *self._book(s))
        return REGIME_NAMES[int(code)]

    def holds(self, regime: str, s: Signals) -> bool:
        """Whether `regime`'s conditions still hold at its exit levels (thresholds relaxed by hysteresis)."""
        p = self.signals._fparams
        return bool(_k.holds(p, _REGIME_CODE[regime], self.thresholds.level(s), s.efficiency, *self._book(s)))

    def _decision(self, s: Signals | None) -> RegimeDecision:
        o = self.signals._iout.tolist()
        return RegimeDecision(
            REGIME_NAMES[o[_O_REGIME]],
            self._tiers[o[_O_TIER]],
            bool(o[_O_CHANGED]),
            s is not None,
            REGIME_NAMES[o[_O_CANDIDATE]],
            o[_O_DWELL],
            s,
        )

    def update(self, bar: Bar) -> RegimeDecision:
        """Absorb a confirmed bar and decide its regime."""
        sig = self.signals
        return self._decision(sig._signals() if sig._absorb(bar, self._routes) else None)

    def decide(self, s: Signals | None) -> RegimeDecision:
        """Advance the state machine by one bar given its signals (None = still warming up)."""
        sig = self.signals
        if s is None:
            warm, vol, vol_rel, eff, book = False, 0.0, 0.0, 0.0, (False, 0.0, False, 0.0)
        else:
            warm, vol, vol_rel, eff, book = True, s.vol, s.vol_rel, s.efficiency, self._book(s)
        _k.decide(
            sig._istate, sig._iparams, sig._fparams, self._routes, warm, vol, vol_rel, eff, *book, sig._iout
        )
        return self._decision(s)


def replay_regimes(
    bars: Sequence[Bar],
    calibration: Mapping[str, Any],
    cfg: RegimeConfig,
    *,
    interval_ms: int | None = None,
    symbol: str | None = None,
) -> list[str]:
    """The detector's regime of every bar of `bars` (one symbol, bar-only: no book), in one call of the
    regime kernel's T-bar loop, as `RegimeDetector.update` bar by bar gives them.

    Raises:
        ValueError: a bar is not newer than the previous one.
    """
    det = RegimeDetector(
        calibration, cfg, interval_ms=interval_ms, symbol=symbol, routes=dict.fromkeys(REGIME_NAMES, "_")
    )
    iout, _ = _run_bars(det.signals, det._routes, bars)
    return [REGIME_NAMES[c] for c in iout[:, _O_REGIME].tolist()]
