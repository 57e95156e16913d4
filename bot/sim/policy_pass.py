"""The backtest's and the sweep's regime and policy pass: one regime kernel call and one paper kernel call
per symbol over cached predictions, instead of `Engine.on_bar` per bar.

Per symbol, over the bars of its backtest window:

1. `bot.core.kernels.regime.run` over every bar (warm-up bars included, as the engine's detector sees them;
   no books: a backtest has none) gives each bar's regime and routed tier;
2. the routed tier's cached prediction and vol forecast of each decided bar (at or after the window's first
   decided bar, features valid) are gathered with numpy; the served vol forecast is the cached one times
   `family.vol_factor(tier, symbol, regime)`, as the engine serves it;
3. `bot.core.kernels.paper.run` over the decided bars gives the positions, fills and PnL.

`records` turns the kernels' output arrays into the `DecisionRecord`s `Engine.on_bar` returns for the same
bars (latency aside: the pass measures none per bar, `latency_us` is empty); `pnl_by_time` is the policy-only
metric a sweep trial scores (the portfolio's per-bar PnL, no records). Symbols do not interact (each has its
own regime state and paper book), so each symbol's pass is independent of the others.
tests/test_backtest.py proves the records equal those of the live service and of the per-bar engine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from bot.core.errors import ModelError
from bot.core.kernels import paper as _kp
from bot.core.kernels import regime as _kr
from bot.core.paper import kernel_params
from bot.core.params import REGIME_NAMES, PaperConfig, RegimeConfig
from bot.core.predictor import Predictor
from bot.core.regime import RegimeDetector
from bot.core.thresholds import resolve_routes

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

_R, _P = _kr.SLOTS, _kp.SLOTS
_O_REGIME, _O_TIER = _R["O_REGIME"], _R["O_TIER"]
_N_IOUT, _N_FOUT, _N_OUT = _R["N_IOUT"], _R["N_FOUT"], _P["N_OUT"]
_NO_BOOK_TS: Final = np.zeros(0, dtype=np.int64)
_NO_BOOK: Final = np.zeros((0, 4), dtype=np.float64)
_NO_PRICE: Final = np.zeros(0, dtype=np.float64)


@dataclass(frozen=True, slots=True)
class SymbolInput:
    """One symbol's backtest window as the kernels take it; depends on the data and the models only, so it
    is built once per backtest and shared by every run (policy keys change nothing here).

    Row t is the window's t-th bar. `preds` / `vols` hold each tier's cached prediction / raw vol forecast
    (family order, NaN where features are not valid); `vols` is None without a vol head.
    """

    symbol: str
    start_ms: I64
    close: F64
    volume: F64
    decide: npt.NDArray[np.bool_]  # the engine decides the bar: at or after the first decided bar, valid
    preds: F64  # [n_tiers, n]
    vols: F64 | None  # [n_tiers, n]


@dataclass(frozen=True, slots=True)
class Policy:
    """A run's config as the kernels' parameters (built once per run, checked as `Engine` checks it).

    Tier codes index `tiers` (the family's names); regime codes index `REGIME_NAMES`.
    """

    tiers: tuple[str, ...]
    routes: dict[str, str]
    route_codes: I64  # regime code -> tier code
    iparams: I64
    fparams: dict[str, F64]  # symbol -> its thresholds row
    paper: F64
    fixed: bool  # [paper] sizing = "fixed": positions are whole units
    vol_factors: dict[str, F64] | None  # symbol -> [n_tiers, n_regimes]; None without a vol head
    model_sha: str

    @classmethod
    def of(
        cls,
        family: Predictor,
        tiers: Sequence[str],
        symbols: Sequence[str],
        regime: RegimeConfig,
        paper: PaperConfig,
        *,
        interval_ms: int,
    ) -> Policy:
        """The parameters of `regime` and `paper` for `symbols` decided by `family` (tiers in `tiers` order).

        Raises:
            ModelError: a route names a tier the family does not have, "auto" routes without the family's
                own, or vol_target sizing without a vol head (the engine's checks and messages).
        """
        family.check_routes(regime.routes)
        if paper.sizing == "vol_target" and not family.has_vol_head:
            raise ModelError(
                '[paper] sizing = "vol_target" needs a tier family with a volatility head; this family has '
                'none: retrain it (python -m offline distill) or set [paper] sizing = "fixed"'
            )
        routes = resolve_routes(regime.routes, family.auto_routes)
        names = tuple(tiers)
        codes = np.array([names.index(routes[r]) for r in REGIME_NAMES], dtype=np.int64)
        fparams: dict[str, F64] = {}
        iparams: I64 | None = None
        for sym in symbols:
            det = RegimeDetector(
                family.regime_calibration, regime, interval_ms=interval_ms, symbol=sym, routes=routes
            )
            iparams, fparams[sym] = det.kernel_params()
        assert iparams is not None, "a backtest has at least one symbol"
        factors = None
        if family.has_vol_head:
            factors = {
                sym: np.array(
                    [[family.vol_factor(t, sym, r) for r in REGIME_NAMES] for t in names], dtype=np.float64
                )
                for sym in symbols
            }
        return cls(
            tiers=names,
            routes=routes,
            route_codes=codes,
            iparams=iparams,
            fparams=fparams,
            paper=kernel_params(paper),
            fixed=paper.sizing == "fixed",
            vol_factors=factors,
            model_sha=family.model_sha,
        )


@dataclass(frozen=True, slots=True)
class SymbolOutput:
    """What the kernels decided for one symbol's decided bars (row k: the window's bar `rows[k]`)."""

    symbol: str
    rows: I64
    start_ms: I64
    close: F64
    regime: I64  # regime codes
    tier: I64  # tier codes
    prediction: F64
    vol_forecast: F64  # served (times the vol factor); NaN without a vol head
    out: F64  # [m, N_OUT]: the paper kernel's rows


def run_symbol(
    inp: SymbolInput, policy: Policy, *, ensure: Callable[[I64, I64], None] | None = None
) -> SymbolOutput:
    """The regime and policy pass of one symbol: one `regime.run` and one `paper.run` call.

    `ensure(tier codes, rows)`, called between the two, makes the routed predictions of the decided rows
    present in `inp.preds` / `inp.vols` (`bot.sim.backtest_cache.Predictions.ensure`); None: they are.

    Raises:
        ValueError: a bar out of order, or a bar the paper kernel refuses (a non-positive close, vol_target
            sizing without a positive forecast), with the messages of the per-bar wrappers.
    """
    n = inp.start_ms.shape[0]
    istate, fstate = _kr.new_state(policy.iparams)
    iout = np.zeros((n, _N_IOUT), dtype=np.int64)
    fout = np.zeros((n, _N_FOUT), dtype=np.float64)
    done = _kr.run(
        istate,
        fstate,
        policy.iparams,
        policy.fparams[inp.symbol],
        policy.route_codes,
        inp.start_ms,
        inp.close,
        inp.volume,
        _NO_BOOK_TS,
        _NO_BOOK,
        iout,
        fout,
    )
    if done < n:
        raise ValueError(
            f"{inp.symbol}: expected bars in time order, got start_ms={int(inp.start_ms[done])} "
            f"after {int(inp.start_ms[done - 1])}"
        )
    rows = np.flatnonzero(inp.decide)
    regime = np.ascontiguousarray(iout[rows, _O_REGIME])
    tier = np.ascontiguousarray(iout[rows, _O_TIER])
    if ensure is not None:
        ensure(tier, rows)
    prediction = inp.preds[tier, rows]
    if inp.vols is None or policy.vol_factors is None:
        vol = np.full(rows.shape[0], np.nan, dtype=np.float64)
    else:
        vol = inp.vols[tier, rows] * policy.vol_factors[inp.symbol][tier, regime]
    start_ms, close = inp.start_ms[rows], inp.close[rows]
    out = np.zeros((rows.shape[0], _N_OUT), dtype=np.float64)
    state = _kp.new_state()
    pnl_tier = np.full(len(policy.tiers), np.nan, dtype=np.float64)
    pnl_regime = np.full(len(REGIME_NAMES), np.nan, dtype=np.float64)
    done = _kp.run(
        state,
        policy.paper,
        start_ms,
        close,
        prediction,
        vol,
        _NO_PRICE,
        _NO_PRICE,
        tier,
        regime,
        pnl_tier,
        pnl_regime,
        out,
    )
    if done < rows.shape[0]:
        raise _refused(inp.symbol, state, policy.paper, start_ms, close, prediction, vol, int(done))
    return SymbolOutput(inp.symbol, rows, start_ms, close, regime, tier, prediction, vol, out)


def _refused(
    symbol: str, state: F64, params: F64, start_ms: I64, close: F64, pred: F64, vol: F64, k: int
) -> ValueError:
    """The per-bar wrapper's error for the bar the paper kernel refused (`step` again says why)."""
    scratch = np.zeros(_N_OUT, dtype=np.float64)
    none = np.zeros(0, dtype=np.float64)
    status = _kp.step(
        state, params, int(start_ms[k]), float(close[k]), float(pred[k]), float(vol[k]), 0.0, 0.0, -1, -1,
        none, none, scratch,
    )  # fmt: skip
    if status == _P["BAD_CLOSE"]:
        return ValueError(f"{symbol}@{int(start_ms[k])}: expected a positive close price, got {close[k]}")
    if status == _P["OUT_OF_ORDER"]:
        return ValueError(f"{symbol}: bar start_ms={int(start_ms[k])} already decided")
    v = float(vol[k])
    return ValueError(f"vol_target sizing needs a positive vol forecast, got {None if v != v else v!r}")
