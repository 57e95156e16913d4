"""The service's burst consumer: feed events in, decided bursts out (the per-event half of `bot.app.Service`).

Bars that are queued together - a bar close's confirms of many symbols - are decided together
(`Engine.on_bars`: one model call per routed tier) and written in ONE ledger transaction
(`Ledger.record_close`, group commit), then each decision goes once to every observer: the log line, metrics,
status, shadow and drift. A burst holds one bar per symbol; a book or partial bar of a symbol in it, or
`FeedReady`, ends it first, so events apply in the order they came. One symbol, or one bar at a time, is the
same path with N = 1. READY (`FeedReady`) sets each served symbol's `live_from`; the decision-lag check,
the feed counters and a verified hot reload are applied at bar boundaries here too.

`BurstConsumer` is a base class of `bot.app.Service`, which builds the state declared on it.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bot.bybit.events import FeedEvent, FeedReady
from bot.bybit.feed import MarketFeed
from bot.config import Config
from bot.core.bars import Bar, BookTop
from bot.core.decision import Decided, DecisionRecord, encode_line
from bot.core.engine import Engine
from bot.core.errors import ModelError, PipelineStalledError
from bot.core.liveness import DecisionLag
from bot.core.paper import PositionState
from bot.core.stream import PartialBar
from bot.ledger.writer import BarWrite, Ledger
from bot.models.reload import ModelReloader
from bot.observe import logs
from bot.observe.metrics import Metrics
from bot.observe.monitors import LiveMonitors
from bot.observe.notify import Notifier, Watchdog
from bot.observe.status import FamilyInfo, StatusBoard


@dataclass
class RunSummary:
    """What a run did (returned by `run_service`, printed by the demo)."""

    decisions: int = 0
    warmup_bars: int = 0
    replayed_bars: int = 0
    skipped_decided: int = 0
    per_tier: Counter[str] = field(default_factory=Counter)
    per_regime: Counter[str] = field(default_factory=Counter)
    per_source: Counter[str] = field(default_factory=Counter)
    reconnects: int = 0
    joined: int = 0  # symbols that joined while running (new listings)
    stopped: int = 0  # symbols that stopped while running (delisted, suspended, dropped)
    wall_s: float = 0.0


class BurstConsumer:
    """The per-event methods of `bot.app.Service`: take the feed's events, decide bursts, observe each."""

    cfg: Config
    max_burst: int | None
    max_decisions: int | None
    summary: RunSummary
    step_ms: int
    log: Any
    notifier: Notifier
    metrics: Metrics
    status: StatusBoard
    monitors: LiveMonitors
    lag: DecisionLag
    watchdog: Watchdog
    reloader: ModelReloader | None
    ready_event: asyncio.Event
    _active: set[str]
    _status_family: object
    _live_from: dict[str, int | None]
    _books: dict[str, BookTop]
    _last_seen: dict[str, int | None]
    _seen_reconnects: int
    _seen_backfilled: int

    def _on_bars(self, taken: list[tuple[Bar, int]], engine: Engine, ledger: Ledger) -> None:
        """A burst (bars as queued, each with the time it was dequeued; a symbol may have several, e.g. a
        backfill's): the engine decides it at once (`decide_layers`), the ledger writes it in one
        transaction, then each decision goes to the observers (`_observe`)."""
        bars: list[Bar] = []
        recv: list[int] = []
        decide: list[bool] = []
        for bar, recv_ns in taken:
            if bar.symbol not in self._active:
                continue  # stopped (or left out) while its bars were queued: never decided again
            last = self._last_seen.get(bar.symbol)
            if last is not None and bar.start_ms <= last:
                # already absorbed before a restart (stored in the ledger); never twice
                self.summary.skipped_decided += 1
                continue
            self._last_seen[bar.symbol] = bar.start_ms
            live_from = self._live_from.get(bar.symbol)
            bars.append(bar)
            # from the websocket frame (or, for REST-filled bars, from the dequeue) to the engine's decision
            recv.append(bar.recv_ns or recv_ns)
            decide.append(live_from is not None and bar.start_ms >= live_from)
        if not bars:
            return
        decisions, states, observed = decide_layers(engine, bars, decide)
        decided_ns = time.perf_counter_ns()
        self.watchdog.mark_fresh()
        ledger.record_close(
            [
                BarWrite(bar) if d is None else BarWrite(bar, d, st, self._books.get(bar.symbol))
                for bar, d, st in zip(bars, decisions, states, strict=True)
            ]
        )
        self.metrics.ledger_commit()
        ledger_us = (time.perf_counter_ns() - decided_ns) / 1e3
        for decision, recv_ns in zip(decisions, recv, strict=True):
            if decision is None:
                self.summary.warmup_bars += 1
                continue
            recv_us = (decided_ns - recv_ns) / 1e3
            logs.write_decision(encode_line(decision, {"ledger": ledger_us, "recv_to_decision": recv_us}))
            self.metrics.observe_decision(decision, recv_to_decision_us=recv_us)
        if observed:
            self._decided(observed)
            self._observe(observed, engine.family, ledger)

    def _decided(self, decided: list[Decided]) -> None:
        """The burst's decisions are committed and logged (a hook: the benchmarks stamp the time here)."""

    def _observe(self, decided: list[Decided], family: object, ledger: Ledger) -> None:
        """A burst's decisions, handed once to each observer after they are out (none calls back into the
        engine): status, summary, regime changes, then shadow and drift (`LiveMonitors.after_burst`)."""
        if family is not self._status_family:  # a reloaded family: one manifest read, then O(1)
            self._status_family = family
            self.status.set_family(FamilyInfo.of_family(family))
        now_ms = _now_ms()
        s = self.summary
        for d in decided:
            decision = d.record
            self.status.observe(decision, now_ms=now_ms)
            s.decisions += 1
            s.per_tier[decision.tier] += 1
            s.per_regime[decision.regime] += 1
            s.per_source[d.bar.source] += 1
            if d.regime_changed:
                self.log.info(
                    logs.REGIME_CHANGE, symbol=d.bar.symbol, regime=decision.regime, tier=decision.tier
                )
        self.monitors.after_burst(family, decided, ledger)

    def _on_ready(self, ledger: Ledger, served: tuple[str, ...]) -> None:
        """READY: each symbol the feed serves and never went live goes live after its last bar. A symbol the
        feed left out (its start-up backfill failed) stays without `live_from` until a start serves it, so
        the warm-up bars that start backfills are not decided."""
        for symbol in served:
            last = self._last_seen.get(symbol)
            if self._live_from.get(symbol) is None:
                live_from = (last + self.step_ms) if last is not None else 0
                self._live_from[symbol] = live_from
                ledger.set_live_from(symbol, live_from)
        if not self.ready_event.is_set():
            self.ready_event.set()
            self.notifier.ready(status="live")
            self.log.info(
                logs.SERVICE_READY, symbols=list(self.cfg.market.symbol_list), live_from=self._live_from
            )

    def _check_lag(self, feed: MarketFeed, symbol: str) -> None:
        """Liveness by decisions: lag gauge, a warning per crossing, and a stall ends the run."""
        stream = feed.streams.get(symbol)
        if stream is None or not self.ready_event.is_set():
            return
        st = self.lag.update(symbol, stream.newest_closed_ms, self._last_seen.get(symbol))
        self.metrics.decision_lag(symbol, st.lag_bars, lagging=st.lagging)
        self.status.set_lag(symbol, st.lag_bars, lagging=st.lagging)
        if st.crossed:
            self.log.warning(
                logs.DECISION_LAG,
                symbol=symbol,
                lag_bars=st.lag_bars,
                last_decided_ms=self._last_seen.get(symbol),
                newest_closed_ms=stream.newest_closed_ms,
                held=len(stream.held),
                fill_pending=stream.request is not None,
            )
        elif st.recovered:
            self.log.info(logs.DECISION_LAG_RECOVERED, symbol=symbol, lag_bars=st.lag_bars)
        if st.stalled:
            raise PipelineStalledError(
                f"{symbol}: {st.lag_bars} closed bars not decided and none decided while "
                f"{self.lag.restart_bars} more closed (last decided start_ms {self._last_seen.get(symbol)}); "
                "exiting so that the service restarts and resumes from the ledger"
            )

    def _sync_feed_counters(self, feed: MarketFeed) -> None:
        """Carry the feed's reconnect/backfill counters into the metrics (deltas since the last call)."""
        stats = feed.stats
        if stats.reconnects > self._seen_reconnects:
            self.metrics.reconnect(stats.reconnects - self._seen_reconnects)
            self._seen_reconnects = stats.reconnects
        if stats.backfilled_bars > self._seen_backfilled:
            self.metrics.backfilled(stats.backfilled_bars - self._seen_backfilled)
            self._seen_backfilled = stats.backfilled_bars
        self.status.set_feed(reconnects=stats.reconnects, backfilled_bars=stats.backfilled_bars)

    def _maybe_switch(self, engine: Engine, bar: Bar) -> None:
        """At a bar boundary: switch to a family the reloader verified and warmed (hot reload)."""
        family = self.reloader.take() if self.reloader is not None else None
        if family is None:
            return
        previous = engine.family.model_sha
        try:
            engine.swap_family(family)
        except ModelError as exc:
            self.log.error(logs.MODEL_RELOAD_REFUSED, error=str(exc), keeping=previous[:12])
            return
        self.log.info(
            logs.MODEL_SWITCHED,
            model_sha=family.model_sha[:12],
            previous=previous[:12],
            from_symbol=bar.symbol,
            from_start_ms=bar.start_ms,
        )

    async def _consume(self, feed: MarketFeed, engine: Engine, ledger: Ledger, stop: asyncio.Event) -> None:
        """Take each event and every one queued behind it; bars gather into bursts (`_decide`)."""
        async for first in feed:
            event: FeedEvent | None = first
            burst: list[tuple[Bar, int]] = []
            held: set[str] = set()  # symbols with a bar in `burst`
            while event is not None:
                recv_ns = time.perf_counter_ns()
                symbol = None if isinstance(event, FeedReady) else event.symbol
                if symbol is not None and symbol not in self._active:
                    event = feed.next_nowait()  # a stopped symbol's update, queued before it stopped
                    continue
                full = isinstance(event, Bar) and len(burst) >= self._burst_cap()
                # a symbol's second bar joins the burst (one transaction), and a book or partial of a
                # symbol with a bar in it waits for that bar to be decided first
                ordered = symbol in held and not isinstance(event, Bar)
                if burst and (full or symbol is None or ordered):
                    if self._decide(feed, engine, ledger, burst):
                        stop.set()
                        return
                    burst, held = [], set()
                if isinstance(event, Bar):
                    burst.append((event, recv_ns))
                    held.add(event.symbol)
                elif isinstance(event, PartialBar):
                    engine.on_partial(event)
                    self._check_lag(feed, event.symbol)
                elif isinstance(event, BookTop):
                    engine.on_book(event)
                    self._books[event.symbol] = event
                elif isinstance(event, FeedReady):
                    self._on_ready(ledger, event.symbols)
                event = feed.next_nowait()
            if burst and self._decide(feed, engine, ledger, burst):
                stop.set()
                return

    def _burst_cap(self) -> int:
        """Most bars the next burst may take: `max_burst`, and no more than `max_decisions` leaves."""
        cap = self.max_burst if self.max_burst is not None else 1 << 30
        if self.max_decisions is not None:
            cap = min(cap, max(1, self.max_decisions - self.summary.decisions))
        return cap

    def _decide(self, feed: MarketFeed, engine: Engine, ledger: Ledger, burst: list[tuple[Bar, int]]) -> bool:
        """Decide a burst at a bar boundary (a verified reload switches first); True once `max_decisions`
        decisions are made."""
        self._sync_feed_counters(feed)
        self._maybe_switch(engine, burst[0][0])
        self._on_bars(burst, engine, ledger)
        for bar, _ in burst:
            self._check_lag(feed, bar.symbol)
        return self.max_decisions is not None and self.summary.decisions >= self.max_decisions


def decide_layers(
    engine: Engine, bars: list[Bar], decide: list[bool]
) -> tuple[list[DecisionRecord | None], list[PositionState | None], list[Decided]]:
    """`engine.on_bars` over a burst that may hold several bars of one symbol (in time order): layer k is
    every symbol's k-th bar, decided together. Returns, in the burst's order, each bar's decision and the
    symbol's paper state right after it (None where not decided), and the decided bars as the observers
    take them (each with its own feature row and regime change)."""
    seen: dict[str, int] = {}
    layers: list[list[int]] = []
    for i, bar in enumerate(bars):
        k = seen.get(bar.symbol, 0)
        seen[bar.symbol] = k + 1
        if k == len(layers):
            layers.append([])
        layers[k].append(i)
    out: list[DecisionRecord | None] = [None] * len(bars)
    states: list[PositionState | None] = [None] * len(bars)
    decided: dict[int, Decided] = {}
    for layer in layers:
        got = engine.on_bars([bars[i] for i in layer], decide=[decide[i] for i in layer])
        for i, d in zip(layer, got, strict=True):
            if d is not None:
                out[i] = d
                states[i] = engine.trader.state(d.symbol)
                regime = engine.regime(d.symbol)
                changed = regime is not None and regime.changed
                decided[i] = Decided(bars[i], d, engine.features(d.symbol), changed)
    return out, states, [decided[i] for i in sorted(decided)]


def _now_ms() -> int:
    """Wall-clock epoch milliseconds (the status page's ages and UTC day)."""
    return time.time_ns() // 1_000_000
