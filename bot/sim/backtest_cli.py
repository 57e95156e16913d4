"""`python -m bot backtest`: a `bot.sim.backtest.Backtest` over klines CSVs, with a decision log and a report.

Outputs (into `--out`, staged by `bot.outputs.StagedOutput` and swapped into place at the end):
`decisions.jsonl` (one `bar_decided` line per decided bar, `source = "backtest"`), `report.json`
(`bot.sim.backtest_report`), PNGs when matplotlib (the `plot` extra) is installed, and the marker listing
them, which lets a later run replace this directory while it holds nothing else. SIGINT/SIGTERM at any phase
stop the run with 130/143 and one line naming the phase (`bot.interrupts`); earlier outputs stay as they were.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from bot.config import load_config
from bot.core.errors import ConfigError, DataError, ModelError
from bot.interrupts import Interrupted, Phases
from bot.outputs import OutputPathError, StagedOutput
from bot.sim.backtest import SOURCE, Backtest
from bot.sim.backtest_cache import parse_data_arg
from bot.sim.backtest_report import RunResult, build_report, write_plots

#: `kind` in the marker of a backtest's output directory (`bot.outputs.MARKER`).
OUTPUT_KIND: Final = "backtest"
EXIT_INPUT: Final = 2


def parse_day(text: str, *, what: str) -> int:
    """`YYYY-MM-DD` (UTC) as epoch ms."""
    try:
        day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise ConfigError(f"{what}: expected a UTC date YYYY-MM-DD, got {text!r}") from None
    return int(day.timestamp() * 1000)


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
            (tmp / "decisions.jsonl").write_bytes(result.lines())
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
        "decided": result.n_decided,
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
