"""The per-bar pipeline: features -> regime -> routed tier -> paper decision, with per-stage latency.

Pure and synchronous: no asyncio, no logging, no I/O. The service shell (`bot.app`) feeds it confirmed
bars, book updates and partial bars, writes the ledger and the canonical log line from what it returns.
The same class runs in the benchmarks and the golden test, so live and replay are one code path.

The only clock is an injected monotonic nanosecond counter used to measure latency.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import msgspec
import numpy as np
import numpy.typing as npt

from bot.core.bars import Bar, BookTop
from bot.core.decision import DecisionRecord
from bot.core.errors import ModelError
from bot.core.features import FeatureState
from bot.core.paper import PaperResult, PaperTrader
from bot.core.params import RegimeConfig
from bot.core.regime import RegimeDecision, RegimeDetector
from bot.core.stream import PartialBar
from bot.core.thresholds import RegimeThresholdValues, resolve_routes


class Predictor(Protocol):
    """What the engine needs of a tier family (bot.tiers.TierFamily): tier + feature row -> prediction."""

    #: identifies the family in every decision record (hex sha256 of its manifest)
    model_sha: str

    @property
    def regime_calibration(self) -> Mapping[str, Any]:
        """The regime detector's calibrated thresholds (stored with the models)."""
        ...

    @property
    def auto_routes(self) -> Mapping[str, str] | None:
        """The routes the family chose at distillation (`[regime] routes = "auto"`); None: none chosen."""
        ...

    def check_routes(self, routes: Mapping[str, str] | str) -> None:
        """Raise when a routed tier is missing (or "auto" and the family chose no routes)."""
        ...

    def predict(self, tier: str, x: npt.NDArray[np.float64]) -> float:
        """The tier's prediction for one feature row."""
        ...

    def warm(self, tier: str) -> None:
        """Run the tier once on a throwaway row so its next call is hot."""
        ...

    @property
    def has_vol_head(self) -> bool:
        """True when every tier also forecasts volatility (`predict_vol`)."""
        ...

    def predict_vol(self, tier: str, x: npt.NDArray[np.float64]) -> float | None:
        """The tier's forecast per-bar volatility (fraction), or None when the family has no vol head."""
        ...

    def vol_factor(self, tier: str, symbol: str, regime: str) -> float:
        """Multiplier of the tier's vol for a bar of `symbol` in `regime` (its variance calibration)."""
        ...


@runtime_checkable
class RowsPredictor(Protocol):
    """A family that predicts many rows of one tier in one model call (bot.tiers.TierFamily); the engine's
    bar-close burst uses it when the family has it, else one `predict` per row."""

    def predict_rows(
        self, tier: str, x: npt.NDArray[np.float64]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64] | None]:
        """Each row's prediction and graph vol (None without a vol head), equal to `predict` and
        `predict_vol` on the row alone."""
        ...


class EngineParams(msgspec.Struct, frozen=True, kw_only=True):
    """The engine's parameters (bot.config.engine_params builds them from the config file)."""

    symbols: tuple[str, ...]
    interval_ms: int
    regime: RegimeConfig
    warmup: bool = True


class _SymbolState:
    __slots__ = ("book", "detector", "features", "last_regime", "last_x")

    def __init__(self, params: EngineParams, family: Predictor, symbol: str, routes: dict[str, str]) -> None:
        self.features = FeatureState(interval_ms=params.interval_ms)
        self.detector = RegimeDetector(
            family.regime_calibration,
            params.regime,
            interval_ms=params.interval_ms,
            symbol=symbol,
            routes=routes,
        )
        self.book: BookTop | None = None
        self.last_regime: RegimeDecision | None = None
        self.last_x: npt.NDArray[np.float64] | None = None


class Engine:
    """Per-bar decision pipeline for every configured symbol.

    Args:
        params: symbols, bar length, regime rules and routes, warm-up switch.
        family: the tier predictor; every routed tier must be in it.
        trader: paper trader holding positions (restored from the ledger by the shell).
        clock_ns: monotonic nanosecond clock for latency (injectable for tests).
    """

    def __init__(
        self,
        params: EngineParams,
        family: Predictor,
        trader: PaperTrader,
        *,
        clock_ns: Callable[[], int] = time.perf_counter_ns,
    ) -> None:
        family.check_routes(params.regime.routes)
        if trader.cfg.sizing == "vol_target" and not family.has_vol_head:
            raise ModelError(
                '[paper] sizing = "vol_target" needs a tier family with a volatility head; this family has '
                'none: retrain it (python -m offline distill) or set [paper] sizing = "fixed"'
            )
        self.params = params
        self.family = family
        self.trader = trader
        self.clock_ns = clock_ns
        self.warmup = params.warmup
        self._vol = family.has_vol_head
        self.routes = resolve_routes(params.regime.routes, family.auto_routes)
        self._rows: RowsPredictor | None = family if isinstance(family, RowsPredictor) else None
        self._symbols = {s: _SymbolState(params, family, s, self.routes) for s in params.symbols}

    def swap_family(self, family: Predictor) -> None:
        """Decide the next bar with `family` (a hot reload, called between bars): same routes and sizing
        rules as at start-up, regime thresholds from its calibration; feature and regime state are kept.

        Raises:
            ModelError: a routed tier is missing, vol_target sizing without a vol head, or the calibration's
                windows differ from the config's; nothing is changed.
        """
        family.check_routes(self.params.regime.routes)
        if self.trader.cfg.sizing == "vol_target" and not family.has_vol_head:
            raise ModelError('[paper] sizing = "vol_target" needs a tier family with a volatility head')
        cal, cfg = family.regime_calibration, self.params.regime
        thresholds = {s: RegimeThresholdValues.resolve(cal, cfg, symbol=s) for s in self._symbols}
        routes = resolve_routes(cfg.routes, family.auto_routes)
        for s, st in self._symbols.items():
            st.detector.thresholds = thresholds[s]
            st.detector.routes = routes
        self.routes = routes
        self.family = family
        self._rows = family if isinstance(family, RowsPredictor) else None
        self._vol = family.has_vol_head

    @property
    def symbols(self) -> tuple[str, ...]:
        """The symbols decided now (the configured ones, plus those joined, minus those removed)."""
        return tuple(self._symbols)

    def add_symbol(self, symbol: str) -> None:
        """Start deciding `symbol` (a listing joins): fresh feature and regime state; a no-op if held."""
        if symbol not in self._symbols:
            self._symbols[symbol] = _SymbolState(self.params, self.family, symbol, self.routes)

    def remove_symbol(self, symbol: str) -> None:
        """Stop deciding `symbol` (delisted, suspended, left out): its state is dropped; its paper position
        stays with the trader (the shell closes it); a no-op if not held."""
        self._symbols.pop(symbol, None)

    def _state(self, symbol: str) -> _SymbolState:
        try:
            return self._symbols[symbol]
        except KeyError:
            raise ValueError(f"symbol {symbol!r} is not configured ({list(self._symbols)})") from None

    def on_book(self, book: BookTop) -> None:
        """Absorb a top-of-book update (spread/imbalance for the regime, mid for fills)."""
        st = self._state(book.symbol)
        st.book = book
        st.detector.update_book(book)

    def on_partial(self, partial: PartialBar) -> None:
        """A `confirm:false` update: rehearse the confirmed-bar path so the real decision runs hot.

        Live bars come minutes apart, so by the time a bar confirms every cache the decision path uses has
        gone cold (a cold ONNX call costs an order of magnitude more than a hot one, and features, regime
        and paper slow down as much: docs/performance.md). The rehearsal runs features, regime, the tier
        the rehearsed regime routes to, and the paper trader on throwaway copies of the state, with the
        partial bar standing in for the confirm; nothing it computes is kept. Bybit pushes partials every
        1-60 s, so the last one lands shortly before the confirm.
        """
        if not self.warmup:
            return
        st = self._state(partial.symbol)
        last = st.features.last_start_ms
        if st.last_regime is None or (last is not None and partial.start_ms <= last):
            return
        bar = partial.as_bar()
        x = st.features.copy().update(bar)
        reg = st.detector.copy().update(bar)
        if x is None:
            self.family.warm(reg.tier)
            return
        pred = self.family.predict(reg.tier, x)
        vol = self._predict_vol(reg.tier, x, bar.symbol, reg.regime)
        scratch = PaperTrader(self.trader.cfg, positions={bar.symbol: self.trader.state(bar.symbol)})
        scratch.on_bar(
            bar.symbol,
            bar.start_ms,
            bar.close,
            pred,
            tier=reg.tier,
            regime=reg.regime,
            book=st.book,
            vol_forecast=vol,
        )
        self.family.warm(reg.tier)

    def _predict_vol(self, tier: str, x: npt.NDArray[np.float64], symbol: str, regime: str) -> float | None:
        """The served vol forecast of `tier` for a bar of `symbol` in `regime` (None without a vol head)."""
        if not self._vol:
            return None
        vol = self.family.predict_vol(tier, x)
        return None if vol is None else vol * self.family.vol_factor(tier, symbol, regime)

    def replay(self, bars: Iterable[Bar]) -> int:
        """Absorb history without deciding (restart: rebuild feature and regime state). Returns bars seen."""
        n = 0
        for bar in bars:
            self.on_bar(bar, decide=False)
            n += 1
        return n

    def features(self, symbol: str) -> npt.NDArray[np.float64] | None:
        """The feature row of `symbol`'s latest bar (None while warming up): shadow scoring reuses it."""
        return self._state(symbol).last_x

    def regime(self, symbol: str) -> RegimeDecision | None:
        """The regime decided for `symbol`'s latest bar (None before the first)."""
        return self._state(symbol).last_regime

    def on_bar(self, bar: Bar, *, decide: bool = True) -> DecisionRecord | None:
        """Absorb a confirmed bar; return its decision, or None when not deciding or still warming up."""
        st = self._state(bar.symbol)
        clock = self.clock_ns
        t0 = clock()
        x = st.features.update(bar)
        t1 = clock()
        reg = st.detector.update(bar)
        st.last_regime = reg
        st.last_x = x
        t2 = clock()
        if x is None or not decide:
            return None
        tier = reg.tier
        pred = self.family.predict(tier, x)
        vol = self._predict_vol(tier, x, bar.symbol, reg.regime)
        t3 = clock()
        result = self._trade(st, bar, reg, pred, vol)
        t4 = clock()
        return self._record(bar, reg, pred, vol, result, _latency(t0, t1, t2, t3, t4))

    def _trade(
        self, st: _SymbolState, bar: Bar, reg: RegimeDecision, pred: float, vol: float | None
    ) -> PaperResult:
        return self.trader.on_bar(
            bar.symbol,
            bar.start_ms,
            bar.close,
            pred,
            tier=reg.tier,
            regime=reg.regime,
            book=st.book,
            vol_forecast=vol,
        )

    def _record(
        self,
        bar: Bar,
        reg: RegimeDecision,
        pred: float,
        vol: float | None,
        result: PaperResult,
        latency: dict[str, float],
    ) -> DecisionRecord:
        return DecisionRecord.of(
            result,
            source=bar.source,
            regime=reg.regime,
            tier=reg.tier,
            prediction=pred,
            close=bar.close,
            latency_us=latency,
            vol_forecast=vol,
            model_sha=self.family.model_sha,
        )

    def on_bars(
        self, bars: Sequence[Bar], *, decide: Sequence[bool] | None = None
    ) -> list[DecisionRecord | None]:
        """Absorb a bar close's burst - one confirmed bar of each of N distinct symbols - and decide them
        together: features and regime per symbol, then the rows grouped by routed tier with one model call
        per tier (`RowsPredictor.predict_rows`), then the paper trader per symbol. Each record equals what
        `on_bar` would return for its bar (latency aside); `on_bar` is this with N = 1 minus the grouping.

        Args:
            bars: the burst, one bar per symbol (order kept in the result).
            decide: per bar, whether to decide it (False: absorb only, as `on_bar(decide=False)`); None:
                decide every bar.

        Returns:
            Per bar, its decision, or None when not deciding or still warming up. `latency_us` holds the
            burst's stages (each record waited for all of them): `features`, `regime`, `inference` (every
            tier's call), `paper` (every symbol's trade), `total`.

        Raises:
            ValueError: a symbol twice or not configured, or a bar the features, regime or paper trader
                reject (bars before it in the burst are absorbed, none is decided).
        """
        n = len(bars)
        flags = [True] * n if decide is None else list(decide)
        if len(flags) != n:
            raise ValueError(f"on_bars: expected one decide flag per bar ({n}), got {len(flags)}")
        states = [self._state(bar.symbol) for bar in bars]
        if len({bar.symbol for bar in bars}) != n:
            raise ValueError(f"on_bars: expected one bar per symbol, got {[bar.symbol for bar in bars]}")
        clock = self.clock_ns
        t0 = clock()
        xs = [st.features.update(bar) for st, bar in zip(states, bars, strict=True)]
        t1 = clock()
        regs = [st.detector.update(bar) for st, bar in zip(states, bars, strict=True)]
        groups: dict[str, list[int]] = {}
        for i, (st, x, reg) in enumerate(zip(states, xs, regs, strict=True)):
            st.last_regime = reg
            st.last_x = x
            if x is not None and flags[i]:
                groups.setdefault(reg.tier, []).append(i)
        t2 = clock()
        out: list[DecisionRecord | None] = [None] * n
        if not groups:
            return out
        preds: dict[int, tuple[float, float | None]] = {}
        for tier, rows in groups.items():
            preds.update(zip(rows, self._predict_rows(tier, rows, bars, xs, regs), strict=True))
        t3 = clock()
        decided = sorted(preds)
        results = [self._trade(states[i], bars[i], regs[i], *preds[i]) for i in decided]
        latency = _latency(t0, t1, t2, t3, clock())
        for i, result in zip(decided, results, strict=True):
            out[i] = self._record(bars[i], regs[i], *preds[i], result, dict(latency))
        return out

    def _predict_rows(
        self,
        tier: str,
        rows: list[int],
        bars: Sequence[Bar],
        xs: list[npt.NDArray[np.float64] | None],
        regs: list[RegimeDecision],
    ) -> list[tuple[float, float | None]]:
        """(prediction, served vol) of each of `rows` (indices into the burst) routed to `tier`: one model
        call over all of them when the family predicts rows, else (or for one row) `predict` per row."""
        fam = self.family
        batch = self._rows
        if batch is None or len(rows) == 1:  # one row: the single-row call is the faster (pre-bound ORT)
            out: list[tuple[float, float | None]] = []
            for i in rows:
                x = xs[i]
                assert x is not None
                out.append((fam.predict(tier, x), self._predict_vol(tier, x, bars[i].symbol, regs[i].regime)))
            return out
        pred, graph_vol = batch.predict_rows(tier, np.stack([x for i in rows if (x := xs[i]) is not None]))
        preds: list[float] = pred.tolist()
        if not self._vol or graph_vol is None:
            return [(p, None) for p in preds]
        vols: list[float] = graph_vol.tolist()
        return [
            (p, v * fam.vol_factor(tier, bars[i].symbol, regs[i].regime))
            for p, v, i in zip(preds, vols, rows, strict=True)
        ]


def _latency(t0: int, t1: int, t2: int, t3: int, t4: int) -> dict[str, float]:
    """The engine's stage latencies (us) from its five clock readings."""
    return {
        "features": (t1 - t0) / 1e3,
        "regime": (t2 - t1) / 1e3,
        "inference": (t3 - t2) / 1e3,
        "paper": (t4 - t3) / 1e3,
        "total": (t4 - t0) / 1e3,
    }
