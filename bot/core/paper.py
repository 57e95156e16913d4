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
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal

import msgspec

from bot.core.bars import BookTop
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


def _add(d: dict[str, float], key: str | None, value: float) -> None:
    if key is not None and value != 0.0:
        d[key] = d.get(key, 0.0) + value


class PaperTrader:
    """Paper book for any number of symbols.

    Args:
        cfg: thresholds, sizing, price rule, slippage and fees.
        positions: states to resume from (`Ledger.load_positions()`); None starts flat.
    """

    def __init__(self, cfg: PaperConfig, *, positions: Mapping[str, PositionState] | None = None) -> None:
        self.cfg = cfg
        self.positions: dict[str, PositionState] = dict(positions or {})

    @property
    def fee_bps(self) -> float:
        """Fee rate applied to every fill (by `order_type`)."""
        return self.cfg.taker_fee_bps if self.cfg.order_type == "taker" else self.cfg.maker_fee_bps

    def signal(self, prediction: float) -> int:
        """+1 long, -1 short, 0 flat for a predicted return (fraction)."""
        if prediction > self.cfg.long_threshold_bps * 1e-4:
            return 1
        if prediction < -self.cfg.short_threshold_bps * 1e-4:
            return -1
        return 0

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
        if cfg.max_vol_bps is not None and vol_forecast * 1e4 > cfg.max_vol_bps:
            return 0
        return signal * min(cfg.target_vol_bps * 1e-4 / vol_forecast, float(cfg.max_units))

    def _banded(self, units: float, target: float) -> float:
        """Under vol_target, keep a same-sign position whose target moved less than `rebalance_band`."""
        if (
            self.cfg.sizing == "vol_target"
            and units != 0
            and target != 0
            and (units > 0) == (target > 0)
            and abs(target - units) <= self.cfg.rebalance_band * abs(units)
        ):
            return units
        return target

    def state(self, symbol: str) -> PositionState:
        """Current state of `symbol` (flat and unmarked if never traded)."""
        return self.positions.get(symbol) or PositionState(symbol=symbol)

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
            ValueError: `close` is not positive, or the bar is not newer than the symbol's last decided bar.
        """
        st = self._checked_state(symbol, start_ms, close)
        holding, holding_tier, holding_regime = _holding_pnl(st, close)
        sig = self.signal(prediction)
        pricing = _Pricing(
            symbol=symbol,
            start_ms=start_ms,
            close=close,
            base=self.base_price(close, book),
            slip=self.cfg.slippage_bps * 1e-4,
            fee_rate=self.fee_bps * 1e-4,
            tier=tier,
            regime=regime,
        )
        held = self._held_units(st, pricing.base)
        ex = self._trade(st, held, self._banded(held, self.target_units(sig, vol_forecast)), pricing)
        by_tier = dict(st.pnl_by_tier)
        by_regime = dict(st.pnl_by_regime)
        _add(by_tier, holding_tier, holding)
        _add(by_regime, holding_regime, holding)
        _add(by_tier, tier, ex.trade_pnl)
        _add(by_regime, regime, ex.trade_pnl)
        fees = sum(f.fee_usd for f in ex.fills)
        owned = ex.units != 0
        new = replace(
            st,
            last_start_ms=start_ms,
            units=ex.units,
            qty=ex.qty,
            avg_entry_px=ex.avg,
            mark_px=close,
            tier=tier if owned else None,
            regime=regime if owned else None,
            realized_pnl_usd=st.realized_pnl_usd + ex.realized,
            fees_usd=st.fees_usd + fees,
            n_fills=st.n_fills + len(ex.fills),
            pnl_by_tier=by_tier,
            pnl_by_regime=by_regime,
        )
        self.positions[symbol] = new
        return PaperResult(
            symbol=symbol,
            start_ms=start_ms,
            signal=sig,
            position=ex.units,
            qty=ex.qty,
            fill_price=ex.fills[-1].price if ex.fills else None,
            fee_usd=fees,
            realized_pnl_usd=ex.realized,
            unrealized_pnl_usd=new.unrealized_pnl_usd,
            equity_usd=new.equity_usd,
            bar_pnl_usd=new.equity_usd - st.equity_usd,
            holding_pnl_usd=holding,
            holding_tier=holding_tier,
            holding_regime=holding_regime,
            trade_pnl_usd=ex.trade_pnl,
            fills=tuple(ex.fills),
            state=new,
        )

    def _checked_state(self, symbol: str, start_ms: int, close: float) -> PositionState:
        if not close > 0.0:
            raise ValueError(f"{symbol}@{start_ms}: expected a positive close price, got {close}")
        st = self.state(symbol)
        if st.last_start_ms is not None and start_ms <= st.last_start_ms:
            raise ValueError(
                f"{symbol}: bar start_ms={start_ms} already decided (last decided {st.last_start_ms})"
            )
        return st

    def _held_units(self, st: PositionState, price: float) -> float:
        """Units held now: as opened under fixed sizing; under vol_target the exposure at today's price
        (`qty * price / notional_usd`), so a position whose notional drifted with the price is rebalanced."""
        if self.cfg.sizing == "fixed" or st.qty == 0.0:
            return st.units
        return st.qty * price / self.cfg.notional_usd

    def _trade(self, st: PositionState, held: float, target: float, pricing: _Pricing) -> _Execution:
        """Fills that take the position from `held` to `target` units: first reduce or close (flat, flip,
        or a smaller size of the same sign), then open or add."""
        ex = _Execution(units=held, qty=st.qty, avg=st.avg_entry_px)
        units, qty, avg = ex.units, ex.qty, ex.avg
        if target == units:
            return ex
        if units != 0 and (target == 0 or (target > 0) != (units > 0) or abs(target) < abs(units)):
            frac = (
                1.0 if target == 0 or (target > 0) != (units > 0) else (abs(units) - abs(target)) / abs(units)
            )
            q = abs(qty) * frac
            side: Side = "sell" if qty > 0 else "buy"
            px = pricing.price(side)
            leg = q * (px - avg) if qty > 0 else q * (avg - px)
            ex.add(pricing, side, q, leg)
            ex.realized += leg
            remaining = abs(qty) - q
            units = 0 if frac == 1.0 else target
            qty = 0.0 if frac == 1.0 else (remaining if qty > 0 else -remaining)
            if qty == 0.0:
                avg = 0.0
        if target != units:
            # open or add (units is 0 or has target's sign with a smaller size)
            side = "buy" if target > 0 else "sell"
            px = pricing.price(side)
            q = abs(target - units) * self.cfg.notional_usd / px
            new_abs = abs(qty) + q
            avg = (abs(qty) * avg + q * px) / new_abs
            qty = new_abs if target > 0 else -new_abs
            units = target
            ex.add(pricing, side, q, 0.0)
        ex.units, ex.qty, ex.avg = units, qty, avg
        return ex


def _holding_pnl(st: PositionState, close: float) -> tuple[float, str | None, str | None]:
    """PnL of the position carried into this bar, marked from the last close to `close`, and its owners."""
    if st.qty == 0.0:
        return 0.0, None, None
    holding = st.qty * (close - st.mark_px) if st.mark_px is not None else 0.0
    return holding, st.tier, st.regime


@dataclass(frozen=True, slots=True)
class _Pricing:
    """How one bar's fills are priced: base price +- slippage, fee on notional, tagged with the bar."""

    symbol: str
    start_ms: int
    close: float
    base: float
    slip: float
    fee_rate: float
    tier: str
    regime: str

    def price(self, side: Side) -> float:
        return self.base * (1.0 + self.slip) if side == "buy" else self.base * (1.0 - self.slip)


@dataclass(slots=True)
class _Execution:
    """The running result of one bar's trade."""

    units: float
    qty: float
    avg: float
    fills: list[Fill] = field(default_factory=list)
    realized: float = 0.0
    trade_pnl: float = 0.0  # fees + slippage vs the close, to this bar's tier/regime

    def add(self, pricing: _Pricing, side: Side, q: float, realized_leg: float) -> None:
        px = pricing.price(side)
        notional = q * px
        fee = notional * pricing.fee_rate
        # a buy at px marked at close gains q*(close - px); a sell loses q*(close - px)
        close = pricing.close
        self.trade_pnl += (q * (close - px) if side == "buy" else q * (px - close)) - fee
        self.fills.append(
            Fill(
                pricing.symbol,
                pricing.start_ms,
                len(self.fills),
                side,
                q,
                px,
                notional,
                fee,
                realized_leg,
                pricing.tier,
                pricing.regime,
            )
        )


def _units(value: Any) -> float:
    """Stored units: an int under fixed sizing (kept int so old states round-trip exactly), else a float."""
    return int(value) if float(value).is_integer() else float(value)
