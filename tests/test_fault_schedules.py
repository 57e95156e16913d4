"""benchmarks/fault_schedules.py's multi-connection mode, one short schedule: exactly-once per symbol."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import io
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from bot.app import Service
from bot.config import Config
from bot.ledger.writer import Ledger
from bot.observe import logs
from bot.sim.replay import ReplayExchange

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "fault_schedules.py"


def _benchmark() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fault_schedules", BENCHMARK)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("fault_schedules", module)
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(90)
async def test_a_multi_connection_fault_schedule_decides_every_bar_of_every_symbol_once(
    trained_family: Path, tmp_path: Path
) -> None:
    """20 symbols on 3 connections through drops per connection, REST errors in gap fills and confirm
    faults: every closed bar of every symbol is in the ledger and the decision log exactly once."""
    fs = _benchmark()
    scale = dataclasses.replace(
        fs.multi_scale(20, connections=3, bars=16, bar_seconds=0.3), pause_s=(0.05, 0.4)
    )
    row = await fs.one_seed(3, scale, trained_family, tmp_path, 60.0)
    assert row["connections"] == 3
    assert row["complete"], row
    assert row["reconnects"] >= 1, row
    assert row["closed"] >= 20 * 10
    assert (row["missing"], row["doubled"], row["unexpected"]) == (0, 0, 0), row["examples"]


async def _serve_until(cfg: Config, done: Callable[[Service], bool], timeout_s: float) -> Service:
    """Run one service until `done(service)` (or `timeout_s`), then stop it."""
    service = Service(cfg)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    async with asyncio.timeout(timeout_s):
        while not done(service) and not task.done():  # noqa: ASYNC110 - polls the service's state
            await asyncio.sleep(0.02)
    stop.set()
    await task
    return service


def _decided_one(service: Service, *, symbol: str) -> bool:
    """`symbol` went live in this run and a bar of it has been decided since."""
    live_from = service._live_from.get(symbol)
    last = service._last_seen.get(symbol)
    return live_from is not None and last is not None and last >= live_from


@pytest.mark.timeout(90)
async def test_a_symbol_left_out_at_start_up_goes_live_at_the_start_that_serves_it(
    trained_family: Path, tmp_path: Path
) -> None:
    """A symbol whose start-up backfill failed (left out) gets no `live_from`; the next start that serves it
    decides from its own READY on, never the warm-up bars it backfilled (fault_schedules --multi seed 5)."""
    fs = _benchmark()
    scale = fs.multi_scale(2, connections=1, bars=30, bar_seconds=0.2)
    bad = scale.symbols[1]
    opts: dict[str, Any] = {"bar_seconds": 0.2, "updates_per_bar": 1, "history_bars": 200, "book": False}
    async with ReplayExchange(symbols=scale.symbols, max_bars=scale.bars, **opts) as ex:
        cfg = fs.run_config(ex, trained_family, tmp_path, book=False, scale=scale)
        logs.configure_logging(fmt="json", decisions_path=cfg.logging.decisions_path, stream=io.StringIO())
        ex.fail_symbol(bad)
        first = await _serve_until(cfg, lambda s: s.summary.decisions >= 2, 30.0)
        assert first.feed is not None
        assert list(first.feed.excluded) == [bad]
        ex.fail_symbol(bad, failing=False)
        await _serve_until(cfg, partial(_decided_one, symbol=bad), 30.0)
    ledger = Ledger.open(tmp_path / "ledger.sqlite")
    try:
        live_from = ledger.live_from(bad)
        stored = [b.start_ms for b in ledger.bars(bad)]
        decided = ledger.decided_keys(bad)
    finally:
        ledger.close()
    assert live_from is not None
    assert stored[0] < live_from  # the backfilled warm-up bars came before it
    assert decided
    assert min(decided) >= live_from
