"""Prometheus metrics and /healthz over real loopback HTTP."""

from __future__ import annotations

import socket

import aiohttp
import msgspec
import pytest
import support
from prometheus_client.parser import text_string_to_metric_families

from bot.config import ServiceConfig
from bot.core.decision import DecisionRecord
from bot.observe.metrics import Metrics, series_bound


class Clock:
    """A hand-driven monotonic clock."""

    def __init__(self) -> None:
        self.now_s = 500.0

    def __call__(self) -> float:
        return self.now_s


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


LAT = {"features": 40, "regime": 8, "inference": 120, "paper": 15, "total": 190}


def decision(
    symbol: str = "BTCUSDT",
    *,
    tier: str = "edge",
    regime: str = "normal",
    source: str = "ws",
    latency_us: dict[str, float] | None = None,
    position: float = 1.0,
    equity_usd: float = 10.0,
) -> DecisionRecord:
    """A decided bar with the fields the metrics read; the rest plausible."""
    return msgspec.structs.replace(
        support.decision_record(0, symbol=symbol, tier=tier),
        regime=regime,
        source=source,
        position=position,
        equity_usd=equity_usd,
        latency_us=dict(LAT if latency_us is None else latency_us),
    )


async def test_metrics_endpoint_exposes_every_series() -> None:
    """/metrics on 127.0.0.1 carries bars, latency histograms, reconnects, backfill, commits and bar age."""
    clock = Clock()
    m = Metrics(stale_s=420.0, clock=clock)
    port = await m.start("127.0.0.1", 0)
    try:
        m.observe_decision(decision(regime="calm_trend", position=2.0), recv_to_decision_us=900)
        m.observe_decision(
            decision(regime="calm_trend", latency_us={**LAT, "inference": 7000}, position=-1.0)
        )
        m.observe_decision(
            decision("ETHUSDT", tier="research", regime="crisis", source="rest", equity_usd=-4)
        )
        m.reconnect()
        m.backfilled(300)
        m.ledger_commit()
        m.ledger_commit(2)
        clock.now_s += 12.5
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain")
            text = await resp.text()
    finally:
        await m.stop()
    s = _samples(text)
    edge = (("regime", "calm_trend"), ("source", "ws"), ("tier", "edge"))
    assert s[("progdistill_bars_total", edge)] == 2
    research = (("regime", "crisis"), ("source", "rest"), ("tier", "research"))
    assert s[("progdistill_bars_total", research)] == 1
    inf = (("stage", "inference"), ("tier", "edge"))
    assert s[("progdistill_latency_microseconds_count", inf)] == 2
    assert s[("progdistill_latency_microseconds_sum", inf)] == 7120
    assert s[("progdistill_latency_microseconds_bucket", (("le", "250.0"), *inf))] == 1
    assert s[("progdistill_latency_microseconds_bucket", (("le", "5000.0"), *inf))] == 1
    assert s[("progdistill_latency_microseconds_bucket", (("le", "10000.0"), *inf))] == 2
    recv = (("stage", "recv_to_decision"), ("tier", "edge"))
    assert s[("progdistill_latency_microseconds_count", recv)] == 1
    assert s[("progdistill_ws_reconnects_total", ())] == 1
    assert s[("progdistill_backfilled_bars_total", ())] == 300
    assert s[("progdistill_ledger_commits_total", ())] == 3
    assert s[("progdistill_last_bar_age_seconds", ())] == pytest.approx(12.5)
    assert s[("progdistill_stale_after_seconds", ())] == 420.0
    assert s[("progdistill_position", (("symbol", "BTCUSDT"),))] == -1.0  # the symbol's last decision
    assert s[("progdistill_position", (("symbol", "ETHUSDT"),))] == 1.0
    assert s[("progdistill_equity_usd", ())] == 6.0  # 10 + (-4): each symbol's last equity
    assert s[("progdistill_open_positions", ())] == 2
    assert s[("progdistill_symbols", ())] == 2


async def test_healthz_turns_503_when_bars_go_stale() -> None:
    """/healthz is 200 while bars are fresh (start-up counts), 503 once the last bar is older than stale_s."""
    clock = Clock()
    m = Metrics(stale_s=420.0, clock=clock)
    port = await m.start("127.0.0.1", 0)
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(url) as resp:
                assert resp.status == 200
                body = await resp.json()
                assert body["status"] == "ok"
                assert body["seen_bar"] is False
            clock.now_s += 421.0  # never saw a bar within the window
            async with http.get(url) as resp:
                assert resp.status == 503
                assert (await resp.json())["status"] == "stale"
            m.observe_decision(decision(source="rest"))
            async with http.get(url) as resp:
                assert resp.status == 200
                body = await resp.json()
                assert body == {
                    "status": "ok",
                    "last_bar_age_s": 0.0,
                    "stale_s": 420.0,
                    "bars_total": 1,
                    "seen_bar": True,
                    "lagging": [],
                }
            m.decision_lag("ETHUSDT", 5, lagging=True)  # decided recently, but one symbol is lagging
            async with http.get(url) as resp:
                assert resp.status == 503
                body = await resp.json()
                assert (body["status"], body["lagging"]) == ("lagging", ["ETHUSDT"])
            text = m.render().decode()
            assert 'progdistill_decision_lag_bars{symbol="ETHUSDT"} 5.0' in text
            assert "progdistill_lagging_symbols 1.0" in text
            assert "progdistill_decision_lag_max_bars 5.0" in text
            m.decision_lag("ETHUSDT", 0, lagging=False)
            async with http.get(url) as resp:
                assert resp.status == 200
            clock.now_s += 419.9
            async with http.get(url) as resp:
                assert resp.status == 200
            clock.now_s += 0.2
            async with http.get(url) as resp:
                assert resp.status == 503
    finally:
        await m.stop()


async def test_serve_is_off_unless_enabled() -> None:
    """With metrics_enabled=false nothing listens; enabled, it binds metrics_host:metrics_port."""
    m = Metrics(stale_s=60.0)
    assert await m.serve(ServiceConfig()) is None
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    port = await m.serve(ServiceConfig(metrics_enabled=True, metrics_port=free_port))
    try:
        assert port == free_port
        with pytest.raises(RuntimeError, match="already started"):
            await m.start("127.0.0.1", 0)
    finally:
        await m.stop()
    await m.stop()  # idempotent
    with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(("127.0.0.1", free_port))


async def test_two_instances_do_not_share_a_registry() -> None:
    """Each Metrics has a private registry, so tests and several services in one process never collide."""
    a, b = Metrics(stale_s=1.0), Metrics(stale_s=1.0)
    a.reconnect()
    assert b"progdistill_ws_reconnects_total 1.0" in a.render()
    assert b"progdistill_ws_reconnects_total 0.0" in b.render()
    assert b"python_gc" not in a.render()  # no default process/platform collectors


def test_shadow_scores_are_gauges_per_tier_averaged_over_symbols() -> None:
    """Shadow scores are exported per tier as the mean over the symbols that measured them, with the number
    of symbols scored; a symbol label never appears."""
    from bot.observe.shadow import ShadowScore

    m = Metrics(stale_s=420.0)
    m.shadow(ShadowScore("BTCUSDT", "edge", window=500, n=40, ic=0.1, vol_ic=0.4, vol_qlike=0.3, regret=None))
    m.shadow(
        ShadowScore("ETHUSDT", "edge", window=500, n=40, ic=-0.2, vol_ic=None, vol_qlike=None, regret=0.0)
    )
    m.shadow(ShadowScore("BTCUSDT", "edge", window=500, n=41, ic=0.3, vol_ic=0.4, vol_qlike=0.3, regret=None))
    samples = {
        (s.name, s.labels.get("tier")): s.value
        for fam in text_string_to_metric_families(m.render().decode())
        for s in fam.samples
        if "shadow" in s.name or "regret" in s.name
    }
    assert samples == {
        ("progdistill_shadow_ic", "edge"): pytest.approx(0.05),  # BTCUSDT's latest 0.3 and ETHUSDT's -0.2
        ("progdistill_shadow_vol_ic", "edge"): 0.4,
        ("progdistill_shadow_vol_qlike", "edge"): 0.3,
        ("progdistill_router_regret", "edge"): 0.0,
        ("progdistill_shadow_symbols", "edge"): 2,
    }


def test_drift_is_exported_per_feature_over_symbols() -> None:
    """Feature PSI becomes, per feature, the highest PSI over symbols and the symbols it drifts on, plus the
    count of symbols drifting at all."""
    m = Metrics(stale_s=420.0)
    m.drift_thresholds({"ret_1": 0.25, "rv_24": 0.3})
    m.drift("BTCUSDT", {"ret_1": 0.4, "rv_24": 0.1}, drifting=["ret_1"])
    m.drift("ETHUSDT", {"ret_1": 0.3, "rv_24": 0.2}, drifting=["ret_1"])
    m.drift("SOLUSDT", {"ret_1": 0.1, "rv_24": 0.05})
    s = _samples(m.render().decode())
    assert s[("progdistill_feature_psi_max", (("feature", "ret_1"),))] == 0.4
    assert s[("progdistill_feature_psi_max", (("feature", "rv_24"),))] == 0.2
    assert s[("progdistill_feature_drifting_symbols", (("feature", "ret_1"),))] == 2
    assert s[("progdistill_feature_drifting_symbols", (("feature", "rv_24"),))] == 0
    assert s[("progdistill_feature_psi_threshold", (("feature", "rv_24"),))] == 0.3
    assert s[("progdistill_drifting_symbols", ())] == 2
    m.drift("BTCUSDT", {"ret_1": 0.1, "rv_24": 0.1})  # recovered
    assert _samples(m.render().decode())[("progdistill_drifting_symbols", ())] == 1


def test_series_stay_bounded_at_500_symbols() -> None:
    """With 500 symbols, 4 tiers, every regime and source, every feature, shadow scores and drift on every
    symbol, /metrics carries 2 series per symbol (decision lag, position) plus a part that does not grow with
    symbols, and no label but `symbol` of those two names a symbol."""
    from bot.core.features import FEATURE_NAMES
    from bot.core.params import REGIME_NAMES
    from bot.observe.shadow import ShadowScore

    tiers = ("research", "staging", "production", "edge")
    features = list(FEATURE_NAMES)
    m = Metrics(stale_s=420.0)
    m.drift_thresholds(dict.fromkeys(features, 0.25))
    symbols = [f"S{i:03d}USDT" for i in range(500)]
    for i, sym in enumerate(symbols):
        for j, tier in enumerate(tiers):
            regime = REGIME_NAMES[(i + j) % len(REGIME_NAMES)]
            for source in ("ws", "rest"):
                m.observe_decision(
                    decision(sym, tier=tier, regime=regime, source=source), recv_to_decision_us=9.0
                )
            m.shadow(ShadowScore(sym, tier, window=500, n=40, ic=0.1, vol_ic=0.2, vol_qlike=0.3, regret=0.0))
        m.drift(sym, {f: 0.01 * (i % 50) for f in features}, drifting=features[: i % 3])
        m.decision_lag(sym, i % 4, lagging=i % 4 == 3)
    samples = [s for fam in text_string_to_metric_families(m.render().decode()) for s in fam.samples]
    bound = series_bound(symbols=500, tiers=len(tiers), regimes=len(REGIME_NAMES), features=len(features))
    assert len(samples) == bound == 2 * 500 + 681  # every tier saw every regime and source: the bound is met
    per_symbol = [s for s in samples if "symbol" in s.labels]
    assert len(per_symbol) == 2 * 500
    assert {s.name for s in per_symbol} == {"progdistill_decision_lag_bars", "progdistill_position"}
