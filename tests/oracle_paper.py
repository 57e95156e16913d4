"""Slow oracle of the paper kernel: the former pure-Python `PaperTrader` of bot/core/paper.py, kept verbatim
for the parity tests (tests/test_kernels_paper.py). bot/ never imports it: `bot.core.kernels.paper` is the
implementation. The records (`Fill`, `PositionState`, `PaperResult`) are bot's own, so results compare equal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from bot.core.bars import BookTop
from bot.core.paper import Fill, PaperResult, PositionState, Side
from bot.core.params import PaperConfig


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
