"""`python -m bot backtest`: the live decision kernels over klines CSVs, in-process, with a decision log and
a report.

The same per-bar math as the service, in whole-history kernel calls: features are the feature kernel's
T-bar loop over each symbol's window and each tier's predictions one onnxruntime call per tier and head,
both cached per (data, models) pair (`bot.sim.backtest_cache`), so a rerun that changes only policy keys
does not run them again; the regime and policy pass is one regime kernel call and one paper kernel call per
symbol over the cached predictions (`bot.sim.policy_pass`), whose output arrays become the decision
records. Each symbol's first `--warmup-bars` bars only warm the state (what the service's REST backfill does
at start-up). The records equal, field by field, those of the live `Engine` (`run_per_bar`, the former
path: `engine.on_bar` per bar, kept as the reference and the benchmarks' baseline) and of the service
(tests/test_backtest.py); latency is not measured per bar (`latency_us` is empty). docs/backtest.md says what
is the same as live and what is not.

Outputs (into `--out`, staged by `bot.outputs.StagedOutput` and swapped into place at the end):
`decisions.jsonl` (one `bar_decided` line per decided bar, `source = "backtest"`), `report.json`
(`bot.sim.backtest_report`), PNGs when matplotlib (the `plot` extra) is installed, and the marker listing
them, which lets a later run replace this directory while it holds nothing else. SIGINT/SIGTERM at any phase
stop the run with 130/143 and one line naming the phase (`bot.interrupts`); earlier outputs stay as they were.
"""

from __future__ import annotations

import argparse
import heapq
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import msgspec
import numpy as np
import numpy.typing as npt

from bot.config import Config, engine_params, load_config
from bot.core.bars import Bar, interval_ms
from bot.core.decision import DecisionRecord, encode_lines
from bot.core.engine import Engine
from bot.core.errors import ConfigError, DataError, ModelError
from bot.core.paper import PaperTrader
from bot.core.params import REGIME_NAMES
from bot.interrupts import Interrupted, Phases
from bot.outputs import OutputPathError, StagedOutput
from bot.sim import policy_pass
from bot.sim.backtest_cache import (
    Cached,
    CachedFamily,
    SymbolBars,
    load_or_compute,
    load_symbol,
    parse_data_arg,
)
from bot.sim.backtest_report import RunResult, build_report, write_plots
from bot.tiers import TierFamily

#: `source` of every backtest decision record (live records say ws or rest).
SOURCE: Final = "backtest"
#: `kind` in the marker of a backtest's output directory (`bot.outputs.MARKER`).
OUTPUT_KIND: Final = "backtest"
EXIT_INPUT: Final = 2


@dataclass(frozen=True, slots=True)
class Window:
    """Bars `lo:hi` of a symbol's file are used; from `first` on they are decided."""

    lo: int
    first: int
    hi: int


def parse_day(text: str, *, what: str) -> int:
    """`YYYY-MM-DD` (UTC) as epoch ms."""
    try:
        day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise ConfigError(f"{what}: expected a UTC date YYYY-MM-DD, got {text!r}") from None
    return int(day.timestamp() * 1000)


def window(bars: Sequence[Bar], *, warmup_bars: int, from_ms: int | None, to_ms: int | None) -> Window:
    """Decided: bars in `[from_ms, to_ms)` after the file's first `warmup_bars`; warm-up: the `warmup_bars`
    bars just before the first decided one (from before `from_ms` when the file has them)."""
    starts = [b.start_ms for b in bars]
    first = warmup_bars
    if from_ms is not None:
        first = max(first, next((i for i, s in enumerate(starts) if s >= from_ms), len(starts)))
    hi = len(starts) if to_ms is None else next((i for i, s in enumerate(starts) if s >= to_ms), len(starts))
    if first >= hi:
        sym = bars[0].symbol
        raise DataError(
            f"{sym}: no bar left to decide: {len(starts)} bars, warm-up {warmup_bars}, range "
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
            s.symbol: window(s.bars, warmup_bars=n_warm, from_ms=from_ms, to_ms=to_ms) for s in self.symbols
        }
        self.family = TierFamily.load(models_dir, compiled_forward=cfg.models.compiled_forward)
        t0 = time.perf_counter()
        self.cached: dict[str, Cached] = {}
        for s in self.symbols:
            w = self.windows[s.symbol]
            self.cached[s.symbol] = load_or_compute(
                s, w.lo, w.hi, self.family, interval_ms=self.interval_ms, cache_dir=cache_dir, batched=batched
            )
        self.cache_s = time.perf_counter() - t0
        self.check = check
        self.inputs = [self._input(s) for s in self.symbols]
        self._schedule_list: list[tuple[str, int, Bar, bool]] | None = None

    def _input(self, s: SymbolBars) -> policy_pass.SymbolInput:
        """`s`'s window as the policy pass takes it (predictions stacked in the family's tier order)."""
        w, c = self.windows[s.symbol], self.cached[s.symbol]
        names = self.family.names
        decide = c.valid.copy()
        decide[: w.first - w.lo] = False
        vols = np.stack([c.vol_predictions[t] for t in names]) if self.family.has_vol_head else None
        return policy_pass.SymbolInput(
            symbol=s.symbol,
            start_ms=np.ascontiguousarray(s.start_ms[w.lo : w.hi]),
            close=np.ascontiguousarray(s.closes[w.lo : w.hi]),
            volume=np.ascontiguousarray(s.volumes[w.lo : w.hi]),
            decide=decide,
            preds=np.stack([c.predictions[t] for t in names]),
            vols=vols,
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
            for i in range(w.lo, w.hi):
                bar = s.bars[i]
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
        outputs = [policy_pass.run_symbol(inp, policy) for inp in self.inputs]
        with policy_pass.gc_paused():
            per_symbol = {o.symbol: policy_pass.records(o, policy, source=SOURCE) for o in outputs}
            records = policy_pass.merged(outputs, per_symbol)
            wall = time.perf_counter() - t0
            if sink is not None:
                for rec in records:
                    sink(rec)
            if progress is not None:
                progress(self.n_bars)
            return self._result(records, self.n_bars - len(records), wall, policy.routes)

    def policy_pnl(self, cfg: Config) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """The policy-only pass a sweep trial scores: the portfolio's PnL per decided bar time (USD), no
        records built. Returns `(times ascending, pnl)`."""
        policy = self.policy(cfg)
        return policy_pass.pnl_by_time([policy_pass.run_symbol(inp, policy) for inp in self.inputs])

    def _result(
        self, records: list[DecisionRecord], warm: int, wall: float, routes: dict[str, str]
    ) -> RunResult:
        closes = {
            s.symbol: list(
                zip(
                    s.start_ms[self.windows[s.symbol].first :].tolist(),
                    s.closes[self.windows[s.symbol].first :].tolist(),
                    strict=True,
                )
            )
            for s in self.symbols
        }
        return RunResult(
            records=records,
            warmup_bars=warm,
            wall_s=wall,
            cache_hits=sum(c.hit for c in self.cached.values()),
            cache_s=self.cache_s,
            max_abs_diff=max(c.max_abs_diff for c in self.cached.values()),
            symbols=tuple(s.symbol for s in self.symbols),
            closes=closes,
            routes=routes,
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
        return self._result(records, warm, wall, dict(engine.routes))


# ---- CLI -----------------------------------------------------------------------------------------------


def add_backtest_args(p: argparse.ArgumentParser) -> None:
    """Arguments of `python -m bot backtest`."""
    p.add_argument("--config", default="config.toml", help="TOML config (policy, regime, paper keys)")
    p.add_argument(
        "--data",
        action="append",
        required=True,
        metavar="[SYMBOL=]CSV",
        help="klines CSV, one per symbol (symbol: the file name's prefix before '_', or SYMBOL=PATH); repeat",
    )
    p.add_argument("--out", required=True, help="output directory (new, empty, or a previous backtest's)")
    p.add_argument("--models", default=None, help="tier family directory (default: [models] dir)")
    p.add_argument("--tier", default=None, help="route every bar to this tier instead of the regime router")
    p.add_argument(
        "--warmup-bars",
        type=int,
        default=None,
        help="bars per symbol that only warm the engine (default: [exchange] backfill_bars)",
    )
    p.add_argument("--from", dest="from_day", default=None, help="first decided day, UTC YYYY-MM-DD")
    p.add_argument("--to", dest="to_day", default=None, help="last decided day (inclusive), UTC YYYY-MM-DD")
    p.add_argument("--compare-tiers", action="store_true", help="also report every tier fixed for all bars")
    p.add_argument(
        "--cache-dir",
        default=None,
        help="feature/prediction cache (default: $XDG_CACHE_HOME or ~/.cache, /progdistill/backtest)",
    )
    p.add_argument("--no-cache", action="store_true", help="compute features and predictions, keep nothing")
    p.add_argument("--no-plots", action="store_true", help="skip the PNGs")


def default_cache_dir() -> Path:
    import os

    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "progdistill" / "backtest"


def check_cache_dir(path: Path) -> None:
    """Refuse a cache directory that cannot be one (it, or a parent, is a file); creates nothing."""
    base = path
    while not base.exists():
        base = base.parent
    if not base.is_dir():
        where = "exists and is not a directory" if base == path else f"{base} is not a directory"
        raise ConfigError(f"--cache-dir {path}: {where}; choose a directory, or pass --no-cache")


def _progress(total: int) -> tuple[Callable[[int], None] | None, Callable[[], None]]:
    """A one-line progress bar on stderr when it is a terminal (the bot does not depend on tqdm); nothing
    otherwise."""
    if not sys.stderr.isatty():
        return None, lambda: None
    t0 = time.perf_counter()

    def update(n: int) -> None:
        elapsed = max(time.perf_counter() - t0, 1e-9)
        done = int(30 * n / max(total, 1))
        sys.stderr.write(
            f"\rbacktest [{'#' * done}{'.' * (30 - done)}] {n:,}/{total:,} bars, {n / elapsed:,.0f} bars/s"
        )
        sys.stderr.flush()

    def close() -> None:
        update(total)
        sys.stderr.write("\n")

    return update, close


def main_backtest(args: argparse.Namespace) -> int:
    """Run `python -m bot backtest`; input errors print one line and exit 2 (model errors exit 3), SIGINT and
    SIGTERM one line and 130/143."""
    with Phases("loading the config") as phases:
        try:
            return _main(args, phases)
        except (DataError, OutputPathError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_INPUT
        except Interrupted as exc:
            print(f"{exc}: bot backtest stopped; {exc.outcome}", file=sys.stderr)
            return exc.exit_code


def _main(args: argparse.Namespace, phases: Phases) -> int:
    out = Path(args.out)
    cfg = load_config(args.config)
    from_ms = parse_day(args.from_day, what="--from") if args.from_day else None
    to_ms = parse_day(args.to_day, what="--to") + 86_400_000 if args.to_day else None
    if from_ms is not None and to_ms is not None and to_ms <= from_ms:
        raise ConfigError(f"--to {args.to_day}: must not be before --from {args.from_day}")
    models = args.models if args.models is not None else cfg.models.dir
    cache_dir = None if args.no_cache else (Path(args.cache_dir) if args.cache_dir else default_cache_dir())
    inputs = [parse_data_arg(a)[1] for a in args.data] + [Path(args.config), Path(models)]
    stage = StagedOutput(out, kind=OUTPUT_KIND, protect=[*inputs, *([cache_dir] if cache_dir else [])])
    stage.check()  # before reading anything: refuse an --out this command must not replace
    if cache_dir is not None:
        check_cache_dir(cache_dir)
    try:
        phases.now = f"reading {len(args.data)} CSV(s) and computing features and predictions"
        _say(f"backtest: {phases.now} ...")
        bt = Backtest(
            cfg,
            args.data,
            models,
            warmup_bars=args.warmup_bars,
            from_ms=from_ms,
            to_ms=to_ms,
            cache_dir=cache_dir,
        )
        if args.tier is not None and args.tier not in bt.family:
            raise ModelError(f"--tier {args.tier!r}: not in the models, which have {bt.family.names}")
        with stage as tmp:
            phases.now = f"deciding {bt.n_bars:,} bars"
            _say(f"backtest: {phases.now} ...")
            update, close = _progress(bt.n_bars)
            result = bt.run(cfg, tier=args.tier, progress=update)
            (tmp / "decisions.jsonl").write_bytes(encode_lines(result.records))
            close()
            fixed: dict[str, RunResult] = {}
            if args.compare_tiers:
                phases.now = f"comparing the tiers {bt.family.names}"
                fixed = {t: bt.run(cfg, tier=t) for t in bt.family.names}
            phases.now = f"writing the report and plots of {out}"
            _say(f"backtest: {phases.now} ...")
            report = build_report(bt.config_for(cfg, tier=args.tier), result, fixed)
            report["run"] = _run_info(args, bt, result, models)
            (tmp / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
            pngs = [] if args.no_plots else write_plots(result, tmp)
            stage.commit()
        phases.now = "printing the summary"
        _print_summary(report, out, pngs)
    except Interrupted as exc:
        done = f"{out} was written in full" if stage.committed else f"nothing was written; {out} is as it was"
        exc.outcome = done
        raise
    return 0


def _say(line: str) -> None:
    print(line, flush=True)


def _run_info(args: argparse.Namespace, bt: Backtest, result: RunResult, models: str) -> dict[str, Any]:
    bars = bt.n_bars
    return {
        "config": str(args.config),
        "data": [str(s.path) for s in bt.symbols],
        "symbols": list(result.symbols),
        "models": str(models),
        "tier": args.tier,
        "warmup_bars_per_symbol": bt.warmup_bars,
        "bars": bars,
        "decided": len(result.records),
        "engine_s": round(result.wall_s, 3),
        "bars_per_s": round(bars / result.wall_s, 1) if result.wall_s > 0 else None,
        "cache": {"hits": result.cache_hits, "of": len(bt.symbols), "seconds": round(result.cache_s, 3)},
        "batched_vs_per_bar_max_abs_diff": result.max_abs_diff,
        "source": SOURCE,
    }


def _print_summary(report: dict[str, Any], out: Path, pngs: list[str]) -> None:
    run = report["run"]
    total = report["total"]
    print(
        f"backtest: {run['decided']} bars decided over {len(run['symbols'])} symbol(s) "
        f"({run['bars']} incl. warm-up) at {run['bars_per_s']:,.0f} bars/s; "
        f"cache {run['cache']['hits']}/{run['cache']['of']} hit"
    )
    print(
        f"  pnl {total['pnl_usd']:+.2f} USD, sharpe {total['sharpe']:.2f}, max drawdown "
        f"{total['max_drawdown_usd']:.2f} USD, IC {total['ic']:+.4f}, hit {total['hit_rate']:.3f}"
    )
    for sym, sub in report["symbols"].items():
        shares = ", ".join(f"{k} {v:.0%}" for k, v in sub["regime_share"].items())
        print(f"  {sym} regimes: {shares}")
    print(f"wrote {out}/: decisions.jsonl, report.json" + (", " + ", ".join(pngs) if pngs else ""))
