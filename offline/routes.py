"""Routes chosen by evidence: every tier scored per regime on the validation rows, the cheapest tier that
keeps up with the teacher routed to each regime.

The regime of each validation row is what the service's detector (`bot.core.regime.RegimeDetector`, with the
family's own calibration) says for that row's bar, replayed over its symbol's bars from the start, so the
table scores the tiers on the bars the router would really send them. The result goes into
`manifest.json["routes"]` and `[regime] routes = "auto"` serves it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from bot.config import DistillConfig
from bot.core.params import REGIME_NAMES, RegimeConfig
from bot.core.regime import replay_regimes
from bot.models.manifest import RegimeScore, RouteChoice
from offline import vol as volmod
from offline.data import Dataset
from offline.distill import DistillResult
from offline.evaluate import mean_with_se, rank_products, return_skill
from offline.train import F64, I64, TierModel, information_coefficient

#: a regime with fewer validation rows than this keeps the teacher (too few rows to tell tiers apart)
MIN_ROWS: int = 50


def row_regimes(ds: Dataset, calibration: Mapping[str, Any], regime: RegimeConfig) -> list[str]:
    """The detector's regime for every row of `ds` (its bar, replayed over the row's own symbol)."""
    symbols = [p.get("symbol") for p in ds.provenance.get("series", [])] or [ds.provenance.get("symbol")]
    series_bars = ds.series_bars if ds.series_bars is not None else [ds.bars]
    per_series: list[list[str]] = []
    for k, bars in enumerate(series_bars):
        symbol = symbols[k] if k < len(symbols) else None
        per_series.append(replay_regimes(bars, calibration, regime, interval_ms=ds.step_ms, symbol=symbol))
    series = ds.series if ds.series is not None else np.zeros(ds.n_rows, dtype=np.int64)
    return [per_series[int(s)][int(i)] for s, i in zip(series, ds.bar_index, strict=True)]


def multiply_adds(model: TierModel) -> int:
    """Multiply-adds of one forward pass (the weights of every layer)."""
    return int(sum(w.size for w in model.mlp.coefs_))


@dataclass(frozen=True, slots=True)
class _Scored:
    score: RegimeScore
    losses: F64  # per-row QLIKE of the regime-calibrated served vol (empty without a vol head)
    var_scale: float | None  # realised / served variance on these rows (None without a vol head)


def _score(model: TierModel, ds: Dataset, rows: I64) -> _Scored:
    X = ds.X[rows]
    ic = information_coefficient(model.predict(X), ds.y[rows]) if rows.size > 1 else None
    q = scale = None
    losses = np.zeros(0)
    if model.has_vol_head and ds.log_vol is not None and rows.size:
        realised, served = np.exp(ds.log_vol[rows]), model.predict_vol(X)
        scale = volmod.qlike_scale(realised, served)
        ratio = realised**2 / (scale * served**2)
        losses = ratio - np.log(ratio) - 1.0
        q = float(losses.mean())
    score = RegimeScore(n_rows=int(rows.size), vol_qlike=q, ic=ic, multiply_adds=multiply_adds(model))
    return _Scored(score, losses, scale)


def return_head_has_skill(result: DistillResult, ds: Dataset) -> bool:
    """Whether the teacher's return IC on the validation rows is at least 2 SE from zero
    (`offline.evaluate.return_skill`); without skill, IC differences between tiers are noise."""
    val = ds.splits.val
    teacher = result.chosen[result.tier_names[0]].model
    products = rank_products(teacher.predict(ds.X[val]), ds.y[val])
    ic, se, _ = return_skill(products, ds.start_ms[val], horizon_bars=ds.horizon_bars)
    return abs(ic) >= 2.0 * se


@dataclass(frozen=True, slots=True)
class Routing:
    """`choose_routes`' result: the manifest's route choice and each tier's variance scale per regime."""

    choice: RouteChoice
    var_scale_by_regime: dict[str, dict[str, float]]  # tier -> regime -> realised / served variance


def choose_routes(
    result: DistillResult,
    ds: Dataset,
    calibration: Mapping[str, Any],
    regime: RegimeConfig,
    dc: DistillConfig,
    *,
    regimes: npt.NDArray[np.str_] | None = None,
) -> Routing:
    """Each regime's cheapest tier that keeps up with the teacher on that regime's validation rows; the
    teacher where no cheaper tier does or the regime has fewer than `MIN_ROWS` validation rows.

    A tier keeps up when (1) its vol QLIKE exceeds the teacher's by at most `route_qlike_tolerance` of the
    teacher's plus two standard errors of the paired difference (Newey-West over bar times, lags of the
    vol horizon's overlap: one validation period cannot tell tiers apart more finely than that), each
    tier's served vol scaled by its own variance bias on the regime's rows (the per-regime calibration the
    service applies); and (2) when the teacher's return head has measured skill on the validation rows,
    its return IC is at most `route_ic_tolerance` below the teacher's.

    Args:
        regimes: every row's regime when already known (`row_regimes`); None computes it.
    """
    if regimes is None:
        regimes = np.array(row_regimes(ds, calibration, regime))
    val: I64 = ds.splits.val
    teacher = result.tier_names[0]
    by_cost = sorted(result.tier_names, key=lambda n: multiply_adds(result.chosen[n].model))
    lags = 2 * max((ds.vol_horizon_bars or 1) - 1, 0)
    ic_used = return_head_has_skill(result, ds)
    table: dict[str, dict[str, RegimeScore]] = {}
    var_scales: dict[str, dict[str, float]] = {name: {} for name in result.tier_names}
    routes: dict[str, str] = {}
    for name_r in REGIME_NAMES:
        rows = val[regimes[val] == name_r]
        scored = {name: _score(result.chosen[name].model, ds, rows) for name in result.tier_names}
        ref = scored[teacher]
        for name, sc in scored.items():
            if sc.var_scale is not None:
                var_scales[name][name_r] = sc.var_scale
            if sc.losses.size and ref.losses.size and name != teacher:
                _, se, _ = mean_with_se(sc.losses - ref.losses, ds.start_ms[rows], lags=lags)
                scored[name] = _Scored(
                    msgspec.structs.replace(sc.score, vol_qlike_diff_se=se), sc.losses, None
                )
        table[name_r] = {name: sc.score for name, sc in scored.items()}
        routes[name_r] = teacher
        if rows.size < MIN_ROWS:
            continue
        for name in by_cost:
            if _keeps_up(
                table[name_r][name],
                table[name_r][teacher],
                qlike_tol=dc.route_qlike_tolerance,
                ic_tol=dc.route_ic_tolerance if ic_used else None,
            ):
                routes[name_r] = name
                break
    choice = RouteChoice(
        routes=routes,
        qlike_tolerance=dc.route_qlike_tolerance,
        ic_tolerance=dc.route_ic_tolerance,
        rows="validation",
        ic_used=ic_used,
        table=table,
    )
    return Routing(choice, var_scales)


def routed_on_rows(
    result: DistillResult, ds: Dataset, routing: Routing, regimes: npt.NDArray[np.str_], rows: I64
) -> dict[str, float]:
    """The routed family against always-teacher on `rows` (e.g. a walk-forward test block), both served as
    the service would (each tier's vol scaled by its variance bias in the bar's regime): served vol QLIKE
    relative to the teacher's and mean multiply-adds as a share of the teacher's."""
    assert ds.log_vol is not None
    name_t = result.tier_names[0]
    teacher = result.chosen[name_t].model
    reg = regimes[rows]

    def served(tier: str, m: npt.NDArray[np.bool_], regime: str) -> F64:
        scale = routing.var_scale_by_regime.get(tier, {}).get(regime, 1.0)
        vol: F64 = result.chosen[tier].model.predict_vol(ds.X[rows[m]]) * np.sqrt(scale)
        return vol

    vol = np.zeros(rows.size)
    vol_teacher = np.zeros(rows.size)
    macs = np.full(rows.size, float(multiply_adds(teacher)))
    for name_r, tier in routing.choice.routes.items():
        m = reg == name_r
        if m.any():
            vol[m] = served(tier, m, name_r)
            vol_teacher[m] = served(name_t, m, name_r)
            macs[m] = multiply_adds(result.chosen[tier].model)
    realised = np.exp(ds.log_vol[rows])
    q_teacher = volmod.qlike(realised, vol_teacher)
    return {
        "qlike_vs_teacher": volmod.qlike(realised, vol) / q_teacher - 1.0,
        "cost_ratio_vs_teacher": float(macs.mean()) / multiply_adds(teacher),
    }


def _keeps_up(s: RegimeScore, ref: RegimeScore, *, qlike_tol: float, ic_tol: float | None) -> bool:
    q, q_ref = s.vol_qlike, ref.vol_qlike
    if (
        q is not None
        and q_ref is not None
        and q - q_ref > qlike_tol * q_ref + 2.0 * (s.vol_qlike_diff_se or 0.0)
    ):
        return False
    return ic_tol is None or not (s.ic is not None and ref.ic is not None and s.ic < ref.ic - ic_tol)


def routes_table_text(choice: RouteChoice) -> list[str]:
    """The per-regime table behind the routes, one line per regime and tier, for the distill report."""
    lines = [
        f"routes chosen on the {choice.rows} rows (cheapest tier with vol QLIKE <= teacher x "
        f"(1 + {choice.qlike_tolerance:g}) + 2 SE of the difference"
        + (
            f" and return IC >= teacher - {choice.ic_tolerance:g}):"
            if choice.ic_used
            else "; return IC not used: the teacher's is within 2 SE of zero on these rows):"
        )
    ]
    for regime, scores in choice.table.items():
        for name, s in scores.items():
            mark = " <- routed" if choice.routes.get(regime) == name else ""
            q = "n/a" if s.vol_qlike is None else f"{s.vol_qlike:.4f}"
            se = "" if s.vol_qlike_diff_se is None else f" (diff SE {s.vol_qlike_diff_se:.4f})"
            ic = "n/a" if s.ic is None else f"{s.ic:+.4f}"
            lines.append(
                f"  {regime:<10} {name:<11} rows {s.n_rows:>6}  vol QLIKE {q}{se}  IC {ic}  "
                f"multiply-adds {s.multiply_adds:>7}{mark}"
            )
    return lines
