"""Prometheus metrics and /healthz over real loopback HTTP."""

from __future__ import annotations

import socket

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.config import ServiceConfig
from bot.metrics import Metrics


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


async def test_metrics_endpoint_exposes_every_series() -> None:
    """/metrics on 127.0.0.1 carries bars, latency histograms, reconnects, backfill, commits and bar age."""
    clock = Clock()
    m = Metrics(stale_s=420.0, clock=clock)
    port = await m.start("127.0.0.1", 0)
    try:
        m.observe_decision(
            symbol="BTCUSDT",
            tier="edge",
            regime="calm_trend",
            source="ws",
            latency_us=LAT,
            recv_to_decision_us=900,
        )
        m.observe_decision(
            symbol="BTCUSDT",
            tier="edge",
            regime="calm_trend",
            source="ws",
            latency_us={**LAT, "inference": 7000},
        )
        m.observe_decision(symbol="BTCUSDT", tier="research", regime="crisis", source="rest", latency_us=LAT)
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
    edge = (("regime", "calm_trend"), ("source", "ws"), ("symbol", "BTCUSDT"), ("tier", "edge"))
    assert s[("progdistill_bars_total", edge)] == 2
    research = (("regime", "crisis"), ("source", "rest"), ("symbol", "BTCUSDT"), ("tier", "research"))
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
            m.observe_decision(symbol="BTCUSDT", tier="edge", regime="normal", source="rest", latency_us=LAT)
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
            assert 'progdistill_decision_lag_bars{symbol="ETHUSDT"} 5.0' in m.render().decode()
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


def test_shadow_scores_are_gauges_per_symbol_and_tier() -> None:
    """A symbol's shadow scores set gauges labelled with its symbol and tier; unmeasured ones stay unset."""
    from bot.shadow import ShadowScore

    m = Metrics(stale_s=420.0)
    m.shadow(ShadowScore("BTCUSDT", "edge", window=500, n=40, ic=0.1, vol_ic=0.4, vol_qlike=0.3, regret=None))
    m.shadow(
        ShadowScore("ETHUSDT", "edge", window=500, n=40, ic=-0.2, vol_ic=None, vol_qlike=None, regret=0.0)
    )
    samples = {
        (s.name, s.labels.get("symbol"), s.labels.get("tier")): s.value
        for fam in text_string_to_metric_families(m.render().decode())
        for s in fam.samples
        if "shadow" in s.name or "regret" in s.name
    }
    assert samples == {
        ("progdistill_shadow_ic", "BTCUSDT", "edge"): 0.1,
        ("progdistill_shadow_ic", "ETHUSDT", "edge"): -0.2,
        ("progdistill_shadow_vol_ic", "BTCUSDT", "edge"): 0.4,
        ("progdistill_shadow_vol_qlike", "BTCUSDT", "edge"): 0.3,
        ("progdistill_router_regret", "ETHUSDT", "edge"): 0.0,
    }
