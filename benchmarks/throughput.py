"""Throughput: bars/s in-process and through the loopback replay exchange; websocket frames/s decoded.

1. `engine`: `Engine.on_bar` (features, regime, routed ONNX tier, paper trader) over N synthetic
   bars generated up front (generation not timed), routed by the family's calibrated regimes. The ledger and
   the log line are excluded here; `engine+ledger` repeats a slice with the SQLite ledger in memory
   (`:memory:`) written per bar, as the service does.
2. `replay`: the real `bot.app.Service` (REST backfill, websocket, engine, SQLite ledger on disk, JSON log
   line per bar to /dev/null) against `bot.sim.replay.ReplayExchange(bar_seconds=0)` on 127.0.0.1.
3. `ws_decode`: websocket kline frames decoded and turned into `Bar`s: stdlib `json` + dict access vs
   `bot.bybit.wire` (msgspec typed structs, the bot's path), frames/s.
4. `backtest`: `bot.sim.backtest.Backtest` over the 5 symbols x 90 days of real 5m bars in ../shared/data
   (routed family): the first run with an empty cache (CSV read, features, batched tier predictions, engine
   pass) and a policy-only rerun (other thresholds; features and predictions from the cache), end to end.
   `--backtest-only` runs just this part.

Each table shows ratios against the first row of its group, measured in the same run. Output:
docs/results/throughput[_quick].json.

    .venv/bin/python benchmarks/throughput.py --quick      # 100k bars in-process
    .venv/bin/python benchmarks/throughput.py              # 1M bars in-process
    .venv/bin/python benchmarks/throughput.py --smoke      # seconds: tiny family, 2k bars, BTCUSDT backtest

`--smoke` writes to a temp dir (or `--out`); without ../shared/data its backtest runs on a synthetic market.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import msgspec

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _smoke import SMOKE_HELP, data_or_synthetic, output_path, smoke_dir, tiny_family  # noqa: E402

from bot.app import Service  # noqa: E402
from bot.bybit import wire  # noqa: E402
from bot.config import Config, engine_params  # noqa: E402
from bot.core.bars import Bar  # noqa: E402
from bot.core.engine import Engine  # noqa: E402
from bot.core.paper import PaperTrader  # noqa: E402
from bot.ledger.writer import Ledger  # noqa: E402
from bot.models.family import TierFamily  # noqa: E402
from bot.observe import logs  # noqa: E402 (after the sys.path insert)
from bot.sim.replay import ReplayExchange  # noqa: E402
from bot.sim.synthetic import SyntheticMarket  # noqa: E402

DOCS = ROOT / "docs" / "results"
SHARED_5M = ROOT.parent / "shared" / "data" / "bybit_linear_cobra0506_crypto_backtester" / "normalized"
#: mode -> (in-process bars, bars through the replay exchange, websocket frames)
SIZES: dict[str, tuple[int, int, int]] = {
    "smoke": (2_000, 200, 5_000),
    "quick": (100_000, 3_000, 200_000),
    "full": (1_000_000, 20_000, 1_000_000),
}
BACKTEST_SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "BNBUSDT")
DEFAULT_MODELS = Path(tempfile.gettempdir()) / "bench_models"
SYMBOL = "BTCUSDT"


def engine_part(models: Path, n_bars: int, n_ledger: int) -> dict[str, Any]:
    """Bars/s of Engine.on_bar over `n_bars` bars, and over `n_ledger` bars with an in-memory ledger."""
    t0 = time.perf_counter()
    bars = [s.bar for s in SyntheticMarket(seed=23, symbol=SYMBOL).generate(n_bars)]
    gen_s = time.perf_counter() - t0
    family = TierFamily.load(models)
    cfg = Config()
    engine = Engine(engine_params(cfg), family, PaperTrader(cfg.paper))
    per_tier: dict[str, int] = {}
    t0 = time.perf_counter()
    for bar in bars:
        d = engine.on_bar(bar)
        if d is not None:
            per_tier[d.tier] = per_tier.get(d.tier, 0) + 1
    run_s = time.perf_counter() - t0
    out: dict[str, Any] = {
        "engine": {"bars": n_bars, "seconds": run_s, "bars_per_s": n_bars / run_s, "per_tier": per_tier},
        "generate_s": gen_s,
    }
    engine = Engine(engine_params(cfg), family, PaperTrader(cfg.paper))
    ledger = Ledger.open(":memory:")
    t0 = time.perf_counter()
    for bar in bars[:n_ledger]:
        d = engine.on_bar(bar)
        if d is None:
            ledger.record_bar(bar)
        else:
            ledger.record(bar, d, engine.trader.state(bar.symbol))
    led_s = time.perf_counter() - t0
    ledger.close()
    out["engine+ledger"] = {"bars": n_ledger, "seconds": led_s, "bars_per_s": n_ledger / led_s}
    return out


async def _replay(models: Path, n_bars: int, workdir: Path) -> dict[str, Any]:
    exchange = ReplayExchange(
        symbols=[SYMBOL], data="synthetic", bar_seconds=0.0, updates_per_bar=0, history_bars=400, seed=31
    )
    async with exchange:
        data: dict[str, Any] = msgspec.to_builtins(Config())
        data["exchange"].update(
            rest_url=exchange.rest_url,
            ws_url=exchange.ws_url,
            reconnect_backoff_initial_s=0.05,
            reconnect_backoff_max_s=1.0,
            stale_feed_s=30.0,
            ping_interval_s=5.0,
        )
        data["ledger"]["path"] = str(workdir / "ledger.sqlite")
        data["models"]["dir"] = str(models)
        data["market"]["symbols"] = [SYMBOL]
        data["models"]["symbols"] = "any"  # the bench family may be trained on another symbol
        data.pop("logging")
        cfg = msgspec.convert(data, Config)
        service = Service(cfg, max_decisions=n_bars)
        t0 = time.perf_counter()
        summary = await service.run(asyncio.Event())
        wall = time.perf_counter() - t0
    return {
        "bars": summary.decisions,
        "seconds": wall,
        "bars_per_s": summary.decisions / wall,
        "warmup_bars": summary.warmup_bars,
        "per_tier": dict(summary.per_tier),
        "ledger": "SQLite file (WAL), the service's default synchronous setting",
    }


def replay_part(models: Path, n_bars: int) -> dict[str, Any]:
    devnull = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 (closed below)
    logs.configure_logging(level="info", fmt="json", decisions_path=None, stream=devnull)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            return asyncio.run(_replay(models, n_bars, Path(tmp)))
    finally:
        logs.configure_logging(level="info", fmt="json", stream=sys.stderr)
        devnull.close()


def kline_frame(i: int, *, confirm: bool) -> bytes:
    start = 1_735_689_600_000 + i * 300_000
    k = {
        "start": start,
        "end": start + 299_999,
        "interval": "5",
        "open": "97000.5",
        "close": "97010.1",
        "high": "97050",
        "low": "96990.2",
        "volume": "123.456",
        "turnover": "11975432.1",
        "confirm": confirm,
        "timestamp": start + 299_999,
    }
    msg = {"topic": f"kline.5.{SYMBOL}", "type": "snapshot", "ts": start + 299_999, "data": [k]}
    return json.dumps(msg).encode()


def _stdlib_dispatch(frame: bytes) -> Bar | None:
    msg = json.loads(frame)
    topic = msg.get("topic")
    if topic is None or not topic.startswith("kline."):
        return None
    symbol = topic.rsplit(".", 1)[1]
    bar = None
    for k in msg["data"]:
        if k["confirm"]:
            bar = Bar(
                symbol,
                int(k["start"]),
                float(k["open"]),
                float(k["high"]),
                float(k["low"]),
                float(k["close"]),
                float(k["volume"]),
                float(k["turnover"]),
                "ws",
            )
    return bar


def _wire_dispatch(frame: bytes) -> Bar | None:
    env = wire.decode_envelope(frame)
    topic = env.topic
    if topic is None or not topic.startswith("kline."):
        return None
    symbol = topic.rsplit(".", 1)[1]
    bar = None
    for k in wire.decode_klines(env.data, topic=topic):
        if k.confirm:
            bar = Bar(
                symbol,
                k.start,
                k.open,
                k.high,
                k.low,
                k.close,
                k.volume,
                k.turnover,
                "ws",
            )
    return bar


def decode_part(n: int) -> dict[str, Any]:
    """Frames/s of decode + dispatch to a Bar (every 4th frame a confirm), stdlib json vs bot.bybit.wire."""
    frames = [kline_frame(i, confirm=i % 4 == 3) for i in range(n)]
    out: dict[str, Any] = {}
    for name, fn in (("stdlib_json", _stdlib_dispatch), ("bot_wire_msgspec", _wire_dispatch)):
        for f in frames[:1000]:
            fn(f)
        t0 = time.perf_counter()
        bars = sum(1 for f in frames if fn(f) is not None)
        s = time.perf_counter() - t0
        out[name] = {"frames": n, "bars": bars, "seconds": s, "msgs_per_s": n / s}
    a = _stdlib_dispatch(frames[3])
    b = _wire_dispatch(frames[3])
    if a != b:
        raise RuntimeError(f"decoders disagree: {a} vs {b}")
    return out


def backtest_part(models: Path, data_dir: Path, symbols: Sequence[str]) -> dict[str, Any]:
    """Bars/s of `bot backtest`'s engine pass over the real 5m data: first run and policy-only rerun."""
    from bot.sim.backtest import Backtest

    data = [str(data_dir / f"{s}_5m.csv") for s in symbols]
    cfg = Config()
    other = msgspec.structs.replace(
        cfg, paper=msgspec.structs.replace(cfg.paper, long_threshold_bps=5.0, short_threshold_bps=20.0)
    )
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, run_cfg in (("first_run", cfg), ("policy_rerun", other)):
            t0 = time.perf_counter()
            bt = Backtest(cfg, data, models, cache_dir=Path(tmp))
            load_s = time.perf_counter() - t0
            res = bt.run(run_cfg)
            total_s = time.perf_counter() - t0
            out[name] = {
                "bars": bt.n_bars,
                "decided": len(res.records),
                "load_and_cache_s": load_s,
                "cache_s": res.cache_s,
                "cache_hits": res.cache_hits,
                "engine_s": res.wall_s,
                "seconds": total_s,
                "bars_per_s": bt.n_bars / total_s,
                "engine_bars_per_s": bt.n_bars / res.wall_s,
                "max_abs_diff_batched": res.max_abs_diff,
            }
    return out


def format_report(r: dict[str, Any]) -> str:
    e = r["engine"]
    base = e["engine"]["bars_per_s"]
    lines = ["throughput (ratio = against the first row of the group)", ""]
    lines.append(f"{'what':<44}{'items':>10}{'seconds':>10}{'per s':>12}{'ratio':>8}")
    rows = [
        (
            "in-process Engine.on_bar (no ledger, no log)",
            e["engine"]["bars"],
            e["engine"]["seconds"],
            base,
            base,
        ),
        (
            "in-process + ledger in :memory:",
            e["engine+ledger"]["bars"],
            e["engine+ledger"]["seconds"],
            e["engine+ledger"]["bars_per_s"],
            base,
        ),
        (
            "Service vs ReplayExchange on loopback",
            r["replay"]["bars"],
            r["replay"]["seconds"],
            r["replay"]["bars_per_s"],
            base,
        ),
    ]
    for label, n, s, v, b in rows:
        lines.append(f"{label:<44}{n:>10,}{s:>10.1f}{v:>12,.0f}{v / b:>7.2f}x")
    d = r["decode"]
    b = d["stdlib_json"]["msgs_per_s"]
    for k, v in d.items():
        lines.append(
            f"{'ws decode+dispatch ' + k:<44}{v['frames']:>10,}{v['seconds']:>10.2f}"
            f"{v['msgs_per_s']:>12,.0f}{v['msgs_per_s'] / b:>7.2f}x"
        )
    lines.append("")
    lines.append(f"bars per tier (in-process): {e['engine']['per_tier']}")
    return "\n".join(lines)


def format_backtest(b: dict[str, Any], symbols: Sequence[str]) -> str:
    what = f"bot backtest, {len(symbols)} symbol{'s' if len(symbols) > 1 else ''} of 5m bars"
    lines = [f"{what:<44}{'bars':>10}{'seconds':>10}{'bars/s':>12}{'engine':>12}"]
    for name, v in b.items():
        lines.append(
            f"{name:<44}{v['bars']:>10,}{v['seconds']:>10.2f}{v['bars_per_s']:>12,.0f}"
            f"{v['engine_bars_per_s']:>12,.0f}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="100k bars in-process, 3k through the replay")
    ap.add_argument("--smoke", action="store_true", help=f"{SMOKE_HELP}; a tiny family unless --models")
    ap.add_argument("--models", type=Path, default=None, help=f"tier family (default {DEFAULT_MODELS})")
    ap.add_argument("--data-dir", type=Path, default=SHARED_5M, help="5m klines CSVs for the backtest part")
    ap.add_argument(
        "--bars", type=int, default=None, help="in-process bars (default 1,000,000; quick 100,000)"
    )
    ap.add_argument(
        "--out", type=Path, default=None, help="output stem (default docs/results/throughput[_quick])"
    )
    ap.add_argument(
        "--backtest-only", action="store_true", help="only the backtest part (docs/results/backtest_speed)"
    )
    args = ap.parse_args(argv)
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    default_bars, n_replay, n_frames = SIZES[mode]
    n_bars = args.bars or default_bars
    n_ledger = n_bars // 10
    stem = output_path(args.out, "throughput", smoke=args.smoke, quick=args.quick)
    models: Path = args.models or (tiny_family(smoke_dir("models")) if args.smoke else DEFAULT_MODELS)
    symbols = BACKTEST_SYMBOLS[:1] if args.smoke else BACKTEST_SYMBOLS
    data_dir = data_or_synthetic(args.data_dir, symbols) if args.smoke else args.data_dir
    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:6.1f} s] {msg}", file=sys.stderr, flush=True)

    if not (models / "manifest.json").exists():
        from offline.pipeline import pipeline_distill

        log(f"building the tier family into {models}")
        pipeline_distill(Config(), data="synthetic", out_dir=models, quick=True)
    load0 = os.getloadavg()
    log(f"backtest over the 5m data of {', '.join(symbols)}")
    backtest = backtest_part(models, data_dir, symbols)
    print(format_backtest(backtest, symbols))
    if args.backtest_only:
        path = stem if args.out or args.smoke else DOCS / "backtest_speed"
        meta = {
            "command": "python benchmarks/throughput.py --backtest-only",
            "loadavg_before": load0,
            "loadavg_after": os.getloadavg(),
            "cpus": os.cpu_count(),
            "models": str(models),
        }
        path.with_suffix(".json").write_text(
            json.dumps({"meta": meta, "backtest": backtest}, indent=1) + "\n", encoding="utf-8"
        )
        return 0
    log(f"in-process engine over {n_bars:,} bars")
    engine = engine_part(models, n_bars, n_ledger)
    log(f"service vs replay exchange, {n_replay:,} bars")
    replay = replay_part(models, n_replay)
    log(f"websocket decode, {n_frames:,} frames")
    decode = decode_part(n_frames)
    r = {
        "meta": {
            "mode": mode,
            "command": "python benchmarks/throughput.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "models": str(models),
            "loadavg_before": load0,
            "loadavg_after": os.getloadavg(),
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
            "python": platform.python_version(),
            "versions": {d: metadata.version(d) for d in ("numpy", "onnxruntime", "msgspec", "aiohttp")},
        },
        "engine": engine,
        "replay": replay,
        "decode": decode,
        "backtest": backtest,
    }
    r["meta"]["wall_s"] = time.perf_counter() - t_start
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(r, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    print(format_report(r))
    log(f"wrote {stem}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
