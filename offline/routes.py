"""Routes chosen by evidence: every tier scored per regime on the validation rows, the cheapest tier that
keeps up with the teacher routed to each regime.

The regime of each validation row is what the service's detector (`bot.core.regime.RegimeDetector`, with the
family's own calibration) says for that row's bar, replayed over its symbol's bars from the start, so the
table scores the tiers on the bars the router would really send them. The result goes into
`manifest.json["routes"]` and `[regime] routes = "auto"` serves it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from bot.config import DistillConfig
from bot.core.params import REGIME_NAMES, RegimeConfig
from bot.core.regime import RegimeDetector
from bot.manifest import RegimeScore, RouteChoice
from offline import vol as volmod
from offline.data import Dataset
from offline.distill import DistillResult
from offline.train import I64, TierModel, information_coefficient

#: a regime with fewer validation rows than this keeps the teacher (too few rows to tell tiers apart)
MIN_ROWS: int = 50


def row_regimes(ds: Dataset, calibration: Mapping[str, Any], regime: RegimeConfig) -> list[str]:
    """The detector's regime for every row of `ds` (its bar, replayed over the row's own symbol)."""
    symbols = [p.get("symbol") for p in ds.provenance.get("series", [])] or [ds.provenance.get("symbol")]
    series_bars = ds.series_bars if ds.series_bars is not None else [ds.bars]
    per_series: list[list[str]] = []
    fixed = dict.fromkeys(REGIME_NAMES, "_")  # the routes do not matter here, only the regimes
    for k, bars in enumerate(series_bars):
        symbol = symbols[k] if k < len(symbols) else None
        det = RegimeDetector(calibration, regime, interval_ms=ds.step_ms, symbol=symbol, routes=fixed)
        per_series.append([det.update(b).regime for b in bars])
    series = ds.series if ds.series is not None else np.zeros(ds.n_rows, dtype=np.int64)
    return [per_series[int(s)][int(i)] for s, i in zip(series, ds.bar_index, strict=True)]


def multiply_adds(model: TierModel) -> int:
    """Multiply-adds of one forward pass (the weights of every layer)."""
    return int(sum(w.size for w in model.mlp.coefs_))


def _score(model: TierModel, ds: Dataset, rows: I64) -> RegimeScore:
    X = ds.X[rows]
    ic = information_coefficient(model.predict(X), ds.y[rows]) if rows.size > 1 else None
    q = None
    if model.has_vol_head and ds.log_vol is not None and rows.size:
        q = volmod.qlike(np.exp(ds.log_vol[rows]), model.predict_vol(X))
    return RegimeScore(n_rows=int(rows.size), vol_qlike=q, ic=ic, multiply_adds=multiply_adds(model))


def choose_routes(
    result: DistillResult,
    ds: Dataset,
    calibration: Mapping[str, Any],
    regime: RegimeConfig,
    dc: DistillConfig,
    *,
    regimes: npt.NDArray[np.str_] | None = None,
) -> RouteChoice:
    """Each regime's cheapest tier whose validation vol QLIKE is within `route_qlike_tolerance` (relative) of
    the teacher's and whose return IC is at most `route_ic_tolerance` below it; the teacher where no
    cheaper tier qualifies or the regime has fewer than `MIN_ROWS` validation rows.

    Args:
        regimes: every row's regime when already known (`row_regimes`); None computes it.
    """
    if regimes is None:
        regimes = np.array(row_regimes(ds, calibration, regime))
    val: I64 = ds.splits.val
    teacher = result.tier_names[0]
    by_cost = sorted(result.tier_names, key=lambda n: multiply_adds(result.chosen[n].model))
    table: dict[str, dict[str, RegimeScore]] = {}
    routes: dict[str, str] = {}
    for name_r in REGIME_NAMES:
        rows = val[regimes[val] == name_r]
        scores = {name: _score(result.chosen[name].model, ds, rows) for name in result.tier_names}
        table[name_r] = scores
        routes[name_r] = teacher
        if rows.size < MIN_ROWS:
            continue
        ref = scores[teacher]
        for name in by_cost:
            if _keeps_up(scores[name], ref, qlike_tol=dc.route_qlike_tolerance, ic_tol=dc.route_ic_tolerance):
                routes[name_r] = name
                break
    return RouteChoice(
        routes=routes,
        qlike_tolerance=dc.route_qlike_tolerance,
        ic_tolerance=dc.route_ic_tolerance,
        rows="validation",
        table=table,
    )


def routed_on_rows(
    result: DistillResult, ds: Dataset, routes: Mapping[str, str], regimes: npt.NDArray[np.str_], rows: I64
) -> dict[str, float]:
    """The routed family against always-teacher on `rows` (e.g. a walk-forward test block): served vol QLIKE
    relative to the teacher's and mean multiply-adds as a share of the teacher's."""
    assert ds.log_vol is not None
    teacher = result.chosen[result.tier_names[0]].model
    vol = teacher.predict_vol(ds.X[rows])
    macs = np.full(rows.size, float(multiply_adds(teacher)))
    for name_r, tier in routes.items():
        m = regimes[rows] == name_r
        if m.any():
            model = result.chosen[tier].model
            vol[m] = model.predict_vol(ds.X[rows[m]])
            macs[m] = multiply_adds(model)
    realised = np.exp(ds.log_vol[rows])
    q_teacher = volmod.qlike(realised, teacher.predict_vol(ds.X[rows]))
    return {
        "qlike_vs_teacher": volmod.qlike(realised, vol) / q_teacher - 1.0,
        "cost_ratio_vs_teacher": float(macs.mean()) / multiply_adds(teacher),
    }


def _keeps_up(s: RegimeScore, ref: RegimeScore, *, qlike_tol: float, ic_tol: float) -> bool:
    if (
        s.vol_qlike is not None
        and ref.vol_qlike is not None
        and s.vol_qlike > ref.vol_qlike * (1.0 + qlike_tol)
    ):
        return False
    return not (s.ic is not None and ref.ic is not None and s.ic < ref.ic - ic_tol)


def routes_table_text(choice: RouteChoice) -> list[str]:
    """The per-regime table behind the routes, one line per regime and tier, for the distill report."""
    lines = [
        f"routes chosen on the {choice.rows} rows (cheapest tier with vol QLIKE <= teacher x "
        f"(1 + {choice.qlike_tolerance:g}) and return IC >= teacher - {choice.ic_tolerance:g}):"
    ]
    for regime, scores in choice.table.items():
        for name, s in scores.items():
            mark = " <- routed" if choice.routes.get(regime) == name else ""
            q = "n/a" if s.vol_qlike is None else f"{s.vol_qlike:.4f}"
            ic = "n/a" if s.ic is None else f"{s.ic:+.4f}"
            lines.append(
                f"  {regime:<10} {name:<11} rows {s.n_rows:>6}  vol QLIKE {q}  IC {ic}  "
                f"multiply-adds {s.multiply_adds:>7}{mark}"
            )
    return lines
