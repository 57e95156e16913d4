"""`python -m offline fetch` against a Bybit-shaped kline server on 127.0.0.1, CSV round trip."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web

from offline.__main__ import main
from offline.data import load_csv, synthetic_bars

STEP_MS = 300_000


async def test_fetch_writes_confirmed_bars_as_csv(tmp_path: Path) -> None:
    """fetch pages through 2,600 bars, drops the still-open candle, and writes a CSV that loads back equal."""
    bars = synthetic_bars(2601, seed=9)
    now_ms = bars[-1].start_ms + STEP_MS // 2  # the last bar is still open
    calls: list[dict[str, str]] = []

    async def kline(request: web.Request) -> web.Response:
        q = dict(request.query)
        calls.append(q)
        start = int(q.get("start", 0))
        end = int(q.get("end", now_ms))
        limit = int(q.get("limit", 200))
        rows = [b for b in bars if start <= b.start_ms <= end][::-1][:limit]
        lst = [
            [
                str(b.start_ms),
                str(b.open),
                str(b.high),
                str(b.low),
                str(b.close),
                str(b.volume),
                str(b.turnover),
            ]
            for b in rows
        ]
        body = {
            "retCode": 0,
            "retMsg": "OK",
            "result": {"category": "linear", "symbol": q["symbol"], "list": lst},
            "retExtInfo": {},
            "time": now_ms,
        }
        return web.json_response(body)

    app = web.Application()
    app.router.add_get("/v5/market/kline", kline)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    out = tmp_path / "BTCUSDT_5m.csv"
    try:
        rc = await asyncio.to_thread(
            main,
            [
                "fetch",
                "--symbol",
                "BTCUSDT",
                "--interval",
                "5",
                "--days",
                str(2600 * STEP_MS / 86_400_000),
                "--end-ms",
                str(now_ms),
                "--out",
                str(out),
                "--rest-url",
                f"http://127.0.0.1:{port}",
            ],
        )
    finally:
        await runner.cleanup()
    assert rc == 0
    assert len(calls) >= 3  # 1000 rows per page
    got = load_csv(out)
    want = bars[:-1]  # the window starts at the first bar; the still-open last candle is dropped
    assert [b.start_ms for b in got] == [b.start_ms for b in want]
    assert [(b.open, b.high, b.low, b.close, b.volume) for b in got] == [
        (b.open, b.high, b.low, b.close, b.volume) for b in want
    ]
