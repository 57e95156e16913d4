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

import gc
import itertools
import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

import msgspec
import numpy as np
import numpy.typing as npt

from bot.core.decision import DecisionRecord
from bot.core.errors import ModelError
from bot.core.kernels import paper as _kp
from bot.core.kernels import regime as _kr
from bot.core.paper import Fill, kernel_params
from bot.core.params import REGIME_NAMES, PaperConfig, RegimeConfig
from bot.core.predictor import Predictor
from bot.core.regime import RegimeDetector
from bot.core.thresholds import resolve_routes
from bot.sim.backtest_report import Columns

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

_R, _P = _kr.SLOTS, _kp.SLOTS
_O_REGIME, _O_TIER = _R["O_REGIME"], _R["O_TIER"]
_N_IOUT, _N_FOUT, _N_OUT = _R["N_IOUT"], _R["N_FOUT"], _P["N_OUT"]
_R_FILL0, _FILL_WIDTH = _P["R_FILL0"], _P["FILL_WIDTH"]
_X_SIDE, _X_QTY, _X_PRICE = _P["X_SIDE"], _P["X_QTY"], _P["X_PRICE"]
_X_NOTIONAL, _X_FEE, _X_REALIZED = _P["X_NOTIONAL"], _P["X_FEE"], _P["X_REALIZED"]
#: The paper kernel's per-bar outputs a record carries, in this order (`records` unpacks them).
_COLUMNS: Final = tuple(
    _P[k]
    for k in (
        "R_SIGNAL",
        "R_POSITION",
        "R_QTY",
        "R_N_FILLS",
        "R_FILL_PRICE",
        "R_FEE",
        "R_REALIZED",
        "R_UNREALIZED",
        "R_EQUITY",
        "R_BAR_PNL",
        "R_HOLDING",
        "R_HOLDING_TIER",
        "R_HOLDING_REGIME",
        "R_TRADE_PNL",
    )
)
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


@contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a burst of records (or other small containers) is built: they
    hold no cycles, and a collection every 700 new containers rescans all those built so far (measured: half
    of the build time of 120,000 records). Its previous state is restored."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def records(res: SymbolOutput, policy: Policy, *, source: str) -> list[DecisionRecord]:
    """The decision records of one symbol's pass, equal field by field to `Engine.on_bar`'s for the same
    bars (the same Python types too: whole units are ints under fixed sizing, a flat position is 0 and a bar
    without a fill has `fee_usd` 0 and `fill_price` None); `latency_us` is empty."""
    with gc_paused():
        return _records(res, policy, source=source)


def _records(res: SymbolOutput, policy: Policy, *, source: str) -> list[DecisionRecord]:
    sym, tiers, sha = res.symbol, policy.tiers, policy.model_sha
    regimes = REGIME_NAMES
    fixed = policy.fixed
    out = res.out
    cols = out[:, _COLUMNS].tolist()
    fills_at = np.flatnonzero(out[:, _P["R_N_FILLS"]] > 0.0)
    fill_rows = dict(zip(fills_at.tolist(), out[fills_at, _R_FILL0:].tolist(), strict=True))
    vols: list[Any] = [None] * len(cols) if policy.vol_factors is None else res.vol_forecast.tolist()
    result: list[DecisionRecord] = []
    append = result.append
    for k, (start_ms, close, regime, tier, pred, vol, o) in enumerate(
        zip(
            res.start_ms.tolist(),
            res.close.tolist(),
            res.regime.tolist(),
            res.tier.tolist(),
            res.prediction.tolist(),
            vols,
            cols,
            strict=True,
        )
    ):
        signal, position, qty, n_fills, fill_price, fee, realized, unreal, equity, bar_pnl = o[:10]
        holding, h_tier, h_regime, trade = o[10:]
        tier_name, regime_name = tiers[tier], regimes[regime]
        fills = _fills(sym, start_ms, fill_rows[k], int(n_fills), tier_name, regime_name) if n_fills else ()
        append(
            DecisionRecord(
                symbol=sym,
                start_ms=start_ms,
                source=source,
                regime=regime_name,
                tier=tier_name,
                prediction=pred,
                vol_forecast=vol,
                signal=int(signal),
                position=int(position) if fixed or position == 0.0 else position,
                qty=qty,
                fill_price=fill_price if n_fills else None,
                fee_usd=fee if n_fills else 0,
                realized_pnl_usd=realized,
                unrealized_pnl_usd=unreal,
                equity_usd=equity,
                bar_pnl_usd=bar_pnl,
                holding_pnl_usd=holding,
                holding_tier=tiers[int(h_tier)] if h_tier >= 0.0 else None,
                holding_regime=regimes[int(h_regime)] if h_regime >= 0.0 else None,
                trade_pnl_usd=trade,
                close=close,
                model_sha=sha,
                latency_us={},
                fills=fills,
            )
        )
    return result


def _fills(
    symbol: str, start_ms: int, f: list[float], n_fills: int, tier: str, regime: str
) -> tuple[Fill, ...]:
    """The fills of one bar from its paper kernel row's fill block `f`."""
    return tuple(
        Fill(
            symbol,
            start_ms,
            j,
            "buy" if f[j * _FILL_WIDTH + _X_SIDE] > 0.0 else "sell",
            f[j * _FILL_WIDTH + _X_QTY],
            f[j * _FILL_WIDTH + _X_PRICE],
            f[j * _FILL_WIDTH + _X_NOTIONAL],
            f[j * _FILL_WIDTH + _X_FEE],
            f[j * _FILL_WIDTH + _X_REALIZED],
            tier,
            regime,
        )
        for j in range(n_fills)
    )


#: `DecisionRecord`'s twin with positional fields (its names, order, tag and encoding; any value type): a
#: backtest's decisions.jsonl is one `map` of it over column lists, then `encode_lines`, byte for byte what
#: `encode_lines` of the records gives (tests/test_backtest_fast.py) at a fraction of the Python work.
_Line: Final = msgspec.defstruct(
    "DecisionLine",
    [(name, object) for name in DecisionRecord.__struct_encode_fields__],
    tag_field=DecisionRecord.__struct_config__.tag_field,
    tag=DecisionRecord.__struct_config__.tag,
    omit_defaults=DecisionRecord.__struct_config__.omit_defaults,
)
_ENCODER: Final = msgspec.json.Encoder()


def _line_columns(res: SymbolOutput, policy: Policy, *, source: str) -> list[list[Any]]:
    """One list per `DecisionRecord` field (in its order) holding what `records` would put there, types
    included (ints for whole units, None for no value)."""
    m, out, names = res.rows.shape[0], res.out, policy.tiers
    n_fills = out[:, _P["R_N_FILLS"]]
    filled = n_fills > 0.0
    position = out[:, _P["R_POSITION"]]
    if policy.fixed:
        pos: list[Any] = position.astype(np.int64).tolist()
    else:
        obj = position.astype(object)
        obj[position == 0.0] = 0
        pos = obj.tolist()
    fill_price = np.full(m, None, dtype=object)
    fill_price[filled] = out[filled, _P["R_FILL_PRICE"]].tolist()
    fee = np.full(m, 0, dtype=object)
    fee[filled] = out[filled, _P["R_FEE"]].tolist()
    tier_names = np.array(names, dtype=object)[res.tier].tolist()
    regime_names = np.array(REGIME_NAMES, dtype=object)[res.regime].tolist()
    fills = _fill_column(res, out, tier_names, regime_names)
    col = {
        "symbol": [res.symbol] * m,
        "start_ms": res.start_ms.tolist(),
        "source": [source] * m,
        "regime": regime_names,
        "tier": tier_names,
        "prediction": res.prediction.tolist(),
        "vol_forecast": [None] * m if policy.vol_factors is None else res.vol_forecast.tolist(),
        "signal": out[:, _P["R_SIGNAL"]].astype(np.int64).tolist(),
        "position": pos,
        "qty": out[:, _P["R_QTY"]].tolist(),
        "fill_price": fill_price.tolist(),
        "fee_usd": fee.tolist(),
        "realized_pnl_usd": out[:, _P["R_REALIZED"]].tolist(),
        "unrealized_pnl_usd": out[:, _P["R_UNREALIZED"]].tolist(),
        "equity_usd": out[:, _P["R_EQUITY"]].tolist(),
        "bar_pnl_usd": out[:, _P["R_BAR_PNL"]].tolist(),
        "holding_pnl_usd": out[:, _P["R_HOLDING"]].tolist(),
        "holding_tier": _names_or_none(out[:, _P["R_HOLDING_TIER"]], names),
        "holding_regime": _names_or_none(out[:, _P["R_HOLDING_REGIME"]], REGIME_NAMES),
        "trade_pnl_usd": out[:, _P["R_TRADE_PNL"]].tolist(),
        "close": res.close.tolist(),
        "model_sha": [policy.model_sha] * m,
        "latency_us": [{}] * m,  # encoded only, never mutated: one empty dict serves every line
        "fills": fills,
    }
    return [col[name] for name in DecisionRecord.__struct_fields__]


def _fill_column(res: SymbolOutput, out: F64, tiers: list[Any], regimes: list[Any]) -> list[Any]:
    """Each bar's tuple of `Fill`s (what `_fills` gives row by row), built one fill slot at a time."""
    m = out.shape[0]
    n_fills = out[:, _P["R_N_FILLS"]].astype(np.int64)
    column: list[Any] = [()] * m
    at = np.flatnonzero(n_fills > 0)
    if at.size == 0:
        return column
    tier_of, regime_of = np.array(tiers, dtype=object), np.array(regimes, dtype=object)
    sides = np.array(["sell", "buy"], dtype=object)
    tuples: list[tuple[Fill, ...]] = []
    for j in range(int(n_fills.max())):
        rows = at[n_fills[at] > j]
        block = out[rows, _R_FILL0 + j * _FILL_WIDTH : _R_FILL0 + (j + 1) * _FILL_WIDTH]
        made = map(
            Fill,
            itertools.repeat(res.symbol),
            res.start_ms[rows].tolist(),
            itertools.repeat(j),
            sides[(block[:, _X_SIDE] > 0.0).astype(np.int64)].tolist(),
            *(block[:, x].tolist() for x in (_X_QTY, _X_PRICE, _X_NOTIONAL, _X_FEE, _X_REALIZED)),
            tier_of[rows].tolist(),
            regime_of[rows].tolist(),
        )
        if j == 0:
            tuples = list(zip(made))  # one-fill tuples, one per row of `at`
        else:
            for p, fill in zip(np.searchsorted(at, rows).tolist(), made, strict=True):
                tuples[p] = (*tuples[p], fill)
    for k, t in zip(at.tolist(), tuples, strict=True):
        column[k] = t
    return column


def _names_or_none(codes: F64, names: Sequence[str]) -> list[Any]:
    """`names[code]` where `code >= 0`, else None."""
    table = np.array([*names, None], dtype=object)
    idx = np.where(codes >= 0.0, codes, -1.0).astype(np.int64)
    return table[idx].tolist()  # type: ignore[no-any-return]  # an object array's tolist


def lines(outputs: Sequence[SymbolOutput], policy: Policy, *, source: str) -> bytes:
    """decisions.jsonl of the pass: every record's `bar_decided` line in the engine's order, each followed
    by a newline; byte for byte `encode_lines(merged(outputs, records(...)))`."""
    with gc_paused():
        per_symbol = {o.symbol: list(map(_Line, *_line_columns(o, policy, source=source))) for o in outputs}
        data = _ENCODER.encode_lines(merged(outputs, per_symbol))
        del per_symbol  # freed while the collector is off: it never scans them
    return data


def merged(outputs: Sequence[SymbolOutput], per_symbol: Mapping[str, Sequence[Any]]) -> list[Any]:
    """Every symbol's records in time order, ties in `outputs` order (the engine's bar order)."""
    flat = [r for o in outputs for r in per_symbol[o.symbol]]
    at = order(outputs).tolist()
    return list(operator.itemgetter(*at)(flat)) if len(at) > 1 else [flat[i] for i in at]


def order(outputs: Sequence[SymbolOutput]) -> I64:
    """The engine's order of the concatenated decided rows of `outputs`: by time, ties in `outputs` order."""
    times = np.concatenate([o.start_ms for o in outputs])
    which = np.concatenate([np.full(o.start_ms.shape[0], k, dtype=np.int64) for k, o in enumerate(outputs)])
    return np.lexsort((which, times)).astype(np.int64, copy=False)


class Decided:
    """A run's decisions as the kernels left them (`bot.sim.backtest_report.Decisions`): decisions.jsonl,
    the report's columns and the records are each built from the output arrays when first asked for."""

    def __init__(self, outputs: Sequence[SymbolOutput], policy: Policy, *, source: str) -> None:
        self.outputs = list(outputs)
        self.policy = policy
        self.source = source
        self._records: list[DecisionRecord] | None = None
        self._columns: Columns | None = None

    def records(self) -> list[DecisionRecord]:
        """Every record in the engine's order (`records` per symbol, `merged`)."""
        if self._records is None:
            with gc_paused():
                per = {o.symbol: records(o, self.policy, source=self.source) for o in self.outputs}
                self._records = merged(self.outputs, per)
        return self._records

    def lines(self) -> bytes:
        """decisions.jsonl (`lines`)."""
        return lines(self.outputs, self.policy, source=self.source)

    def columns(self) -> Columns:
        """The report's columns in the engine's order, straight from the output arrays."""
        if self._columns is None:
            self._columns = columns(self.outputs, self.policy)
        return self._columns


def columns(outputs: Sequence[SymbolOutput], policy: Policy) -> Columns:
    """`Columns.of_records(merged records)` without building the records."""
    at = order(outputs)

    def cat(arrays: Sequence[npt.NDArray[Any]]) -> npt.NDArray[Any]:
        return np.concatenate(arrays)[at] if arrays else np.zeros(0)

    outs = [o.out for o in outputs]

    def out_col(slot: str) -> F64:
        return cat([x[:, _P[slot]] for x in outs]).astype(np.float64, copy=False)

    n_fills = out_col("R_N_FILLS").astype(np.int64)
    width = int(n_fills.max(initial=0))
    notional = np.zeros((n_fills.shape[0], width), dtype=np.float64)
    for j in range(width):
        notional[:, j] = cat([x[:, _R_FILL0 + j * _FILL_WIDTH + _X_NOTIONAL] for x in outs])
    fee = np.where(n_fills > 0, out_col("R_FEE"), 0.0)
    h_regime = out_col("R_HOLDING_REGIME")
    return Columns(
        symbols=tuple(o.symbol for o in outputs),
        tiers=policy.tiers,
        regimes=REGIME_NAMES,
        symbol=cat([np.full(o.rows.shape[0], k, dtype=np.int64) for k, o in enumerate(outputs)]),
        start_ms=cat([o.start_ms for o in outputs]),
        close=cat([o.close for o in outputs]),
        tier=cat([o.tier for o in outputs]),
        regime=cat([o.regime for o in outputs]),
        prediction=cat([o.prediction for o in outputs]),
        position=out_col("R_POSITION"),
        fee_usd=fee,
        bar_pnl_usd=out_col("R_BAR_PNL"),
        holding_pnl_usd=out_col("R_HOLDING"),
        holding_regime=np.where(h_regime >= 0.0, h_regime, -1.0).astype(np.int64),
        n_fills=n_fills,
        fill_notional=notional,
    )


def pnl_by_time(outputs: Sequence[SymbolOutput]) -> tuple[I64, F64]:
    """The portfolio's PnL per decided bar time (USD, summed over symbols in `outputs` order, as a sweep
    summed the records): `(times ascending, pnl)`."""
    times = np.concatenate([o.start_ms for o in outputs])
    pnl = np.concatenate([o.out[:, _P["R_BAR_PNL"]] for o in outputs])
    uniq, inverse = np.unique(times, return_inverse=True)
    summed = np.bincount(inverse, weights=pnl, minlength=uniq.shape[0])
    return uniq.astype(np.int64, copy=False), summed.astype(np.float64, copy=False)
