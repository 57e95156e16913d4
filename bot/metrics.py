"""Prometheus metrics in a private registry, served with `/healthz` over aiohttp on loopback.

The collectors are always there (updating a counter costs well under a microsecond); the HTTP server
runs only when `service.metrics_enabled` is true. Wiring in the app::

    metrics = Metrics(stale_s=watchdog_fresh_s(cfg))
    port = await metrics.serve(cfg.service)         # None when metrics are off
    ...
    metrics.observe_decision(symbol=..., tier=..., regime=..., source=bar.source,
                             latency_us=decision.latency_us, recv_to_decision_us=...)
    metrics.reconnect(); metrics.backfilled(n_bars); metrics.ledger_commit()
    ...
    await metrics.stop()

`/healthz` answers 200 `{"status": "ok", ...}` while the last decided bar is younger than `stale_s`
(start-up counts as fresh) and 503 `{"status": "stale", ...}` otherwise. Ages use `time.monotonic`.
`/status` (when the app passes a `status_page`) is the HTML status page of `bot.status`.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Mapping
from typing import Final

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from bot.config import ServiceConfig
from bot.core.errors import ConfigError
from bot.shadow import ShadowScore

# Bucket upper bounds in microseconds: a tier's inference runs 5..5000 us; total/recv stages can be longer.
LATENCY_BUCKETS_US: Final[tuple[float, ...]] = (
    5.0,
    10.0,
    25.0,
    50.0,
    100.0,
    250.0,
    500.0,
    1_000.0,
    2_500.0,
    5_000.0,
    10_000.0,
    50_000.0,
    250_000.0,
    1_000_000.0,
)
RECV_STAGE: Final = "recv_to_decision"
#: The status page runs no script and loads nothing: a CSP says so, and it is never cached.
STATUS_HEADERS: Final = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


class Metrics:
    """The service's Prometheus collectors plus the loopback HTTP endpoint.

    Args:
        stale_s: `/healthz` turns 503 when no bar was decided for this many seconds (monotonic).
        clock: monotonic seconds (injectable for tests).
        status_page: renders the `GET /status` HTML page (`bot.status`); None = no /status route.
    """

    def __init__(
        self,
        *,
        stale_s: float,
        clock: Callable[[], float] = time.monotonic,
        status_page: Callable[[], str] | None = None,
    ) -> None:
        if stale_s <= 0:
            raise ValueError(f"stale_s must be a positive number of seconds, got {stale_s}")
        self.stale_s = stale_s
        self._clock = clock
        self._status_page = status_page
        self._started_s = clock()
        self._last_bar_s: float | None = None
        self._bars_total = 0
        self.registry = CollectorRegistry(auto_describe=True)
        self.bars = Counter(
            "progdistill_bars",
            "Confirmed bars decided, by symbol, routed tier, regime and source (ws|rest).",
            ["symbol", "tier", "regime", "source"],
            registry=self.registry,
        )
        self.latency_us = Histogram(
            "progdistill_latency_microseconds",
            "Per-bar latency in microseconds by tier and stage (features, regime, inference, paper, total, "
            "recv_to_decision).",
            ["tier", "stage"],
            buckets=LATENCY_BUCKETS_US,
            registry=self.registry,
        )
        self.reconnects = Counter(
            "progdistill_ws_reconnects", "Websocket reconnects (any cause).", registry=self.registry
        )
        self.backfilled_bars = Counter(
            "progdistill_backfilled_bars",
            "Bars fetched over REST to warm up or fill gaps.",
            registry=self.registry,
        )
        self.ledger_commits = Counter(
            "progdistill_ledger_commits", "SQLite ledger transactions committed.", registry=self.registry
        )
        self.last_bar_age = Gauge(
            "progdistill_last_bar_age_seconds",
            "Seconds since the last decided bar (since start-up before the first one), monotonic clock.",
            registry=self.registry,
        )
        self.last_bar_age.set_function(self.last_bar_age_s)
        self.decision_lag_bars = Gauge(
            "progdistill_decision_lag_bars",
            "Closed bars the exchange has published that are not decided yet, per symbol.",
            ["symbol"],
            registry=self.registry,
        )
        self.shadow_ic = Gauge(
            "progdistill_shadow_ic",
            "Live IC of each tier's return forecasts over the symbol's shadow window (every tier predicts "
            "every bar).",
            ["symbol", "tier"],
            registry=self.registry,
        )
        self.shadow_vol_ic = Gauge(
            "progdistill_shadow_vol_ic",
            "Live correlation of each tier's volatility forecasts with the realised vol over the symbol's "
            "shadow window.",
            ["symbol", "tier"],
            registry=self.registry,
        )
        self.shadow_regret = Gauge(
            "progdistill_router_regret",
            "Router's squared error minus this tier's, mean over the symbol's shadow window (> 0: tier did "
            "better).",
            ["symbol", "tier"],
            registry=self.registry,
        )
        self.shadow_vol_qlike = Gauge(
            "progdistill_shadow_vol_qlike",
            "Mean QLIKE of each tier's volatility forecasts over the symbol's shadow window (0 = exact).",
            ["symbol", "tier"],
            registry=self.registry,
        )
        self.feature_psi = Gauge(
            "progdistill_feature_psi",
            "Population Stability Index of each model input over the drift window against its training "
            "bins, per symbol (0.1 moderate, 0.25 significant shift; [service] drift_psi_warn).",
            ["symbol", "feature"],
            registry=self.registry,
        )
        self.feature_psi_max = Gauge(
            "progdistill_feature_psi_max",
            "The highest feature PSI of each symbol (the worst feature is on /status and in the log).",
            ["symbol"],
            registry=self.registry,
        )
        self.feature_psi_threshold = Gauge(
            "progdistill_feature_psi_threshold",
            "The PSI from which a feature warns: [service] drift_psi_warn, or the highest PSI the training "
            "rows themselves reached over the same window, when higher.",
            ["feature"],
            registry=self.registry,
        )
        self._psi_children: dict[tuple[str, str], Gauge] = {}
        self._lagging: set[str] = set()
        self._runner: web.AppRunner | None = None

    # ---- recording -----------------------------------------------------------------------------
    def observe_decision(
        self,
        *,
        symbol: str,
        tier: str,
        regime: str,
        source: str,
        latency_us: Mapping[str, float],
        recv_to_decision_us: float | None = None,
    ) -> None:
        """Count one decided bar and observe its per-stage latencies (microseconds)."""
        self.bars.labels(symbol=symbol, tier=tier, regime=regime, source=source).inc()
        for stage, value_us in latency_us.items():
            self.latency_us.labels(tier=tier, stage=stage).observe(value_us)
        if recv_to_decision_us is not None:
            self.latency_us.labels(tier=tier, stage=RECV_STAGE).observe(recv_to_decision_us)
        self._last_bar_s = self._clock()
        self._bars_total += 1

    def shadow(self, score: ShadowScore) -> None:
        """Set one symbol's shadow scores of a tier (a score not measured yet is left unset)."""
        labels = {"symbol": score.symbol or "", "tier": score.tier}
        for gauge, value in (
            (self.shadow_ic, score.ic),
            (self.shadow_vol_ic, score.vol_ic),
            (self.shadow_regret, score.regret),
            (self.shadow_vol_qlike, score.vol_qlike),
        ):
            if value is not None:
                gauge.labels(**labels).set(value)

    def drift(self, symbol: str, psi: Mapping[str, float]) -> None:
        """Set `symbol`'s PSI per feature and its maximum (label children cached: ~0.2 us per feature)."""
        children = self._psi_children
        for feature, value in psi.items():
            child = children.get((symbol, feature))
            if child is None:
                child = children[(symbol, feature)] = self.feature_psi.labels(symbol=symbol, feature=feature)
            child.set(value)
        if psi:
            self.feature_psi_max.labels(symbol=symbol).set(max(psi.values()))

    def drift_thresholds(self, threshold: Mapping[str, float]) -> None:
        """Set each feature's warning threshold (at start-up and after a reload)."""
        for feature, value in threshold.items():
            self.feature_psi_threshold.labels(feature=feature).set(value)

    def decision_lag(self, symbol: str, lag_bars: int, *, lagging: bool) -> None:
        """Set `symbol`'s decision lag; while any symbol is `lagging`, /healthz answers 503."""
        self.decision_lag_bars.labels(symbol=symbol).set(lag_bars)
        if lagging:
            self._lagging.add(symbol)
        else:
            self._lagging.discard(symbol)

    def reconnect(self, n: int = 1) -> None:
        """Count `n` websocket reconnects."""
        self.reconnects.inc(n)

    def backfilled(self, n_bars: int) -> None:
        """Count bars fetched over REST."""
        if n_bars < 0:
            raise ValueError(f"n_bars must be >= 0, got {n_bars}")
        self.backfilled_bars.inc(n_bars)

    def ledger_commit(self, n: int = 1) -> None:
        """Count ledger commits."""
        self.ledger_commits.inc(n)

    # ---- reading -------------------------------------------------------------------------------
    def last_bar_age_s(self) -> float:
        """Seconds since the last decided bar, or since construction before the first one."""
        since = self._last_bar_s if self._last_bar_s is not None else self._started_s
        return self._clock() - since

    def healthy(self) -> bool:
        """True while the last decided bar is younger than `stale_s` and no symbol is lagging."""
        return self.last_bar_age_s() < self.stale_s and not self._lagging

    def health(self) -> dict[str, object]:
        """The `/healthz` body."""
        return {
            "status": "ok" if self.healthy() else ("lagging" if self._lagging else "stale"),
            "lagging": sorted(self._lagging),
            "last_bar_age_s": round(self.last_bar_age_s(), 3),
            "stale_s": self.stale_s,
            "bars_total": self._bars_total,
            "seen_bar": self._last_bar_s is not None,
        }

    def render(self) -> bytes:
        """The registry in the Prometheus text exposition format."""
        return generate_latest(self.registry)

    # ---- HTTP ----------------------------------------------------------------------------------
    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response(self.health(), status=200 if self.healthy() else 503)

    async def _status(self, request: web.Request) -> web.Response:
        page = self._status_page
        if page is None:
            raise web.HTTPNotFound
        return web.Response(text=page(), content_type="text/html", headers=STATUS_HEADERS)

    async def start(self, host: str, port: int) -> int:
        """Serve `/metrics`, `/healthz` (and `/status` with a `status_page`) on host:port (0 = any free
        port); returns the bound port."""
        if self._runner is not None:
            raise RuntimeError("metrics server already started; stop() it first")
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        if self._status_page is not None:
            app.router.add_get("/status", self._status)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port, reuse_address=True)
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise _cannot_listen(host, port, exc) from exc
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        address = runner.addresses[0]
        return int(address[1])

    @staticmethod
    def check_port(service: ServiceConfig) -> None:
        """Bind and release the metrics address when `service.metrics_enabled`, so that a port in use is a
        ConfigError before the service creates a file (`bot run` calls it before taking the ledger lock)."""
        if not service.metrics_enabled:
            return
        host, port = service.metrics_host, service.metrics_port
        try:
            for family, kind, proto, _, address in socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            ):
                with socket.socket(family, kind, proto) as probe:
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
                    if family == socket.AF_INET6:
                        probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    probe.bind(address)
        except OSError as exc:
            raise _cannot_listen(host, port, exc) from exc

    async def serve(self, service: ServiceConfig) -> int | None:
        """Start the server when `service.metrics_enabled`; returns the bound port, or None when off."""
        if not service.metrics_enabled:
            return None
        return await self.start(service.metrics_host, service.metrics_port)

    async def stop(self) -> None:
        """Stop the server (no-op when not running)."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()


def _cannot_listen(host: str, port: int, exc: OSError) -> ConfigError:
    return ConfigError(
        f"[service] metrics_host/metrics_port {host}:{port}: cannot listen ({exc.strerror or exc}); "
        "stop what holds the port or choose another metrics_port"
    )
