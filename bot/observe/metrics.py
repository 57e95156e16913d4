"""Prometheus metrics in a private registry, served with `/healthz` over aiohttp on loopback.

The collectors are always there (updating a counter costs well under a microsecond); the HTTP server
runs only when `service.metrics_enabled` is true. Wiring in the app::

    metrics = Metrics(stale_s=watchdog_fresh_s(cfg))
    port = await metrics.serve(cfg.service)         # None when metrics are off
    ...
    metrics.observe_decision(decision, recv_to_decision_us=...)
    metrics.reconnect(); metrics.backfilled(n_bars); metrics.ledger_commit()
    ...
    await metrics.stop()

Label cardinality is bounded for the whole exchange: only `progdistill_decision_lag_bars` and
`progdistill_position` carry a `symbol` label (one series each per symbol); everything else is labelled by
tier, regime, stage, source or feature, or not at all, and the per-symbol state behind the aggregates
(shadow scores, feature PSI, equity, lag) is kept in plain dicts and summarised when scraped
(`SERIES_PER_SYMBOL`, `series_bound`; tests/test_metrics.py counts them at 500 symbols).

`/healthz` answers 200 `{"status": "ok", ...}` while the last decided bar is younger than `stale_s`
(start-up counts as fresh) and 503 `{"status": "stale", ...}` otherwise. Ages use `time.monotonic`.
`/status` (when the app passes a `status_page`) is the HTML status page of `bot.observe.status`; its `sort`
query parameter is passed to the page.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

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
from bot.core.decision import DecisionRecord
from bot.core.errors import ConfigError
from bot.observe.aggregates import SHADOW_GAUGES, Aggregates
from bot.observe.shadow import ShadowScore

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
#: The engine's stages plus the shell's receive-to-decision stage (the histogram's `stage` values).
STAGES: Final = ("features", "regime", "inference", "paper", "total", RECV_STAGE)
SOURCES: Final = ("ws", "rest")
#: Series per symbol: `progdistill_decision_lag_bars{symbol}` and `progdistill_position{symbol}`.
SERIES_PER_SYMBOL: Final = 2
#: The status page runs no script and loads nothing: a CSP says so, and it is never cached.
STATUS_HEADERS: Final = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


def series_bound(*, symbols: int, tiers: int, regimes: int, features: int) -> int:
    """The most sample lines `/metrics` carries (`_created` lines included) for this many symbols, tiers,
    regimes and model inputs: `SERIES_PER_SYMBOL` per symbol plus a part that does not grow with symbols."""
    per_tier = len(SOURCES) * regimes * 2  # bars: _total + _created
    per_tier += len(STAGES) * (
        len(LATENCY_BUCKETS_US) + 1 + 3
    )  # histogram: buckets, +Inf, sum, count, created
    per_tier += len(SHADOW_GAUGES) + 1  # shadow means + symbols scored
    per_feature = 3  # psi max, drifting symbols, threshold
    unlabelled = 3 * 2 + 9  # 3 counters (_total, _created) and 9 gauges
    return SERIES_PER_SYMBOL * symbols + tiers * per_tier + features * per_feature + unlabelled


class Metrics:
    """The service's Prometheus collectors plus the loopback HTTP endpoint.

    Args:
        stale_s: `/healthz` turns 503 when no bar was decided for this many seconds (monotonic).
        clock: monotonic seconds (injectable for tests).
        status_page: renders the `GET /status` HTML page (`bot.observe.status`) from the `sort` query
        parameter     ("" when absent); None = no /status route.
    """

    def __init__(
        self,
        *,
        stale_s: float,
        clock: Callable[[], float] = time.monotonic,
        status_page: Callable[[str], str] | None = None,
    ) -> None:
        if stale_s <= 0:
            raise ValueError(f"stale_s must be a positive number of seconds, got {stale_s}")
        self.stale_s = stale_s
        self._clock = clock
        self._status_page = status_page
        self._started_s = clock()
        self._last_bar_s: float | None = None
        self._bars_total = 0
        # per-symbol state summarised at scrape time (never a label)
        self._lag: dict[str, int] = {}
        self._lagging: set[str] = set()
        self._equity_usd: dict[str, float] = {}
        self._positions: dict[str, float] = {}
        self._shadow: dict[tuple[str, str], ShadowScore] = {}  # (symbol, tier) -> latest scores
        self._psi: dict[str, Mapping[str, float]] = {}  # symbol -> PSI per feature
        self._drifting: dict[str, tuple[str, ...]] = {}  # symbol -> features drifting now
        self._thresholds: dict[str, float] = {}
        self._position_children: dict[str, Gauge] = {}
        self._children: dict[tuple[object, ...], Any] = {}
        self._lag_children: dict[str, Gauge] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        self._register_event_metrics()
        self._register_freshness_gauges(stale_s)
        self._register_symbol_gauges()
        self.registry.register(Aggregates(self))
        self._runner: web.AppRunner | None = None

    def _register_event_metrics(self) -> None:
        """The per-event collectors: bars, latency, reconnects, backfilled bars, ledger commits."""
        self.bars = Counter(
            "progdistill_bars",
            "Confirmed bars decided, by routed tier, regime and source (ws|rest).",
            ["tier", "regime", "source"],
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

    def _register_freshness_gauges(self, stale_s: float) -> None:
        """The liveness gauges: last bar age, the stale threshold, the start time."""
        self.last_bar_age = Gauge(
            "progdistill_last_bar_age_seconds",
            "Seconds since the last decided bar (since start-up before the first one), monotonic clock.",
            registry=self.registry,
        )
        self.last_bar_age.set_function(self.last_bar_age_s)
        Gauge(
            "progdistill_stale_after_seconds",
            "The last bar age from which /healthz answers 503 stale (one bar + [service] watchdog_grace_s).",
            registry=self.registry,
        ).set(stale_s)
        Gauge(
            "progdistill_start_time_seconds",
            "Unix time the service started (a change means a restart).",
            registry=self.registry,
        ).set(time.time())

    def _register_symbol_gauges(self) -> None:
        """The per-symbol gauges and their scrape-time summaries (lag, positions, equity, symbols)."""
        self.decision_lag_bars = Gauge(
            "progdistill_decision_lag_bars",
            "Closed bars the exchange has published that are not decided yet, per symbol.",
            ["symbol"],
            registry=self.registry,
        )
        self.position = Gauge(
            "progdistill_position",
            "Paper position after the symbol's last decided bar (units of the base coin, signed).",
            ["symbol"],
            registry=self.registry,
        )
        Gauge(
            "progdistill_lagging_symbols",
            "Symbols the decision-lag check calls lagging now (/healthz 503 lagging while > 0).",
            registry=self.registry,
        ).set_function(lambda: len(self._lagging))
        Gauge(
            "progdistill_decision_lag_max_bars",
            "The highest decision lag of any symbol (closed bars not decided yet).",
            registry=self.registry,
        ).set_function(lambda: max(self._lag.values(), default=0))
        Gauge(
            "progdistill_equity_usd",
            "Paper equity summed over symbols (realised - fees + unrealised since the ledger began), USD.",
            registry=self.registry,
        ).set_function(lambda: sum(self._equity_usd.values()))
        Gauge(
            "progdistill_open_positions",
            "Symbols holding a non-zero paper position.",
            registry=self.registry,
        ).set_function(lambda: sum(1 for p in self._positions.values() if p != 0.0))
        Gauge(
            "progdistill_symbols",
            "Symbols that have decided at least one bar since start-up.",
            registry=self.registry,
        ).set_function(lambda: len(self._positions))

    # ---- recording -----------------------------------------------------------------------------
    def _child(self, metric: Any, labels: tuple[str, ...]) -> Any:
        """`metric.labels(*labels)`, cached: a labelled child is looked up once (prometheus_client's
        `labels` takes a lock and builds the key on every call, which a bar close of 500 decisions felt)."""
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def observe_decision(self, decision: DecisionRecord, *, recv_to_decision_us: float | None = None) -> None:
        """Count one decided bar, observe its per-stage latencies (microseconds), set its symbol's
        position and equity."""
        tier = decision.tier
        self._child(self.bars, (tier, decision.regime, decision.source)).inc()
        for stage, value_us in decision.latency_us.items():
            self._child(self.latency_us, (tier, stage)).observe(value_us)
        if recv_to_decision_us is not None:
            self._child(self.latency_us, (tier, RECV_STAGE)).observe(recv_to_decision_us)
        symbol = decision.symbol
        child = self._position_children.get(symbol)
        if child is None:
            child = self._position_children[symbol] = self.position.labels(symbol=symbol)
        child.set(decision.position)
        self._positions[symbol] = decision.position
        self._equity_usd[symbol] = decision.equity_usd
        self._last_bar_s = self._clock()
        self._bars_total += 1

    def shadow(self, score: ShadowScore) -> None:
        """One symbol's shadow scores of a tier; exported per tier as the mean over symbols (a score not
        measured yet counts for no symbol)."""
        self._shadow[(score.symbol or "", score.tier)] = score

    def drift(self, symbol: str, psi: Mapping[str, float], *, drifting: Iterable[str] = ()) -> None:
        """`symbol`'s PSI per feature and the features drifting on it now (between a crossing and its
        recovery); exported per feature as the highest PSI over symbols and the count of symbols drifting."""
        self._psi[symbol] = psi
        self._drifting[symbol] = tuple(drifting)

    def drift_thresholds(self, threshold: Mapping[str, float]) -> None:
        """Set each feature's warning threshold (at start-up and after a reload)."""
        self._thresholds = dict(threshold)

    def decision_lag(self, symbol: str, lag_bars: int, *, lagging: bool) -> None:
        """Set `symbol`'s decision lag; while any symbol is `lagging`, /healthz answers 503."""
        child = self._lag_children.get(symbol)
        if child is None:
            child = self._lag_children[symbol] = self.decision_lag_bars.labels(symbol=symbol)
        child.set(lag_bars)
        self._lag[symbol] = lag_bars
        if lagging:
            self._lagging.add(symbol)
        else:
            self._lagging.discard(symbol)

    def forget(self, symbol: str) -> None:
        """`symbol` is no longer run: its decision-lag series is removed (bounded cardinality) and it no
        longer counts as lagging."""
        if self._lag_children.pop(symbol, None) is not None:
            self.decision_lag_bars.remove(symbol)
        self._lag.pop(symbol, None)
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

    # ---- aggregates (at scrape time) -----------------------------------------------------------
    def shadow_means(self) -> dict[str, tuple[list[float | None], int]]:
        """Per tier: the mean over symbols of ic, vol_ic, regret, vol_qlike (None: no symbol measured it)
        and the number of symbols with a measured IC."""
        sums: dict[str, list[list[float]]] = {}
        for (_, tier), sc in self._shadow.items():
            acc = sums.setdefault(tier, [[], [], [], []])
            for values, v in zip(acc, (sc.ic, sc.vol_ic, sc.regret, sc.vol_qlike), strict=True):
                if v is not None:
                    values.append(v)
        return {
            tier: ([sum(v) / len(v) if v else None for v in acc], len(acc[0])) for tier, acc in sums.items()
        }

    def psi_thresholds(self) -> dict[str, float]:
        """Each feature's warning threshold (`drift_thresholds`)."""
        return dict(self._thresholds)

    def drifting_count(self) -> int:
        """Symbols with at least one model input drifting now."""
        return sum(1 for d in self._drifting.values() if d)

    def psi_by_feature(self) -> dict[str, tuple[float, int]]:
        """Per feature: the highest PSI over symbols and the number of symbols it is drifting on."""
        out: dict[str, tuple[float, int]] = {}
        for psi in self._psi.values():
            for feature, value in psi.items():
                top, n = out.get(feature, (value, 0))
                out[feature] = (max(top, value), n)
        for features in self._drifting.values():
            for feature in features:
                top, n = out.get(feature, (0.0, 0))
                out[feature] = (top, n + 1)
        return out

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
        return web.Response(
            text=page(request.query.get("sort", "")), content_type="text/html", headers=STATUS_HEADERS
        )

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
