"""The paper book of many symbols as the paper kernel's tables: one row per symbol, stepped in place.

`PaperBook` holds, per symbol row, the kernel's state (`bot.core.kernels.paper`: position, average entry,
mark, realised PnL, fees, fills, the owning tier and regime as codes) and the per-tier / per-regime PnL
attribution (NaN: never credited). A bar close steps the rows of its symbols in one kernel call
(`step_rows`); a `PositionState` (what the ledger stores and restores) is built from a row only when asked
(`state`), and a restored one is written back into a row (`load`). Tier and regime names map to codes
here; a name seen for the first time (a new tier after a reload, a restored state's key) gets the next
code, and the attribution tables grow a column.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

from bot.core.kernels import paper as _kp
from bot.core.params import REGIME_NAMES

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

_S: Final = _kp.SLOTS
_S_UNITS, _S_QTY, _S_AVG, _S_MARK = _S["S_UNITS"], _S["S_QTY"], _S["S_AVG"], _S["S_MARK"]
_S_HAS_LAST, _S_LAST, _S_HAS_MARK = _S["S_HAS_LAST"], _S["S_LAST_START_MS"], _S["S_HAS_MARK"]
_S_REALIZED, _S_FEES, _S_N_FILLS = _S["S_REALIZED"], _S["S_FEES"], _S["S_N_FILLS"]
_S_TIER, _S_REGIME = _S["S_TIER"], _S["S_REGIME"]
_N_STATE, _N_OUT = _S["N_STATE"], _S["N_OUT"]
_NO_BOOK: Final = np.zeros(0, dtype=np.float64)


class Codes:
    """Names <-> integer codes, in order of first sight (regimes start with `REGIME_NAMES` in order)."""

    __slots__ = ("code", "names")

    def __init__(self, names: Sequence[str] = ()) -> None:
        self.names: list[str] = []
        self.code: dict[str, int] = {}
        for name in names:
            self.of(name)

    def of(self, name: str) -> int:
        """The code of `name` (a new one on first sight)."""
        code = self.code.get(name)
        if code is None:
            code = self.code[name] = len(self.names)
            self.names.append(name)
        return code

    def name(self, code: float) -> str | None:
        """The name of `code` (None for a negative code: nobody)."""
        return None if code < 0 else self.names[int(code)]


class PaperBook:
    """Every symbol's paper state as rows of the kernel's tables.

    Args:
        params: the paper kernel's parameter row (`bot.core.paper.kernel_params`).
    """

    def __init__(self, params: F64) -> None:
        self.params = params
        self.rows: dict[str, int] = {}
        self.symbols: list[str] = []
        self.tiers = Codes()
        self.regimes = Codes(REGIME_NAMES)
        self.state: F64 = _kp.new_state(8)
        self.pnl_tier: F64 = np.full((8, 4), np.nan)
        self.pnl_regime: F64 = np.full((8, len(REGIME_NAMES)), np.nan)
        #: One bar's output row (the single-symbol path) and typed views for `step` (see `views`).
        self.out: F64 = np.zeros(_N_OUT, dtype=np.float64)
        self.views()

    def views(self) -> None:
        """(Re)build the kernel's typed views of the tables' rows (after a table is replaced): the engine's
        single-symbol path passes them to `bot.core.kernels.paper.step` in place of numpy arrays."""
        view = _kp.view
        self.params_v = view(self.params)
        self.out_v = view(self.out)
        self.state_v = [view(row) for row in self.state]
        self.pnl_tier_v = [view(row) for row in self.pnl_tier]
        self.pnl_regime_v = [view(row) for row in self.pnl_regime]

    def row(self, symbol: str) -> int:
        """The row of `symbol`, a new flat and unmarked one on first sight."""
        r = self.rows.get(symbol)
        if r is None:
            r = self.rows[symbol] = len(self.symbols)
            self.symbols.append(symbol)
            if r >= self.state.shape[0]:
                grow = self.state.shape[0]
                self.state = np.vstack([self.state, _kp.new_state(grow)])
                self.pnl_tier = np.vstack([self.pnl_tier, np.full((grow, self.pnl_tier.shape[1]), np.nan)])
                self.pnl_regime = np.vstack(
                    [self.pnl_regime, np.full((grow, self.pnl_regime.shape[1]), np.nan)]
                )
                self.views()
        return r

    def tier_code(self, tier: str) -> int:
        """The code of `tier`; the attribution table grows a column for a new one."""
        code = self.tiers.of(tier)
        if code >= self.pnl_tier.shape[1]:
            self.pnl_tier = _fit(self.pnl_tier, code)
            self.views()
        return code

    def regime_code(self, regime: str) -> int:
        """The code of `regime` (any name a restored state holds)."""
        code = self.regimes.of(regime)
        if code >= self.pnl_regime.shape[1]:
            self.pnl_regime = _fit(self.pnl_regime, code)
            self.views()
        return code

    def clear(self, symbol: str) -> None:
        """Make `symbol`'s row flat and unmarked, with nothing credited (before `load`)."""
        r = self.row(symbol)
        self.state[r] = _kp.new_state()
        self.pnl_tier[r] = np.nan
        self.pnl_regime[r] = np.nan

    def save(self, r: int) -> tuple[F64, F64, F64]:
        """Copies of row `r` (`restore` puts them back: a rehearsal leaves the book as it was)."""
        return self.state[r].copy(), self.pnl_tier[r].copy(), self.pnl_regime[r].copy()

    def restore(self, r: int, saved: tuple[F64, F64, F64]) -> None:
        state, by_tier, by_regime = saved
        self.state[r] = state
        self.pnl_tier[r, : by_tier.shape[0]] = by_tier
        self.pnl_regime[r, : by_regime.shape[0]] = by_regime

    def step_rows(
        self,
        rows: I64,
        start_ms: I64,
        close: F64,
        prediction: F64,
        vol_forecast: F64,
        bid_px: F64,
        ask_px: F64,
        tier: I64,
        regime: I64,
        out: F64,
    ) -> int:
        """One kernel call over bars of `rows` (`bot.core.kernels.paper.run_rows`); empty `bid_px`: no books.

        Returns:
            len(rows), or the index of the first bar the kernel refused (its row is untouched).
        """
        return int(
            _kp.run_rows(
                rows,
                self.state,
                self.params,
                start_ms,
                close,
                prediction,
                vol_forecast,
                bid_px if bid_px.shape[0] else _NO_BOOK,
                ask_px if ask_px.shape[0] else _NO_BOOK,
                tier,
                regime,
                self.pnl_tier,
                self.pnl_regime,
                out,
            )
        )

    def attribution(self, r: int) -> tuple[dict[str, float], dict[str, float]]:
        """Row `r`'s PnL per tier and per regime (the names credited so far)."""
        tiers, regimes = self.tiers.names, self.regimes.names
        by_tier = {tiers[k]: v for k, v in enumerate(self.pnl_tier[r, : len(tiers)].tolist()) if v == v}
        by_regime = {
            regimes[k]: v for k, v in enumerate(self.pnl_regime[r, : len(regimes)].tolist()) if v == v
        }
        return by_tier, by_regime

    def credit(self, r: int, by_tier: Mapping[str, float], by_regime: Mapping[str, float]) -> None:
        """Write PnL per tier and per regime into row `r` (a restored state's)."""
        for name, value in by_tier.items():
            code = self.tier_code(name)  # before the table is read: a new code grows it
            self.pnl_tier[r, code] = value
        for name, value in by_regime.items():
            code = self.regime_code(name)
            self.pnl_regime[r, code] = value


def _fit(table: F64, code: int) -> F64:
    """`table` with at least `code + 1` columns (new ones NaN)."""
    if code < table.shape[1]:
        return table
    extra = max(code + 1 - table.shape[1], table.shape[1])
    return np.hstack([table, np.full((table.shape[0], extra), np.nan)])


def finite_or_nan(value: float | None) -> float:
    """A vol forecast as the kernel takes it: NaN for none."""
    return math.nan if value is None else value
