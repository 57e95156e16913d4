"""Scoring tier families on held-out bars through the service's own engine, and the champion/challenger
rule of the nightly retrain (`offline.retrain`, docs/service.md "Nightly retrain").

`score_family` runs every bar through `bot.core.engine.Engine` (features, regime detection with the family's
calibration, the config's routes), so the routed forecast is the one the service would have made, and
scores the routed forecast and every tier on the window: return IC (Spearman) and MSE, and with a vol head
QLIKE raw and bias-corrected (`offline.vol`) and the vol IC. `decide` compares two such scores.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import numpy as np

from bot.config import Config, engine_params
from bot.core.bars import Bar, interval_ms
from bot.core.engine import Engine
from bot.core.paper import PaperTrader
from bot.models.family import TierFamily
from offline import vol as volmod
from offline.data import forward_log_vol, forward_returns
from offline.train import F64, information_coefficient


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _metrics(
    pred: F64, y: F64, vol: F64 | None, lv: F64 | None, vol_cal: F64 | None, lv_cal: F64 | None
) -> dict[str, float | None]:
    """Return IC and MSE; with a vol forecast the QLIKE raw and bias-corrected and the vol IC."""
    out: dict[str, float | None] = {
        "ic": _finite(information_coefficient(pred, y)),
        "mse": _finite(float(np.mean((pred - y) ** 2))),
    }
    if vol is None or lv is None:
        return out
    scale = 1.0
    if vol_cal is not None and lv_cal is not None and vol_cal.size:
        scale = volmod.qlike_scale(np.exp(lv_cal), vol_cal)
    realised = np.exp(lv)
    out["vol_qlike"] = _finite(volmod.qlike(realised, vol))
    out["vol_qlike_bc"] = _finite(volmod.qlike(realised, vol, scale=scale))
    out["vol_ic"] = _finite(volmod.spearman_ic(lv, np.log(np.maximum(vol, 1e-12))))
    out["qlike_scale"] = _finite(scale)
    return out


def score_family(family: TierFamily, cfg: Config, series: Mapping[str, Sequence[Bar]]) -> dict[str, Any]:
    """Score `family` on the last `[retrain] holdout_bars` of each series (pooled over symbols).

    Every bar goes through `bot.core.engine.Engine` (the service's per-bar pipeline, with the family's own
    regime calibration and the config's routes: with `routes = "auto"` the family's own), so the routed
    forecast is the one the service would have made. Rows count when their targets (`[distill]
    horizon_bars`, `vol_horizon_bars`) are complete; the vol scale is fitted on the `holdout_bars` rows
    before the window whose targets end before it.
    """
    dc = cfg.distill
    hold = cfg.retrain.holdout_bars
    step = interval_ms(cfg.market.interval)
    has_vol = family.has_vol_head and dc.vol_head
    reach = max(dc.horizon_bars, dc.vol_horizon_bars if has_vol else 0)
    paper = msgspec.structs.replace(cfg.paper, sizing="fixed")  # positions do not matter here
    engine = Engine(engine_params(cfg), family, PaperTrader(paper))
    xs: list[F64] = []
    ys: list[float] = []
    lvs: list[float] = []
    routed: list[float] = []
    routed_vol: list[float] = []
    in_hold: list[bool] = []
    rows: dict[str, int] = {}
    for symbol, bars in series.items():
        n = len(bars)
        h0 = n - hold
        cal_from = max(0, h0 - hold - reach)
        y_all, ok = forward_returns(bars, dc.horizon_bars, step)
        lv_all = np.full(n, np.nan)
        if has_vol:
            lv_all, ok_v = forward_log_vol(bars, dc.vol_horizon_bars, step)
            ok = ok & ok_v
        rows[symbol] = 0
        for i, bar in enumerate(bars):
            d = engine.on_bar(bar, decide=i >= cal_from)
            if d is None or not ok[i] or not (i >= h0 or i + reach < h0):
                continue
            x = engine.features(symbol)
            assert x is not None  # a decision implies a feature row
            xs.append(x.copy())
            ys.append(float(y_all[i]))
            lvs.append(float(lv_all[i]))
            routed.append(d.prediction)
            routed_vol.append(d.vol_forecast if d.vol_forecast is not None else math.nan)
            in_hold.append(i >= h0)
            rows[symbol] += i >= h0
    h = np.array(in_hold, dtype=np.bool_)
    if not h.any():
        raise ValueError("no held-out row has complete targets; raise [retrain] holdout_bars")
    X = np.array(xs, dtype=np.float64)
    y = np.array(ys)
    lv = np.array(lvs)
    cal = ~h

    def score(pred: F64, vol: F64 | None) -> dict[str, float | None]:
        return _metrics(
            pred[h],
            y[h],
            None if vol is None else vol[h],
            lv[h] if has_vol else None,
            None if vol is None else vol[cal],
            lv[cal] if has_vol else None,
        )

    tiers: dict[str, dict[str, float | None]] = {}
    for tier in family:
        pred = tier.predict_batch(X).astype(np.float64)
        vol_name = tier.spec.vol_output_name
        vol = tier.predict_batch(X, output=vol_name).astype(np.float64) if has_vol and vol_name else None
        tiers[tier.name] = score(pred, vol)
    return {
        "model_sha": family.model_sha,
        "vol_head": has_vol,
        "holdout_rows": rows,
        "calibration_rows": int(cal.sum()),
        "routed": score(np.array(routed), np.array(routed_vol) if has_vol else None),
        # the regime -> tier map the routed score used: with routes = "auto" each family's own choice
        "routes": dict(engine.routes),
        "tiers": tiers,
    }


# ---- the rule ------------------------------------------------------------------------------------------


def _worse(new: float | None, old: float | None, *, lower_is_better: bool, slack: float) -> bool:
    """True when `new` is worse than `old` beyond `slack` (a missing value is worse than any number)."""
    if old is None:
        return False
    if new is None:
        return True
    return new > old + slack if lower_is_better else new < old - slack


def decide(champion: Mapping[str, Any], challenger: Mapping[str, Any], cfg: Config) -> tuple[bool, list[str]]:
    """Promote the challenger? Returns (promote, reasons).

    The rule: with vol heads in both families, the challenger's routed bias-corrected vol QLIKE must be
    below the champion's x (1 - min_improvement); without, its routed return IC must exceed the champion's
    + min_improvement. And no tier the two share may regress: QLIKE at most (1 + qlike_tolerance) x the
    champion tier's, IC at least the champion tier's - ic_tolerance. Ties keep the champion.
    """
    rc = cfg.retrain
    reasons: list[str] = []
    both_vol = bool(champion["vol_head"]) and bool(challenger["vol_head"])
    ch, cp = challenger["routed"], champion["routed"]
    if both_vol:
        new, old = ch["vol_qlike_bc"], cp["vol_qlike_bc"]
        wins = new is not None and (old is None or new < old * (1.0 - rc.min_improvement))
        reasons.append(
            f"routed vol QLIKE {fmt(new)} vs champion {fmt(old)}: "
            + ("better" if wins else f"not better by {rc.min_improvement:.1%}")
        )
    else:
        new, old = ch["ic"], cp["ic"]
        wins = new is not None and (old is None or new > old + rc.min_improvement)
        reasons.append(
            f"routed return IC {fmt(new)} vs champion {fmt(old)}: "
            + ("better" if wins else f"not better by {rc.min_improvement}")
        )
    regressed = False
    for name, new_t in challenger["tiers"].items():
        old_t = champion["tiers"].get(name)
        if old_t is None:
            continue
        if _worse(new_t["ic"], old_t["ic"], lower_is_better=False, slack=rc.ic_tolerance):
            regressed = True
            reasons.append(
                f"tier {name}: IC {fmt(new_t['ic'])} < champion {fmt(old_t['ic'])} - {rc.ic_tolerance}"
            )
        if both_vol:
            q_new, q_old = new_t["vol_qlike_bc"], old_t["vol_qlike_bc"]
            slack = abs(q_old) * rc.qlike_tolerance if q_old is not None else 0.0
            if _worse(q_new, q_old, lower_is_better=True, slack=slack):
                regressed = True
                reasons.append(
                    f"tier {name}: vol QLIKE {fmt(q_new)} > champion {fmt(q_old)} "
                    f"x (1 + {rc.qlike_tolerance})"
                )
    if not regressed:
        reasons.append("no tier regressed beyond its tolerance")
    return wins and not regressed, reasons


def fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"
