"""The asyncio service: feed -> engine -> ledger + canonical log line, under one TaskGroup.

Start-up order: validate config (done by the caller), load and verify the tier family, open the ledger,
replay the ledger's stored bars through the engine (so features, regimes and positions are exactly
where an uninterrupted run would have them), start metrics, then backfill + subscribe (the feed) and
signal READY. A bar is decided iff it is at or after the symbol's `live_from_ms` (set once, when the
first start-up backfill completes, and kept in the ledger): so a restart decides every bar it missed,
and no bar twice (the ledger's primary key is `(symbol, start_ms)`).

Bars that are queued together - a bar close's confirms of many symbols - are decided together and
written in ONE ledger transaction (`bot.consumer.BurstConsumer`, the per-event half of `Service`).

Shutdown (SIGTERM/SIGINT or `stop`): stop intake, finish the burst in hand (processing is synchronous, so
cancellation only lands between bursts), close the feed, REST, metrics and the ledger (committed), log
`service_stopped` - all under one budget, `service.shutdown_timeout_s` (`bot.shutdown`): a step that
overruns it is abandoned and logged (`shutdown_timeout`), and the run raises ShutdownTimeoutError (exit 5).
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
from pathlib import Path
from typing import Any

from bot.bybit import universe
from bot.bybit.feed import MarketFeed
from bot.bybit.rest import RestClient, rest_client
from bot.config import Config, SymbolSelection, engine_params, watchdog_fresh_s
from bot.consumer import BurstConsumer, RunSummary, _now_ms
from bot.core.bars import INTERVAL_MS, Bar, BookTop, interval_ms
from bot.core.drift import DriftMonitor
from bot.core.engine import Engine
from bot.core.errors import BotError, ConfigError
from bot.core.liveness import DecisionLag
from bot.core.paper import PaperTrader
from bot.ledger.lock import LedgerLock
from bot.ledger.writer import Ledger
from bot.models.family import TierFamily
from bot.models.reload import ModelReloader
from bot.observe import logs
from bot.observe.metrics import Metrics
from bot.observe.monitors import LiveMonitors
from bot.observe.notify import Notifier, Watchdog
from bot.observe.shadow import ShadowScorer
from bot.observe.status import DAY_MS, FamilyInfo, StatusBoard
from bot.observe.status_page import render_status
from bot.shutdown import ShutdownBudget


def _check_ledger_interval(path: Path, symbol: str, stored: list[Bar], interval: str) -> None:
    """ConfigError naming both intervals when the ledger's bars of `symbol` are not on `interval`'s grid."""
    if not stored:
        return
    step = interval_ms(interval)
    gaps = [b.start_ms - a.start_ms for a, b in itertools.pairwise(stored)]
    spacing = min(gaps) if gaps else None
    aligned = all(b.start_ms % step == 0 for b in stored)
    if aligned and spacing in (step, None):
        return
    names = {ms: name for name, ms in INTERVAL_MS.items()}
    held = repr(names[spacing]) if spacing in names else "another interval"
    fix = f"set interval = {held}" if spacing in names else "set the interval it was written with"
    raise ConfigError(
        f"{path}: holds {symbol} bars of interval {held}, config [market] interval is {interval!r}; "
        f"{fix}, or point [ledger] path at a new ledger for {interval!r} bars"
    )


class Service(BurstConsumer):
    """One running bot. Build with `Service(cfg)`, then `await service.run(stop)`.

    Args:
        cfg: validated config.
        max_decisions: stop after this many decisions (demo, tests); None = run until stopped.
        notifier: systemd notifier (default: from the environment; a no-op outside systemd).
        max_burst: most bars decided together (None: every bar queued at once, a whole bar close; 1: one bar
            at a time, the benchmarks' baseline).
        selection: the `[market] symbols` selection `cfg`'s symbols were resolved from (`resolve_symbols`),
            re-resolved every `[market] reresolve_s`; None: a plain list (only its symbols' status checked).
    """

    def __init__(
        self,
        cfg: Config,
        *,
        max_decisions: int | None = None,
        notifier: Notifier | None = None,
        lock: LedgerLock | None = None,
        family: TierFamily | None = None,
        max_burst: int | None = None,
        selection: SymbolSelection | None = None,
    ) -> None:
        if max_burst is not None and max_burst < 1:
            raise ValueError(f"max_burst must be a positive number of bars or None, got {max_burst}")
        self.cfg = cfg
        self.max_burst = max_burst
        self.selection = selection
        self._active = set(cfg.market.symbol_list)  # the symbols run now: bars of any other are ignored
        self._rest: RestClient | None = None
        self.lock = lock
        self.family = family
        self.max_decisions = max_decisions
        self.notifier = notifier if notifier is not None else Notifier.from_env()
        self.summary = RunSummary()
        self.step_ms = interval_ms(cfg.market.interval)
        self.log = logs.get_logger(component="service")
        fresh_s = watchdog_fresh_s(cfg)
        self.status = StatusBoard(cfg.market.symbol_list)
        self._status_family: object = None  # the family the status page describes (a reload changes it)
        self.metrics = Metrics(
            stale_s=fresh_s, status_page=lambda sort: render_status(self.status, _now_ms(), sort=sort)
        )
        # shadow scoring and drift, after each decision is out (off the latency path)
        self.monitors = LiveMonitors(cfg, self.metrics, self.status)
        self.lag = DecisionLag(
            self.step_ms,
            warn_bars=cfg.service.decision_lag_warn_bars,
            restart_bars=cfg.service.decision_lag_restart_bars,
            min_stall_s=cfg.service.decision_stall_min_s,
        )
        self.watchdog = Watchdog(self.notifier, fresh_s=fresh_s, healthy=lambda: not self.lag.any_lagging)
        self._live_from: dict[str, int | None] = {}
        self._books: dict[str, BookTop] = {}  # newest top of book per symbol (recorded with decisions)
        self._last_seen: dict[str, int | None] = {}
        self.ready_event = asyncio.Event()
        self.metrics_port: int | None = None
        self.feed: MarketFeed | None = None
        self.reloader: ModelReloader | None = None
        self._seen_reconnects = 0
        self._seen_backfilled = 0

    @property
    def shadow(self) -> ShadowScorer:
        return self.monitors.shadow

    @property
    def drift(self) -> DriftMonitor | None:
        return self.monitors.drift

    # ---- start-up ---------------------------------------------------------------------------------------

    def _open_state(self, family: TierFamily) -> tuple[Engine, Ledger]:
        for tier in family:
            self.log.info(
                logs.TIER_LOADED,
                tier=tier.name,
                features=tier.n_features,
                runtime=tier.runtime,
                runtime_reason=tier.runtime_reason,
            )
            if tier.choice.refused:
                self.log.warning(logs.COMPILED_FORWARD_REFUSED, tier=tier.name, reason=tier.runtime_reason)
        skill = family.manifest.return_skill
        if skill is not None and skill.no_skill:
            self.log.warning(
                logs.RETURN_NO_SKILL,
                ic=round(skill.ic, 5),
                se=round(skill.se, 5),
                n_rows=skill.n_rows,
                rows=skill.rows,
                tier=skill.tier,
                note="the return signal has no measured skill (|IC| < 2 SE on held-out rows)",
            )
        ledger = Ledger.open(self.cfg.ledger.path, synchronous=self.cfg.ledger.synchronous)
        trader = PaperTrader(self.cfg.paper, positions=ledger.load_positions())
        engine = Engine(engine_params(self.cfg), family, trader)
        for symbol in self.cfg.market.symbol_list:
            stored = ledger.bars(symbol)
            try:
                _check_ledger_interval(ledger.path, symbol, stored, self.cfg.market.interval)
            except ConfigError:
                ledger.close()
                raise
            self.summary.replayed_bars += self._replay(engine, stored)
            self._last_seen[symbol] = stored[-1].start_ms if stored else None
            self._live_from[symbol] = ledger.live_from(symbol)
        self.monitors.restore(ledger, self.cfg.market.symbol_list)
        self._restore_status(family, ledger)
        return engine, ledger

    def _replay(self, engine: Engine, stored: list[Bar]) -> int:
        """`engine.replay(stored)`, keeping the last drift window of feature rows (drift after a restart is
        measured from the first decided bar, not a window later). Returns bars replayed."""
        for bar in stored:
            engine.on_bar(bar, decide=False)
            self.monitors.replayed(bar.symbol, engine.features(bar.symbol))
        return len(stored)

    def _restore_status(self, family: TierFamily, ledger: Ledger) -> None:
        """The status page after a restart: the family, and per symbol today's and the last decisions."""
        self._status_family = family
        self.status.set_family(FamilyInfo.of_family(family))
        today_ms = _now_ms() // DAY_MS * DAY_MS
        for symbol in self.cfg.market.symbol_list:
            last = ledger.last_decided(symbol)
            if last is not None:
                since = min(today_ms, last - (self.status.recent - 1) * self.step_ms)
                self.status.restore(symbol, ledger.decisions(symbol, since_ms=since))

    def _start_ms(self) -> dict[str, int | None]:
        return {s: (None if last is None else last + self.step_ms) for s, last in self._last_seen.items()}

    def request_reload(self) -> None:
        """SIGHUP: load, verify and warm the models directory's current family, then switch at a bar."""
        if self.reloader is not None:
            self.reloader.request()

    # ---- symbols joining and leaving -------------------------------------------------------------

    async def _membership(self, feed: MarketFeed, engine: Engine, ledger: Ledger) -> None:
        """Once READY, the symbols whose start-up backfill failed leave the engine and the status page; then
        every `[market] reresolve_s` the exchange is asked again (`universe.review`): new listings of the
        selection join, symbols no longer `Trading` (or dropped by the selection) stop. A failed look-up
        is logged and tried again at the next period."""
        await self.ready_event.wait()
        for symbol in list(feed.excluded):
            if symbol in self._active:
                self._active.discard(symbol)
                engine.remove_symbol(symbol)
                self._forget(symbol)
        while True:
            await asyncio.sleep(self.cfg.market.reresolve_s)
            rest = self._rest
            assert rest is not None
            try:
                rows = await rest.instruments()
                tickers = await rest.tickers() if self.selection is not None else []
                now_ms = await rest.server_time_ms()
            except BotError as exc:
                self.log.warning(
                    logs.SYMBOLS_REVIEW_FAILED, error=str(exc), retry_in_s=self.cfg.market.reresolve_s
                )
                continue
            found = universe.review(rows, tickers, self.selection, engine.symbols)
            for symbol, reason in sorted(found.left.items()):
                self._stop_symbol(symbol, reason, feed, engine, ledger, now_ms=now_ms)
            if found.joined:
                self._join(list(found.joined), feed, engine, ledger, now_ms=now_ms)

    def _join(
        self, symbols: list[str], feed: MarketFeed, engine: Engine, ledger: Ledger, *, now_ms: int
    ) -> None:
        """New listings: engine state, status row and `live_from` (the bar forming at `now_ms`, the exchange
        clock: the bars before it are its warm-up, from REST), then the feed subscribes and backfills them."""
        step = self.step_ms
        live_from = now_ms - now_ms % step
        for symbol in symbols:
            engine.add_symbol(symbol)
            self._active.add(symbol)
            self._last_seen[symbol] = None
            self._live_from[symbol] = live_from
            ledger.set_live_from(symbol, live_from)
            self.status.add(symbol)
            self.summary.joined += 1
            self.log.info(logs.SYMBOL_JOINED, symbol=symbol, live_from_ms=live_from)
        feed.add_symbols(symbols, start_ms=live_from - self.cfg.exchange.backfill_bars * step)

    def _stop_symbol(
        self, symbol: str, reason: str, feed: MarketFeed, engine: Engine, ledger: Ledger, *, now_ms: int
    ) -> None:
        """`symbol` stops: unsubscribed, its engine state dropped, its position closed on paper at its last
        price (a `stops` row and the closing fill in the ledger) and one `symbol_stopped` line."""
        feed.remove_symbols([symbol])
        self._active.discard(symbol)
        engine.remove_symbol(symbol)
        fill, state = engine.trader.close(symbol)
        ledger.record_stop(symbol, stopped_ms=now_ms, reason=reason, fill=fill, state=state)
        self._forget(symbol)
        self.summary.stopped += 1
        self.log.info(
            logs.SYMBOL_STOPPED,
            symbol=symbol,
            reason=reason,
            closed_qty=0.0 if fill is None else fill.qty,
            side=None if fill is None else fill.side,
            price=state.mark_px,
            realized_pnl_usd=0.0 if fill is None else fill.realized_pnl_usd,
            fee_usd=0.0 if fill is None else fill.fee_usd,
            last_decided_ms=state.last_start_ms,
        )

    def _forget(self, symbol: str) -> None:
        """`symbol` is no longer run: off the status page, the lag check and the per-symbol metrics."""
        self.status.remove(symbol)
        self.lag.forget(symbol)
        self.metrics.forget(symbol)
        self._books.pop(symbol, None)

    # ---- run -------------------------------------------------------------------------------------

    async def _serve(self, feed: MarketFeed, engine: Engine, ledger: Ledger, stop: asyncio.Event) -> None:
        """The running service under the app's one TaskGroup: the consumer and the watchdog.

        Returns when the consumer does (`max_decisions`); cancel it to stop. A consumer error (a fatal feed
        error, a stall) ends it with the TaskGroup's ExceptionGroup.
        """
        async with asyncio.TaskGroup() as tg:
            consumer = tg.create_task(self._consume(feed, engine, ledger, stop), name="consume")
            dog = tg.create_task(self.watchdog.run(), name="watchdog")
            reloader = tg.create_task(self.reloader.run(), name="reload") if self.reloader else None
            members = tg.create_task(self._membership(feed, engine, ledger), name="membership")
            await asyncio.wait({consumer})  # its error, if any, is the TaskGroup's to raise
            dog.cancel()
            members.cancel()
            if reloader is not None:
                reloader.cancel()

    async def run(self, stop: asyncio.Event) -> RunSummary:
        """Run until `stop` is set (or `max_decisions`); return the summary.

        The models are verified first (read-only; `family` if the caller loaded them), then the ledger's
        lock is taken (unless the caller holds it: `lock`), so a bad family or a second instance on the
        same ledger stops here, before a file is created.

        Raises:
            LedgerInUseError: another process holds the ledger.
            BotError: fatal (inside an ExceptionGroup when it came from the running tasks).
            ShutdownTimeoutError: the run ended cleanly but a shutdown step overran
                `service.shutdown_timeout_s` and was abandoned.
        """
        family = (
            self.family
            if self.family is not None
            else TierFamily.load(self.cfg.models.dir, compiled_forward=self.cfg.models.compiled_forward)
        )
        family.check_fit(self.cfg)  # interval, symbols, feature sets, horizon: exit 3 before any file
        lock = self.lock if self.lock is not None else LedgerLock(self.cfg.ledger.path)
        owns_lock = not lock.held
        lock.acquire()
        try:
            return await self._run_locked(stop, family)
        finally:
            if owns_lock:
                lock.release()

    async def _run_locked(self, stop: asyncio.Event, family: TierFamily) -> RunSummary:
        t_start = time.perf_counter()
        cfg = self.cfg
        self.log.info(logs.SERVICE_START, symbols=list(cfg.market.symbol_list), interval=cfg.market.interval)
        engine, ledger = self._open_state(family)
        self.reloader = ModelReloader(cfg, family, poll_s=cfg.models.reload_poll_s)
        budget = ShutdownBudget(cfg.service.shutdown_timeout_s, self.log)
        rest: RestClient | None = None
        serving: asyncio.Task[None] | None = None
        try:
            self.metrics_port = await self.metrics.serve(cfg.service)
            if self.metrics_port is not None and cfg.service.expose_remote:
                self.log.warning(
                    logs.STATUS_EXPOSED,
                    host=cfg.service.metrics_host,
                    port=self.metrics_port,
                    detail="[service] expose_remote = true: /metrics and /status (positions, PnL) are "
                    "served without authentication to whoever reaches this address",
                )
            rest = await rest_client(cfg.exchange).__aenter__()
            self._rest = rest
            self.feed = MarketFeed(cfg, rest, start_ms=self._start_ms())
            serving = asyncio.create_task(self._serve(self.feed, engine, ledger, stop), name="serve")
            stopper = asyncio.create_task(stop.wait(), name="stop")
            try:
                await asyncio.wait({serving, stopper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopper.cancel()
        finally:
            error = await self._shutdown(budget, serving, rest, ledger)
            self.summary.wall_s = time.perf_counter() - t_start
            self.log.info(
                logs.SERVICE_STOPPED,
                decisions=self.summary.decisions,
                warmup_bars=self.summary.warmup_bars,
                wall_s=round(self.summary.wall_s, 3),
                shutdown_s=round(budget.elapsed_s, 3),
                abandoned=budget.abandoned,
            )
        if error is not None:
            raise error
        budget.raise_if_abandoned()
        return self.summary

    async def _shutdown(
        self,
        budget: ShutdownBudget,
        serving: asyncio.Task[None] | None,
        rest: RestClient | None,
        ledger: Ledger,
    ) -> BaseException | None:
        """Every shutdown step under one budget (`service.shutdown_timeout_s`); returns the running tasks'
        error, if they ended with one (raised by `run` after the shutdown)."""
        budget.start()
        self.notifier.stopping(status="stopping")
        self.log.info(logs.SERVICE_STOP, budget_s=budget.budget_s)
        error: BaseException | None = None
        if serving is not None:
            serving.cancel()  # a no-op when it already ended
            done = await budget.step("tasks", serving)
            if done is not None and not done.cancelled():
                error = done.exception()
        if self.feed is not None:
            await budget.close("feed", self.feed.aclose())
            self.summary.reconnects = self.feed.stats.reconnects
        if rest is not None:
            await budget.close("rest", rest.aclose())
        await budget.close("metrics", self.metrics.stop())
        budget.run_sync("ledger", ledger.close)
        return error


def install_signal_handlers(stop: asyncio.Event, service: Service | None = None) -> None:
    """SIGTERM/SIGINT set `stop` (graceful shutdown); SIGHUP reloads the models (`systemctl reload`)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if service is not None:
        loop.add_signal_handler(signal.SIGHUP, service.request_reload)


async def run_service(
    cfg: Config,
    *,
    max_decisions: int | None = None,
    stop: asyncio.Event | None = None,
    lock: LedgerLock | None = None,
    family: TierFamily | None = None,
) -> RunSummary:
    """Run the bot until a signal (or `stop`, or `max_decisions`); `lock`: the ledger lock, if held;
    `family`: the verified tier family, if loaded."""
    ev = stop if stop is not None else asyncio.Event()
    selection = cfg.market.selection
    cfg = await resolve_symbols(cfg)
    service = Service(cfg, max_decisions=max_decisions, lock=lock, family=family, selection=selection)
    install_signal_handlers(ev, service)
    return await service.run(ev)


async def resolve_symbols(cfg: Config) -> Config:
    """`cfg` with a `[market] symbols` selection resolved from the exchange (`bot.bybit.universe`; one log
    line with the count and the first symbols); a plain list is returned as it is."""
    selection = cfg.market.selection
    if selection is None:
        return cfg
    async with rest_client(cfg.exchange) as rest:
        found = await universe.resolve(rest, selection)
    logs.get_logger(component="service").info(
        logs.SYMBOLS_RESOLVED,
        symbols=len(found.symbols),
        eligible=found.eligible,
        listed=found.listed,
        first=list(found.symbols[:10]),
        requests=rest.requests,
    )
    return universe.resolve_config(cfg, found)


def summary_dict(summary: RunSummary) -> dict[str, Any]:
    """JSON-friendly view of a summary."""
    return {
        "decisions": summary.decisions,
        "warmup_bars": summary.warmup_bars,
        "replayed_bars": summary.replayed_bars,
        "per_tier": dict(summary.per_tier),
        "per_regime": dict(summary.per_regime),
        "per_source": dict(summary.per_source),
        "reconnects": summary.reconnects,
        "wall_s": round(summary.wall_s, 3),
    }
