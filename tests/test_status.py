"""The status page: `render_status` (pure), the loopback rule, and the page served by a running service as
real headless Chromium renders it."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import random
import re
import shutil
import time
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
import support
from fixtures_models import edit_manifest

from bot.app import Service
from bot.config import parse_config
from bot.core.decision import DecisionRecord
from bot.core.errors import ConfigError
from bot.core.params import REGIME_NAMES
from bot.models.manifest import ReturnSkill
from bot.observe import logs
from bot.observe.metrics import Metrics
from bot.observe.shadow import ShadowScorer
from bot.observe.status import DAY_MS, FamilyInfo, StatusBoard
from bot.observe.status_page import DETAIL_SYMBOLS, NO_SKILL, NOT_MEASURED, SKILL_UNAVAILABLE, render_status
from bot.sim.replay import ReplayExchange

NOW_MS = 1_767_225_600_000 + 12 * 3_600_000  # 2026-01-01 12:00 UTC
SYMBOL = "SYNTHUSDT"
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
#: Headless, no sandbox (containers), nothing fetched besides the page under test.
CHROMIUM_FLAGS = (
    "--headless",
    "--disable-gpu",
    "--no-sandbox",
    "--no-first-run",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def record(symbol: str = "BTCUSDT", start_ms: int = NOW_MS - 300_000, **kw: Any) -> DecisionRecord:
    """A decision record with plausible defaults."""
    fields: dict[str, Any] = {
        "symbol": symbol,
        "start_ms": start_ms,
        "source": "ws",
        "regime": "normal",
        "tier": "production",
        "prediction": 1e-4,
        "signal": 1,
        "position": 1.0,
        "qty": 0.1,
        "fill_price": None,
        "fee_usd": 0.0,
        "realized_pnl_usd": 0.0,
        "unrealized_pnl_usd": 0.0,
        "equity_usd": 12.5,
        "bar_pnl_usd": 1.25,
        "holding_pnl_usd": 1.25,
        "holding_tier": "production",
        "holding_regime": "normal",
        "trade_pnl_usd": 0.0,
        "close": 100.0,
        "latency_us": {"total": 80.0},
    }
    fields.update(kw)
    return DecisionRecord(**fields)


def board_with(*records: DecisionRecord, symbols: tuple[str, ...] = ("BTCUSDT",)) -> StatusBoard:
    """A board fed `records`, with a small family."""
    board = StatusBoard(symbols, recent=5, latency_window=100, started_ms=NOW_MS - 3_600_000)
    board.set_family(
        FamilyInfo(
            "ab" * 32, NOW_MS - 2 * DAY_MS, {"source": "synthetic", "seed": 7}, ("research", "production")
        )
    )
    for r in records:
        board.observe(r, now_ms=NOW_MS - 1_000)
    return board


def test_page_shows_regime_tier_position_pnl_and_unmeasured_values() -> None:
    """Per symbol regime/tier/position/PnL, per tier share and latency, model sha and age; IC, regret and
    drift say 'not measured yet' instead of a number; the page refreshes itself and runs no script."""
    board = board_with(
        record(start_ms=NOW_MS - DAY_MS, bar_pnl_usd=5.0),  # yesterday: not in today's PnL
        record(start_ms=NOW_MS - 600_000, regime="volatile", tier="research", latency_us={"total": 300.0}),
        record(start_ms=NOW_MS - 300_000, position=-2.0, equity_usd=-3.5),
    )
    page = render_status(board, NOW_MS)
    assert '<meta http-equiv="refresh" content="5">' in page
    assert "<script" not in page.lower()
    row = re.search(r"<tr><td class=\"symbol\">BTCUSDT</td>.*?</tr>", page)
    assert row is not None
    assert '<td class="regime">normal</td>' in row.group(0)
    assert '<td class="position">-2</td>' in row.group(0)
    assert '<td class="pnl-today">+2.50</td>' in row.group(0)  # two of today's bars at +1.25
    assert '<td class="pnl-total">-3.50</td>' in row.group(0)
    assert '<td class="share">33.3 %</td>' in page
    assert '<td class="share">66.7 %</td>' in page
    assert '<td class="p99">300</td>' in page
    assert page.count(NOT_MEASURED) == 2  # shadow scores (no scorer) and drift
    assert SKILL_UNAVAILABLE in page  # a family without a measured return skill says so
    assert "abababababab" in page
    assert "ab" * 32 not in page
    assert "age 2.0 days" in page
    assert "source=synthetic" in page


def test_the_return_heads_skill_shows_ic_se_and_a_flag_within_2_se() -> None:
    """The model table shows the return IC +- SE and its rows; 'no measured skill' only when |IC| < 2 SE."""
    board = board_with(record())
    assert board.family is not None
    info = board.family
    for ic, flagged in ((0.011, True), (-0.03, False)):
        skill = ReturnSkill(ic=ic, se=0.006, n_rows=20_000, rows="walk-forward", tier="research")
        board.set_family(FamilyInfo(info.manifest_sha256, info.created_ms, {}, info.tiers, skill))
        page = render_status(board, NOW_MS)
        assert f"IC {ic:+.4f} ± 0.0060 (1 SE) over 20,000 walk-forward rows" in page
        assert (NO_SKILL in page) is flagged


def test_data_is_escaped_so_markup_in_names_is_inert() -> None:
    """A symbol, tier, regime or provenance value carrying markup renders as text, never as a tag."""
    evil = "<script>alert(1)</script>"
    board = StatusBoard([evil], started_ms=NOW_MS)
    board.set_family(FamilyInfo('"><img src=x onerror=alert(1)>', NOW_MS, {"path": evil}, (evil,)))
    board.observe(record(symbol=evil, tier=evil, regime=f"{evil}&"), now_ms=NOW_MS)
    board.set_lag(evil, 5, lagging=True)
    page = render_status(board, NOW_MS)
    assert "<script" not in page.lower()
    assert "<img" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&amp;" in page


def test_board_memory_is_bounded_by_its_ring_buffers() -> None:
    """However many bars, a symbol keeps `recent` decisions and a tier `latency_window` latencies."""
    board = StatusBoard(["BTCUSDT"], recent=3, latency_window=10, started_ms=NOW_MS)
    for i in range(1_000):
        board.observe(
            record(start_ms=NOW_MS - DAY_MS + i * 60_000, latency_us={"total": float(i)}), now_ms=NOW_MS
        )
    assert len(board.symbols["BTCUSDT"].recent) == 3
    assert list(board.tiers["production"].total_us) == [float(i) for i in range(990, 1_000)]
    assert board.tiers["production"].bars == 1_000


def test_restore_seeds_recent_decisions_and_todays_pnl() -> None:
    """After a restart the board shows the ledger's last decisions and today's PnL before any new bar."""
    board = StatusBoard(["BTCUSDT"], started_ms=NOW_MS)
    board.restore("BTCUSDT", [record(start_ms=NOW_MS - 600_000), record(start_ms=NOW_MS - 300_000)])
    page = render_status(board, NOW_MS)
    assert '<td class="pnl-today">+2.50</td>' in page
    assert page.count('<td class="time">') == 2


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::"])
def test_non_loopback_metrics_host_needs_expose_remote(host: str) -> None:
    """A non-loopback metrics_host is a ConfigError naming the key and the fix unless expose_remote = true."""
    with pytest.raises(ConfigError, match=r"\$\.service\.metrics_host: .*expose_remote = true"):
        parse_config({"service": {"metrics_host": host}})
    cfg = parse_config({"service": {"metrics_host": host, "expose_remote": True}})
    assert cfg.service.expose_remote


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1"])
def test_loopback_metrics_host_is_fine_without_expose_remote(host: str) -> None:
    """Loopback addresses need no opt-in."""
    assert parse_config({"service": {"metrics_host": host}}).service.metrics_host == host


def browser() -> str:
    """The headless browser binary; fails (does not skip) when none is installed."""
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(
        f"no headless browser found (looked for {', '.join(BROWSERS)} on PATH): the status page is tested "
        "in a real browser; install Debian's chromium (`apt-get install -y chromium`, as .ci/run does)"
    )


async def dump_dom(url: str, profile: Path) -> str:
    """The DOM of `url` after headless Chromium loaded it (run off the event loop: the server is on it)."""
    proc = await asyncio.create_subprocess_exec(
        browser(),
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        "--dump-dom",
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(60):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, f"chromium exited {proc.returncode}: {err.decode(errors='replace')[-2000:]}"
    return out.decode()


async def test_status_page_rendered_by_headless_chromium(trained_family: Path, tmp_path: Path) -> None:
    """A running service's /status, loaded in real headless Chromium, shows the symbol, its regime and the
    tier names of the family, the drift slot per symbol (collecting, or its highest feature PSI) and the
    return head's IC +- SE flagged 'no measured skill'; start-up logged that once (`return_no_skill`)."""
    models = tmp_path / "models"
    shutil.copytree(trained_family, models)
    edit_manifest(models, lambda m: m["return_skill"].update(ic=0.004, se=0.006, n_rows=1234))
    async with ReplayExchange(
        symbols=[SYMBOL], data="synthetic", seed=5, bar_seconds=0.01, updates_per_bar=1, history_bars=200
    ) as ex:
        cfg = support.loop_config(ex.rest_url, ex.ws_url, models, tmp_path / "state", symbol=SYMBOL)
        cfg = msgspec.structs.replace(
            cfg, service=msgspec.structs.replace(cfg.service, metrics_enabled=True, metrics_port=0)
        )
        log_lines = io.StringIO()
        logs.configure_logging(fmt="json", decisions_path=cfg.logging.decisions_path, stream=log_lines)
        stop = asyncio.Event()
        service = Service(cfg)
        task = asyncio.create_task(service.run(stop))
        try:
            await asyncio.wait_for(service.ready_event.wait(), timeout=30)
            async with asyncio.timeout(60):
                while service.summary.decisions < 50:  # noqa: ASYNC110 - a plain counter, no event to wait on
                    await asyncio.sleep(0.02)
            routed = set(service.summary.per_tier)
            assert service.metrics_port is not None
            dom = await dump_dom(f"http://127.0.0.1:{service.metrics_port}/status", tmp_path / "profile")
        finally:
            stop.set()
            await asyncio.wait_for(task, timeout=60)
    assert "<title>progdistill status</title>" in dom
    row = re.search(
        rf'<tr( class="lagging")?><td class="symbol">{SYMBOL}</td><td class="lag">\d+</td>'
        r'<td class="regime">([^<]*)</td>',
        dom,
    )
    assert row is not None, dom[:3000]
    assert row.group(2) in REGIME_NAMES
    tiers = re.findall(r'<td class="tier">([^<]*)</td>', dom)
    assert routed <= set(tiers)
    assert set(service.status.family.tiers if service.status.family else ()) <= set(tiers)
    drift = re.search(r'<td class="key">feature drift \(PSI\)</td><td class="value">([^\n]*?)</td>', dom)
    assert drift is not None
    slot = r"\d+ of 1 symbols drifting, first:<br>"
    slot += rf'(<span class="warn">)?{SYMBOL}: (collecting \(\d+/\d+ bars\)|max \d+\.\d+ \(\w+\); nearest)'
    assert re.match(slot, drift.group(1)), drift.group(1)
    skill = re.search(r'<td class="key">return head skill</td><td class="value">([^\n]*?)</td>', dom)
    assert skill is not None
    assert skill.group(1).startswith("IC +0.0040 ± 0.0060 (1 SE) over 1,234 test rows")
    assert f'<span class="warn no-skill">{NO_SKILL}</span>' in skill.group(1)
    warned = [json.loads(x) for x in log_lines.getvalue().splitlines() if "return_no_skill" in x]
    assert len(warned) == 1
    assert (warned[0]["level"], warned[0]["ic"], warned[0]["se"], warned[0]["n_rows"]) == (
        "warning",
        0.004,
        0.006,
        1234,
    )


TIERS = ("research", "staging", "production", "edge")


def whole_exchange_board(n_symbols: int = 500, *, seed: int = 3) -> StatusBoard:
    """A board as the service holds it at 12:00 UTC with `n_symbols` symbols: 720 minutes of decisions
    (5 symbols a minute, every symbol decided), shadow scores, per-symbol lags (a few lagging)."""
    rng = random.Random(seed)
    symbols = [f"S{i:03d}USDT" for i in range(n_symbols)]
    board = StatusBoard(symbols, started_ms=NOW_MS - 12 * 3_600_000)
    board.set_family(FamilyInfo("cd" * 32, NOW_MS - DAY_MS, {"source": "synthetic"}, TIERS))
    board.shadow = ShadowScorer(horizon_bars=1, vol_horizon_bars=2, min_scored=3)
    equity = dict.fromkeys(symbols, 0.0)
    day0 = NOW_MS // DAY_MS * DAY_MS
    for minute in range(720):
        for k in range(5):
            sym = symbols[(minute * 5 + k) % n_symbols]
            equity[sym] += rng.gauss(0.02, 1.0)
            tier = rng.choice(TIERS)
            board.observe(
                record(
                    symbol=sym,
                    start_ms=day0 + minute * 60_000,
                    regime=rng.choice(REGIME_NAMES),
                    tier=tier,
                    position=rng.choice((-2.0, 0.0, 1.0)),
                    equity_usd=equity[sym],
                    bar_pnl_usd=rng.gauss(0.0, 1.0),
                    latency_us={"total": rng.lognormvariate(4.5 + TIERS.index(tier), 0.4)},
                ),
                now_ms=day0 + minute * 60_000 + 30_000,
            )
            board.shadow.on_bar(
                sym, 100.0 + rng.gauss(0, 1), tier, {t: (rng.gauss(0, 1e-3), 0.01) for t in TIERS}
            )
    for i, sym in enumerate(symbols):
        lag = (0, 0, 0, 1, 0, 2, 0, 0, 0, 0)[i % 10] if i % 97 else 3 + i % 5
        board.set_lag(sym, lag, lagging=lag > 2)
    board.set_feed(reconnects=4, backfilled_bars=150_000)
    return board


def symbol_order(page: str) -> list[str]:
    """The symbols table's rows, in page order."""
    table = re.search(r'<table class="symbols">.*?</table>', page, re.S)
    assert table is not None
    return re.findall(r'<td class="symbol">([^<]*)</td>', table.group(0))


def test_500_symbols_render_worst_lagging_first_and_sort_by_any_column() -> None:
    """At 500 symbols the table lists every symbol, worst decision lag first by default; ?sort= orders by a
    column and -column reverses it; the per-symbol detail sections show the first DETAIL_SYMBOLS symbols of
    that order; the page renders in well under a second."""
    board = whole_exchange_board()
    t0 = time.perf_counter()
    page = render_status(board, NOW_MS)
    render_s = time.perf_counter() - t0
    assert render_s < 0.5, render_s
    order = symbol_order(page)
    assert len(order) == 500
    lags = [board.symbols[s].lag_bars for s in order]
    assert lags == sorted(lags, reverse=True)
    assert lags[0] >= 3
    assert "<h2>Symbols (500, 6 lagging)</h2>" in page
    assert page.count('<tr class="lagging">') == 6
    assert page.count("<h3>") == DETAIL_SYMBOLS  # last decisions: the first symbols of the table
    assert re.findall(r"<h3>([^<]*)</h3>", page) == order[:DETAIL_SYMBOLS]
    by_symbol = symbol_order(render_status(board, NOW_MS, sort="symbol"))
    assert by_symbol == sorted(by_symbol)
    reverse = symbol_order(render_status(board, NOW_MS, sort="-symbol"))
    assert reverse == by_symbol[::-1]
    by_pnl = symbol_order(render_status(board, NOW_MS, sort="pnl-total"))
    totals = [board.symbols[s].last.equity_usd for s in by_pnl]  # type: ignore[union-attr]
    assert totals == sorted(totals, reverse=True)
    assert symbol_order(render_status(board, NOW_MS, sort="<bogus>")) == order  # unknown: the default
    assert '<th class="sorted"><a href="?sort=-lag">lag (bars)</a>' in page


def test_charts_are_inline_svg_of_equity_latency_lag_and_regimes() -> None:
    """The overview has four inline SVG charts: the day's summed equity as a line, p50/p99 per tier, symbols
    per lag bucket (the lagging buckets in red) and bars per regime; no chart says 'no data' once data is
    there, and a fresh board's charts say so instead of drawing an empty frame."""
    board = whole_exchange_board(50)
    page = render_status(board, NOW_MS)
    charts = dict(re.findall(r'<svg class="chart (\w+)"(.*?)</svg>', page, re.S))
    assert set(charts) == {"equity", "latency", "lag", "regimes"}
    points = re.search(r'<polyline class="series"[^>]* points="([^"]*)"', charts["equity"])
    assert points is not None
    assert len(points.group(1).split()) == 720  # one point per minute since midnight
    assert all(f">{t}<" in charts["latency"] for t in TIERS)
    assert charts["latency"].count('class="bar"') == 2 * len(TIERS)
    assert all(f">{r}<" in charts["regimes"] for r in REGIME_NAMES)
    assert "#c0392b" in charts["lag"]
    assert "no data" not in page
    fresh = render_status(StatusBoard(["BTCUSDT"], started_ms=NOW_MS), NOW_MS)
    assert fresh.count("<svg") == 4
    assert "no decision today yet" in fresh


class DevTools:
    """A minimal Chrome DevTools Protocol session over one page's websocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.next_id = 0
        self.events: list[str] = []

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one command and return its result (events that arrive meanwhile are remembered)."""
        self.next_id += 1
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        while True:
            msg = await self.ws.receive_json()
            if msg.get("id") == self.next_id:
                assert "error" not in msg, msg
                return dict(msg["result"])
            self.events.append(str(msg.get("method")))

    async def wait_event(self, method: str) -> None:
        """Wait until `method` has been received."""
        while method not in self.events:
            self.events.append(str((await self.ws.receive_json()).get("method")))


async def load_in_chromium(url: str, profile: Path, screenshot: Path) -> tuple[dict[str, float], str]:
    """Load `url` in headless Chromium over the DevTools protocol: (its navigation timing in ms, the DOM);
    a full-page PNG is written to `screenshot`."""
    proc = await asyncio.create_subprocess_exec(
        browser(),
        *CHROMIUM_FLAGS,
        "--hide-scrollbars",
        "--window-size=1400,1000",
        "--remote-debugging-port=0",
        f"--user-data-dir={profile}",
        "about:blank",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with asyncio.timeout(60):
            active = profile / "DevToolsActivePort"
            while not active.exists() or not active.read_text().strip():  # noqa: ASYNC110 - a file to wait for
                await asyncio.sleep(0.05)
            port = int(active.read_text().split()[0])
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{port}/json/list") as resp:
                    targets = await resp.json()
                page = next(t for t in targets if t["type"] == "page")
                async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                    tools = DevTools(ws)
                    await tools.call("Page.enable")
                    await tools.call("Page.navigate", url=url)
                    await tools.wait_event("Page.loadEventFired")
                    timing = await tools.call(
                        "Runtime.evaluate",
                        expression="JSON.stringify(performance.getEntriesByType('navigation')[0])",
                        returnByValue=True,
                    )
                    dom = await tools.call(
                        "Runtime.evaluate",
                        expression="document.documentElement.outerHTML",
                        returnByValue=True,
                    )
                    shot = await tools.call(
                        "Page.captureScreenshot", format="png", captureBeyondViewport=True
                    )
    finally:
        proc.kill()
        await proc.wait()
    await asyncio.to_thread(screenshot.write_bytes, base64.b64decode(shot["data"]))
    nav = json.loads(timing["result"]["value"])
    return {k: float(v) for k, v in nav.items() if isinstance(v, int | float)}, str(dom["result"]["value"])


async def test_500_symbol_status_page_loads_in_chromium_in_under_a_second(tmp_path: Path) -> None:
    """/status with 500 symbols of synthetic state, served by the metrics server and loaded in real headless
    Chromium, is loaded (load event ended) in under a second from the request; it shows the worst lagging
    symbol first and the four charts, and its full-page screenshot is a PNG (status_500.png in tmp_path)."""
    board = whole_exchange_board()
    metrics = Metrics(stale_s=60.0, status_page=lambda sort: render_status(board, NOW_MS, sort=sort))
    port = await metrics.start("127.0.0.1", 0)
    screenshot = tmp_path / "status_500.png"
    try:
        nav, dom = await load_in_chromium(f"http://127.0.0.1:{port}/status", tmp_path / "profile", screenshot)
    finally:
        await metrics.stop()
    print(f"status page, 500 symbols: {json.dumps({k: round(v, 1) for k, v in nav.items()})}")
    assert nav["loadEventEnd"] - nav["startTime"] < 1_000.0, nav
    assert nav["transferSize"] > 100_000 or nav["decodedBodySize"] > 100_000  # the real 500-row page
    worst = max(board.symbols, key=lambda s: (board.symbols[s].lag_bars, -int(s[1:4])))
    assert symbol_order(dom)[0] == worst
    assert len(re.findall(r'<svg class="chart (equity|latency|lag|regimes)"', dom)) == 4
    png = screenshot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(png) > 50_000
