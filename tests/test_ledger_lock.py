"""One bot per ledger: an OS lock taken before anything else; a second instance stops at once."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import support

from bot.app import Service
from bot.ledger.lock import LedgerInUseError, LedgerLock
from bot.observe import logs
from bot.sim.replay import ReplayExchange

REPO = Path(__file__).resolve().parents[1]


def test_second_lock_on_a_ledger_names_the_holder(tmp_path: Path) -> None:
    ledger = tmp_path / "state" / "ledger.sqlite"
    with LedgerLock(ledger) as first:
        assert first.held
        with pytest.raises(
            LedgerInUseError, match=rf"ledger\.sqlite: in use by another bot instance \(PID {os.getpid()}\)"
        ):
            LedgerLock(ledger).acquire()
    LedgerLock(ledger).acquire().release()  # released: the next owner gets it


def test_cli_exits_6_before_creating_any_file(tmp_path: Path, trained_family: Path) -> None:
    """`bot run` on a held ledger: exit 6 at once, one line naming ledger and PID, no log file created."""
    out = tmp_path / "out"
    cfg = support.loop_config("http://127.0.0.1:9", "ws://127.0.0.1:9", trained_family, out)
    config = tmp_path / "config.toml"
    config.write_text(support.to_toml(cfg), encoding="utf-8")
    with LedgerLock(cfg.ledger.path):
        before = sorted(p.name for p in out.iterdir())
        proc = subprocess.run(
            [sys.executable, "-m", "bot", "run", "--config", str(config)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        after = sorted(p.name for p in out.iterdir())
    assert proc.returncode == 6, proc.stderr
    assert proc.stderr.startswith("in use: ")
    assert f"PID {os.getpid()}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert before == after == ["ledger.sqlite.lock"]


async def test_second_service_stops_at_once_and_the_first_keeps_deciding(
    trained_family: Path, tmp_path: Path
) -> None:
    buf = io.StringIO()
    async with ReplayExchange(
        symbols=["SYNTHUSDT"], data="synthetic", seed=5, bar_seconds=0.02, updates_per_bar=1, history_bars=200
    ) as ex:
        cfg = support.loop_config(ex.rest_url, ex.ws_url, trained_family, tmp_path)
        logs.configure_logging(fmt="json", decisions_path=cfg.logging.decisions_path, stream=buf)
        try:
            first = Service(cfg)
            stop = asyncio.Event()
            task = asyncio.create_task(first.run(stop))
            await asyncio.wait_for(first.ready_event.wait(), timeout=30)
            second = Service(cfg)
            with pytest.raises(LedgerInUseError):
                await asyncio.wait_for(second.run(asyncio.Event()), timeout=5)
            assert not second.ready_event.is_set()
            n = first.summary.decisions
            async with asyncio.timeout(30):
                while first.summary.decisions < n + 5:  # noqa: ASYNC110 - a counter the service owns
                    await asyncio.sleep(0.02)
            stop.set()
            await asyncio.wait_for(task, timeout=30)
        finally:
            logs.close_logging()
