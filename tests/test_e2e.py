"""End to end over loopback: replay exchange -> service (feed, engine, tiers, paper, ledger, log)."""

from __future__ import annotations

import asyncio
import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pytest
import support
from support import small_config

from bot.app import Service
from bot.config import Config
from bot.core.bars import interval_ms
from bot.core.params import GUESSED_ROUTES
from bot.ledger.writer import Ledger
from bot.observe import logs
from bot.sim.replay import ReplayExchange

SYMBOL = "SYNTHUSDT"


def loop_config(ex: ReplayExchange, models: Path, out: Path, *, use_book: bool = True) -> Config:
    """The small test config pointed at `ex`, with state in `out`."""
    return support.loop_config(ex.rest_url, ex.ws_url, models, out, symbol=SYMBOL, use_book=use_book)


def decision_lines(path: Path) -> list[dict[str, Any]]:
    """The canonical `bar_decided` lines of a decision log."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        if rec.get("event") == logs.BAR_DECIDED:
            out.append(rec)
    return out


async def run_until(
    cfg: Config, n_decisions: int, *, stop_after_ready: asyncio.Event | None = None
) -> Service:
    """Run a service until it decided `n_decisions` bars."""
    service = Service(cfg, max_decisions=n_decisions)
    await asyncio.wait_for(service.run(asyncio.Event()), timeout=90)
    return service


async def decided_at_least(service: Service, n: int, *, timeout_s: float = 60.0) -> None:
    """Wait until `service` decided `n` bars (polls the counter the service owns)."""
    async with asyncio.timeout(timeout_s):
        while service.summary.decisions < n:  # noqa: ASYNC110 - a plain counter, no event to wait on
            await asyncio.sleep(0.02)


@pytest.fixture
def quiet_logs(tmp_path: Path) -> Any:
    """Log JSON lines to a buffer (and the decisions file per test config)."""
    buf = io.StringIO()
    yield buf
    logs.close_logging()


async def test_every_live_bar_decided_once_and_all_regimes_exercised(
    trained_family: Path, tmp_path: Path, quiet_logs: io.StringIO
) -> None:
    """Every closed bar after warm-up gets exactly one decision line and ledger row; all regimes/tiers run
    (a fixed route table sends each regime to another tier; the family's own routes may skip a tier)."""
    async with ReplayExchange(
        symbols=[SYMBOL], data="synthetic", seed=107, bar_seconds=0.0015, updates_per_bar=1, history_bars=200
    ) as ex:
        ex.pause()
        cfg = loop_config(ex, trained_family, tmp_path)
        cfg = msgspec.structs.replace(cfg, regime=msgspec.structs.replace(cfg.regime, routes=GUESSED_ROUTES))
        logs.configure_logging(fmt="json", decisions_path=cfg.logging.decisions_path, stream=quiet_logs)
        service = Service(cfg, max_decisions=2600)
        task = asyncio.create_task(service.run(asyncio.Event()))
        await asyncio.wait_for(service.ready_event.wait(), timeout=30)
        ex.resume()
        summary = await asyncio.wait_for(task, timeout=120)
    lines = decision_lines(tmp_path / "decisions.jsonl")
    keys = [rec["start_ms"] for rec in lines]
    assert summary.decisions == 2600 == len(lines)
    assert len(set(keys)) == len(keys), "a bar was decided twice"
    step = interval_ms("5")
    assert keys == list(range(keys[0], keys[0] + step * len(keys), step)), "a bar was skipped or reordered"
    closed = [b.start_ms for b in ex.bars_closed(SYMBOL)]
    assert keys == [k for k in closed if keys[0] <= k <= keys[-1]]
    ledger = Ledger.open(cfg.ledger.path)
    try:
        assert ledger.decided_keys(SYMBOL) == keys
    finally:
        ledger.close()
    assert set(Counter(rec["regime"] for rec in lines)) == {"calm_trend", "normal", "volatile", "crisis"}
    assert set(Counter(rec["tier"] for rec in lines)) == {"research", "staging", "production", "edge"}
    for rec in lines:
        assert set(rec["latency_us"]) >= {"features", "regime", "inference", "paper", "total"}
        assert rec["source"] in {"ws", "rest"}


async def test_restart_resumes_without_duplicate_or_gap_and_matches_in_process_golden(
    trained_family: Path, tmp_path: Path, quiet_logs: io.StringIO
) -> None:
    """Stop mid-run and restart: no bar decided twice or skipped; decisions equal the in-process replay."""
    async with ReplayExchange(
        symbols=[SYMBOL],
        data="synthetic",
        seed=11,
        bar_seconds=0.004,
        updates_per_bar=1,
        history_bars=200,
        book=False,
    ) as ex:
        cfg = loop_config(ex, trained_family, tmp_path, use_book=False)
        logs.configure_logging(fmt="json", decisions_path=cfg.logging.decisions_path, stream=quiet_logs)
        first = await run_until(cfg, 150)
        await asyncio.sleep(0.3)  # the exchange closes bars while the bot is down
        second = await run_until(cfg, 150)
    assert first.summary.decisions == second.summary.decisions == 150
    lines = decision_lines(tmp_path / "decisions.jsonl")
    keys = [rec["start_ms"] for rec in lines]
    assert len(set(keys)) == len(keys) == 300
    step = interval_ms("5")
    assert keys == list(range(keys[0], keys[0] + step * 300, step))
    assert second.summary.per_source["rest"] > 0, "bars closed while down must come from the REST backfill"
    gold, _ = support.golden(cfg, ex.bars_closed(SYMBOL), tmp_path / "ledger.sqlite", symbol=SYMBOL)
    for rec in lines:
        regime, tier, pred, position = gold[rec["start_ms"]]
        assert (rec["regime"], rec["tier"], rec["position"]) == (regime, tier, position)
        assert rec["prediction"] == pytest.approx(pred, rel=1e-6, abs=1e-12)


async def test_tampered_model_refuses_to_start(trained_family: Path, tmp_path: Path) -> None:
    """A tier file whose bytes differ from the manifest's sha256 stops the service before any state exists."""
    import shutil

    models = tmp_path / "models"
    shutil.copytree(trained_family, models)
    onnx_file = models / "edge.onnx"
    data = bytearray(onnx_file.read_bytes())
    data[-1] ^= 0xFF
    onnx_file.write_bytes(bytes(data))
    cfg = msgspec.structs.replace(
        small_config(ledger={"path": str(tmp_path / "state" / "ledger.sqlite")}),
        models=msgspec.structs.replace(Config().models, dir=str(models)),
    )
    from bot.core.errors import ModelError

    with pytest.raises(ModelError, match=r"edge.*sha256"):
        await Service(cfg).run(asyncio.Event())
    assert not (tmp_path / "state").exists()


async def test_metrics_and_healthz_served_by_the_running_service(
    trained_family: Path, tmp_path: Path, quiet_logs: io.StringIO
) -> None:
    """With metrics on, the live service exposes bar counts per tier and reconnects; /healthz is 200."""
    import aiohttp

    async with ReplayExchange(
        symbols=[SYMBOL], data="synthetic", seed=5, bar_seconds=0.01, updates_per_bar=1, history_bars=200
    ) as ex:
        cfg = loop_config(ex, trained_family, tmp_path)
        cfg = msgspec.structs.replace(
            cfg, service=msgspec.structs.replace(cfg.service, metrics_enabled=True, metrics_port=0)
        )
        logs.configure_logging(fmt="json", decisions_path=cfg.logging.decisions_path, stream=quiet_logs)
        service = Service(cfg, max_decisions=400)
        task = asyncio.create_task(service.run(asyncio.Event()))
        await asyncio.wait_for(service.ready_event.wait(), timeout=30)
        await decided_at_least(service, 100)
        await ex.drop_connections()
        await decided_at_least(service, 300)
        assert service.metrics_port is not None
        base = f"http://127.0.0.1:{service.metrics_port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/healthz") as resp:
                assert resp.status == 200
                health = await resp.json()
            async with http.get(f"{base}/metrics") as resp:
                text = await resp.text()
        await asyncio.wait_for(task, timeout=60)
    assert health["status"] == "ok"
    bars = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("progdistill_bars_total{")
    )
    assert bars >= 300
    reconnects = [line for line in text.splitlines() if line.startswith("progdistill_ws_reconnects_total ")]
    assert reconnects
    assert float(reconnects[0].split()[1]) >= 1
    assert 'stage="inference"' in text
    # shadow scoring: every tier of the family has a live IC and a regret vs the router by now (per tier)
    for tier in ("research", "staging", "production", "edge"):
        assert f'progdistill_shadow_ic{{tier="{tier}"}}' in text
        assert f'progdistill_router_regret{{tier="{tier}"}}' in text
        assert f'progdistill_shadow_symbols{{tier="{tier}"}} 1.0' in text
    assert f'progdistill_position{{symbol="{SYMBOL}"}}' in text
