"""Symbols joining and leaving a running service against the replay exchange: a listing joins at a bar
boundary and is decided; a symbol going to `Settling` is unsubscribed, closed on paper at its last price with
one log line and never decided again; a symbol whose start-up backfill failed leaves the engine and the status
page; every other symbol is decided exactly once throughout."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import pytest
from support import small_config

from bot.app import Service, resolve_symbols
from bot.config import Config
from bot.ledger.writer import Ledger
from bot.observe import logs
from bot.sim.replay import ReplayExchange

SYMBOLS = ["S000USDT", "S001USDT", "S002USDT", "S003USDT"]
NEW, GONE = "S003USDT", "S001USDT"


def selection_config(ex: ReplayExchange, models: Path, out: Path, **market: Any) -> Config:
    """A selection of every Trading symbol, always in a position (thresholds 0), re-resolved fast."""
    return small_config(
        market={"symbols": {"all": True}, "interval": ex.interval, "reresolve_s": 0.3, **market},
        models={"dir": str(models), "symbols": "any"},
        exchange={
            "rest_url": ex.rest_url,
            "ws_url": ex.ws_url,
            "backfill_bars": 120,
            "reconnect_backoff_initial_s": 0.02,
            "reconnect_backoff_max_s": 0.2,
            "ping_interval_s": 1.0,
            "stale_feed_s": 5.0,
            "book_stream": "none",
            "rest_max_retries": 1,
            "rest_backoff_initial_s": 0.01,
            "rest_backoff_max_s": 0.05,
        },
        regime={"use_book": False},
        paper={"long_threshold_bps": 0.0, "short_threshold_bps": 0.0},
        ledger={"path": str(out / "ledger.sqlite"), "synchronous": "normal"},
        logging={"decisions_path": str(out / "decisions.jsonl"), "format": "json"},
    )


def events(buf: io.StringIO, name: str) -> list[dict[str, Any]]:
    return [r for r in map(json.loads, buf.getvalue().splitlines()) if r.get("event") == name]


async def until(cond: Any, *, timeout_s: float = 30.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not cond():  # noqa: ASYNC110 - polls the service's counters, no event to wait on
            await asyncio.sleep(0.02)


@pytest.fixture
def log_buffer() -> Any:
    buf = io.StringIO()
    yield buf
    logs.close_logging()


async def test_listing_joins_and_settling_symbol_stops_closed_on_paper_others_exactly_once(
    trained_family: Path, tmp_path: Path, log_buffer: io.StringIO
) -> None:
    """A new listing joins and is decided from a bar boundary; a Settling symbol is closed on paper at its
    last close (a stops row, a closing fill, one symbol_stopped line) and never decided again; the others
    are decided exactly once, every closed bar in order."""
    opts: dict[str, Any] = {"bar_seconds": 0.05, "updates_per_bar": 1, "history_bars": 200, "book": False}
    async with ReplayExchange(symbols=SYMBOLS, data="synthetic", seed=11, **opts) as ex:
        ex.set_status(NEW, "PreLaunch")
        cfg = selection_config(ex, trained_family, tmp_path)
        logs.configure_logging(fmt="json", decisions_path=cfg.logging.decisions_path, stream=log_buffer)
        selection = cfg.market.selection
        cfg = await resolve_symbols(cfg)
        assert sorted(cfg.market.symbol_list) == [s for s in SYMBOLS if s != NEW]
        service = Service(cfg, selection=selection)
        stop = asyncio.Event()
        task = asyncio.create_task(service.run(stop))
        await asyncio.wait_for(service.ready_event.wait(), timeout=30)
        await until(lambda: service.summary.decisions >= 9)
        ex.set_status(NEW, "Trading")
        ex.set_status(GONE, "Settling")
        await until(lambda: service.summary.stopped == 1 and service.summary.joined == 1)
        await until(lambda: NEW in service.status.symbols and len(service.status.symbols[NEW].recent) >= 5)
        stop.set()
        await asyncio.wait_for(task, timeout=30)
    stopped = events(log_buffer, logs.SYMBOL_STOPPED)
    assert [(r["symbol"], r["reason"]) for r in stopped] == [(GONE, "no longer Trading")]
    assert [r["symbol"] for r in events(log_buffer, logs.SYMBOL_JOINED)] == [NEW]
    decided: dict[str, list[int]] = {}
    for r in map(json.loads, (tmp_path / "decisions.jsonl").read_text(encoding="utf-8").splitlines()):
        if r.get("event") == logs.BAR_DECIDED:
            decided.setdefault(r["symbol"], []).append(r["start_ms"])
    step = 300_000
    with Ledger.open(cfg.ledger.path) as ledger:
        for s in ("S000USDT", "S002USDT", NEW):
            keys = decided[s]
            assert keys == list(range(keys[0], keys[0] + step * len(keys), step)), s  # once each, in order
            assert ledger.decided_keys(s) == keys, s
        assert decided[NEW][0] == stopped_or_joined_live_from(log_buffer)
        gone = ledger.decided_keys(GONE)
        assert gone == decided[GONE]
        (_, reason, price, qty), *more = ledger.stops(GONE)
        assert not more
        assert reason == "no longer Trading"
        last = ledger.decisions(GONE)[-1]
        assert last.start_ms == gone[-1] == stopped[0]["last_decided_ms"]
        assert price == last.close == stopped[0]["price"]  # closed at its last price
        assert qty == -last.qty != 0.0  # the whole position, the other way
        closing = ledger.fills(GONE)[-1]
        assert (closing.start_ms, closing.price, closing.qty) == (last.start_ms, last.close, abs(last.qty))
        position = ledger.load_positions()[GONE]
        assert position.qty == 0.0
        assert position.units == 0
    assert GONE not in service.status.symbols
    assert GONE not in service.lag.lag_bars


def stopped_or_joined_live_from(buf: io.StringIO) -> int:
    (joined,) = events(buf, logs.SYMBOL_JOINED)
    return int(joined["live_from_ms"])


async def test_symbol_left_out_at_start_up_leaves_the_engine_and_the_status_page(
    trained_family: Path, tmp_path: Path, log_buffer: io.StringIO
) -> None:
    """A symbol whose start-up backfill failed (symbol_excluded) is removed from the engine and the status
    board once READY; the others are decided."""
    opts: dict[str, Any] = {"bar_seconds": 0.05, "updates_per_bar": 1, "history_bars": 200, "book": False}
    async with ReplayExchange(symbols=SYMBOLS[:3], data="synthetic", seed=12, **opts) as ex:
        ex.fail_symbol("S002USDT")
        cfg = selection_config(ex, trained_family, tmp_path, symbols=SYMBOLS[:3], reresolve_s=3600.0)
        logs.configure_logging(fmt="json", decisions_path=cfg.logging.decisions_path, stream=log_buffer)
        service = Service(cfg)
        stop = asyncio.Event()
        task = asyncio.create_task(service.run(stop))
        await asyncio.wait_for(service.ready_event.wait(), timeout=30)
        await until(lambda: service.summary.decisions >= 4)
        stop.set()
        await asyncio.wait_for(task, timeout=30)
    assert [r["symbol"] for r in events(log_buffer, logs.SYMBOL_EXCLUDED)] == ["S002USDT"]
    assert set(service.status.symbols) == {"S000USDT", "S001USDT"}
