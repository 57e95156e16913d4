"""The policy pass's outputs as what the backtest writes: `DecisionRecord`s (`records`), the decision log's
lines straight from the kernels' output arrays (`lines`, byte for byte msgspec's encoding of the records), the
report's columns (`columns`) and the portfolio's PnL per bar time (`pnl_by_time`, a sweep trial's metric).
`bot.sim.policy_pass` runs the kernels; this module only reads their output arrays.
"""

from __future__ import annotations

import gc
import itertools
import operator
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Final

import msgspec
import numpy as np
import numpy.typing as npt

from bot.core.decision import DecisionRecord
from bot.core.kernels import paper as _kp
from bot.core.paper import Fill
from bot.core.params import REGIME_NAMES
from bot.sim.backtest_report import Columns
from bot.sim.policy_pass import Policy, SymbolOutput

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

_P = _kp.SLOTS
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


class RunDecisions:
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
