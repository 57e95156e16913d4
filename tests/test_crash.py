"""Crash recovery and graceful shutdown of the real service process (`python -m bot run`) over loopback."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import sys
from pathlib import Path

import pytest
from support import golden, loop_config, to_toml

from bot.config import Config
from bot.core.bars import interval_ms
from bot.ledger.writer import Ledger
from bot.sim.replay import ReplayExchange

SYMBOL = "SYNTHUSDT"
REPO = Path(__file__).resolve().parents[1]


def crash_config(ex: ReplayExchange, models: Path, out: Path) -> Config:
    """Service config against `ex` with the book off (a restart then reproduces regimes exactly)."""
    return loop_config(ex.rest_url, ex.ws_url, models, out, symbol=SYMBOL, use_book=False, backfill_bars=100)


async def spawn(config_path: Path, **env: str) -> asyncio.subprocess.Process:
    """Start `python -m bot run --config FILE` with stdout discarded and `env` added."""
    return await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "bot", "run", "--config", str(config_path)),
        cwd=REPO,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONHASHSEED": "0", **env},
    )


def notify_socket(path: Path) -> socket.socket:
    """A Unix datagram socket standing in for systemd's NOTIFY_SOCKET."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    return sock


async def collect(sock: socket.socket, out: list[str]) -> None:
    """Read datagrams from `sock` into `out` until cancelled (the kernel queues only ~10)."""
    loop = asyncio.get_running_loop()
    while True:
        out.append((await loop.sock_recv(sock, 4096)).decode())


def decided(ledger_path: Path) -> list[tuple[int, str, str, float, int]]:
    """(start_ms, regime, tier, prediction, position) of every ledger decision, by start_ms."""
    ledger = Ledger.open(ledger_path)
    try:
        return [(d.start_ms, d.regime, d.tier, d.prediction, d.position) for d in ledger.decisions(SYMBOL)]
    finally:
        ledger.close()


@pytest.mark.timeout(240)
async def test_sigkill_at_random_points_then_restart_equals_uninterrupted_run(
    trained_family: Path, tmp_path: Path
) -> None:
    """20 SIGKILLs at random points: no bar decided twice or skipped; decisions, positions and PnL equal
    an uninterrupted in-process run over the same bars; the last run speaks sd_notify and stops on SIGTERM
    with exit 0 and a last log line."""
    rng = random.Random(20261128)
    async with ReplayExchange(
        symbols=[SYMBOL],
        data="synthetic",
        seed=23,
        bar_seconds=0.01,
        updates_per_bar=1,
        history_bars=150,
        book=False,
    ) as ex:
        cfg = crash_config(ex, trained_family, tmp_path)
        config_path = tmp_path / "config.toml"
        config_path.write_text(to_toml(cfg), encoding="utf-8")
        kills = 0
        for _ in range(20):
            proc = await spawn(config_path)
            await asyncio.sleep(rng.uniform(0.4, 2.5))
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            kills += proc.returncode == -signal.SIGKILL
        sock = notify_socket(tmp_path / "notify.sock")
        messages: list[str] = []
        reader = asyncio.create_task(collect(sock, messages))
        proc = await spawn(config_path, NOTIFY_SOCKET=str(tmp_path / "notify.sock"), WATCHDOG_USEC="200000")
        async with asyncio.timeout(60):
            while not any("READY=1" in m for m in messages):  # noqa: ASYNC110 - filled by the reader task
                await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # decide some bars live, then stop
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), timeout=30)
        assert proc.returncode == 0, stderr.decode()
        await asyncio.sleep(0.1)
        reader.cancel()
        sock.close()
        closed = ex.bars_closed(SYMBOL)
    assert kills == 20
    # systemd protocol of the last run: READY after backfill+subscribe, watchdog pings, STOPPING on SIGTERM
    ready = [i for i, m in enumerate(messages) if "READY=1" in m]
    stopping = [i for i, m in enumerate(messages) if "STOPPING=1" in m]
    assert ready, messages
    assert stopping, messages
    assert ready[0] < stopping[0], messages
    assert any(m.startswith("WATCHDOG=1") for m in messages[ready[0] : stopping[0]]), messages
    last = (tmp_path / "decisions.jsonl").read_text(encoding="utf-8").splitlines()[-1]
    assert json.loads(last)["event"] == "service_stopped"

    rows = decided(tmp_path / "ledger.sqlite")
    keys = [r[0] for r in rows]
    step = interval_ms(cfg.market.interval)
    assert len(rows) > 200
    assert len(set(keys)) == len(keys), "a bar was decided twice"
    assert keys == list(range(keys[0], keys[0] + step * len(keys), step)), "a bar was skipped"

    # the uninterrupted run: the same bars through one engine, deciding from the same live_from
    ledger = Ledger.open(tmp_path / "ledger.sqlite")
    try:
        live_from = ledger.live_from(SYMBOL)
        positions = ledger.load_positions()
    finally:
        ledger.close()
    assert live_from == keys[0]
    gold, trader = golden(cfg, closed, tmp_path / "ledger.sqlite", symbol=SYMBOL, last_ms=keys[-1])
    assert sorted(gold) == keys
    for start_ms, regime, tier, pred, position in rows:
        g = gold[start_ms]
        assert (regime, tier, position) == (g[0], g[1], g[3]), start_ms
        assert pred == pytest.approx(g[2], rel=1e-6, abs=1e-12)
    mine, theirs = positions[SYMBOL], trader.state(SYMBOL)
    assert mine.units == theirs.units
    assert mine.realized_pnl_usd == pytest.approx(theirs.realized_pnl_usd, rel=1e-9, abs=1e-6)
    assert mine.fees_usd == pytest.approx(theirs.fees_usd, rel=1e-9, abs=1e-6)
