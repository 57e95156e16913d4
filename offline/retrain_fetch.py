"""The retrain's data (`offline.retrain`, step 1): resolve a `[market] symbols` selection on the exchange,
fetch every symbol's last `[retrain] history_bars` bars over REST, and merge the bars the service recorded.
A failure here is a `FetchFailedError` (exit 3); the champion and `current` are never touched.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import aiohttp

from bot.bybit.errors import ExchangeError
from bot.config import Config
from bot.core.bars import Bar, interval_ms
from bot.core.errors import BotError

EXIT_FETCH: Final = 3


class FetchFailedError(BotError):
    """The bars could not be fetched (exchange unreachable, refused, or too few bars): exit 3."""

    exit_code = EXIT_FETCH


def resolve_selection(cfg: Config, log: Callable[[str], None]) -> Config:
    """`cfg` with a `[market] symbols` selection replaced by the symbols it means on the exchange now
    (`bot.bybit.universe.resolve`: instruments-info, every page, and tickers), as the service resolves it
    at start-up; a plain list is returned as it is.

    Raises:
        ConfigError: the selection leaves no symbol (exit 2).
        FetchFailedError: the exchange cannot be reached or refused (exit 3).
    """
    selection = cfg.market.selection
    if selection is None:
        return cfg
    from bot.bybit.rest import RestClient
    from bot.bybit.universe import resolve, resolve_config

    ex = cfg.exchange

    async def ask() -> Any:
        async with RestClient(
            ex.rest_url,
            timeout_s=ex.rest_timeout_s,
            max_retries=ex.rest_max_retries,
            backoff_initial_s=ex.rest_backoff_initial_s,
            backoff_max_s=ex.rest_backoff_max_s,
        ) as rest:
            return await resolve(rest, selection)

    try:
        universe = asyncio.run(ask())
    except (ExchangeError, aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise FetchFailedError(
            f"resolving [market] symbols from {ex.rest_url} failed: {exc or type(exc).__name__}"
        ) from exc
    log(
        f"retrain: [market] symbols selects {len(universe.symbols)} of {universe.eligible} Trading USDT "
        f"perpetuals: {', '.join(universe.symbols[:10])}{', ...' if len(universe.symbols) > 10 else ''}"
    )
    return resolve_config(cfg, universe)


def fetch_series(cfg: Config, *, end_ms: int | None = None) -> dict[str, list[Bar]]:
    """The last `[retrain] history_bars` confirmed bars of every `[market] symbol`, ascending.

    Raises:
        FetchFailedError: the exchange cannot be reached or refused, or returned too few bars.
    """
    from offline.fetch import fetch_history  # the one REST history fetch (offline fetch)

    rc = cfg.retrain
    step = interval_ms(cfg.market.interval)
    days = (rc.history_bars + 1) * step / 86_400_000
    url = cfg.exchange.rest_url

    async def fetch_all() -> dict[str, list[Bar]]:
        out: dict[str, list[Bar]] = {}
        for symbol in cfg.market.symbol_list:  # a selection was resolved first (resolve_selection)
            out[symbol] = await fetch_history(
                cfg, symbol=symbol, interval=cfg.market.interval, days=days, rest_url=None, end_ms=end_ms
            )
        return out

    try:
        series = asyncio.run(fetch_all())
    except (ExchangeError, aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise FetchFailedError(f"fetching bars from {url} failed: {exc or type(exc).__name__}") from exc
    need = 2 * rc.holdout_bars
    for symbol, bars in series.items():
        if len(bars) < need:
            raise FetchFailedError(
                f"{symbol}: {url} returned {len(bars)} confirmed bars, need at least {need} "
                f"(2 x [retrain] holdout_bars); lower holdout_bars or check the exchange"
            )
        series[symbol] = bars[-rc.history_bars :]
    return series


def merge_recorded(
    cfg: Config, series: dict[str, list[Bar]], *, ledger_path: str | Path | None = None
) -> dict[str, Any]:
    """Add the bars the service recorded in its ledger (`[ledger] path`) that the REST fetch lacks, inside
    the fetched window (REST wins where both have a bar); keeps the last `history_bars`. Returns what was
    done: `added` per symbol, or `skipped` with the reason (no ledger, unreadable: REST only).
    """
    from bot.ledger.writer import LedgerError
    from offline.recorded import RecordedDataError, recorded_bars

    path = Path(cfg.ledger.path if ledger_path is None else ledger_path)
    info: dict[str, Any] = {"ledger": str(path)}
    try:
        present = path.is_file()
    except OSError as exc:
        present, info["skipped"] = False, f"cannot stat the ledger: {exc.strerror}"
    if not present:
        info.setdefault("skipped", "no ledger at [ledger] path")
        return info
    added: dict[str, int] = {}
    for symbol, bars in series.items():
        try:
            recorded = recorded_bars(path, symbol)
        except RecordedDataError:
            added[symbol] = 0  # the service has not recorded this symbol
            continue
        except (LedgerError, OSError) as exc:
            info["skipped"] = f"cannot read the ledger: {exc}"
            return info
        have = {b.start_ms for b in bars}
        first = bars[0].start_ms
        extra = [b for b in recorded if b.start_ms >= first and b.start_ms not in have]
        if extra:
            merged = sorted([*bars, *extra], key=lambda b: b.start_ms)
            series[symbol] = merged[-cfg.retrain.history_bars :]
        added[symbol] = len(extra)
    info["added"] = added
    return info
