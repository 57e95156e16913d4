"""Risk metrics of a PnL series: drawdown, and how well sizing hit its volatility target, per regime.

Pure functions over arrays (and one reader of decision records); the backtest report and
`benchmarks/routing_study.py` use them.

- `max_drawdown`: largest fall of the cumulative PnL from its running peak (starting from 0), positive.
- Risk-targeting error. `[paper] sizing = "vol_target"` holds `target_vol_bps / forecast vol` units of
  `notional_usd`, so that the position's PnL over one bar has an RMS of `target_vol_bps` of `notional_usd`
  (`bot.core.paper.PaperTrader.target_units`). The realised counterpart, per bar that carried a position into
  it: `pnl_bps = holding_pnl_usd / notional_usd * 1e4` (the mark-to-market PnL of the position held over
  the bar; the bar's fees and slippage belong to the new trade, not to the risk carried). The **risk ratio**
  of a set of such bars is `RMS(pnl_bps) / target_vol_bps` (RMS, not the standard deviation: the target is
  an RMS of returns around zero). 1.0 is on target; `within(ratio, 0.25)` is the +-25% band. Grouped by the
  regime the position was decided in (`holding_regime`), i.e. the regime whose forecast sized it. Under
  fixed sizing the same ratio is the realised per-bar vol of one unit against the same target: its spread
  across regimes (`spread`: max / min) shows what risk targeting removes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from bot.core.decision import DecisionRecord

F64 = npt.NDArray[np.float64]

#: Band of `within` used by the studies: realised PnL vol within +-25% of the target.
RISK_TOLERANCE: Final = 0.25


def max_drawdown(pnl: F64) -> float:
    """Largest fall of cumsum(pnl) from its running peak (starting from 0), as a positive number."""
    a = np.asarray(pnl, dtype=np.float64)
    if a.size == 0:
        return 0.0
    eq = np.concatenate(([0.0], np.cumsum(a)))
    return float(np.max(np.maximum.accumulate(eq) - eq))


def rms(x: F64) -> float:
    """Root mean square of the finite values (NaN when there are none)."""
    a = np.asarray(x, dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(np.sqrt(np.mean(a * a))) if a.size else math.nan


def risk_ratio(pnl_bps: F64, target_bps: float) -> float:
    """`RMS(pnl_bps) / target_bps` (NaN for an empty series).

    Raises:
        ValueError: `target_bps` is not positive and finite.
    """
    if not 0.0 < target_bps < math.inf:
        raise ValueError(f"target_bps: expected a positive finite volatility target, got {target_bps!r}")
    return rms(pnl_bps) / target_bps


def within(ratio: float, tolerance: float = RISK_TOLERANCE) -> bool:
    """True when `ratio` is within `1 +- tolerance` (False for NaN: no evidence is not a pass)."""
    return math.isfinite(ratio) and abs(ratio - 1.0) <= tolerance


def spread(ratios: Iterable[float]) -> float:
    """max / min of the finite positive ratios (NaN with fewer than one)."""
    r = [x for x in ratios if math.isfinite(x) and x > 0.0]
    return max(r) / min(r) if r else math.nan


@dataclass(frozen=True, slots=True)
class RegimeRisk:
    """Risk of the bars that carried a position decided in one regime."""

    bars: int
    pnl_vol_bps: float  # RMS of per-bar holding PnL, bps of notional_usd
    ratio: float  # pnl_vol_bps / target_vol_bps
    mean_abs_units: float  # mean |position| carried (units of notional_usd)


def held_pnl_bps(records: Sequence[DecisionRecord], *, notional_usd: float) -> tuple[F64, list[str], F64]:
    """Per record that carried a position into its bar: holding PnL in bps of `notional_usd`, the regime
    the position was decided in, and the units carried (from the previous record of the same symbol)."""
    pnl: list[float] = []
    regimes: list[str] = []
    units: list[float] = []
    last: dict[str, float] = {}
    for r in records:
        if r.holding_regime is not None:
            pnl.append(r.holding_pnl_usd / notional_usd * 1e4)
            regimes.append(r.holding_regime)
            units.append(abs(last.get(r.symbol, 0.0)))
        last[r.symbol] = r.position
    return np.asarray(pnl, dtype=np.float64), regimes, np.asarray(units, dtype=np.float64)


def risk_by_regime(
    pnl_bps: F64,
    regimes: Sequence[str],
    target_bps: float,
    *,
    units: F64 | None = None,
    names: Sequence[str] = (),
) -> dict[str, RegimeRisk]:
    """`RegimeRisk` per regime of `pnl_bps` (one regime label per value); every name in `names` appears
    (with 0 bars and NaN when none carried a position), and `"all"` covers every value."""
    p = np.asarray(pnl_bps, dtype=np.float64)
    if len(regimes) != p.size:
        raise ValueError(f"regimes: expected one label per PnL value ({p.size}), got {len(regimes)}")
    u = np.full(p.size, math.nan) if units is None else np.asarray(units, dtype=np.float64)
    labels = np.asarray(regimes, dtype=object)
    out: dict[str, RegimeRisk] = {}
    for name in [*names, *sorted(set(regimes) - set(names)), "all"]:
        mask = np.ones(p.size, dtype=bool) if name == "all" else labels == name
        sub = p[mask]
        out[name] = RegimeRisk(
            bars=int(sub.size),
            pnl_vol_bps=rms(sub),
            ratio=risk_ratio(sub, target_bps),
            mean_abs_units=float(np.mean(u[mask])) if sub.size else math.nan,
        )
    return out


def risk_table(
    records: Sequence[DecisionRecord],
    *,
    notional_usd: float,
    target_vol_bps: float,
    names: Sequence[str] = (),
) -> dict[str, dict[str, float | None]]:
    """`risk_by_regime` of decision records (in time order) as plain dicts (report.json; NaN -> None)."""
    pnl, regimes, units = held_pnl_bps(records, notional_usd=notional_usd)
    table = risk_by_regime(pnl, regimes, target_vol_bps, units=units, names=names)
    return {k: _plain(v) for k, v in table.items()}


def _plain(r: RegimeRisk) -> dict[str, float | None]:
    def num(x: float) -> float | None:
        return x if math.isfinite(x) else None

    return {
        "bars": r.bars,
        "pnl_vol_bps": num(r.pnl_vol_bps),
        "ratio": num(r.ratio),
        "mean_abs_units": num(r.mean_abs_units),
    }


def ratios(table: Mapping[str, RegimeRisk | Mapping[str, float | None]], names: Sequence[str]) -> list[float]:
    """The ratios of `names` in a `risk_by_regime` / `risk_table` result (NaN where absent)."""
    out: list[float] = []
    for n in names:
        v = table.get(n)
        if isinstance(v, RegimeRisk):
            out.append(v.ratio)
        else:
            x = None if v is None else v.get("ratio")
            out.append(math.nan if x is None else float(x))
    return out
