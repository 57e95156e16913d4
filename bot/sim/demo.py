"""`python -m bot demo`: the embedded default, end to end, with no network and no ../shared.

1. If the models directory has no family, or the demo's own family (trained on the synthetic market) no
   longer fits this bot (an older feature version, another config), distill a quick tier family from the
   synthetic market into a new version (`python -m offline distill --quick` in a subprocess: the bot
   never imports offline/scikit-learn; older versions are kept). A family of the user's that does not fit
   is never replaced: that is a model error naming the fix.
2. Start the replay exchange on 127.0.0.1 over a synthetic market the models never saw (another seed),
   accelerated to a few milliseconds per 5-minute bar.
3. Run the real service against it (REST backfill, websocket, regime routing, ONNX tiers, paper trading,
   SQLite ledger, decision log) until it has decided `--bars` bars.
4. Print a summary (bars per regime and tier, PnL, latency per tier) and where the report and plots are.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

from bot.app import Service, summary_dict
from bot.config import Config, load_config
from bot.core.errors import ConfigError, ModelError
from bot.ledger.writer import Ledger
from bot.models import store as modelstore
from bot.models.family import TierFamily
from bot.observe import logs
from bot.outputs import StagedOutput
from bot.sim.replay import ReplayExchange
from bot.sim.report import run_report

DEMO_SYMBOL = "SYNTHUSDT"
DEMO_SEED = 107  # the models train on seed 7; this market is out of sample and spans all four regimes


def add_demo_args(parser: argparse.ArgumentParser) -> None:
    """Options of `python -m bot demo`."""
    parser.add_argument("--config", default=None, help="base TOML config (default: config.toml if present)")
    parser.add_argument("--models", default=None, help="tier family dir (default: [models] dir)")
    parser.add_argument("--out", default="demo-out", help="ledger, decision log, report and plots go here")
    parser.add_argument("--bars", type=int, default=4000, help="bars to decide")
    parser.add_argument("--bar-seconds", type=float, default=0.003, help="real seconds per replayed bar")
    parser.add_argument("--seed", type=int, default=DEMO_SEED, help="synthetic market seed of the replay")
    parser.add_argument(
        "--retrain", action="store_true", help="distill a fresh quick family even if one exists"
    )


class DemoDistillError(ConfigError):
    """The demo's distill step failed; it printed its own error (exit 2)."""


def check_demo_args(args: argparse.Namespace) -> None:
    """Range-check the demo's numeric options (ConfigError naming the option)."""
    if not 1 <= args.bars <= 10_000_000:
        raise ConfigError(f"--bars: expected a whole number of bars in 1..10000000, got {args.bars}")
    if not (math.isfinite(args.bar_seconds) and 0 < args.bar_seconds <= 60):
        raise ConfigError(f"--bar-seconds: expected a number in (0, 60], got {args.bar_seconds}")
    if args.seed < 0:
        raise ConfigError(f"--seed: expected an integer >= 0, got {args.seed}")


def _distill(config_path: str | None, models: Path) -> None:
    cmd = [sys.executable, "-m", "offline", "distill", "--data", "synthetic", "--out", str(models), "--quick"]
    if config_path is not None:
        cmd += ["--config", config_path]
    if not sys.stderr.isatty():
        cmd.append("--no-progress")
    print(f"[demo] distilling a quick tier family into {models}/: {' '.join(cmd[1:])}", flush=True)
    t0 = time.perf_counter()
    rc = subprocess.run(cmd, check=False).returncode  # noqa: S603 - our own interpreter and module
    if rc != 0:
        raise DemoDistillError(f"demo: `{' '.join(cmd[1:])}` failed with exit code {rc} (its error is above)")
    print(f"[demo] distilled in {time.perf_counter() - t0:.0f} s", flush=True)


def demo_family_reason(base: Config, models: Path) -> str | None:
    """Why the demo must distill a family first (None: the family in `models` fits the demo).

    Raises:
        ModelError: the family there is not one the demo made (not trained on the synthetic market) and does
            not fit; the demo never replaces a user's family.
    """
    try:
        family_dir = modelstore.resolve(models)
    except ModelError:
        return f"{models}/current is broken: distilling a new family"
    manifest = family_dir / "manifest.json"
    if not manifest.is_file():
        return f"no tier family in {models}/: distilling one"
    cfg = demo_config(
        base, rest_url="http://127.0.0.1:1", ws_url="ws://127.0.0.1:1", out=Path("."), models=models
    )
    try:
        family = TierFamily.load(models, compiled_forward=cfg.models.compiled_forward)
        family.check_fit(cfg)
    except ModelError as exc:
        try:
            source = json.loads(manifest.read_text(encoding="utf-8"))["provenance"]["source"]
        except (OSError, ValueError, KeyError, TypeError):
            source = None
        if source != "synthetic":
            raise ModelError(
                f"{exc} (the demo runs the synthetic market; pass --models DIR for a demo family of its own, "
                "or --retrain to distill one into this store)"
            ) from None
        return f"the demo family in {models}/ does not fit this bot ({exc}): distilling a new version"
    return None


def demo_config(base: Config, *, rest_url: str, ws_url: str, out: Path, models: Path) -> Config:
    """The base config pointed at the loopback exchange, the demo symbol and the demo's output dir."""
    data: dict[str, Any] = msgspec.to_builtins(base)
    data["market"]["symbols"] = [DEMO_SYMBOL]
    data["exchange"].update(
        rest_url=rest_url,
        ws_url=ws_url,
        backfill_bars=300,
        reconnect_backoff_initial_s=0.05,
        reconnect_backoff_max_s=1.0,
        stale_feed_s=30.0,
        ping_interval_s=5.0,
    )
    data["ledger"]["path"] = str(out / "ledger.sqlite")
    data["logging"]["decisions_path"] = str(out / "decisions.jsonl")
    data["logging"]["format"] = "json"
    data["models"]["dir"] = str(models)
    data["service"]["metrics_enabled"] = False
    return msgspec.convert(data, Config)


async def _run(
    base: Config, *, out: Path, models: Path, bars: int, bar_seconds: float, seed: int
) -> dict[str, Any]:
    exchange = ReplayExchange(
        symbols=[DEMO_SYMBOL],
        interval=base.market.interval,
        data="synthetic",
        bar_seconds=bar_seconds,
        updates_per_bar=2,
        history_bars=400,
        seed=seed,
    )
    async with exchange:
        live = demo_config(base, rest_url=exchange.rest_url, ws_url=exchange.ws_url, out=out, models=models)
        service = Service(live, max_decisions=bars)
        summary = await service.run(asyncio.Event())
    return summary_dict(summary)


def _print_summary(summary: dict[str, Any], pnl: dict[str, Any], report: dict[str, Any], out: Path) -> None:
    print()
    print(
        f"decided {summary['decisions']} bars in {summary['wall_s']:.1f} s "
        f"({summary['warmup_bars']} warm-up bars, {summary['reconnects']} reconnects)"
    )
    print()
    print(f"{'regime':<12}{'bars':>8}    {'tier':<12}{'bars':>8}")
    regimes = sorted(summary["per_regime"].items())
    tiers = sorted(summary["per_tier"].items())
    for i in range(max(len(regimes), len(tiers))):
        r = regimes[i] if i < len(regimes) else ("", "")
        t = tiers[i] if i < len(tiers) else ("", "")
        print(f"{r[0]:<12}{r[1]!s:>8}    {t[0]:<12}{t[1]!s:>8}")
    print()
    print("paper PnL (USD, net of fees and slippage), attributed to the tier/regime that set the position:")
    for by, rows in pnl.items():
        total = sum(r["pnl_usd"] for r in rows.values())
        print(
            f"  by {by:<7} total {total:+.2f}: "
            + ", ".join(f"{k} {v['pnl_usd']:+.2f}" for k, v in rows.items())
        )
    print()
    print("latency per tier (us):")
    print(f"  {'tier':<12}{'n':>6}{'infer p50':>11}{'infer p99':>11}{'total p50':>11}{'total p99':>11}")
    for tier, row in sorted(report.get("tiers", {}).items()):
        inf = row["latency_us"]["inference"]
        tot = row["latency_us"]["total"]
        print(
            f"  {tier:<12}{row['bars']:>6}{inf['p50']:>11.1f}{inf['p99']:>11.1f}"
            f"{tot['p50']:>11.1f}{tot['p99']:>11.1f}"
        )
    print()
    print(f"ledger:        {out / 'ledger.sqlite'}")
    print(f"decision log:  {out / 'decisions.jsonl'}")
    print(f"report:        {out / 'report' / 'report.json'} (+ per-tier PNG plots in {out / 'report'})")


def main_demo(args: argparse.Namespace) -> int:
    """Run the demo; returns the exit code."""
    config_path = args.config
    if config_path is None and Path("config.toml").exists():
        config_path = "config.toml"
    check_demo_args(args)
    base = load_config(config_path) if config_path is not None else Config()
    models = Path(args.models if args.models is not None else base.models.dir)
    final = Path(args.out)
    stage = StagedOutput(final, kind="demo", min_free_mib=64)
    stage.check()  # before distilling: refuse an --out that is not a previous demo's
    why = "--retrain" if args.retrain else demo_family_reason(base, models)
    if why is not None:
        print(f"[demo] {why}", flush=True)
        _distill(config_path, models)  # adds a version and makes it current; keeps the store on failure
    with stage as out:
        summary, pnl, report = _demo(args, base, models, out)
        stage.commit()
    _print_summary(summary, pnl, report, final)
    return 0


def _demo(
    args: argparse.Namespace, base: Config, models: Path, out: Path
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Run the demo into the staging dir `out`; returns the service summary, the PnL table and the report."""
    decisions_path = out / "decisions.jsonl"  # demo_config puts the service's log and ledger in `out`
    devnull = open(os.devnull, "w")  # noqa: SIM115 - lives as long as logging does
    logs.configure_logging(level="info", fmt="json", decisions_path=decisions_path, stream=devnull)
    print(
        f"[demo] replaying a synthetic market (seed {args.seed}) on 127.0.0.1; deciding {args.bars} bars ...",
        flush=True,
    )
    try:
        summary = asyncio.run(
            _run(base, out=out, models=models, bars=args.bars, bar_seconds=args.bar_seconds, seed=args.seed)
        )
    finally:
        logs.close_logging()
        devnull.close()
    ledger = Ledger.open(out / "ledger.sqlite")
    try:
        pnl = {
            by: {
                row.name: {
                    "bars": row.bars,
                    "pnl_usd": round(row.pnl_usd, 2),
                    "fees_usd": round(row.fees_usd, 2),
                }
                for row in ledger.summary(by)
            }
            for by in ("tier", "regime")
        }
    finally:
        ledger.close()
    report = run_report(decisions_path, out / "report")
    return summary, pnl, report
