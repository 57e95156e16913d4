"""`python -m offline distill|fetch|sweep|retrain|models`: distill the tier family, download kline history
from Bybit v5, sweep config candidates with walk-forward backtests on Ray, run the champion/challenger
retrain, or list, promote (roll back) and prune the versions of a models store.

Errors (bad config, bad CSV, failed export, an output path that must not be replaced) print one line naming
the file and key or row to stderr and exit with code 2; outputs are staged in a temporary sibling and swapped
in at the end (`bot.outputs`), so a failed run writes nothing. SIGINT/SIGTERM stop the run at once, leave the
previous outputs untouched and exit 130/143 (`offline.interrupts`). Exit codes: docs/errors.md.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from bot.config import Config, load_config
from bot.core.bars import interval_ms
from bot.core.errors import BotError, ConfigError
from bot.observe import logs
from offline.fetch import fetch_history, klines_output, write_klines_csv
from offline.interrupts import Interrupted, stop_on_signals
from offline.models_cli import EXIT_MODEL, cmd_models_list, cmd_models_promote, cmd_models_prune

EXIT_ERROR = 2
_SYMBOL = re.compile(r"^[A-Z0-9]{2,30}$")


def _config(path: str | None) -> Config:
    return load_config(path) if path is not None else Config()


def _check_symbol(flag: str, symbol: str | None) -> None:
    if symbol is not None and _SYMBOL.fullmatch(symbol) is None:
        raise ConfigError(f"{flag}: expected a Bybit symbol such as BTCUSDT (A-Z, 0-9), got {symbol!r}")


def _pool_args(args: argparse.Namespace, cfg: Config) -> None:
    """Check repeated `--data`/`--symbol`: one `--data` leaves `args.data` / `args.symbol` a single value
    (str / str or None), several make them lists (pooled training, one symbol per file or none). A directory
    `--data` is a selection over its CSVs (`offline.selection`), turned into those lists here."""
    data: list[str] = args.data or ["synthetic"]
    if len(data) == 1 and Path(data[0]).is_dir():
        _select_args(args, cfg, Path(data[0]))
        return
    for flag in ("symbols", "top", "min_turnover_usd", "exclude"):
        if getattr(args, flag):
            raise ConfigError(
                f"--{flag.replace('_', '-')}: chooses among the CSVs of a directory; pass --data DIR "
                f"(got --data {' '.join(data)})"
            )
    symbols: list[str] = args.symbol or []
    for sym in symbols:
        _check_symbol("--symbol", sym)
    if "synthetic" in data and symbols:
        raise ConfigError("--symbol: only for a CSV --data (synthetic data has its own symbol)")
    if len(data) > 1 and "synthetic" in data:
        raise ConfigError("--data: 'synthetic' cannot be pooled with other data; pass CSV files only")
    if len(data) > 1 and symbols and len(symbols) != len(data):
        raise ConfigError(
            f"--symbol: give one per --data file in the same order ({len(data)}), or none; got {len(symbols)}"
        )
    if len(data) == 1 and len(symbols) > 1:
        raise ConfigError(f"--symbol: one --data file takes one --symbol, got {len(symbols)}")
    args.data = data[0] if len(data) == 1 else data
    args.symbol = (symbols[0] if symbols else None) if len(data) == 1 else (symbols or None)


def _select_args(args: argparse.Namespace, cfg: Config, directory: Path) -> None:
    """`--data DIR` with `--symbols ...` (or the config's `[market] symbols`): the chosen CSVs, pooled."""
    from offline.selection import choose, selection_of

    if args.symbol:
        raise ConfigError(
            f"--symbol: not with a directory --data {directory} (its file names give the symbols)"
        )
    wanted = selection_of(
        cfg,
        symbols=args.symbols,
        top=args.top,
        min_turnover_usd=args.min_turnover_usd,
        exclude=[s.strip() for e in args.exclude or [] for s in e.split(",") if s.strip()],
        from_config=args.config is not None,
    )
    chosen = choose(directory, wanted)
    args.log(chosen.describe("selected"))
    paths = [str(p) for p in chosen.paths]
    args.data = paths[0] if len(paths) == 1 else paths
    args.symbol = chosen.symbols[0] if len(paths) == 1 else list(chosen.symbols)


def _cmd_distill(args: argparse.Namespace) -> int:
    from offline.pipeline import pipeline_distill

    cfg = _config(args.config)
    _pool_args(args, cfg)
    if args.seed is not None and not 0 <= args.seed < 2**32:
        raise ConfigError(f"--seed: expected an integer in [0, 2**32), got {args.seed}")
    if args.folds is not None:
        return _cmd_walkforward(args, cfg)
    for flag, value in (
        ("--seeds", args.seeds != 1),
        ("--address", args.address is not None),
        ("--num-cpus", args.num_cpus is not None),
        ("--no-ray", args.no_ray),
    ):
        if value:
            raise ConfigError(
                f"{flag}: only with --folds K (the folds and seeds fan out; one family trains once)"
            )
    args.out = args.out or "models"
    report = pipeline_distill(
        cfg,
        data=args.data,
        out_dir=Path(args.out),
        quick=args.quick,
        seed=args.seed,
        allow_gaps=args.allow_gaps,
        drop_last=args.drop_last,
        progress=not args.no_progress,
        log=args.log,
        symbol=args.symbol,
        versioned=True,
        promote=not args.no_promote,
    )
    print(report["table"])
    state = "current" if report["promoted"] else "not promoted (--no-promote)"
    print(f"version {report['version']} in {args.out}: {state}")
    chosen = ", ".join(f"{t}={c['variant']}" for t, c in report["chosen"].items())
    print(f"\nexported: {chosen}")
    total_s = report["info"]["total_s"]
    where = f"{args.out}/{report['version']}/"
    print(f"wrote {where}: manifest.json, <tier>.onnx, report.json/.txt/.png ({total_s:.1f} s)")
    return 0


def _cmd_walkforward(args: argparse.Namespace, cfg: Config) -> int:
    """`distill --folds K`: the vol head's walk-forward fold table (offline/walkforward.py); no export."""
    from offline.fanout import FanOut
    from offline.folds import check_n_folds
    from offline.walkforward import pipeline_walkforward

    check_n_folds(args.folds)
    fanout = FanOut(ray=not args.no_ray, address=args.address, num_cpus=args.num_cpus)
    fanout.check()
    args.out = args.out or "walkforward"
    wf, table = pipeline_walkforward(
        cfg,
        data=args.data,
        out_dir=Path(args.out),
        n_folds=args.folds,
        quick=args.quick,
        seed=args.seed,
        allow_gaps=args.allow_gaps,
        drop_last=args.drop_last,
        symbol=args.symbol,
        log=args.log,
        n_seeds=args.seeds,
        fanout=fanout,
    )
    print(table)
    print(
        f"wrote {args.out}/: walkforward.json, walkforward.txt ({wf.info['total_s']:.1f} s); "
        "no family was exported"
    )
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    cfg = _config(args.config)
    try:
        interval_ms(args.interval)
    except ValueError as exc:
        raise ConfigError(f"--interval: {exc}") from exc
    if not 0 < args.days <= 36_500:
        raise ConfigError(f"--days: expected a positive, finite number of days, got {args.days}")
    if args.end_ms is not None and args.end_ms <= 0:
        raise ConfigError(f"--end-ms: expected epoch milliseconds (> 0), got {args.end_ms}")
    if args.rest_url is not None and not args.rest_url.startswith(("http://", "https://")):
        raise ConfigError(f"--rest-url: expected a http:// or https:// URL, got {args.rest_url!r}")
    _check_symbol("--symbol", args.symbol)
    klines_output(args.out).check()  # before the download: refuse a path fetch must not replace
    bars = asyncio.run(
        fetch_history(
            cfg,
            symbol=args.symbol,
            interval=args.interval,
            days=args.days,
            rest_url=args.rest_url,
            end_ms=args.end_ms,
        )
    )
    if not bars:
        raise BotError(
            f"{args.symbol} {args.interval}: the exchange returned no confirmed bars; nothing written"
        )
    write_klines_csv(bars, Path(args.out))
    print(f"wrote {len(bars)} bars {bars[0].start_ms}..{bars[-1].start_ms} to {args.out}")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from bot.core.errors import ModelError
    from bot.sim.backtest_cli import default_cache_dir
    from offline.grid import load_grid
    from offline.sweep import print_result, sweep

    cfg = _config(args.config)
    grid = load_grid(args.grid)
    out = Path(args.out)
    try:
        res = sweep(
            cfg,
            grid,
            args.data,
            out,
            models=args.models if args.models is not None else cfg.models.dir,
            search=args.search,
            trials=args.trials,
            folds=args.folds,
            metric=args.metric,
            address=args.address,
            num_cpus=args.num_cpus,
            warmup_bars=args.warmup_bars,
            cache_dir=args.cache_dir or str(default_cache_dir()),
            seed=args.seed,
            fresh=args.fresh,
            log=lambda msg: print(msg, file=sys.stderr),
        )
    except ModelError as exc:  # --models of a policy-only grid: the bot's exit code for models
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_MODEL
    print_result(res, out, args.metric)
    return 0


def _cmd_export_dataset(args: argparse.Namespace) -> int:
    from offline.recorded import export_dataset

    _check_symbol("--symbol", args.symbol)
    info = export_dataset(args.ledger, args.out, symbol=args.symbol)
    print(
        f"wrote {info['bars']} {info['symbol']} bars {info['first_start_ms']}..{info['last_start_ms']} "
        f"({info['with_book']} with a book top) to {args.out}"
    )
    return 0


def _cmd_snapshot_ledger(args: argparse.Namespace) -> int:
    from offline.recorded import snapshot_ledger

    info = snapshot_ledger(args.ledger, args.out)
    symbols = ", ".join(info["symbols"]) or "no symbols"  # type: ignore[arg-type]
    print(f"copied {args.ledger} ({symbols}; {info['bytes']} bytes) to {args.out}")
    return 0


def _cmd_retrain(args: argparse.Namespace) -> int:
    from offline.retrain import ChallengerFailedError, FetchFailedError, retrain

    cfg = load_config(args.config)
    models = Path(args.models if args.models is not None else cfg.models.dir)
    args.out = str(models)
    try:
        outcome = retrain(
            cfg,
            models=models,
            dry_run=args.dry_run,
            challenger=args.challenger,
            ledger=args.ledger,
            log=args.log,
        )
    except (FetchFailedError, ChallengerFailedError) as exc:
        print(f"error: {exc}; the champion and {models}/current are unchanged", file=sys.stderr)
        return exc.exit_code
    from offline.retrain import format_report

    print(format_report(outcome.report))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m offline", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("distill", help="train the teacher, distill the chain, export ONNX tiers + manifest")
    d.add_argument("--config", help="config TOML (default: built-in defaults)")
    d.add_argument(
        "--data",
        action="append",
        default=None,
        help="'synthetic' or a klines CSV path (default: synthetic); repeat with one CSV per symbol (same "
        "interval) to train one family on all of them, split at the same dates; or one directory of CSVs "
        "and a selection over them (--symbols)",
    )
    d.add_argument(
        "--out",
        default=None,
        help="models directory (default: models): the family is added as a new version and made current; "
        "with --folds the fold table's directory (default: walkforward)",
    )
    d.add_argument(
        "--folds",
        type=int,
        default=None,
        metavar="K",
        help="walk-forward instead of a family: K >= 2 expanding folds, each trained and scored on its test "
        "block (vol head vs HAR-RV); writes walkforward.json/.txt to --out, exports and promotes nothing",
    )
    d.add_argument(
        "--seeds",
        type=int,
        default=1,
        metavar="N",
        help="with --folds: train each fold with N seeds (default 1)",
    )
    d.add_argument(
        "--address",
        default=None,
        help="with --folds: run the fold x seed tasks on the Ray cluster there: auto or HOST:PORT "
        "(default: a local Ray, or this process without Ray installed)",
    )
    d.add_argument("--num-cpus", type=int, default=None, help="with --folds: local Ray CPUs (default: all)")
    d.add_argument("--no-ray", action="store_true", help="with --folds: run every task in this process")
    d.add_argument("--no-promote", action="store_true", help="add the new version without making it current")
    d.add_argument("--quick", action="store_true", help="quick_bars bars and quick_epochs epochs")
    d.add_argument("--allow-gaps", action="store_true", help="accept time gaps in the CSV")
    d.add_argument(
        "--drop-last",
        action="store_true",
        help="drop the CSV's last row (in a raw Bybit download, the candle still open when it was fetched)",
    )
    d.add_argument(
        "--symbol",
        action="append",
        default=None,
        help="the symbol a CSV holds, recorded in the manifest (default: none); one per --data when repeated",
    )
    d.add_argument(
        "--symbols",
        default=None,
        metavar="all|SYM,SYM",
        help="with a directory --data: 'all' its CSVs (one per symbol, SYMBOL_5m.csv) or a comma list "
        "(default: the --config's [market] symbols); the chosen symbols train one pooled family",
    )
    d.add_argument(
        "--top", type=int, default=None, metavar="N", help="with --symbols all: the N by last-day turnover"
    )
    d.add_argument(
        "--min-turnover-usd",
        type=float,
        default=None,
        help="with --symbols all: only symbols with at least this turnover over their file's last day",
    )
    d.add_argument(
        "--exclude", action="append", default=None, metavar="SYM[,SYM]", help="with --symbols all; repeat"
    )
    d.add_argument("--seed", type=int, default=None, help="training seed (default: [distill].seed)")
    d.add_argument("--no-progress", action="store_true", help="no progress bars")
    d.set_defaults(func=_cmd_distill)
    f = sub.add_parser("fetch", help="download kline history (Bybit v5 /v5/market/kline) to a CSV")
    f.add_argument("--config", help="config TOML for [exchange] settings (default: built-in defaults)")
    f.add_argument("--symbol", default="BTCUSDT")
    f.add_argument("--interval", default="5")
    f.add_argument("--days", type=float, default=90.0)
    f.add_argument("--out", required=True)
    f.add_argument("--rest-url", default=None, help="REST base URL (default: [exchange].rest_url)")
    f.add_argument("--end-ms", type=int, default=None, help="window end, epoch ms (default: now)")
    f.set_defaults(func=_cmd_fetch)
    w = sub.add_parser(
        "sweep", help="score config candidates by walk-forward backtests on Ray (offline/sweep.py)"
    )
    w.add_argument("--config", help="base config TOML (default: built-in defaults)")
    w.add_argument("--grid", required=True, help="TOML: dotted config keys -> candidate lists")
    w.add_argument(
        "--data", action="append", required=True, metavar="[SYMBOL=]CSV", help="klines CSV; repeat"
    )
    w.add_argument("--out", required=True, help="output directory (re-running resumes in it)")
    w.add_argument("--models", default=None, help="tier family (default: [models] dir)")
    w.add_argument("--search", choices=("grid", "optuna"), default="grid")
    w.add_argument("--trials", type=int, default=None, help="trials (optuna: default 20; grid: a cap)")
    w.add_argument("--folds", type=int, default=4, help="chronological folds; the last is held out")
    w.add_argument("--metric", choices=("sharpe", "pnl_usd"), default="sharpe")
    w.add_argument("--address", default=None, help="join a Ray cluster: auto or HOST:PORT (default: local)")
    w.add_argument("--num-cpus", type=int, default=None, help="local Ray CPUs (default: all)")
    w.add_argument("--warmup-bars", type=int, default=None, help="default: [exchange] backfill_bars")
    w.add_argument("--cache-dir", default=None, help="backtest cache (default: as bot backtest)")
    w.add_argument("--seed", type=int, default=0, help="optuna sampler seed")
    w.add_argument(
        "--fresh",
        action="store_true",
        help="--out holds trials of another sweep (another grid, config or data): replace them at the end "
        "(without it such a directory is refused)",
    )
    w.set_defaults(func=_cmd_sweep)
    r = sub.add_parser(
        "retrain", help="fetch, distil a challenger, score it against the champion, promote only a winner"
    )
    r.add_argument("--config", required=True, help="config TOML: [market], [exchange], [retrain], ...")
    r.add_argument("--models", default=None, help="models store (default: [models] dir)")
    r.add_argument(
        "--dry-run", action="store_true", help="distil and score in a temporary dir; write nothing"
    )
    r.add_argument("--challenger", default=None, help="score this existing version instead of distilling one")
    r.add_argument(
        "--ledger",
        default=None,
        help="ledger whose recorded bars to merge (default: [ledger] path), e.g. a snapshot-ledger copy",
    )
    r.set_defaults(func=_cmd_retrain)
    x = sub.add_parser(
        "export-dataset",
        help="write the bars (and book tops) the service recorded in its ledger as a klines CSV",
    )
    x.add_argument("--ledger", required=True, help="the bot's ledger ([ledger] path); read only")
    x.add_argument("--out", required=True, help="CSV to write (replaces only a previous export)")
    x.add_argument("--symbol", default=None, help="symbol to export (default: the ledger's only symbol)")
    x.set_defaults(func=_cmd_export_dataset)
    n = sub.add_parser(
        "snapshot-ledger",
        help="copy the bot's ledger consistently (SQLite backup; safe while the bot runs) for the retrain",
    )
    n.add_argument("--ledger", required=True, help="the bot's ledger ([ledger] path); read only")
    n.add_argument("--out", required=True, help="the copy (replaces only a previous snapshot)")
    n.set_defaults(func=_cmd_snapshot_ledger)
    m = sub.add_parser("models", help="list, promote (roll back) and prune the versions of a models store")
    m.add_argument("--dir", required=True, help="the models directory ([models] dir)")
    msub = m.add_subparsers(dest="action", required=True)
    ml = msub.add_parser("list", help="one line per version, oldest first")
    ml.add_argument("--json", action="store_true", help="a JSON list for machines")
    ml.set_defaults(func=cmd_models_list)
    mp = msub.add_parser("promote", help="verify a version as the bot would, then make it current")
    mp.add_argument("version", help="a version directory name (see `list`)")
    mp.add_argument("--config", default=None, help="also check the family fits this config (as at start-up)")
    mp.set_defaults(func=cmd_models_promote)
    mq = msub.add_parser("prune", help="delete versions older than the newest N (never current or previous)")
    mq.add_argument("--keep", type=int, required=True, metavar="N", help="how many newest versions to keep")
    mq.add_argument("--dry-run", action="store_true", help="print what would be deleted; delete nothing")
    mq.set_defaults(func=cmd_models_prune)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # progress and retries go to stderr (warnings and up) as plain lines: stdout stays for the results
    logs.configure_logging(level="warning", fmt="plain", stream=sys.stderr)
    stages: list[str] = []

    def log(msg: str) -> None:
        stages.append(msg)
        print(msg, file=sys.stderr, flush=True)

    args.log = log
    try:
        with stop_on_signals():
            rc: int = args.func(args)
    except Interrupted as exc:
        during = f" while {exc.phase}" if exc.phase else ""
        during += f" (last finished: {stages[-1]})" if stages else ""
        print(
            f"\ninterrupted by {exc.signal_name}: offline {args.command} stopped{during}; "
            "nothing was written; "
            f"{getattr(args, 'out', 'the output')} is as it was",
            file=sys.stderr,
            flush=True,
        )
        return exc.exit_code
    except BotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return rc


if __name__ == "__main__":
    sys.exit(main())
