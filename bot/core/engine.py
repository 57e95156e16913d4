"""The per-bar pipeline: features -> regime -> routed tier -> paper decision, with per-stage latency.

Pure and synchronous: no asyncio, no logging, no I/O. The service shell (`bot.app`) feeds it confirmed
bars, book updates and partial bars, writes the ledger and the canonical log line from what it returns.
The same class runs in the benchmarks and the golden test, so live and replay are one code path.

The only clock is an injected monotonic nanosecond counter used to measure latency.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Final

import msgspec
import numpy as np
import numpy.typing as npt

from bot.core.bars import Bar, BookTop
from bot.core.decision import DecisionRecord
from bot.core.errors import ModelError
from bot.core.features import rejected
from bot.core.kernels import features as _kf
from bot.core.kernels import paper as _kp
from bot.core.kernels import regime as _kr
from bot.core.paper import PaperTrader, fills_of
from bot.core.params import REGIME_NAMES, RegimeConfig
from bot.core.predictor import PairPredictor, Predictor, RowsPredictor
from bot.core.stream import PartialBar
from bot.core.tables import RegimeDecision, SymbolTables
from bot.core.thresholds import RegimeThresholdValues, resolve_routes

F64 = npt.NDArray[np.float64]
_P = _kp.SLOTS
_R_SIGNAL, _R_POSITION, _R_QTY, _R_FEE = _P["R_SIGNAL"], _P["R_POSITION"], _P["R_QTY"], _P["R_FEE"]
_R_REALIZED, _R_UNREALIZED, _R_EQUITY = _P["R_REALIZED"], _P["R_UNREALIZED"], _P["R_EQUITY"]
_R_BAR_PNL, _R_HOLDING, _R_TRADE_PNL = _P["R_BAR_PNL"], _P["R_HOLDING"], _P["R_TRADE_PNL"]
_R_HOLDING_TIER, _R_HOLDING_REGIME = _P["R_HOLDING_TIER"], _P["R_HOLDING_REGIME"]
_EMPTY: Final = np.zeros(0, dtype=np.float64)
_PAPER_OK: Final = _P["OK"]
_ROW: Final = _kf.ROW
_N_REGIMES: Final = len(REGIME_NAMES)


class EngineParams(msgspec.Struct, frozen=True, kw_only=True):
    """The engine's parameters (bot.config.engine_params builds them from the config file)."""

    symbols: tuple[str, ...]
    interval_ms: int
    regime: RegimeConfig
    warmup: bool = True


class Engine:
    """Per-bar decision pipeline for every configured symbol, over array state.

    Each symbol is a row of the engine's tables: the feature kernel's state, the regime kernel's state and
    parameter rows (its own thresholds), the last feature row and regime outputs, the latest book's top;
    its paper state is a row of the trader's book. A bar close (`on_bars`) steps every symbol's row in one
    call of each kernel (`run_rows`), groups the decided rows by routed tier for one model call per tier,
    then trades them in one paper kernel call and builds the records from the kernels' output rows. `on_bar`
    is the same path with N = 1.

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
        self._tables = SymbolTables(params.regime, params.interval_ms)
        self._books: dict[str, BookTop] = {}
        self._vol_factor: dict[int, list[list[float]]] = {}
        self._paper_rows: dict[int, int] = {}
        self._top: dict[int, tuple[float, float]] = {}
        self._use(family)
        for symbol in params.symbols:
            self.add_symbol(symbol)

    def _use(self, family: Predictor) -> None:
        """Serve `family`: its routes, tier codes, vol head and row-batch call."""
        self.family = family
        self._vol = family.has_vol_head
        self._rows_call: RowsPredictor | None = family if isinstance(family, RowsPredictor) else None
        self.routes = resolve_routes(self.params.regime.routes, family.auto_routes)
        # tiers are coded as the paper book codes them, so a regime output row's tier is the book's
        book = self.trader.book
        self._route_codes = np.array([book.tier_code(self.routes[r]) for r in REGIME_NAMES], dtype=np.int64)
        self._routes_v = _kr.view_i(self._route_codes)
        self._tiers = book.tiers.names
        self._pair: PairPredictor | None = family if isinstance(family, PairPredictor) else None
        t = self._tables
        t.vol_factor = np.ones((t.cap, len(self._tiers), len(REGIME_NAMES)), dtype=np.float64)

    def _vol_factors(self, symbol: str) -> F64:
        """[tier code, regime code] -> the served vol's factor for `symbol` (`Predictor.vol_factor`)."""
        fam = self.family
        return np.array(
            [[fam.vol_factor(t, symbol, r) for r in REGIME_NAMES] for t in self._tiers], dtype=np.float64
        )

    def _regime_row(self, symbol: str) -> F64:
        """The regime kernel's threshold row for `symbol` under the current family's calibration."""
        cal, cfg = self.family.regime_calibration, self.params.regime
        th = RegimeThresholdValues.resolve(cal, cfg, symbol=symbol)
        return self._tables.threshold_row(th)

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
        thresholds = {s: RegimeThresholdValues.resolve(cal, cfg, symbol=s) for s in self.symbols}
        resolve_routes(cfg.routes, family.auto_routes)
        self._use(family)
        t = self._tables
        for s, th in thresholds.items():
            r = t.rows[s]
            t.fparams[r] = t.threshold_row(th)
            t.vol_factor[r] = self._vol_factors(s)
            self._vol_factor[r] = t.vol_factor[r].tolist()

    @property
    def symbols(self) -> tuple[str, ...]:
        """The symbols decided now (the configured ones, plus those joined, minus those removed)."""
        return tuple(self._tables.rows)

    def add_symbol(self, symbol: str) -> None:
        """Start deciding `symbol` (a listing joins): fresh feature and regime state; a no-op if held."""
        t = self._tables
        if symbol in t.rows:
            return
        r = t.add(symbol, self._regime_row(symbol))
        t.vol_factor[r] = self._vol_factors(symbol)
        t.paper_row[r] = self.trader.book.row(symbol)
        # the single-symbol path's Python mirrors of the row (no numpy scalar reads per bar)
        self._vol_factor[r] = t.vol_factor[r].tolist()
        self._paper_rows[r] = int(t.paper_row[r])
        self._top[r] = (0.0, 0.0)

    def remove_symbol(self, symbol: str) -> None:
        """Stop deciding `symbol` (delisted, suspended, left out): its state is dropped; its paper position
        stays with the trader (the shell closes it); a no-op if not held."""
        self._tables.remove(symbol)
        self._books.pop(symbol, None)

    def _row(self, symbol: str) -> int:
        try:
            return self._tables.rows[symbol]
        except KeyError:
            raise ValueError(f"symbol {symbol!r} is not configured ({list(self._tables.rows)})") from None

    def on_book(self, book: BookTop) -> None:
        """Absorb a top-of-book update (spread/imbalance for the regime, mid for fills)."""
        r = self._row(book.symbol)
        self._books[book.symbol] = book
        self._tables.set_book(r, book)
        self._top[r] = (book.bid_px, book.ask_px)

    def on_partial(self, partial: PartialBar) -> None:
        """A `confirm:false` update: rehearse the confirmed-bar path so the real decision runs hot.

        Live bars come minutes apart, so by the time a bar confirms every cache the decision path uses has
        gone cold (a cold ONNX call costs an order of magnitude more than a hot one: docs/performance.md).
        The rehearsal runs the whole path - features, regime, the routed tier, the paper trader - on the
        symbol's rows with the partial bar standing in for the confirm, then puts the rows back as they
        were; nothing it computes is kept. Bybit pushes partials every 1-60 s, so the last one lands
        shortly before the confirm.
        """
        if not self.warmup:
            return
        t = self._tables
        r = self._row(partial.symbol)
        last = t.last_start_ms(r)
        if not t.seen[r] or (last is not None and partial.start_ms <= last):
            return
        saved = t.save(r), self.trader.book.save(self._paper_rows[r])
        try:
            self._one(partial.as_bar(), decide=True, commit=False)
        except ValueError:
            pass  # the confirm will say so
        finally:
            t.restore(r, saved[0])
            self.trader.book.restore(self._paper_rows[r], saved[1])

    def replay(self, bars: Iterable[Bar]) -> int:
        """Absorb history without deciding (restart: rebuild feature and regime state). Returns bars seen."""
        n = 0
        for bar in bars:
            self.on_bar(bar, decide=False)
            n += 1
        return n

    def features(self, symbol: str) -> npt.NDArray[np.float64] | None:
        """The feature row of `symbol`'s latest bar (None while warming up): shadow scoring reuses it."""
        t = self._tables
        r = self._row(symbol)
        return t.x[r].copy() if t.has_x[r] else None

    def regime(self, symbol: str) -> RegimeDecision | None:
        """The regime decided for `symbol`'s latest bar (None before the first)."""
        t = self._tables
        r = self._row(symbol)
        return t.decision(r, self._tiers) if t.seen[r] else None

    def on_bar(self, bar: Bar, *, decide: bool = True) -> DecisionRecord | None:
        """Absorb a confirmed bar; return its decision, or None when not deciding or still warming up.

        The single-symbol path of `on_bars`: each kernel's `step` on the symbol's rows (typed views), the
        routed tier's one-row call, the record from the paper kernel's output row.

        Raises:
            ValueError: the symbol is not configured, or the features or the paper trader reject the bar.
        """
        return self._one(bar, decide=decide, commit=True)

    def _one(self, bar: Bar, *, decide: bool, commit: bool) -> DecisionRecord | None:
        """`on_bar`; `commit` False (a rehearsal) leaves the trader's restored-position bookkeeping alone
        (the caller puts the rows back)."""
        t = self._tables
        r = self._row(bar.symbol)
        clock = self.clock_ns
        t0 = clock()
        code = _kf.step(
            t.feat_v[r], bar.start_ms, bar.open, bar.high, bar.low, bar.close, bar.volume, t.x_v[r]
        )
        if code < 0:
            t.has_x[r] = False
            fields = f"open={bar.open} high={bar.high} low={bar.low} close={bar.close} volume={bar.volume}"
            raise rejected(code, bar.symbol, bar.start_ms, t.last_start_ms(r), fields)
        warm = code == _ROW
        t.has_x[r] = warm
        t1 = clock()
        route = _kr.step_route(
            t.istate_v[r], t.fstate_v[r], t.iparams_v, t.fparams_v[r], self._routes_v,
            bar.start_ms, bar.close, bar.volume, t.iout_v[r], t.fout_v[r],
        )  # fmt: skip
        t.seen[r] = True
        t2 = clock()
        if not (warm and decide):
            return None
        k, g = divmod(route, _N_REGIMES)
        name = self._tiers[k]
        x = t.x_rows[r]
        if self._pair is not None:
            pred, vol = self._pair.predict_pair(name, x)
        else:
            pred, vol = self.family.predict(name, x), self.family.predict_vol(name, x)
        if vol is not None and self._vol:
            vol *= self._vol_factor[r][k][g]
        else:
            vol = None
        t3 = clock()
        book = self.trader.book
        pr = self._paper_rows[r]
        bid, ask = self._top[r]
        status = _kp.step(
            book.state_v[pr], book.params_v, bar.start_ms, bar.close, pred,
            math.nan if vol is None else vol, bid, ask, k, g,
            book.pnl_tier_v[pr], book.pnl_regime_v[pr], book.out_v,
        )  # fmt: skip
        if status != _PAPER_OK:
            raise self.trader.refused(bar.symbol, bar.start_ms, bar.close, vol)
        if commit and self.trader.restored_int_units:
            self.trader.stepped([bar.symbol])
        latency = _latency(t0, t1, t2, t3, clock())
        return self._record(bar, k, g, pred, vol, book.out.tolist(), latency)

    def _record(
        self,
        bar: Bar,
        k: int,
        g: int,
        pred: float,
        vol: float | None,
        o: list[float],
        latency: dict[str, float],
    ) -> DecisionRecord:
        """The record of `bar` decided by tier code `k` in regime code `g` from the paper kernel's output
        row `o` (as a list)."""
        tier, regime = self._tiers[k], REGIME_NAMES[g]
        fills = fills_of(o, bar.symbol, bar.start_ms, tier, regime)
        names = self.trader.book
        return DecisionRecord(
            symbol=bar.symbol,
            start_ms=bar.start_ms,
            source=bar.source,
            regime=regime,
            tier=tier,
            prediction=pred,
            vol_forecast=vol,
            signal=int(o[_R_SIGNAL]),
            position=self.trader.units(o[_R_POSITION]),
            qty=o[_R_QTY],
            fill_price=fills[-1].price if fills else None,
            fee_usd=o[_R_FEE] if fills else 0,
            realized_pnl_usd=o[_R_REALIZED],
            unrealized_pnl_usd=o[_R_UNREALIZED],
            equity_usd=o[_R_EQUITY],
            bar_pnl_usd=o[_R_BAR_PNL],
            holding_pnl_usd=o[_R_HOLDING],
            holding_tier=names.tiers.name(o[_R_HOLDING_TIER]),
            holding_regime=names.regimes.name(o[_R_HOLDING_REGIME]),
            trade_pnl_usd=o[_R_TRADE_PNL],
            close=bar.close,
            model_sha=self.family.model_sha,
            latency_us=latency,
            fills=fills,
        )

    def on_bars(
        self, bars: Sequence[Bar], *, decide: Sequence[bool] | None = None
    ) -> list[DecisionRecord | None]:
        """Absorb a bar close's burst - one confirmed bar of each of N distinct symbols - and decide them
        together: one feature and one regime kernel call over the N rows, the decided rows grouped by
        routed tier with one model call per tier, one paper kernel call; `on_bar` is this with N = 1.

        Args:
            bars: the burst, one bar per symbol (order kept in the result).
            decide: per bar, whether to decide it (False: absorb only, as `on_bar(decide=False)`); None:
                decide every bar.

        Returns:
            Per bar, its decision, or None when not deciding or still warming up. `latency_us` holds the
            burst's stages (each record waited for all of them): `features`, `regime`, `inference` (every
            tier's call), `paper` (every symbol's trade), `total`.

        Raises:
            ValueError: a symbol twice or not configured, or a bar the features or the paper trader reject
                (the features of the burst's other bars are absorbed; none is decided).
        """
        n = len(bars)
        flags = [True] * n if decide is None else list(decide)
        if len(flags) != n:
            raise ValueError(f"on_bars: expected one decide flag per bar ({n}), got {len(flags)}")
        if n == 1:
            return [self._one(bars[0], decide=flags[0], commit=True)]
        return self._run(bars, flags)

    def _run(self, bars: Sequence[Bar], flags: list[bool]) -> list[DecisionRecord | None]:
        """The path of `on_bars` for N > 1."""
        t = self._tables
        n = len(bars)
        rows = [self._row(bar.symbol) for bar in bars]
        if n > 1 and len(set(rows)) != n:
            raise ValueError(f"on_bars: expected one bar per symbol, got {[bar.symbol for bar in bars]}")
        clock = self.clock_ns
        t0 = clock()
        ins = t.load(rows, bars)
        bad = t.step_features(n)
        if bad < n:
            raise t.rejected(bars[bad], bad)
        t1 = clock()
        t.step_regime(n, self._route_codes)
        decided = t.decided(n, flags)
        t2 = clock()
        out: list[DecisionRecord | None] = [None] * n
        if not decided.shape[0]:
            return out
        pred, vol = self._predict(decided)
        t3 = clock()
        m = decided.shape[0]
        paper = self.trader.book
        tier = ins.tier[decided]
        regime = ins.regime[decided]
        bad = paper.step_rows(
            t.paper_row[ins.rows[decided]],
            ins.start_ms[decided],
            ins.close[decided],
            pred,
            vol,
            ins.bid[decided] if t.any_book else _EMPTY,
            ins.ask[decided] if t.any_book else _EMPTY,
            tier,
            regime,
            t.paper_out,
        )
        if bad < m:
            bar = bars[int(decided[bad])]
            raise self.trader.refused(bar.symbol, bar.start_ms, bar.close, float(vol[bad]))
        self.trader.stepped([bars[i].symbol for i in decided.tolist()])
        latency = _latency(t0, t1, t2, t3, clock())
        has_vol = self._vol
        outputs: list[list[float]] = t.paper_out[:m].tolist()
        decided_at: list[int] = decided.tolist()
        codes = zip(tier.tolist(), regime.tolist(), strict=True)
        for j, (i, o, p, v, (k, g)) in enumerate(
            zip(decided_at, outputs, pred.tolist(), vol.tolist(), codes, strict=True)
        ):
            out[i] = self._record(
                bars[i], k, g, p, v if has_vol else None, o, dict(latency) if j else latency
            )
        return out

    def _predict(self, decided: npt.NDArray[np.intp]) -> tuple[F64, F64]:
        """(prediction, served vol; NaN without a vol head) of each decided bar of the burst, one model call
        per routed tier (one row: the single-row call, the faster for onnxruntime's pre-bound buffers)."""
        t = self._tables
        ins = t.inputs
        m = decided.shape[0]
        pred = np.empty(m, dtype=np.float64)
        vol = np.full(m, np.nan)
        tiers = ins.tier[decided]
        fam = self.family
        batch = self._rows_call
        for k in np.unique(tiers).tolist():
            name = self._tiers[k]
            sel = np.flatnonzero(tiers == k)
            x = t.xin[decided[sel]]
            if batch is None or sel.shape[0] == 1:
                for j, row in zip(sel.tolist(), x, strict=True):
                    pred[j] = fam.predict(name, row)
                    if self._vol:
                        one = fam.predict_vol(name, row)
                        vol[j] = math.nan if one is None else one
            else:
                p, many = batch.predict_rows(name, x)
                pred[sel] = p
                if self._vol and many is not None:
                    vol[sel] = many
        if self._vol:
            vol *= t.vol_factor[ins.rows[decided], tiers, ins.regime[decided]]
        return pred, vol


def _latency(t0: int, t1: int, t2: int, t3: int, t4: int) -> dict[str, float]:
    """The engine's stage latencies (us) from its five clock readings."""
    return {
        "features": (t1 - t0) / 1e3,
        "regime": (t2 - t1) / 1e3,
        "inference": (t3 - t2) / 1e3,
        "paper": (t4 - t3) / 1e3,
        "total": (t4 - t0) / 1e3,
    }
