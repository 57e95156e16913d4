"""The exchange edge's own settings: the `[exchange]` and `[market]` sections of the config schema.

The edge owns these structs so it imports nothing of the service; `bot.config` composes them into the one
config schema (its `Config` has an `exchange` and a `market`, which is all `FeedSettings` asks for).
"""

from __future__ import annotations

from typing import Annotated, Literal, Protocol

import msgspec
from msgspec import Meta

from bot.core.errors import ConfigError
from bot.core.params import NonNegFloat, PosFloat

NonNegInt = Annotated[int, Meta(ge=0)]
Symbol = Annotated[str, Meta(pattern=r"^[A-Z0-9]{2,30}$")]
Url = Annotated[str, Meta(pattern=r"^(https?|wss?)://\S+$")]


class Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base of every config section (unknown keys rejected)."""


_Section = Section

MAX_SYMBOLS = 1000  # symbols one process serves (Bybit lists ~530-740 USDT perpetuals)


class SymbolSelection(_Section, frozen=True):
    """`[market] symbols = { all = true, ... }`: every `Trading` USDT linear perpetual the exchange lists
    (`instruments-info`, every page), at least `min_turnover_usd` of 24h turnover (`tickers`), the `top` by
    turnover (None = all), none of `exclude`. Resolved at start-up (`bot.bybit.universe`)."""

    all: bool
    min_turnover_usd: NonNegFloat = 0.0
    top: Annotated[int, Meta(ge=1, le=MAX_SYMBOLS)] | None = None
    exclude: list[Symbol] = msgspec.field(default_factory=list)


class MarketConfig(_Section, frozen=True):
    symbols: Annotated[list[Symbol], Meta(min_length=1, max_length=MAX_SYMBOLS)] | SymbolSelection = (
        msgspec.field(default_factory=lambda: ["BTCUSDT"])
    )
    interval: str = "5"
    category: Literal["linear"] = "linear"
    # how often the running service asks the exchange again (instruments-info, tickers): a selection's new
    # listings join, and symbols no longer `Trading` (or dropped by the selection) stop, closed on paper
    reresolve_s: PosFloat = 86_400.0

    @property
    def symbol_list(self) -> list[str]:
        """The symbols to run: the configured list, or a selection's resolution (`bot.bybit.universe`
        replaces the selection with its symbols before anything else reads them)."""
        if isinstance(self.symbols, SymbolSelection):
            raise ConfigError(
                "[market] symbols is a selection that was not resolved yet; resolve it with "
                "bot.bybit.universe.resolve_config(cfg, rest) first"
            )
        return self.symbols

    @property
    def selection(self) -> SymbolSelection | None:
        """The selection when `symbols` is one, else None."""
        return self.symbols if isinstance(self.symbols, SymbolSelection) else None


class ExchangeConfig(_Section, frozen=True):
    rest_url: Url = "https://api.bybit.com"
    ws_url: Url = "wss://stream.bybit.com/v5/public/linear"
    rest_timeout_s: PosFloat = 10.0
    rest_max_retries: NonNegInt = 6
    rest_backoff_initial_s: PosFloat = 0.5
    rest_backoff_max_s: PosFloat = 30.0
    ping_interval_s: PosFloat = 20.0
    stale_feed_s: PosFloat = 90.0
    bar_overdue_s: PosFloat = 30.0
    reconnect_backoff_initial_s: PosFloat = 0.5
    reconnect_backoff_max_s: PosFloat = 30.0
    healthy_reset_s: PosFloat = 60.0
    book_stream: Literal["none", "orderbook", "tickers"] = "orderbook"
    backfill_bars: Annotated[int, Meta(ge=60, le=10_000)] = 2000
    handshake_timeout_s: PosFloat = 10.0
    feed_queue_size: Annotated[int, Meta(ge=16, le=1_000_000)] = 10_000
    # the whole exchange (docs/service.md): topics per websocket connection (each connection also stays
    # under Bybit's 21,000-character subscribe args), connection opens in any 5 minutes (Bybit: 500),
    # REST requests in any 5 s (Bybit's IP limit: 600, then HTTP 403), start-up backfills at once, and
    # tries of one symbol's backfill before it is left out with a warning
    max_topics: Annotated[int, Meta(ge=2, le=5000)] = 400
    ws_connects_per_5min: Annotated[int, Meta(ge=1, le=500)] = 400
    rest_requests_per_5s: Annotated[int, Meta(ge=1, le=600)] = 500
    backfill_concurrency: Annotated[int, Meta(ge=1, le=64)] = 8
    backfill_attempts: Annotated[int, Meta(ge=1, le=10)] = 2


class FeedSettings(Protocol):
    """What the feed reads of the config: its `[exchange]` and `[market]` sections (`bot.config.Config`)."""

    @property
    def exchange(self) -> ExchangeConfig: ...

    @property
    def market(self) -> MarketConfig: ...
