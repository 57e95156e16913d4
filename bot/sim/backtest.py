"""The backtest: the live decision kernels over klines CSVs, in-process, returning the decision records.

The same per-bar math as the service, in whole-history kernel calls over the CSVs' arrays: features are
the feature kernel's T-bar loop over each symbol's window, and each tier's predictions one call of its
runtime per batch of the rows routed to it, cached per (data, models) pair (`bot.sim.backtest_cache`), so a
rerun that changes only policy keys does not compute them again; the regime and policy pass is one regime
kernel call and one paper kernel call per symbol (`bot.sim.policy_pass`), whose output arrays become
decisions.jsonl and the report (`RunResult.records` builds the decision records when asked). Each symbol's
first `--warmup-bars` bars only warm the state (what the service's REST backfill does at start-up). The
records equal, field by field, those of the live `Engine` (`run_per_bar`, the former path: `engine.on_bar`
per bar, kept as the reference and the benchmarks' baseline) and of the service (tests/test_backtest.py);
latency is not measured per bar (`latency_us` is empty). docs/backtest.md says what is the same as live and
what is not. The CLI `python -m bot backtest`, its outputs and interrupt phases:
`bot.sim.backtest_cli`.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import msgspec
import numpy as np
import numpy.typing as npt

from bot.config import Config, engine_params
from bot.core.bars import Bar, interval_ms
from bot.core.decision import DecisionRecord
from bot.core.engine import Engine
from bot.core.errors import ConfigError, DataError, ModelError
from bot.core.paper import PaperTrader
from bot.core.params import REGIME_NAMES
from bot.models.family import TierFamily
from bot.sim import pass_records, policy_pass
from bot.sim.backtest_cache import CachedFamily, Predictions, SymbolBars, load, load_symbol
from bot.sim.backtest_report import RunResult

#: `source` of every backtest decision record (live records say ws or rest).
SOURCE: Final = "backtest"


@dataclass(frozen=True, slots=True)
class Window:
    """Bars `lo:hi` of a symbol's file are used; from `first` on they are decided."""

    lo: int
    first: int
    hi: int


def window(bars: Sequence[Bar], *, warmup_bars: int, from_ms: int | None, to_ms: int | None) -> Window:
    """`window_of` a list of bars."""
    starts = np.fromiter((b.start_ms for b in bars), dtype=np.int64, count=len(bars))
    sym = bars[0].symbol if bars else ""
    return window_of(starts, sym, warmup_bars=warmup_bars, from_ms=from_ms, to_ms=to_ms)


def window_of(
    start_ms: npt.NDArray[np.int64], symbol: str, *, warmup_bars: int, from_ms: int | None, to_ms: int | None
) -> Window:
    """Decided: bars in `[from_ms, to_ms)` after the file's first `warmup_bars`; warm-up: the `warmup_bars`
    bars just before the first decided one (from before `from_ms` when the file has them). `start_ms`
    ascending.

    Raises:
        DataError: no bar is left to decide.
    """
    n = int(start_ms.shape[0])
    first = warmup_bars
    if from_ms is not None:
        first = max(first, int(np.searchsorted(start_ms, from_ms, side="left")))
    hi = n if to_ms is None else int(np.searchsorted(start_ms, to_ms, side="left"))
    if first >= hi:
        raise DataError(
            f"{symbol}: no bar left to decide: {n} bars, warm-up {warmup_bars}, range "
            f"{from_ms}..{to_ms} ms; lower --warmup-bars or widen --from/--to"
        )
    return Window(first - warmup_bars, first, hi)


def with_fixed_tier(cfg: Config, tier: str) -> Config:
    """`cfg` with every regime routed to `tier` (`--tier`, `--compare-tiers`)."""
    routes = dict.fromkeys(REGIME_NAMES, tier)
    return msgspec.structs.replace(cfg, regime=msgspec.structs.replace(cfg.regime, routes=routes))


def with_symbols(cfg: Config, symbols: Sequence[str]) -> Config:
    """`cfg` whose `[market] symbols` are the data files' symbols."""
    return msgspec.structs.replace(cfg, market=msgspec.structs.replace(cfg.market, symbols=list(symbols)))


class Backtest:
    """The data and the models of a backtest, loaded once; `run(cfg)` passes the engine over them.

    Args:
        cfg: validated config ([market] interval; routes, regime and paper keys are taken per `run`).
        data: `--data` arguments (`PATH` or `SYMBOL=PATH`), one CSV per symbol.
        models_dir: the tier family.
        warmup_bars: bars per symbol that only warm the engine (None: `[exchange] backfill_bars`).
        from_ms, to_ms: decide bars in `[from_ms, to_ms)` only (None: no bound).
        cache_dir: where features and predictions are cached (None: not on disk, computed per instance).
    """

    def __init__(
        self,
        cfg: Config,
        data: Sequence[str],
        models_dir: str | Path,
        *,
        warmup_bars: int | None = None,
        from_ms: int | None = None,
        to_ms: int | None = None,
        cache_dir: Path | None = None,
        batched: bool = True,
        check: bool = False,
    ) -> None:
        if not data:
            raise ConfigError("--data: at least one klines CSV is required")
        self.interval_ms = interval_ms(cfg.market.interval)
        n_warm = cfg.exchange.backfill_bars if warmup_bars is None else warmup_bars
        if n_warm < 0:
            raise ConfigError(f"--warmup-bars: expected an integer >= 0, got {n_warm}")
        self.warmup_bars = n_warm
        self.symbols: list[SymbolBars] = [load_symbol(arg, interval_ms=self.interval_ms) for arg in data]
        names = [s.symbol for s in self.symbols]
        if len(set(names)) != len(names):
            raise DataError(f"--data: one CSV per symbol, got symbols {names}; name them SYMBOL=PATH")
        self.windows = {
            s.symbol: window_of(s.start_ms, s.symbol, warmup_bars=n_warm, from_ms=from_ms, to_ms=to_ms)
            for s in self.symbols
        }
        self.family = TierFamily.load(models_dir, compiled_forward=cfg.models.compiled_forward)
        t0 = time.perf_counter()
        self.cached: dict[str, Predictions] = {}
        for s in self.symbols:
            w = self.windows[s.symbol]
            self.cached[s.symbol] = load(
                s, w.lo, w.hi, self.family, interval_ms=self.interval_ms, cache_dir=cache_dir, batched=batched
            )
        self.cache_s = time.perf_counter() - t0
        self.check = check
        self.inputs = [self._input(s) for s in self.symbols]
        self._schedule_list: list[tuple[str, int, Bar, bool]] | None = None

    def _input(self, s: SymbolBars) -> policy_pass.SymbolInput:
        """`s`'s window as the policy pass takes it (predictions stacked in the family's tier order)."""
        w, c = self.windows[s.symbol], self.cached[s.symbol]
        decide = c.valid.copy()
        decide[: w.first - w.lo] = False
        return policy_pass.SymbolInput(
            symbol=s.symbol,
            start_ms=c.bars.start_ms,
            close=c.bars.close,
            volume=c.bars.volume,
            decide=decide,
            preds=c.preds,  # filled in place by `c.ensure` as runs route rows to tiers
            vols=c.vols,
        )

    @property
    def _schedule(self) -> list[tuple[str, int, Bar, bool]]:
        """Every used bar of every symbol in time order, for the per-bar path (built on first use)."""
        if self._schedule_list is None:
            self._schedule_list = list(self._merged())
        return self._schedule_list

    def _merged(self) -> Iterator[tuple[str, int, Bar, bool]]:
        """Every used bar of every symbol in time order (ties in `--data` order): (symbol, i, bar, decide),
        `i` counted from the window's first bar."""

        def one(k: int, s: SymbolBars) -> Iterator[tuple[int, int, str, int, Bar, bool]]:
            w = self.windows[s.symbol]
            bars = s.bars
            for i in range(w.lo, w.hi):
                bar = bars[i]
                yield bar.start_ms, k, s.symbol, i - w.lo, bar, i >= w.first

        for _, _, sym, i, bar, decide in heapq.merge(*(one(k, s) for k, s in enumerate(self.symbols))):
            yield sym, i, bar, decide

    @property
    def n_bars(self) -> int:
        """Bars the engine sees: every symbol's window, warm-up included."""
        return sum(w.hi - w.lo for w in self.windows.values())

    @property
    def decided_bars(self) -> int:
        """Bars a run decides: at or after each window's first decided bar, with features."""
        return sum(int(inp.decide.sum()) for inp in self.inputs)

    def config_for(self, cfg: Config, *, tier: str | None = None) -> Config:
        """`cfg` with the data's symbols (and every regime routed to `tier` when given)."""
        cfg = with_symbols(cfg, [s.symbol for s in self.symbols])
        return with_fixed_tier(cfg, tier) if tier is not None else cfg

    def policy(self, cfg: Config, *, tier: str | None = None) -> policy_pass.Policy:
        """`cfg`'s policy keys as the kernels' parameters (checked as the engine checks them).

        Raises:
            ModelError: a route (or `tier`) names a tier the family does not have, or vol_target sizing
                without a vol head.
        """
        run_cfg = self.config_for(cfg, tier=tier)
        if tier is not None and tier not in self.family:
            raise ModelError(f"--tier {tier!r}: not in the models, which have {self.family.names}")
        return policy_pass.Policy.of(
            self.family,
            self.family.names,
            [s.symbol for s in self.symbols],
            run_cfg.regime,
            run_cfg.paper,
            interval_ms=self.interval_ms,
        )

    def run(
        self,
        cfg: Config,
        *,
        tier: str | None = None,
        sink: Callable[[DecisionRecord], None] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> RunResult:
        """The regime and policy pass under `cfg` (policy keys), one kernel call per stage and symbol,
        returning every decision in the engine's order (time, then `--data` order).

        Raises:
            ModelError: a route (or `tier`) names a tier the family does not have.
        """
        policy = self.policy(cfg, tier=tier)
        t0 = time.perf_counter()
        cache_s = self.cache_s
        outputs = self._outputs(policy)
        wall = (
            time.perf_counter() - t0 - (self.cache_s - cache_s)
        )  # the pass, not the predictions it asked for
        result = self._result(outputs, policy, wall)
        if sink is not None:
            for rec in result.records:
                sink(rec)
        if progress is not None:
            progress(self.n_bars)
        return result

    def _outputs(self, policy: policy_pass.Policy) -> list[policy_pass.SymbolOutput]:
        """The pass of every symbol, computing the routed predictions the cache does not hold yet (their
        time is added to `cache_s`, not to the pass)."""
        return [policy_pass.run_symbol(inp, policy, ensure=self._ensurer(inp.symbol)) for inp in self.inputs]

    def _ensurer(self, symbol: str) -> Callable[[npt.NDArray[np.int64], npt.NDArray[np.int64]], None]:
        """`symbol`'s `Predictions.ensure`, timed into `cache_s`."""
        cached = self.cached[symbol]

        def ensure(tier: npt.NDArray[np.int64], rows: npt.NDArray[np.int64]) -> None:
            t0 = time.perf_counter()
            cached.ensure(tier, rows)
            self.cache_s += time.perf_counter() - t0

        return ensure

    def policy_pnl(self, cfg: Config) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """The policy-only pass a sweep trial scores: the portfolio's PnL per decided bar time (USD), no
        records built. Returns `(times ascending, pnl)`."""
        return pass_records.pnl_by_time(self._outputs(self.policy(cfg)))

    def _closes(self) -> dict[str, tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]]:
        """Each symbol's bar times and closes from its first decided bar on (returns, buy-and-hold)."""
        return {
            s.symbol: (s.start_ms[self.windows[s.symbol].first :], s.closes[self.windows[s.symbol].first :])
            for s in self.symbols
        }

    def _result(
        self, outputs: list[policy_pass.SymbolOutput], policy: policy_pass.Policy, wall: float
    ) -> RunResult:
        decided = sum(o.rows.shape[0] for o in outputs)
        return RunResult(
            warmup_bars=self.n_bars - decided,
            wall_s=wall,
            cache_hits=sum(c.hit for c in self.cached.values()),
            cache_s=self.cache_s,
            max_abs_diff=max(c.max_abs_diff for c in self.cached.values()),
            symbols=tuple(s.symbol for s in self.symbols),
            closes=self._closes(),
            routes=policy.routes,
            decided=pass_records.RunDecisions(outputs, policy, source=SOURCE),
        )

    def run_per_bar(
        self,
        cfg: Config,
        *,
        tier: str | None = None,
        sink: Callable[[DecisionRecord], None] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> RunResult:
        """The former path, `Engine.on_bar` per bar over the merged bars (the live engine with the cached
        predictions; records carry its per-bar latency): the reference `run` is tested against and the
        benchmarks' baseline.

        Raises:
            ModelError: a route (or `tier`) names a tier the family does not have.
        """
        run_cfg = self.config_for(cfg, tier=tier)
        if tier is not None and tier not in self.family:
            raise ModelError(f"--tier {tier!r}: not in the models, which have {self.family.names}")
        for c in self.cached.values():
            c.ensure_all()
        predictor = CachedFamily(self.family, self.cached, check=self.check)
        engine = Engine(engine_params(run_cfg), predictor, PaperTrader(run_cfg.paper))
        records: list[DecisionRecord] = []
        append = records.append
        at = predictor.at
        on_bar = engine.on_bar
        replace = msgspec.structs.replace
        warm = 0
        t0 = time.perf_counter()
        for n, (sym, i, bar, decide) in enumerate(self._schedule):
            at(sym, i)
            rec = on_bar(bar, decide=decide)
            if rec is None:
                warm += 1
                continue
            rec = replace(rec, source=SOURCE)
            append(rec)
            if sink is not None:
                sink(rec)
            if progress is not None and n % 4096 == 0:
                progress(n)
        wall = time.perf_counter() - t0
        return RunResult(
            records=records,
            warmup_bars=warm,
            wall_s=wall,
            cache_hits=sum(c.hit for c in self.cached.values()),
            cache_s=self.cache_s,
            max_abs_diff=max(c.max_abs_diff for c in self.cached.values()),
            symbols=tuple(s.symbol for s in self.symbols),
            closes=self._closes(),
            routes=dict(engine.routes),
        )
