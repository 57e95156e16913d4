"""The backtest's report: metrics of decision records per symbol, tier and regime, and the PNGs.

Every metric reads the decision records (`bot.core.decision.DecisionRecord`), nothing else:

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
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bot.config import Config
from bot.core.bars import interval_ms
from bot.core.decision import DecisionRecord
from bot.core.params import REGIME_NAMES
from bot.sim.riskmetrics import max_drawdown, risk_table

F64 = npt.NDArray[np.float64]
YEAR_MS = 365 * 86_400_000


@dataclass
class RunResult:
    """What one pass of the engine over the data produced."""

    records: list[DecisionRecord]
    warmup_bars: int
    wall_s: float
    cache_hits: int = 0
    cache_s: float = 0.0
    max_abs_diff: float = 0.0
    symbols: tuple[str, ...] = ()
    closes: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    routes: dict[str, str] = field(default_factory=dict)  # the regime -> tier map served (auto resolved)


def _ranks(a: F64) -> F64:
    """Average ranks (ties share the mean of their positions)."""
    order = np.argsort(a, kind="mergesort")
    ranks = np.empty(a.size, dtype=np.float64)
    ranks[order] = np.arange(a.size, dtype=np.float64)
    _, inv, counts = np.unique(a, return_inverse=True, return_counts=True)
    if counts.max(initial=1) > 1:
        sums = np.bincount(inv, weights=ranks)
        ranks = sums[inv] / counts[inv]
    return ranks


def spearman(pred: F64, real: F64) -> float:
    """Spearman rank correlation (0 for fewer than 3 pairs or a constant side)."""
    if pred.size < 3 or np.ptp(pred) == 0.0 or np.ptp(real) == 0.0:
        return 0.0
    rho = float(np.corrcoef(_ranks(pred), _ranks(real))[0, 1])
    return rho if math.isfinite(rho) else 0.0


def sharpe(pnl: F64, bars_per_year: float) -> float:
    """Annualised mean/std of per-bar PnL (0 when flat)."""
    if pnl.size < 2:
        return 0.0
    sd = float(np.std(pnl, ddof=1))
    return float(np.mean(pnl)) / sd * math.sqrt(bars_per_year) if sd > 0 else 0.0


def metrics(
    records: Sequence[DecisionRecord], real: F64, *, notional_usd: float, bars_per_year: float
) -> dict[str, Any]:
    """The metric set of `records` (in time order); `real[i]` is record i's realised return (NaN: none)."""
    n = len(records)
    if n == 0:
        return {"bars": 0}
    pred = np.fromiter((r.prediction for r in records), dtype=np.float64, count=n)
    pnl = np.fromiter((r.bar_pnl_usd for r in records), dtype=np.float64, count=n)
    ok = np.isfinite(real)
    p, y = pred[ok], real[ok]
    nz = (np.sign(p) != 0) & (np.sign(y) != 0)
    traded = sum(abs(f.notional_usd) for r in records for f in r.fills)
    return {
        "bars": n,
        "ic": spearman(p, y),
        "hit_rate": float(np.mean(np.sign(p[nz]) == np.sign(y[nz]))) if nz.any() else 0.0,
        "pnl_usd": float(pnl.sum()),
        "fees_usd": float(sum(r.fee_usd for r in records)),
        "turnover": traded / notional_usd,
        "max_drawdown_usd": max_drawdown(pnl),
        "sharpe": sharpe(pnl, bars_per_year),
        "exposure": sum(r.position != 0 for r in records) / n,
    }


def realised(records: Sequence[DecisionRecord], closes: Mapping[int, float], step_ms: int) -> F64:
    """Each record's `close[t + step_ms] / close[t] - 1` (NaN when that bar is not in `closes`)."""
    out = np.full(len(records), np.nan, dtype=np.float64)
    for i, r in enumerate(records):
        later = closes.get(r.start_ms + step_ms)
        if later is not None and r.close > 0:
            out[i] = later / r.close - 1.0
    return out


def buy_and_hold(closes: Sequence[tuple[int, float]], cfg: Config, bars_per_year: float) -> dict[str, Any]:
    """Metrics of holding `notional_usd` long from the first close to the last (fees and slippage paid)."""
    px = np.array([c for _, c in closes], dtype=np.float64)
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


def _summary(result: RunResult, cfg: Config) -> dict[str, Any]:
    step = interval_ms(cfg.market.interval)
    horizon_ms = cfg.distill.horizon_bars * step
    bpy = YEAR_MS / step
    kw: dict[str, Any] = {"notional_usd": cfg.paper.notional_usd, "bars_per_year": bpy}
    by_symbol: dict[str, list[DecisionRecord]] = defaultdict(list)
    for r in result.records:
        by_symbol[r.symbol].append(r)
    real_all = np.full(len(result.records), np.nan, dtype=np.float64)
    symbols: dict[str, Any] = {}
    groups: dict[str, dict[str, list[int]]] = {"tier": defaultdict(list), "regime": defaultdict(list)}
    index = {id(r): i for i, r in enumerate(result.records)}
    for sym, recs in by_symbol.items():
        real = realised(recs, dict(result.closes.get(sym, [])), horizon_ms)
        for r, y in zip(recs, real, strict=True):
            real_all[index[id(r)]] = y
        sub: dict[str, Any] = {"all": metrics(recs, real, **kw), "tiers": {}, "regimes": {}}
        for key, name in (("tier", "tiers"), ("regime", "regimes")):
            parts: dict[str, list[int]] = defaultdict(list)
            for i, r in enumerate(recs):
                parts[getattr(r, key)].append(i)
            for k, idx in sorted(parts.items()):
                sub[name][k] = metrics([recs[i] for i in idx], real[idx], **kw)
        sub["buy_and_hold"] = buy_and_hold(result.closes.get(sym, []), cfg, bpy)
        # each symbol's share of decided bars per regime (its own calibration or the pooled one)
        sub["regime_share"] = {k: sum(r.regime == k for r in recs) / len(recs) for k in REGIME_NAMES}
        symbols[sym] = sub
    for i, r in enumerate(result.records):
        groups["tier"][r.tier].append(i)
        groups["regime"][r.regime].append(i)
    recs_all = result.records
    total = metrics(recs_all, real_all, **kw)
    # the portfolio: PnL summed over symbols per bar time
    per_time: dict[int, float] = defaultdict(float)
    for r in recs_all:
        per_time[r.start_ms] += r.bar_pnl_usd
    port = np.array([per_time[t] for t in sorted(per_time)], dtype=np.float64)
    total.update(max_drawdown_usd=max_drawdown(port), sharpe=sharpe(port, bpy), bar_times=int(port.size))
    risk = risk_table(
        recs_all,
        notional_usd=cfg.paper.notional_usd,
        target_vol_bps=cfg.paper.target_vol_bps,
        names=REGIME_NAMES,
    )
    return {
        "total": total,
        "risk": risk,
        "tiers": {
            k: metrics([recs_all[i] for i in v], real_all[v], **kw) for k, v in sorted(groups["tier"].items())
        },
        "regimes": {
            k: metrics([recs_all[i] for i in v], real_all[v], **kw)
            for k, v in sorted(groups["regime"].items())
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
    recs = result.records
    if not recs:
        return []
    per_time: dict[int, float] = defaultdict(float)
    for r in recs:
        per_time[r.start_ms] += r.bar_pnl_usd
    times = np.array(sorted(per_time), dtype=np.float64)
    eq = np.cumsum([per_time[int(t)] for t in times])
    days = (times - times[0]) / 86_400_000
    dd = eq - np.maximum.accumulate(np.concatenate(([0.0], eq)))[1:]
    colors = {"calm_trend": "#cce5cc", "normal": "#ffffff", "volatile": "#ffe0b3", "crisis": "#f5b7b1"}
    first = [r for r in recs if r.symbol == recs[0].symbol]
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(11, 6), sharex=True, height_ratios=[3, 1])
    t0 = times[0]
    start = 0
    for i in range(1, len(first) + 1):
        if i == len(first) or first[i].regime != first[start].regime:
            a = (first[start].start_ms - t0) / 86_400_000
            b = (first[i - 1].start_ms - t0) / 86_400_000
            ax.axvspan(a, b, color=colors.get(first[start].regime, "#eeeeee"), lw=0)
            start = i
    ax.plot(days, eq, color="black", lw=1)
    ax.set_ylabel("PnL, USD")
    ax.set_title(f"equity ({', '.join(result.symbols)}); shading: {recs[0].symbol} regime")
    ax2.fill_between(days, dd, 0, color="#c0392b")
    ax2.set_ylabel("drawdown, USD")
    ax2.set_xlabel("days")
    fig.tight_layout()
    fig.savefig(out / "equity.png", dpi=100)
    plt.close(fig)
    tiers: dict[str, int] = defaultdict(int)
    regimes: dict[str, float] = defaultdict(float)
    for r in recs:
        tiers[r.tier] += 1
        regimes[r.regime] += r.bar_pnl_usd
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar(list(tiers), [v / len(recs) for v in tiers.values()], color="#2e86c1")
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
