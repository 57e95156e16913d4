"""Which symbols a `[market] symbols = { all = true, ... }` selection means, resolved from the exchange.

`select` is pure: from every `instruments-info` row (all pages) and the REST `tickers` it keeps the USDT
linear perpetuals in status `Trading`, drops `exclude` and those under `min_turnover_usd` of 24h turnover,
and keeps the `top` by turnover (ties by name). `resolve` asks the exchange; `resolve_config` returns the
config with the selection replaced by its symbols, so everything after start-up reads a plain list.
`changes` is the daily re-resolution's diff: the symbols that join and those that leave.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec

from bot.bybit.rest import RestClient
from bot.bybit.settings import MAX_SYMBOLS, SymbolSelection
from bot.bybit.wire import RestInstrument, RestTicker
from bot.core.errors import ConfigError

C = TypeVar("C", bound=msgspec.Struct)

_SYMBOL = re.compile(r"^[A-Z0-9]{2,30}$")  # the config's Symbol pattern: what the rest of the bot accepts


@dataclass(frozen=True, slots=True)
class Universe:
    """A resolved selection: `symbols` by 24h turnover descending, and what the exchange listed."""

    symbols: tuple[str, ...]
    listed: int  # instruments-info rows (every page)
    eligible: int  # of them Trading USDT linear perpetuals
    turnover_usd: dict[str, float]  # 24h turnover of every chosen symbol


def eligible(rows: Iterable[RestInstrument]) -> set[str]:
    """The Trading USDT linear perpetuals among `rows` (not dated futures, not USDC perpetuals)."""
    return {
        r.symbol
        for r in rows
        if r.status == "Trading"
        and r.contractType == "LinearPerpetual"
        and r.quoteCoin == "USDT"
        and r.settleCoin in ("USDT", "")
        and _SYMBOL.match(r.symbol)
    }


def select(
    rows: Iterable[RestInstrument], tickers: Iterable[RestTicker], selection: SymbolSelection
) -> Universe:
    """The symbols `selection` means among `rows` (instruments-info) and `tickers` (24h turnover)."""
    rows = list(rows)
    ok = eligible(rows)
    turnover = {t.symbol: t.turnover24h for t in tickers if t.symbol in ok}
    excluded = set(selection.exclude)
    chosen = [s for s in ok if s not in excluded and turnover.get(s, 0.0) >= selection.min_turnover_usd]
    chosen.sort(key=lambda s: (-turnover.get(s, 0.0), s))
    chosen = chosen[: min(selection.top or MAX_SYMBOLS, MAX_SYMBOLS)]
    return Universe(tuple(chosen), len(rows), len(ok), {s: turnover.get(s, 0.0) for s in chosen})


async def resolve(rest: RestClient, selection: SymbolSelection) -> Universe:
    """Ask the exchange (instruments-info, every page; tickers) and `select`.

    Raises:
        ConfigError: the selection leaves no symbol (naming what the exchange listed).
        ExchangeError, RetriesExhaustedError, EndpointError: REST failed (from `RestClient`).
    """
    universe = select(await rest.instruments(), await rest.tickers(), selection)
    if not universe.symbols:
        raise ConfigError(
            f"$.market.symbols: the selection {msgspec.to_builtins(selection)} leaves no symbol "
            f"({universe.eligible} Trading USDT perpetuals of {universe.listed} instruments listed); "
            "lower min_turnover_usd or shorten exclude"
        )
    return universe


def resolve_config(cfg: C, universe: Universe) -> C:
    """`cfg` (the service's config struct, or any struct with a `market` section) with `[market] symbols` set
    to the resolved symbols."""
    section: Any = cfg
    market = msgspec.structs.replace(section.market, symbols=list(universe.symbols))
    return msgspec.structs.replace(cfg, market=market)


def changes(running: Iterable[str], resolved: Iterable[str]) -> tuple[list[str], list[str]]:
    """The daily re-resolution: (symbols that join, symbols that leave), each sorted."""
    old, new = set(running), set(resolved)
    return sorted(new - old), sorted(old - new)


@dataclass(frozen=True, slots=True)
class Review:
    """A re-resolution's outcome: `joined` symbols (sorted) and `left` ones with why they leave."""

    joined: tuple[str, ...]
    left: dict[str, str]  # symbol -> why: "no longer Trading", "status Closed", "dropped by the selection"


def review(
    rows: Iterable[RestInstrument],
    tickers: Iterable[RestTicker],
    selection: SymbolSelection | None,
    running: Iterable[str],
) -> Review:
    """Which running symbols leave and which join, from a fresh `instruments-info` and `tickers`.

    A running symbol leaves when its status is no longer `Trading` (absent from the rows, which Bybit lists
    for status `Trading` only unless asked, or listed with another status), and - under a selection - when
    the selection drops it. Only a selection adds symbols; a plain list never grows.
    """
    rows = list(rows)
    status = {r.symbol: r.status for r in rows}
    running = list(running)
    left: dict[str, str] = {}
    for s in running:
        if s not in status:  # instruments-info lists Trading symbols only by default
            left[s] = "no longer Trading"
        elif status[s] != "Trading":
            left[s] = f"status {status[s]}"
    if selection is None:
        return Review((), left)
    chosen = select(rows, tickers, selection).symbols
    joined, dropped = changes(running, chosen)
    for s in dropped:
        left.setdefault(s, "dropped by the selection")
    return Review(tuple(joined), left)
