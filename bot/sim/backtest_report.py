"""The backtest's report: metrics of decision records per symbol, tier and regime, and the PNGs.

Every metric reads the decisions as columns (`Columns`: one array per record field the report uses, row r
being record r of the run), from the kernels' output arrays (`bot.sim.pass_records.RunDecisions`) or from
decision records (`Columns.of_records`), nothing else; the two give the same report.json:

- `bars`: decided bars; `exposure`: share of them ending with a position.
- `ic`: Spearman rank correlation of `prediction` with the realised return over `[distill] horizon_bars`
  (`close[t + h] / close[t] - 1`; bars whose horizon runs past the data or over a gap are left out; ties get
  their average rank); `hit_rate`: share of those bars where the signs agree (zero predictions or returns
  left out).
- `pnl_usd`: sum of `bar_pnl_usd` (marked to the close, after fees and slippage); `fees_usd`.
- `turnover`: traded notional / `[paper] notional_usd`.
- `max_drawdown_usd`: largest fall of the cumulative PnL from its running peak (for a tier or a regime: of
  that subset's bars in time order).
- `sharpe`: mean / standard deviation of the per-bar PnL x sqrt(bars per year), bars per year from the
  bar interval (365 days: crypto trades every day). The total sums the symbols' PnL per bar time first.
- `risk` (per regime the position was decided in, and `all`): the risk-targeting error of
  `bot.sim.riskmetrics`: RMS of the per-bar holding PnL of bars that carried a position, in bps of
  `notional_usd` (`pnl_vol_bps`), and its `ratio` to `[paper] target_vol_bps` (1.0 = on target).

Buy-and-hold per symbol: `notional_usd` bought at the first decided close (slippage and taker fee paid) and
held to the last one (fee and slippage paid on exit).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from bot.config import Config
from bot.core.bars import interval_ms
from bot.core.decision import DecisionRecord, encode_lines
from bot.core.params import REGIME_NAMES
from bot.sim.riskmetrics import max_drawdown, risk_by_regime

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bool = npt.NDArray[np.bool_]
YEAR_MS = 365 * 86_400_000


@dataclass(frozen=True, slots=True)
class Columns:
    """The fields of a run's decision records the report reads, one array each, in the records' order.

    Names are codes into `symbols` / `tiers` / `regimes`; `holding_regime` is -1 where the record has none.
    `fill_notional` holds each record's fills' notionals (USD) left-aligned, `n_fills` how many it has.
    """

    symbols: tuple[str, ...]
    tiers: tuple[str, ...]
    regimes: tuple[str, ...]
    symbol: I64
    start_ms: I64
    close: F64
    tier: I64
    regime: I64
    prediction: F64
    position: F64
    fee_usd: F64
    bar_pnl_usd: F64
    holding_pnl_usd: F64
    holding_regime: I64
    n_fills: I64
    fill_notional: F64  # [n, max fills per record]

    @property
    def n(self) -> int:
        return int(self.start_ms.shape[0])

    @classmethod
    def of_records(cls, records: Sequence[DecisionRecord]) -> Columns:
        """The columns of decision records."""
        symbols = tuple(dict.fromkeys(r.symbol for r in records))
        tiers = tuple(sorted({r.tier for r in records}))
        regimes = (*REGIME_NAMES, *sorted({r.regime for r in records} - set(REGIME_NAMES)))
        held = sorted({r.holding_regime for r in records if r.holding_regime is not None} - set(regimes))
        regimes = (*regimes, *held)

        def codes(values: list[str | None], names: tuple[str, ...]) -> I64:
            at = {k: i for i, k in enumerate(names)}
            return np.array([-1 if v is None else at[v] for v in values], dtype=np.int64)

        def floats(name: str) -> F64:
            return np.array([getattr(r, name) for r in records], dtype=np.float64).reshape(-1)

        width = max((len(r.fills) for r in records), default=0)
        notional = np.zeros((len(records), width), dtype=np.float64)
        for i, r in enumerate(records):
            notional[i, : len(r.fills)] = [f.notional_usd for f in r.fills]
        return cls(
            symbols=symbols,
            tiers=tiers,
            regimes=regimes,
            symbol=codes([r.symbol for r in records], symbols),
            start_ms=np.array([r.start_ms for r in records], dtype=np.int64).reshape(-1),
            close=floats("close"),
            tier=codes([r.tier for r in records], tiers),
            regime=codes([r.regime for r in records], regimes),
            prediction=floats("prediction"),
            position=floats("position"),
            fee_usd=floats("fee_usd"),
            bar_pnl_usd=floats("bar_pnl_usd"),
            holding_pnl_usd=floats("holding_pnl_usd"),
            holding_regime=codes([r.holding_regime for r in records], regimes),
            n_fills=np.array([len(r.fills) for r in records], dtype=np.int64).reshape(-1),
            fill_notional=notional,
        )


class Decisions(Protocol):
    """A run's decisions held as the kernels' output arrays (`bot.sim.pass_records.RunDecisions`)."""

    def records(self) -> list[DecisionRecord]: ...
    def lines(self) -> bytes: ...
    def columns(self) -> Columns: ...


Closes = Sequence[tuple[int, float]] | tuple[I64, F64]


class RunResult:
    """What one pass over the data produced: the decisions (as `records`, or as the kernels' arrays
    `decided`, from which records are built on first use) and the run's facts.

    Args:
        closes: per symbol, its bar times and closes from its first decided bar on: `(start_ms, close)`
            pairs or a pair of arrays (the realised returns and buy-and-hold).
        routes: the regime -> tier map served (auto resolved).
    """

    def __init__(
        self,
        records: list[DecisionRecord] | None = None,
        warmup_bars: int = 0,
        wall_s: float = 0.0,
        cache_hits: int = 0,
        cache_s: float = 0.0,
        max_abs_diff: float = 0.0,
        symbols: tuple[str, ...] = (),
        closes: Mapping[str, Closes] | None = None,
        routes: Mapping[str, str] | None = None,
        *,
        decided: Decisions | None = None,
    ) -> None:
        if (records is None) == (decided is None):
            raise ValueError("RunResult: expected exactly one of records and decided")
        self._records = records
        self.decided = decided
        self.warmup_bars = warmup_bars
        self.wall_s = wall_s
        self.cache_hits = cache_hits
        self.cache_s = cache_s
        self.max_abs_diff = max_abs_diff
        self.symbols = symbols
        self.closes = dict(closes or {})
        self.routes = dict(routes or {})

    @property
    def records(self) -> list[DecisionRecord]:
        """The decision records in the engine's order (built from `decided` on first use)."""
        if self._records is None:
            assert self.decided is not None
            self._records = self.decided.records()
        return self._records

    @property
    def n_decided(self) -> int:
        return len(self._records) if self._records is not None else self.columns().n

    def lines(self) -> bytes:
        """decisions.jsonl: `encode_lines` of the records."""
        return self.decided.lines() if self.decided is not None else encode_lines(self.records)

    def columns(self) -> Columns:
        """The report's columns of the decisions."""
        return self.decided.columns() if self.decided is not None else Columns.of_records(self.records)

    def closes_of(self, symbol: str) -> tuple[I64, F64]:
        """`symbol`'s bar times and closes from its first decided bar on, as arrays."""
        got = self.closes.get(symbol)
        if got is None:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
        if isinstance(got, tuple) and len(got) == 2 and isinstance(got[0], np.ndarray):
            return got[0], got[1]
        pairs = list(got)
        return (
            np.array([t for t, _ in pairs], dtype=np.int64).reshape(-1),
            np.array([c for _, c in pairs], dtype=np.float64).reshape(-1),
        )


def _ranks(a: F64, order: I64 | None = None) -> F64:
    """Average ranks (ties share the mean of their positions), from one sort; `order`: an argsort of `a`
    already known (ties in any order: the averages are the same)."""
    if order is None:
        order = np.argsort(a)
    s = a[order]
    starts = np.flatnonzero(np.concatenate(([True], s[1:] != s[:-1])))
    ends = np.append(starts[1:], a.size)
    ranks = np.empty(a.size, dtype=np.float64)
    ranks[order] = np.repeat((starts + ends - 1) / 2.0, ends - starts)
    return ranks


def spearman(pred: F64, real: F64, orders: tuple[I64, I64] | None = None) -> float:
    """Spearman rank correlation (0 for fewer than 3 pairs or a constant side); `orders`: argsorts of
    `pred` and `real` already known."""
    if pred.size < 3 or np.ptp(pred) == 0.0 or np.ptp(real) == 0.0:
        return 0.0
    rp, ry = (
        (_ranks(pred), _ranks(real)) if orders is None else (_ranks(pred, orders[0]), _ranks(real, orders[1]))
    )
    rho = float(np.corrcoef(rp, ry)[0, 1])
    return rho if math.isfinite(rho) else 0.0


class _Sorted:
    """Argsorts of a run's predictions and realised returns over all its records, so a subset's argsort is
    a filter of them (linear) instead of a sort."""

    def __init__(self, prediction: F64, real: F64) -> None:
        self.pred = np.argsort(prediction)
        self.real = np.argsort(real)
        self._pos = np.full(prediction.shape[0], -1, dtype=np.int64)

    def of(self, rows: I64) -> tuple[I64, I64]:
        """Argsorts of the values at `rows` (distinct), as positions in `rows`."""
        pos = self._pos
        pos[rows] = np.arange(rows.shape[0], dtype=np.int64)
        try:
            p, r = pos[self.pred], pos[self.real]
            return p[p >= 0], r[r >= 0]
        finally:
            pos[rows] = -1


def sharpe(pnl: F64, bars_per_year: float) -> float:
    """Annualised mean/std of per-bar PnL (0 when flat)."""
    if pnl.size < 2:
        return 0.0
    sd = float(np.std(pnl, ddof=1))
    return float(np.mean(pnl)) / sd * math.sqrt(bars_per_year) if sd > 0 else 0.0


def metrics(
    cols: Columns,
    rows: I64,
    real: F64,
    *,
    notional_usd: float,
    bars_per_year: float,
    sorted_: _Sorted | None = None,
) -> dict[str, Any]:
    """The metric set of records `rows` of `cols` (in time order); `real[i]` is row i's realised return
    (NaN: none). Sums run in record order, as a loop over the records adds them. `sorted_`: the run's
    argsorts, whose real returns `real` must be (at `rows`)."""
    n = int(rows.shape[0])
    if n == 0:
        return {"bars": 0}
    pred = cols.prediction[rows]
    pnl = cols.bar_pnl_usd[rows]
    ok = np.isfinite(real)
    p, y = pred[ok], real[ok]
    nz = (np.sign(p) != 0) & (np.sign(y) != 0)
    filled = rows[cols.n_fills[rows] > 0]  # the rows with a fee and fills (the others add an int 0)
    notional = cols.fill_notional[filled]
    fills = notional[np.arange(notional.shape[1]) < cols.n_fills[filled][:, None]]  # row-major: record order
    traded = sum(np.abs(fills).tolist())
    return {
        "bars": n,
        "ic": spearman(p, y, None if sorted_ is None else sorted_.of(rows[ok])),
        "hit_rate": float(np.mean(np.sign(p[nz]) == np.sign(y[nz]))) if nz.any() else 0.0,
        "pnl_usd": float(pnl.sum()),
        "fees_usd": float(sum(cols.fee_usd[filled].tolist())),
        "turnover": traded / notional_usd,
        "max_drawdown_usd": max_drawdown(pnl),
        "sharpe": sharpe(pnl, bars_per_year),
        "exposure": int(np.count_nonzero(cols.position[rows] != 0)) / n,
    }


def realised(start_ms: I64, close: F64, times: I64, closes: F64, step_ms: int) -> F64:
    """Each record's `close[t + step_ms] / close[t] - 1` (NaN when that bar is not in `times`/`closes`,
    ascending)."""
    out = np.full(start_ms.shape[0], np.nan, dtype=np.float64)
    if times.size == 0:
        return out
    later = start_ms + step_ms
    j = np.minimum(np.searchsorted(times, later), times.size - 1)
    found = (times[j] == later) & (close > 0)
    out[found] = closes[j[found]] / close[found] - 1.0
    return out


def buy_and_hold(closes: F64, cfg: Config, bars_per_year: float) -> dict[str, Any]:
    """Metrics of holding `notional_usd` long from the first close to the last (fees and slippage paid)."""
    px = np.asarray(closes, dtype=np.float64)
    if px.size < 2:
        return {"bars": int(px.size)}
    p = cfg.paper
    cost = (p.slippage_bps + (p.taker_fee_bps if p.order_type == "taker" else p.maker_fee_bps)) * 1e-4
    qty = p.notional_usd / px[0]
    pnl = np.concatenate(([-p.notional_usd * cost], qty * np.diff(px)))
    pnl[-1] -= qty * px[-1] * cost
    return {
        "bars": int(px.size),
        "pnl_usd": float(pnl.sum()),
        "return": float(px[-1] / px[0] - 1.0),
        "turnover": 1.0 + qty * px[-1] / p.notional_usd,
        "max_drawdown_usd": max_drawdown(pnl),
        "sharpe": sharpe(pnl, bars_per_year),
        "exposure": 1.0,
    }


def _groups(codes: I64, names: Sequence[str], within: I64) -> list[tuple[str, I64]]:
    """The rows of `within` per code, by name (sorted), each in record order."""
    sub = codes[within]
    present = sorted({names[c] for c in np.unique(sub).tolist()})
    at = {k: i for i, k in enumerate(names)}
    return [(k, within[sub == at[k]]) for k in present]


def risk_of(
    cols: Columns, *, notional_usd: float, target_vol_bps: float
) -> dict[str, dict[str, float | None]]:
    """`bot.sim.riskmetrics.risk_by_regime` of the records that carried a position into their bar (holding
    PnL in bps of `notional_usd`, grouped by the regime it was decided in; units: the symbol's previous
    position), as plain dicts (report.json; NaN -> None)."""
    prev = np.zeros(cols.n, dtype=np.float64)
    for k in range(len(cols.symbols)):
        idx = np.flatnonzero(cols.symbol == k)
        prev[idx[1:]] = cols.position[idx[:-1]]
    held = cols.holding_regime >= 0
    pnl = cols.holding_pnl_usd[held] / notional_usd * 1e4
    regimes = [cols.regimes[c] for c in cols.holding_regime[held].tolist()]
    table = risk_by_regime(pnl, regimes, target_vol_bps, units=np.abs(prev[held]), names=REGIME_NAMES)

    def num(x: float) -> float | None:
        return x if math.isfinite(x) else None

    return {
        k: {
            "bars": r.bars,
            "pnl_vol_bps": num(r.pnl_vol_bps),
            "ratio": num(r.ratio),
            "mean_abs_units": num(r.mean_abs_units),
        }
        for k, r in table.items()
    }


def _summary(result: RunResult, cfg: Config) -> dict[str, Any]:
    step = interval_ms(cfg.market.interval)
    horizon_ms = cfg.distill.horizon_bars * step
    bpy = YEAR_MS / step
    kw: dict[str, Any] = {"notional_usd": cfg.paper.notional_usd, "bars_per_year": bpy}
    cols = result.columns()
    real_all = np.full(cols.n, np.nan, dtype=np.float64)
    every = np.arange(cols.n, dtype=np.int64)
    by_symbol = [(k, np.flatnonzero(cols.symbol == k)) for k in range(len(cols.symbols))]
    by_symbol.sort(key=lambda kv: int(kv[1][0]) if kv[1].size else cols.n)  # first appearance
    for k, rows in by_symbol:
        times, closes = result.closes_of(cols.symbols[k])
        real_all[rows] = realised(cols.start_ms[rows], cols.close[rows], times, closes, horizon_ms)
    kw["sorted_"] = _Sorted(cols.prediction, real_all)
    symbols: dict[str, Any] = {}
    for k, rows in by_symbol:
        if rows.size == 0:
            continue
        sym = cols.symbols[k]
        real = real_all[rows]
        sub: dict[str, Any] = {"all": metrics(cols, rows, real, **kw), "tiers": {}, "regimes": {}}
        local = np.arange(rows.size, dtype=np.int64)
        for codes, names, key in ((cols.tier, cols.tiers, "tiers"), (cols.regime, cols.regimes, "regimes")):
            for name, part in _groups(codes[rows], names, local):
                sub[key][name] = metrics(cols, rows[part], real[part], **kw)
        sub["buy_and_hold"] = buy_and_hold(result.closes_of(sym)[1], cfg, bpy)
        # each symbol's share of decided bars per regime (its own calibration or the pooled one)
        at = {name: i for i, name in enumerate(cols.regimes)}
        sub["regime_share"] = {
            name: int(np.count_nonzero(cols.regime[rows] == at[name])) / rows.size for name in REGIME_NAMES
        }
        symbols[sym] = sub
    total = metrics(cols, every, real_all, **kw)
    # the portfolio: PnL summed over symbols per bar time (in record order, as a loop adds them)
    uniq, inverse = np.unique(cols.start_ms, return_inverse=True)
    port = np.bincount(inverse.reshape(-1), weights=cols.bar_pnl_usd, minlength=uniq.size).astype(np.float64)
    total.update(max_drawdown_usd=max_drawdown(port), sharpe=sharpe(port, bpy), bar_times=int(port.size))
    risk = risk_of(cols, notional_usd=cfg.paper.notional_usd, target_vol_bps=cfg.paper.target_vol_bps)
    return {
        "total": total,
        "risk": risk,
        "tiers": {k: metrics(cols, v, real_all[v], **kw) for k, v in _groups(cols.tier, cols.tiers, every)},
        "regimes": {
            k: metrics(cols, v, real_all[v], **kw) for k, v in _groups(cols.regime, cols.regimes, every)
        },
        "symbols": symbols,
    }


def build_report(cfg: Config, result: RunResult, fixed: Mapping[str, RunResult]) -> dict[str, Any]:
    """report.json's content: the run's metrics, buy-and-hold, and each fixed tier's (`--compare-tiers`)."""
    step = interval_ms(cfg.market.interval)
    out: dict[str, Any] = {
        "interval_ms": step,
        "horizon_bars": cfg.distill.horizon_bars,
        "bars_per_year": YEAR_MS / step,
        "routes": dict(result.routes),
        "routes_source": "auto" if cfg.regime.routes == "auto" else "config",
        **_summary(result, cfg),
    }
    out["buy_and_hold"] = {s: v["buy_and_hold"] for s, v in out["symbols"].items()}
    if fixed:
        out["fixed_tiers"] = {}
        for tier, res in fixed.items():
            s = _summary(res, cfg)
            out["fixed_tiers"][tier] = {
                "total": s["total"],
                "symbols": {k: v["all"] for k, v in s["symbols"].items()},
            }
    return out


# ---- plots -------------------------------------------------------------------------------------------


def write_plots(result: RunResult, out: Path) -> list[str]:
    """equity.png (portfolio PnL with the first symbol's regimes shaded, and the drawdown), tier_share.png,
    pnl_by_regime.png; returns the names written ([] with one stderr line when matplotlib is missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        import sys

        print("plots skipped: matplotlib is not installed (pip install 'progdistill[plot]')", file=sys.stderr)
        return []
    cols = result.columns()
    if cols.n == 0:
        return []
    uniq, inverse = np.unique(cols.start_ms, return_inverse=True)
    times = uniq.astype(np.float64)
    eq = np.cumsum(np.bincount(inverse.reshape(-1), weights=cols.bar_pnl_usd, minlength=uniq.size))
    days = (times - times[0]) / 86_400_000
    dd = eq - np.maximum.accumulate(np.concatenate(([0.0], eq)))[1:]
    colors = {"calm_trend": "#cce5cc", "normal": "#ffffff", "volatile": "#ffe0b3", "crisis": "#f5b7b1"}
    first = np.flatnonzero(cols.symbol == cols.symbol[0])
    first_ms, first_regime = cols.start_ms[first].tolist(), [cols.regimes[c] for c in cols.regime[first]]
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(11, 6), sharex=True, height_ratios=[3, 1])
    t0 = times[0]
    start = 0
    for i in range(1, len(first_ms) + 1):
        if i == len(first_ms) or first_regime[i] != first_regime[start]:
            a = (first_ms[start] - t0) / 86_400_000
            b = (first_ms[i - 1] - t0) / 86_400_000
            ax.axvspan(a, b, color=colors.get(first_regime[start], "#eeeeee"), lw=0)
            start = i
    ax.plot(days, eq, color="black", lw=1)
    ax.set_ylabel("PnL, USD")
    ax.set_title(f"equity ({', '.join(result.symbols)}); shading: {cols.symbols[cols.symbol[0]]} regime")
    ax2.fill_between(days, dd, 0, color="#c0392b")
    ax2.set_ylabel("drawdown, USD")
    ax2.set_xlabel("days")
    fig.tight_layout()
    fig.savefig(out / "equity.png", dpi=100)
    plt.close(fig)
    tiers: dict[str, int] = {}
    regimes: dict[str, float] = {}
    for k in dict.fromkeys(cols.tier.tolist()):  # first appearance order, as a loop over the records
        tiers[cols.tiers[k]] = int(np.count_nonzero(cols.tier == k))
    for k in dict.fromkeys(cols.regime.tolist()):
        regimes[cols.regimes[k]] = float(cols.bar_pnl_usd[cols.regime == k].sum())
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar(list(tiers), [v / cols.n for v in tiers.values()], color="#2e86c1")
    ax.set_ylabel("share of decided bars")
    ax.set_title("bars per tier")
    fig.tight_layout()
    fig.savefig(out / "tier_share.png", dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar(list(regimes), list(regimes.values()), color=[colors.get(k, "#999999") for k in regimes])
    ax.axhline(0, color="black", lw=0.8)
    ax.set_ylabel("PnL, USD")
    ax.set_title("PnL by regime")
    fig.tight_layout()
    fig.savefig(out / "pnl_by_regime.png", dpi=100)
    plt.close(fig)
    return ["equity.png", "tier_share.png", "pnl_by_regime.png"]
