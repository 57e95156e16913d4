"""Pure paper trader: prediction -> target position -> fills, fees, realised/unrealised PnL and attribution.

Policy (kept simple on purpose):

- signal = +1 if `prediction > long_threshold_bps / 1e4`, -1 if `prediction < -short_threshold_bps / 1e4`,
  else 0 (`prediction` is the predicted next-horizon return as a fraction);
- target position = `signal * max_units` units (`sizing = "fixed"`), or with `sizing = "vol_target"`
  `signal * min(target_vol_bps / 1e4 / vol_forecast, max_units)` units (fractional; flat while the forecast
  exceeds `max_vol_bps`), so that a unit's per-bar PnL volatility, `notional_usd * vol`, is held at
  `target_vol_bps` of notional (volatility-managed exposure, Moreira & Muir 2017); one unit is
  `notional_usd` of notional at the fill price, so
  opening `u` units buys/sells `u * notional_usd / fill_price` coins. Going flat closes everything; a flip
  closes the old position and opens the new one in the same bar (two fills); a smaller position of the same
  sign closes that fraction of the coins.

Fills happen at the confirmed bar: base price = the bar's close (`fill_price = "close"`) or the book mid when
`fill_price = "mid"` and a book is passed (else the close); slippage moves the price `slippage_bps` against us
(buy higher, sell lower); the fee is `taker_fee_bps` or `maker_fee_bps` (by `order_type`) of each fill's
notional.

Accounting is average-cost, marked at the bar close:

    equity_usd = realized_pnl_usd - fees_usd + unrealized_pnl_usd,   unrealized = qty * (close - avg_entry_px)

Attribution: the bar's equity change splits exactly into the *holding* PnL `qty_before * (close_t -
close_{t-1})`, credited to the tier/regime that decided bar t-1 (and so set - or chose to keep - the position
held over bar t), and the *trade* PnL (fees plus the fills' slippage against the close), credited to the
tier/regime deciding bar t. The sums per tier / regime are in `PositionState.pnl_by_tier` / `pnl_by_regime`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import msgspec
import numpy as np
import numpy.typing as npt

from bot.core.bars import BookTop
from bot.core.book import PaperBook, finite_or_nan
from bot.core.kernels import paper as _kp
from bot.core.params import PaperConfig

Side = Literal["buy", "sell"]
STATE_VERSION: Final = 1


class Fill(msgspec.Struct, frozen=True):
    """One paper execution. `qty` is in coins (> 0); `realized_pnl_usd` is non-zero only on closing legs."""

    symbol: str
    start_ms: int
    seq: int
    side: Side
    qty: float
    price: float
    notional_usd: float
    fee_usd: float
    realized_pnl_usd: float
    tier: str
    regime: str


@dataclass(frozen=True, slots=True)
class PositionState:
    """Everything needed to resume a symbol's paper book exactly (serialise with `to_dict`/`from_dict`).

    `units` is the signed position in units of `notional_usd`; `qty` the signed coins; `avg_entry_px` the
    average entry (0 when flat); `mark_px` the last close (None before the first bar); `tier`/`regime` decided
    the last bar and own the current position (None when flat); totals are cumulative since the ledger began.
    """

    symbol: str
    last_start_ms: int | None = None
    units: float = 0
    qty: float = 0.0
    avg_entry_px: float = 0.0
    mark_px: float | None = None
    tier: str | None = None
    regime: str | None = None
    realized_pnl_usd: float = 0.0
    fees_usd: float = 0.0
    n_fills: int = 0
    pnl_by_tier: dict[str, float] = field(default_factory=dict)
    pnl_by_regime: dict[str, float] = field(default_factory=dict)

    @property
    def unrealized_pnl_usd(self) -> float:
        """qty * (mark - avg entry); 0 when flat or never marked."""
        if self.qty == 0.0 or self.mark_px is None:
            return 0.0
        return self.qty * (self.mark_px - self.avg_entry_px)

    @property
    def equity_usd(self) -> float:
        """Realised - fees + unrealised, in USD."""
        return self.realized_pnl_usd - self.fees_usd + self.unrealized_pnl_usd

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (floats round-trip exactly through json)."""
        return {
            "version": STATE_VERSION,
            "symbol": self.symbol,
            "last_start_ms": self.last_start_ms,
            "units": self.units,
            "qty": self.qty,
            "avg_entry_px": self.avg_entry_px,
            "mark_px": self.mark_px,
            "tier": self.tier,
            "regime": self.regime,
            "realized_pnl_usd": self.realized_pnl_usd,
            "fees_usd": self.fees_usd,
            "n_fills": self.n_fills,
            "pnl_by_tier": dict(self.pnl_by_tier),
            "pnl_by_regime": dict(self.pnl_by_regime),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PositionState:
        """Inverse of `to_dict`; raises ValueError on another state version."""
        if d.get("version") != STATE_VERSION:
            raise ValueError(
                f"paper position state: expected version {STATE_VERSION}, got {d.get('version')!r}"
            )
        return cls(
            symbol=str(d["symbol"]),
            last_start_ms=None if d["last_start_ms"] is None else int(d["last_start_ms"]),
            units=_units(d["units"]),
            qty=float(d["qty"]),
            avg_entry_px=float(d["avg_entry_px"]),
            mark_px=None if d["mark_px"] is None else float(d["mark_px"]),
            tier=d["tier"],
            regime=d["regime"],
            realized_pnl_usd=float(d["realized_pnl_usd"]),
            fees_usd=float(d["fees_usd"]),
            n_fills=int(d["n_fills"]),
            pnl_by_tier={str(k): float(v) for k, v in d["pnl_by_tier"].items()},
            pnl_by_regime={str(k): float(v) for k, v in d["pnl_by_regime"].items()},
        )

    @classmethod
    def from_json(cls, text: str) -> PositionState:
        return cls.from_dict(json.loads(text))


@dataclass(frozen=True, slots=True)
class PaperResult:
    """The paper trader's output for one bar.

    `fill_price` is the last fill's price (None: no trade this bar); `fee_usd` and `realized_pnl_usd` are this
    bar's (realised is gross of fees); `unrealized_pnl_usd` and `equity_usd` are levels after the bar;
    `bar_pnl_usd` = equity change = `holding_pnl_usd` (to `holding_tier`/`holding_regime`, the position's
    owners before this bar) + `trade_pnl_usd` (fees and slippage, to this bar's tier/regime).
    """

    symbol: str
    start_ms: int
    signal: int
    position: float
    qty: float
    fill_price: float | None
    fee_usd: float
    realized_pnl_usd: float
    unrealized_pnl_usd: float
    equity_usd: float
    bar_pnl_usd: float
    holding_pnl_usd: float
    holding_tier: str | None
    holding_regime: str | None
    trade_pnl_usd: float
    fills: tuple[Fill, ...]
    state: PositionState


_S = _kp.SLOTS
_S_UNITS, _S_QTY, _S_AVG, _S_MARK = _S["S_UNITS"], _S["S_QTY"], _S["S_AVG"], _S["S_MARK"]
_S_HAS_LAST, _S_LAST, _S_HAS_MARK = _S["S_HAS_LAST"], _S["S_LAST_START_MS"], _S["S_HAS_MARK"]
_S_REALIZED, _S_FEES, _S_N_FILLS = _S["S_REALIZED"], _S["S_FEES"], _S["S_N_FILLS"]
_R_SIGNAL, _R_POSITION, _R_QTY, _R_N_FILLS = _S["R_SIGNAL"], _S["R_POSITION"], _S["R_QTY"], _S["R_N_FILLS"]
_R_FEE, _R_REALIZED, _R_UNREALIZED = _S["R_FEE"], _S["R_REALIZED"], _S["R_UNREALIZED"]
_R_EQUITY, _R_BAR_PNL, _R_HOLDING = _S["R_EQUITY"], _S["R_BAR_PNL"], _S["R_HOLDING"]
_R_TRADE_PNL, _R_FILL0, _FILL_WIDTH = _S["R_TRADE_PNL"], _S["R_FILL0"], _S["FILL_WIDTH"]
_R_HOLDING_TIER, _R_HOLDING_REGIME = _S["R_HOLDING_TIER"], _S["R_HOLDING_REGIME"]
_S_TIER, _S_REGIME = _S["S_TIER"], _S["S_REGIME"]
_X_SIDE, _X_QTY, _X_PRICE = _S["X_SIDE"], _S["X_QTY"], _S["X_PRICE"]
_X_NOTIONAL, _X_FEE, _X_REALIZED = _S["X_NOTIONAL"], _S["X_FEE"], _S["X_REALIZED"]
_NO_BOOK: Final = np.zeros(0, dtype=np.float64)


def _add(d: dict[str, float], key: str | None, value: float) -> None:
    if key is not None and value != 0.0:
        d[key] = d.get(key, 0.0) + value


def fills_of(o: list[float], symbol: str, start_ms: int, tier: str, regime: str) -> tuple[Fill, ...]:
    """The fills of the paper kernel's output row `o` (its `R_N_FILLS` slots from `R_FILL0`)."""
    n = int(o[_R_N_FILLS])
    if n == 0:
        return ()
    return tuple(
        Fill(
            symbol,
            start_ms,
            k,
            "buy" if o[_R_FILL0 + k * _FILL_WIDTH + _X_SIDE] > 0.0 else "sell",
            o[_R_FILL0 + k * _FILL_WIDTH + _X_QTY],
            o[_R_FILL0 + k * _FILL_WIDTH + _X_PRICE],
            o[_R_FILL0 + k * _FILL_WIDTH + _X_NOTIONAL],
            o[_R_FILL0 + k * _FILL_WIDTH + _X_FEE],
            o[_R_FILL0 + k * _FILL_WIDTH + _X_REALIZED],
            tier,
            regime,
        )
        for k in range(n)
    )


def state_array(st: PositionState) -> npt.NDArray[np.float64]:
    """`st` as the paper kernel's state array (owner codes none: the caller attributes PnL by name)."""
    a = _kp.new_state()
    if st.last_start_ms is not None:
        a[_S_HAS_LAST], a[_S_LAST] = 1.0, st.last_start_ms
    a[_S_UNITS], a[_S_QTY], a[_S_AVG] = st.units, st.qty, st.avg_entry_px
    if st.mark_px is not None:
        a[_S_HAS_MARK], a[_S_MARK] = 1.0, st.mark_px
    a[_S_REALIZED], a[_S_FEES], a[_S_N_FILLS] = st.realized_pnl_usd, st.fees_usd, st.n_fills
    return a


def kernel_params(cfg: PaperConfig) -> npt.NDArray[np.float64]:
    """The paper kernel's parameter row for `cfg`."""
    return _kp.make_params(
        notional_usd=cfg.notional_usd,
        max_units=cfg.max_units,
        long_threshold_bps=cfg.long_threshold_bps,
        short_threshold_bps=cfg.short_threshold_bps,
        fill_mid=cfg.fill_price == "mid",
        slippage_bps=cfg.slippage_bps,
        fee_bps=cfg.taker_fee_bps if cfg.order_type == "taker" else cfg.maker_fee_bps,
        vol_target=cfg.sizing == "vol_target",
        target_vol_bps=cfg.target_vol_bps,
        max_vol_bps=cfg.max_vol_bps,
        rebalance_band=cfg.rebalance_band,
    )


class PaperTrader:
    """Paper book for any number of symbols: the paper kernel's tables (`bot.core.book.PaperBook`), stepped
    in place one bar (`on_bar`) or a bar close (`step_rows`, the engine's path) at a time.

    Args:
        cfg: thresholds, sizing, price rule, slippage and fees.
        positions: states to resume from (`Ledger.load_positions()`); None starts flat.
    """

    def __init__(self, cfg: PaperConfig, *, positions: Mapping[str, PositionState] | None = None) -> None:
        self.cfg = cfg
        self._params = kernel_params(cfg)
        self.book = PaperBook(self._params)
        self._fixed = cfg.sizing == "fixed"
        self._out = np.zeros((1, _S["N_OUT"]), dtype=np.float64)
        self._row = np.zeros(1, dtype=np.int64)
        # symbols restored with an int position and not stepped since: their state keeps the int
        self._int_units: set[str] = set()
        for st in (positions or {}).values():
            self.load(st)

    @property
    def positions(self) -> dict[str, PositionState]:
        """Every symbol's state (built from the tables; a copy)."""
        return {s: self.state(s) for s in self.book.symbols}

    def load(self, st: PositionState) -> None:
        """Resume `st.symbol` from `st` (a restored ledger state)."""
        book = self.book
        book.clear(st.symbol)
        r = book.row(st.symbol)
        book.state[r] = state_array(st)
        if st.tier is not None:
            book.state[r, _S_TIER] = book.tier_code(st.tier)
        if st.regime is not None:
            book.state[r, _S_REGIME] = book.regime_code(st.regime)
        book.credit(r, st.pnl_by_tier, st.pnl_by_regime)
        if isinstance(st.units, int):
            self._int_units.add(st.symbol)
        else:
            self._int_units.discard(st.symbol)

    @property
    def restored_int_units(self) -> bool:
        """Whether a restored int position awaits its first step (`stepped` must then be told)."""
        return bool(self._int_units)

    def stepped(self, symbols: list[str]) -> None:
        """`symbols`' rows were stepped: their positions are the kernel's numbers from now on."""
        if self._int_units:
            self._int_units.difference_update(symbols)

    @property
    def fee_bps(self) -> float:
        """Fee rate applied to every fill (by `order_type`)."""
        return self.cfg.taker_fee_bps if self.cfg.order_type == "taker" else self.cfg.maker_fee_bps

    def signal(self, prediction: float) -> int:
        """+1 long, -1 short, 0 flat for a predicted return (fraction)."""
        return int(_kp.signal_of(self._params, prediction))

    def target_units(self, signal: int, vol_forecast: float | None) -> float:
        """Target position in units for a signal and (vol_target sizing) the forecast per-bar vol.

        Raises:
            ValueError: vol_target sizing without a positive finite vol forecast.
        """
        cfg = self.cfg
        if cfg.sizing == "fixed" or signal == 0:
            return signal * cfg.max_units
        if vol_forecast is None or not 0.0 < vol_forecast < float("inf"):
            raise ValueError(f"vol_target sizing needs a positive vol forecast, got {vol_forecast!r}")
        units = float(_kp.target_units(self._params, signal, vol_forecast))
        return 0 if units == 0.0 else units

    def _banded(self, units: float, target: float) -> float:
        """Under vol_target, keep a same-sign position whose target moved less than `rebalance_band`."""
        return float(_kp.banded(self._params, units, target))

    def units(self, value: float) -> float:
        """A position as the Python number it always was: an int under fixed sizing (a whole number: a state
        restored from vol_target sizing may hold a fraction) and whenever flat, else a float (the JSON of a
        record and of a state keeps `1` and `1.0` apart)."""
        return int(value) if value == 0.0 or (self._fixed and value.is_integer()) else value

    def state(self, symbol: str) -> PositionState:
        """Current state of `symbol` (flat and unmarked if never traded)."""
        book = self.book
        r = book.rows.get(symbol)
        if r is None:
            return PositionState(symbol=symbol)
        w = book.state[r].tolist()
        by_tier, by_regime = book.attribution(r)
        return PositionState(
            symbol=symbol,
            last_start_ms=int(w[_S_LAST]) if w[_S_HAS_LAST] else None,
            units=int(w[_S_UNITS]) if symbol in self._int_units else self.units(w[_S_UNITS]),
            qty=w[_S_QTY],
            avg_entry_px=w[_S_AVG],
            mark_px=w[_S_MARK] if w[_S_HAS_MARK] else None,
            tier=book.tiers.name(w[_S_TIER]),
            regime=book.regimes.name(w[_S_REGIME]),
            realized_pnl_usd=w[_S_REALIZED],
            fees_usd=w[_S_FEES],
            n_fills=int(w[_S_N_FILLS]),
            pnl_by_tier=by_tier,
            pnl_by_regime=by_regime,
        )

    def base_price(self, close: float, book: BookTop | None) -> float:
        """Price before slippage: the close, or the book mid under `fill_price = "mid"` given a book."""
        if self.cfg.fill_price == "mid" and book is not None and book.bid_px > 0.0 and book.ask_px > 0.0:
            return 0.5 * (book.bid_px + book.ask_px)
        return close

    def on_bar(
        self,
        symbol: str,
        start_ms: int,
        close: float,
        prediction: float,
        tier: str,
        regime: str,
        book: BookTop | None = None,
        vol_forecast: float | None = None,
    ) -> PaperResult:
        """Decide, fill and mark one confirmed bar: holding PnL of the carried position, trade towards the
        signal's target, then the new state and this bar's result.

        Raises:
            ValueError: `close` is not positive, the bar is not newer than the symbol's last decided bar, or
                vol_target sizing without a positive finite vol forecast.
        """
        b = self.book
        r = b.row(symbol)
        self._row[0] = r
        status = b.step_rows(
            self._row,
            np.array([start_ms], dtype=np.int64),
            np.array([close], dtype=np.float64),
            np.array([prediction], dtype=np.float64),
            np.array([finite_or_nan(vol_forecast)], dtype=np.float64),
            _NO_BOOK if book is None else np.array([book.bid_px], dtype=np.float64),
            _NO_BOOK if book is None else np.array([book.ask_px], dtype=np.float64),
            np.array([b.tier_code(tier)], dtype=np.int64),
            np.array([b.regime_code(regime)], dtype=np.int64),
            self._out,
        )
        if status != 1:
            raise self.refused(symbol, start_ms, close, vol_forecast)
        self.stepped([symbol])
        return self.result(symbol, start_ms, self._out[0].tolist(), tier, regime, with_state=True)

    def result(
        self, symbol: str, start_ms: int, o: list[float], tier: str, regime: str, *, with_state: bool
    ) -> PaperResult:
        """The bar's result from the kernel's output row `o` (the symbol's row already stepped)."""
        fills = fills_of(o, symbol, start_ms, tier, regime)
        names = self.book.tiers, self.book.regimes
        return PaperResult(
            symbol=symbol,
            start_ms=start_ms,
            signal=int(o[_R_SIGNAL]),
            position=self.units(o[_R_POSITION]),
            qty=o[_R_QTY],
            fill_price=fills[-1].price if fills else None,
            fee_usd=o[_R_FEE] if fills else 0,
            realized_pnl_usd=o[_R_REALIZED],
            unrealized_pnl_usd=o[_R_UNREALIZED],
            equity_usd=o[_R_EQUITY],
            bar_pnl_usd=o[_R_BAR_PNL],
            holding_pnl_usd=o[_R_HOLDING],
            holding_tier=names[0].name(o[_R_HOLDING_TIER]),
            holding_regime=names[1].name(o[_R_HOLDING_REGIME]),
            trade_pnl_usd=o[_R_TRADE_PNL],
            fills=fills,
            state=self.state(symbol) if with_state else PositionState(symbol=symbol),
        )

    def close(self, symbol: str) -> tuple[Fill | None, PositionState]:
        """Flatten `symbol` at its last price (`mark_px`, no slippage; the fee of `order_type` charged): the
        symbol stops trading (delisted, suspended, dropped). Returns the closing fill (None when flat or
        never marked) and the new state, which keeps `last_start_ms` (the fill belongs to the last decided
        bar; `seq` 0 here, the ledger numbers it after that bar's fills)."""
        st = self.state(symbol)
        if st.qty == 0.0 or st.mark_px is None:
            return None, st
        px = st.mark_px
        qty = abs(st.qty)
        notional = qty * px
        fee = notional * self.fee_bps / 1e4
        realized = st.qty * (px - st.avg_entry_px)
        tier, regime = st.tier or "", st.regime or ""
        fill = Fill(
            symbol,
            st.last_start_ms or 0,
            0,
            "sell" if st.qty > 0.0 else "buy",
            qty,
            px,
            notional,
            fee,
            realized,
            tier,
            regime,
        )
        by_tier, by_regime = dict(st.pnl_by_tier), dict(st.pnl_by_regime)
        _add(by_tier, st.tier, realized - fee)
        _add(by_regime, st.regime, realized - fee)
        new = PositionState(
            symbol=symbol,
            last_start_ms=st.last_start_ms,
            units=0,
            qty=0.0,
            avg_entry_px=0.0,
            mark_px=px,
            realized_pnl_usd=st.realized_pnl_usd + realized,
            fees_usd=st.fees_usd + fee,
            n_fills=st.n_fills + 1,
            pnl_by_tier=by_tier,
            pnl_by_regime=by_regime,
        )
        self.load(new)
        return fill, new

    def refused(self, symbol: str, start_ms: int, close: float, vol: float | None) -> ValueError:
        """Why the kernel refused `symbol`'s bar (it changed nothing): the error to raise."""
        st = self.state(symbol)
        if not close > 0.0:
            return ValueError(f"{symbol}@{start_ms}: expected a positive close price, got {close}")
        if st.last_start_ms is not None and start_ms <= st.last_start_ms:
            return ValueError(
                f"{symbol}: bar start_ms={start_ms} already decided (last decided {st.last_start_ms})"
            )
        return ValueError(f"vol_target sizing needs a positive vol forecast, got {vol!r}")


def _units(value: Any) -> float:
    """Stored units: an int under fixed sizing (kept int so old states round-trip exactly), else a float."""
    return int(value) if float(value).is_integer() else float(value)
