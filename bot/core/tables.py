"""The engine's array state: one row per symbol of every kernel's tables, and the burst's input buffers.

`SymbolTables` owns, per symbol row, the feature kernel's state, the regime kernel's state and threshold
row, the latest feature row and regime outputs, the latest book's top and the row of the symbol in the paper
book. A bar close loads its bars into the input buffers (`load`) and steps the rows of its symbols with one
`run_rows` call per kernel (`step_features`, `step_regime`). Rows of removed symbols are reused; the tables
double when full.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from bot.core.bars import Bar, BookTop
from bot.core.features import N_FEATURES, rejected
from bot.core.kernels import features as _kf
from bot.core.kernels import paper as _kp
from bot.core.kernels import regime as _kr
from bot.core.params import REGIME_NAMES, RegimeConfig
from bot.core.thresholds import THRESHOLD_KEYS, RegimeThresholdValues, Signals

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

_R: Final = _kr.SLOTS
_O_WARM, _O_BOOK, _O_REGIME, _O_TIER = _R["O_WARM"], _R["O_BOOK"], _R["O_REGIME"], _R["O_TIER"]
_O_CHANGED, _O_CANDIDATE, _O_DWELL = _R["O_CHANGED"], _R["O_CANDIDATE"], _R["O_DWELL"]
_G_VOL, _G_VOL_REL, _G_EFF, _G_TREND = _R["G_VOL"], _R["G_VOL_REL"], _R["G_EFFICIENCY"], _R["G_TREND"]
_G_VOLUME_Z, _G_SPREAD, _G_IMB = _R["G_VOLUME_Z"], _R["G_SPREAD_BPS"], _R["G_IMBALANCE"]
_P_THRESHOLDS: Final = tuple(_R[f"P_{k.upper()}"] for k in THRESHOLD_KEYS)
_P_VOL_REL, _P_LO, _P_HI, _P_DECAY = _R["P_VOL_REL"], _R["P_LO"], _R["P_HI"], _R["P_DECAY"]
_F_HAS_LAST, _F_LAST_START = _kf.SLOT["HAS_LAST"], _kf.SLOT["LAST_START"]


@dataclass(frozen=True, slots=True)
class RegimeDecision:
    """The detector's output for one confirmed bar.

    `signals` is None while warming up (then `regime` is the fallback "normal" and `warm` is False);
    `candidate` is what the thresholds alone say, before hysteresis and dwell; `dwell_bars` counts bars in
    `regime` including this one.
    """

    regime: str
    tier: str
    changed: bool
    warm: bool
    candidate: str
    dwell_bars: int
    signals: Signals | None


def regime_decision(iout: list[int], fout: list[float], tiers: Sequence[str]) -> RegimeDecision:
    """The decision of the regime kernel's output rows `iout` / `fout` (as lists) with its tier names."""
    signals = None
    if iout[_O_WARM]:
        book = bool(iout[_O_BOOK])
        signals = Signals(
            vol=fout[_G_VOL],
            efficiency=fout[_G_EFF],
            trend=fout[_G_TREND],
            volume_z=fout[_G_VOLUME_Z],
            spread_bps=fout[_G_SPREAD] if book else None,
            imbalance=fout[_G_IMB] if book else None,
            vol_rel=fout[_G_VOL_REL],
        )
    return RegimeDecision(
        REGIME_NAMES[iout[_O_REGIME]],
        tiers[iout[_O_TIER]],
        bool(iout[_O_CHANGED]),
        signals is not None,
        REGIME_NAMES[iout[_O_CANDIDATE]],
        iout[_O_DWELL],
        signals,
    )


class BurstInputs:
    """A bar close's bars as the kernels take them (the first N entries of each buffer), and each bar's
    routed tier and regime codes once the regime kernel ran."""

    def __init__(self, cap: int) -> None:
        self.rows: I64 = np.zeros(cap, dtype=np.int64)
        self.start_ms: I64 = np.zeros(cap, dtype=np.int64)
        self.ohlcv: F64 = np.zeros((5, cap), dtype=np.float64)
        self.bid: F64 = np.zeros(cap, dtype=np.float64)
        self.ask: F64 = np.zeros(cap, dtype=np.float64)
        self.tier: I64 = np.zeros(cap, dtype=np.int64)
        self.regime: I64 = np.zeros(cap, dtype=np.int64)

    @property
    def close(self) -> F64:
        close: F64 = self.ohlcv[3]
        return close


#: The per-row tables (attribute, its fill for a new row); `vol_factor` is set by the engine.
_ROW_TABLES: Final = (
    "feat",
    "istate",
    "fstate",
    "fparams",
    "x",
    "has_x",
    "seen",
    "iout",
    "fout",
    "bid",
    "ask",
)


class SymbolTables:
    """Every symbol's engine state as table rows (see the module docstring).

    Args:
        cfg: the regime windows, switches and hysteresis (thresholds come per symbol).
        interval_ms: expected bar spacing; a different spacing is a gap (features and regime warm up again).
    """

    def __init__(self, cfg: RegimeConfig, interval_ms: int | None, cap: int = 8) -> None:
        self.cfg = cfg
        self.interval_ms = interval_ms
        self.iparams: I64 = _kr.make_iparams(
            vol_window=cfg.vol_window,
            trend_window=cfg.trend_window,
            volume_window=cfg.volume_window,
            interval_ms=interval_ms,
            use_book=cfg.use_book,
            min_dwell_bars=cfg.min_dwell_bars,
        )
        self.rows: dict[str, int] = {}
        self.free: list[int] = []
        self.size = 0
        self.any_book = False
        self._allocate(cap)

    def _allocate(self, cap: int) -> None:
        self.cap = cap
        self.feat: F64 = np.zeros((cap, _kf.STATE_SLOTS), dtype=np.float64)
        self.istate, self.fstate = _kr.new_state(self.iparams, cap)
        self.fparams: F64 = np.zeros((cap, _R["N_FPARAMS"]), dtype=np.float64)
        self.x: F64 = np.full((cap, N_FEATURES), np.nan)
        self.has_x = np.zeros(cap, dtype=np.bool_)
        self.seen = np.zeros(cap, dtype=np.bool_)
        self.iout: I64 = np.zeros((cap, _R["N_IOUT"]), dtype=np.int64)
        self.fout: F64 = np.zeros((cap, _R["N_FOUT"]), dtype=np.float64)
        self.bid: F64 = np.zeros(cap, dtype=np.float64)
        self.ask: F64 = np.zeros(cap, dtype=np.float64)
        self.paper_row: I64 = np.zeros(cap, dtype=np.int64)
        self.vol_factor: F64 = np.ones((cap, 1, len(REGIME_NAMES)), dtype=np.float64)
        self._burst(cap)
        self._views()

    def _views(self) -> None:
        """Typed views of every row (the kernels' `view`s): the single-symbol path passes them to the
        kernels' `step` in place of numpy arrays, which skips a buffer check per array and call."""
        self.iparams_v = _kr.view_i(self.iparams)
        self.feat_v = [_kf.view(row) for row in self.feat]
        self.x_v = [_kf.view(row) for row in self.x]
        self.istate_v = [_kr.view_i(row) for row in self.istate]
        self.fstate_v = [_kr.view_f(row) for row in self.fstate]
        self.fparams_v = [_kr.view_f(row) for row in self.fparams]
        self.iout_v = [_kr.view_i(row) for row in self.iout]
        self.x_rows = list(self.x)  # numpy views of each row (no slicing per call)
        self.fout_v = [_kr.view_f(row) for row in self.fout]

    def _burst(self, cap: int) -> None:
        self.inputs = BurstInputs(cap)
        self.xin: F64 = np.full((cap, N_FEATURES), np.nan)
        self.fstatus = np.zeros(cap, dtype=np.int8)
        self.biout: I64 = np.zeros((cap, _R["N_IOUT"]), dtype=np.int64)
        self.bfout: F64 = np.zeros((cap, _R["N_FOUT"]), dtype=np.float64)
        self.paper_out: F64 = np.zeros((cap, _kp.SLOTS["N_OUT"]), dtype=np.float64)

    def _grow(self) -> None:
        old = {name: getattr(self, name) for name in (*_ROW_TABLES, "paper_row", "vol_factor")}
        n = self.cap
        self._allocate(2 * n)
        for name, table in old.items():
            if name == "vol_factor":
                self.vol_factor = np.ones((2 * n, *table.shape[1:]), dtype=np.float64)
            getattr(self, name)[:n] = table
        self._views()

    def threshold_row(self, th: RegimeThresholdValues) -> F64:
        """The regime kernel's parameter row for resolved thresholds `th` under this config."""
        p = np.zeros(_R["N_FPARAMS"], dtype=np.float64)
        for slot, key in zip(_P_THRESHOLDS, THRESHOLD_KEYS, strict=True):
            p[slot] = getattr(th, key)
        p[_P_VOL_REL] = 1.0 if th.vol_signal == "vol_rel" else 0.0
        p[_P_LO] = 1.0 - self.cfg.hysteresis
        p[_P_HI] = 1.0 + self.cfg.hysteresis
        p[_P_DECAY] = 0.5 ** (1.0 / self.cfg.vol_long_halflife_bars)
        return p

    def add(self, symbol: str, fparams: F64) -> int:
        """A fresh row for `symbol` (no bar seen) with threshold row `fparams`; returns the row."""
        if self.free:
            r = self.free.pop()
        else:
            if self.size == self.cap:
                self._grow()
            r = self.size
            self.size += 1
        self.rows[symbol] = r
        _kf.init(self.feat[r], self.interval_ms or 0)
        istate, fstate = _kr.new_state(self.iparams)
        self.istate[r], self.fstate[r] = istate, fstate
        self.fparams[r] = fparams
        self.x[r] = np.nan
        self.has_x[r] = self.seen[r] = False
        self.iout[r] = 0
        self.fout[r] = 0.0
        self.bid[r] = self.ask[r] = 0.0
        return r

    def remove(self, symbol: str) -> None:
        """Free `symbol`'s row (a no-op if not held)."""
        r = self.rows.pop(symbol, None)
        if r is not None:
            self.free.append(r)

    def set_book(self, r: int, book: BookTop) -> None:
        """Row `r`'s latest book: the regime's spread and imbalance (when `use_book`), the fills' mid."""
        if self.cfg.use_book:
            _kr.set_book(
                self.istate[r],
                self.fstate[r],
                self.iparams,
                book.ts_ms,
                book.bid_px,
                book.bid_sz,
                book.ask_px,
                book.ask_sz,
            )
        self.bid[r], self.ask[r] = book.bid_px, book.ask_px
        self.any_book = True

    def last_start_ms(self, r: int) -> int | None:
        """start_ms of row `r`'s newest bar (None before the first)."""
        return int(self.feat[r, _F_LAST_START]) if self.feat[r, _F_HAS_LAST] else None

    def load(self, rows: list[int], bars: Sequence[Bar]) -> BurstInputs:
        """Write the burst's rows and bars into the input buffers."""
        ins = self.inputs
        n = len(rows)
        if n == 1:
            bar, r = bars[0], rows[0]
            ins.rows[0] = r
            ins.start_ms[0] = bar.start_ms
            ins.ohlcv[:, 0] = (bar.open, bar.high, bar.low, bar.close, bar.volume)
            ins.bid[0], ins.ask[0] = self.bid[r], self.ask[r]
            return ins
        ins.rows[:n] = rows
        ins.start_ms[:n] = [b.start_ms for b in bars]
        ins.ohlcv[:, :n] = np.array([(b.open, b.high, b.low, b.close, b.volume) for b in bars]).T
        ins.bid[:n] = self.bid[ins.rows[:n]]
        ins.ask[:n] = self.ask[ins.rows[:n]]
        return ins

    def step_features(self, n: int) -> int:
        """The feature kernel over the burst's N rows; returns N or the index of the first rejected bar."""
        ins = self.inputs
        rows = ins.rows[:n]
        o, h, lo, c, v = ins.ohlcv
        bad = int(_kf.run_rows(rows, self.feat, ins.start_ms, o, h, lo, c, v, self.xin, self.fstatus))
        ok = self.fstatus[:n] >= 0
        if bad == n:
            self.x[rows] = self.xin[:n]
            self.has_x[rows] = self.fstatus[:n] == _kf.ROW
        else:
            self.x[rows[ok]] = self.xin[:n][ok]
            self.has_x[rows[ok]] = self.fstatus[:n][ok] == _kf.ROW
        return bad

    def rejected(self, bar: Bar, i: int) -> ValueError:
        """The error of the burst's bar `i`, which the feature kernel rejected."""
        r = int(self.inputs.rows[i])
        fields = f"open={bar.open} high={bar.high} low={bar.low} close={bar.close} volume={bar.volume}"
        return rejected(int(self.fstatus[i]), bar.symbol, bar.start_ms, self.last_start_ms(r), fields)

    def step_regime(self, n: int, routes: I64) -> None:
        """The regime kernel over the burst's N rows (their features accepted them, so none is out of
        order): each bar's routed tier and regime into the inputs, the outputs kept per row."""
        ins = self.inputs
        rows = ins.rows[:n]
        c, v = ins.ohlcv[3], ins.ohlcv[4]
        _kr.run_rows(
            rows, self.istate, self.fstate, self.iparams, self.fparams, routes, ins.start_ms, c, v,
            self.biout, self.bfout,
        )  # fmt: skip
        ins.tier[:n] = self.biout[:n, _O_TIER]
        ins.regime[:n] = self.biout[:n, _O_REGIME]
        self.iout[rows] = self.biout[:n]
        self.fout[rows] = self.bfout[:n]
        self.seen[rows] = True

    def decided(self, n: int, flags: list[bool]) -> npt.NDArray[np.intp]:
        """Indices into the burst of the bars to decide: flagged, with a feature row."""
        if n == 1:
            return _ONE if flags[0] and self.fstatus[0] == _kf.ROW else _NONE
        return np.flatnonzero((self.fstatus[:n] == _kf.ROW) & np.asarray(flags, dtype=np.bool_))

    def decision(self, r: int, tiers: Sequence[str]) -> RegimeDecision:
        """Row `r`'s latest regime decision."""
        return regime_decision(self.iout[r].tolist(), self.fout[r].tolist(), tiers)

    def save(self, r: int) -> list[npt.NDArray[np.generic]]:
        """Copies of row `r` of every table (`restore` puts them back)."""
        return [getattr(self, name)[r].copy() for name in _ROW_TABLES]

    def restore(self, r: int, saved: list[npt.NDArray[np.generic]]) -> None:
        for name, row in zip(_ROW_TABLES, saved, strict=True):
            getattr(self, name)[r] = row


_ONE: Final = np.zeros(1, dtype=np.intp)
_NONE: Final = np.zeros(0, dtype=np.intp)
