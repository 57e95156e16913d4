"""The one decision record: what the engine decided for one confirmed bar.

The engine returns it, the ledger stores it (`bot.ledger.writer`), the shell appends it to the decision log
as the
`bar_decided` line (one msgspec encode: `encode_line`), and the report, the latency report and the backtest
decode it back with the same type (`decode_line`). A new field is added here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import msgspec
import numpy as np
import numpy.typing as npt

from bot.core.bars import Bar
from bot.core.paper import Fill, PaperResult

#: The `event` value of the decision line (the struct's tag).
BAR_DECIDED: Final = "bar_decided"


class DecisionRecord(msgspec.Struct, frozen=True, kw_only=True, tag_field="event", tag=BAR_DECIDED):
    """One decided bar. PnL fields as in `bot.core.paper.PaperResult` (USD, after this bar).

    `latency_us` maps stage -> microseconds: `features`, `regime`, `inference`, `paper`, `total` from the
    engine; the shell adds `ledger` and `recv_to_decision` (frame received -> decided) to the logged line.
    """

    symbol: str
    start_ms: int
    source: str
    regime: str
    tier: str
    prediction: float
    vol_forecast: float | None = None  # forecast RMS of one-bar log returns over the vol horizon (fraction)
    signal: int
    position: float  # units held after the bar (int under fixed sizing)
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
    close: float
    model_sha: str = ""  # sha256 of the deciding family's manifest.json ("" in records from before it)
    latency_us: dict[str, float]
    fills: tuple[Fill, ...] = ()

    @classmethod
    def of(
        cls,
        result: PaperResult,
        *,
        source: str,
        regime: str,
        tier: str,
        prediction: float,
        close: float,
        latency_us: dict[str, float] | None = None,
        vol_forecast: float | None = None,
        model_sha: str = "",
    ) -> DecisionRecord:
        """The record of a paper trader's result for one bar."""
        return cls(
            symbol=result.symbol,
            start_ms=result.start_ms,
            source=source,
            regime=regime,
            tier=tier,
            prediction=prediction,
            vol_forecast=vol_forecast,
            signal=result.signal,
            position=result.position,
            qty=result.qty,
            fill_price=result.fill_price,
            fee_usd=result.fee_usd,
            realized_pnl_usd=result.realized_pnl_usd,
            unrealized_pnl_usd=result.unrealized_pnl_usd,
            equity_usd=result.equity_usd,
            bar_pnl_usd=result.bar_pnl_usd,
            holding_pnl_usd=result.holding_pnl_usd,
            holding_tier=result.holding_tier,
            holding_regime=result.holding_regime,
            trade_pnl_usd=result.trade_pnl_usd,
            close=close,
            model_sha=model_sha,
            latency_us=latency_us if latency_us is not None else {},
            fills=result.fills,
        )


@dataclass(frozen=True, slots=True)
class Decided:
    """A decided bar as the observers receive it, once, after the bar close is committed: the bar, its
    record, the feature row it was decided from (None: none kept) and whether its regime changed with it.
    Observers read only this; none calls back into the engine."""

    bar: Bar
    record: DecisionRecord
    x: npt.NDArray[np.float64] | None = None
    regime_changed: bool = False


_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(DecisionRecord)


def encode_line(record: DecisionRecord, extra_latency_us: dict[str, float] | None = None) -> bytes:
    """The `bar_decided` JSON line (no newline): `{"event":"bar_decided","symbol":...}`; `extra_latency_us`
    adds stages measured after the engine (the shell's `ledger`, `recv_to_decision`) to `latency_us`."""
    if extra_latency_us:
        record = msgspec.structs.replace(record, latency_us={**record.latency_us, **extra_latency_us})
    return _encoder.encode(record)


def encode_lines(records: Iterable[DecisionRecord]) -> bytes:
    """`encode_line` of every record, each followed by a newline, in one encoder call (a backtest's log)."""
    return _encoder.encode_lines(records)


def decode_line(line: bytes | str) -> DecisionRecord:
    """Inverse of `encode_line`; raises msgspec.ValidationError / DecodeError on anything else."""
    return _decoder.decode(line)
