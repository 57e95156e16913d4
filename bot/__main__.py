"""`python -m bot run|demo|replay-server|latency-report|backtest`.

Exit codes (docs/errors.md): 0 ok; 1 runtime error (incl. a disk that refuses a write); 2 config error (also
a bad CLI value, a port in use, an unwritable or refused output path); 3 model error (incl. a family that
does not fit the config); 4 stalled (decision lag); 5 a shutdown step overran `service.shutdown_timeout_s`
and was abandoned; 6 the ledger is in use by another instance; 7 the exchange refused us or cannot be
reached for a reason retrying will not fix (unknown host, TLS, HTTP 4xx, IP ban, refused subscribe).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Coroutine, Sequence
from typing import Any, Final, TypeVar

from bot.bybit.errors import ExchangeError, RetriesExhaustedError
from bot.core.errors import BotError, ConfigError, ModelError, PipelineStalledError
from bot.ledger.lock import LedgerInUseError
from bot.observe import logs
from bot.shutdown import ShutdownTimeoutError

EXIT_CONFIG = 2
EXIT_MODEL = 3
EXIT_RUNTIME = 1
EXIT_STALLED = 4
EXIT_SHUTDOWN = 5  # a shutdown step overran service.shutdown_timeout_s and was abandoned
EXIT_IN_USE = 6  # another bot instance holds the ledger
EXIT_EXCHANGE = 7  # the exchange refused us, or cannot be reached for a non-transient reason

# After the service returns: how long tasks it abandoned get to end after a last cancel before the loop is
# closed without them (asyncio.run would wait for them forever).
LOOP_CLEANUP_S: Final = 1.0

T = TypeVar("T")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bot", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the live service (default: Bybit mainnet public endpoints)")
    run.add_argument("--config", default="config.toml", help="TOML config (see config.toml)")
    demo = sub.add_parser(
        "demo", help="distill (if needed), replay a synthetic market on loopback, run the bot"
    )
    from bot.sim.demo import add_demo_args
    from bot.sim.replay import add_replay_args
    from bot.sim.report import add_report_args

    add_demo_args(demo)
    add_replay_args(sub.add_parser("replay-server", help="Bybit-v5-compatible replay exchange on loopback"))
    add_report_args(sub.add_parser("latency-report", help="per-tier latency/PnL report from a decision log"))
    from bot.sim.backtest_cli import add_backtest_args

    add_backtest_args(
        sub.add_parser("backtest", help="the live engine over klines CSVs: decisions, report, plots")
    )
    return parser


def _run(args: argparse.Namespace) -> int:
    from bot.app import run_service
    from bot.config import load_config
    from bot.ledger.lock import LedgerLock, check_ledger_path
    from bot.models.family import TierFamily
    from bot.observe.metrics import Metrics

    cfg = load_config(args.config)
    # read-only: a bad family exits 3 before any file exists
    family = TierFamily.load(cfg.models.dir, compiled_forward=cfg.models.compiled_forward)
    family.check_fit(cfg)  # a family trained for another interval/symbol/features/horizon: exit 3 too
    logs.check_decisions_path(cfg.logging.decisions_path)  # exit 2 before the lock file is created
    check_ledger_path(cfg.ledger.path)  # a directory or a file of the user's: exit 2 before any file too
    Metrics.check_port(cfg.service)  # a metrics port in use: the same
    with LedgerLock(cfg.ledger.path) as lock:  # before any file is created: one bot per ledger
        logs.configure_logging(
            level=cfg.logging.level,
            fmt=cfg.logging.format,
            decisions_path=cfg.logging.decisions_path,
            rotate_bytes=int(cfg.logging.rotate_mib * 2**20),
            keep_files=cfg.logging.keep_files,
        )
        try:
            _run_loop(run_service(cfg, lock=lock, family=family), cleanup_s=LOOP_CLEANUP_S)
        finally:
            logs.close_logging()
    return 0


def _run_loop(main: Coroutine[Any, Any, T], *, cleanup_s: float) -> T:
    """`asyncio.run(main)`, except that tasks still pending afterwards (shutdown steps the service abandoned)
    get `cleanup_s` after a last cancel and are then left behind: the process is exiting."""
    loop = asyncio.new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(main)
    finally:
        try:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.wait(pending, timeout=cleanup_s))
            for closing in (loop.shutdown_asyncgens, loop.shutdown_default_executor):
                with contextlib.suppress(TimeoutError):  # what would not close is left behind too
                    loop.run_until_complete(asyncio.wait_for(closing(), cleanup_s))
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "demo":
            from bot.sim.demo import main_demo

            return main_demo(args)
        if args.command == "replay-server":
            from bot.sim.replay import main_replay

            with contextlib.suppress(KeyboardInterrupt):
                return asyncio.run(main_replay(args))
            return 0
        if args.command == "backtest":
            from bot.sim.backtest_cli import main_backtest

            return main_backtest(args)
        from bot.sim.report import main_report

        return main_report(args)
    except (BotError, ExceptionGroup, OSError) as exc:
        return _report_error(exc)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


def _report_error(exc: BaseException) -> int:
    """Print a BotError (possibly inside a TaskGroup's ExceptionGroup) and pick the exit code."""
    leaves = _leaves(exc)
    bot_errors = [e for e in leaves if isinstance(e, BotError)]
    if not bot_errors:
        os_errors = [e for e in leaves if isinstance(e, OSError)]
        if not os_errors:
            raise exc
        err = os_errors[0]  # e.g. the decision log's disk filled up: one line, not a traceback
        where = f" ({err.filename})" if err.filename else ""
        fix = "free space or fix the path, then restart"
        print(f"error: {err.strerror or err}{where}; {fix}", file=sys.stderr)
        return EXIT_RUNTIME
    first = bot_errors[0]
    if isinstance(first, ConfigError):
        print(f"config error: {first}", file=sys.stderr)
        return EXIT_CONFIG
    if isinstance(first, ModelError):
        print(f"model error: {first}", file=sys.stderr)
        return EXIT_MODEL
    if isinstance(first, PipelineStalledError):
        print(f"stalled: {first}", file=sys.stderr)
        return EXIT_STALLED
    if isinstance(first, LedgerInUseError):
        print(f"in use: {first}", file=sys.stderr)
        return EXIT_IN_USE
    if isinstance(first, ExchangeError) and not isinstance(first, RetriesExhaustedError):
        print(f"exchange error: {first}", file=sys.stderr)
        return EXIT_EXCHANGE
    if isinstance(first, ShutdownTimeoutError):
        print(f"shutdown timeout: {first}", file=sys.stderr)
        return EXIT_SHUTDOWN
    print(f"error: {type(first).__name__}: {first}", file=sys.stderr)
    return EXIT_RUNTIME


if __name__ == "__main__":
    sys.exit(main())
