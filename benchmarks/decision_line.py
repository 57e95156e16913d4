"""The decision line: one msgspec encode of the DecisionRecord vs the old structlog processor chain.

Times, per record, over the same records in one run (hot loop, then cold: a sleep between records so the
caches go cold like live bars minutes apart):

- `encode`: `bot.core.decision.encode_line` alone (the issue-10 target is <= 5 us);
- `encode+write`: encode plus `logs.write_decision` to a real file (what the service does per bar);
- `structlog`: the pre-issue-10 path, `log.info("bar_decided", **fields)` through structlog's processors
  (contextvars, level, ISO timestamp, JSON renderer) to the same kind of file — the baseline.

    .venv/bin/python benchmarks/decision_line.py            # 20,000 hot + 300 cold records
    .venv/bin/python benchmarks/decision_line.py --quick    # 5,000 hot + 100 cold
    .venv/bin/python benchmarks/decision_line.py --smoke    # 200 hot + 5 cold, JSON in a temp dir

Prints a table (p50/p99 us and the ratio to the structlog baseline); writes docs/decision_line[_quick].json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _smoke import SMOKE_HELP, output_path  # noqa: E402 (benchmarks/, beside this script)

from bot.core.decision import DecisionRecord, encode_line  # noqa: E402
from bot.core.paper import Fill  # noqa: E402
from bot.observe import logs  # noqa: E402


def records(n: int) -> list[DecisionRecord]:
    rng = np.random.default_rng(7)
    out = []
    for i in range(n):
        fills = (
            (Fill("BTCUSDT", i * 300_000, 0, "buy", 0.1, 95_000.0, 9_500.0, 5.2, 0.0, "edge", "normal"),)
            if i % 7 == 0
            else ()
        )
        out.append(
            DecisionRecord(
                symbol="BTCUSDT",
                start_ms=1_735_689_600_000 + i * 300_000,
                source="ws",
                regime="normal",
                tier="edge",
                prediction=float(rng.normal(0, 1e-3)),
                signal=1,
                position=1,
                qty=0.1,
                fill_price=95_000.0 if fills else None,
                fee_usd=5.2 if fills else 0.0,
                realized_pnl_usd=float(rng.normal()),
                unrealized_pnl_usd=float(rng.normal()),
                equity_usd=float(rng.normal()),
                bar_pnl_usd=float(rng.normal()),
                holding_pnl_usd=float(rng.normal()),
                holding_tier="edge",
                holding_regime="normal",
                trade_pnl_usd=float(rng.normal()),
                close=95_000.0 + i,
                latency_us={
                    "features": 30.1,
                    "regime": 17.2,
                    "inference": 27.3,
                    "paper": 30.4,
                    "total": 105.0,
                },
                fills=fills,
            )
        )
    return out


def old_fields(d: DecisionRecord) -> dict[str, Any]:
    """The pre-issue-10 `log_fields()` dict plus the two extra fields the shell added."""
    return {
        "symbol": d.symbol,
        "start_ms": d.start_ms,
        "source": d.source,
        "regime": d.regime,
        "tier": d.tier,
        "prediction": d.prediction,
        "signal": d.signal,
        "position": d.position,
        "fill_price": d.fill_price,
        "fee_usd": d.fee_usd,
        "realized_pnl_usd": d.realized_pnl_usd,
        "unrealized_pnl_usd": d.unrealized_pnl_usd,
        "close": d.close,
        "latency_us": d.latency_us,
        "ledger_us": 40.0,
        "recv_to_decision_us": 150.0,
    }


def measure(recs: list[DecisionRecord], *, gap_s: float, path: Path) -> dict[str, list[float]]:
    clock = time.perf_counter_ns
    out: dict[str, list[float]] = {"encode": [], "encode+write": [], "structlog": []}
    extra = {"ledger": 40.0, "recv_to_decision": 150.0}
    with open(os.devnull, "w") as devnull:
        logs.configure_logging(fmt="json", decisions_path=path, stream=devnull)
        log = logs.get_logger(component="service")
        for d in recs:
            if gap_s:
                time.sleep(gap_s)
            t0 = clock()
            encode_line(d, extra)
            t1 = clock()
            out["encode"].append((t1 - t0) / 1e3)
            if gap_s:
                time.sleep(gap_s)
            t0 = clock()
            logs.write_decision(encode_line(d, extra))
            t1 = clock()
            out["encode+write"].append((t1 - t0) / 1e3)
            if gap_s:
                time.sleep(gap_s)
            fields = old_fields(d)
            t0 = clock()
            log.info(logs.BAR_DECIDED, **fields)
            t1 = clock()
            out["structlog"].append((t1 - t0) / 1e3)
        logs.close_logging()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hot", type=int, default=20_000)
    ap.add_argument("--cold", type=int, default=300)
    ap.add_argument("--gap-ms", type=float, default=50.0, help="sleep before each cold record")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--smoke", action="store_true", help=f"{SMOKE_HELP}: 200 hot + 5 cold records")
    ap.add_argument("--out", type=Path, default=None, help="JSON (default docs/decision_line[_quick].json)")
    args = ap.parse_args()
    if args.quick:
        args.hot, args.cold = 5_000, 100
    if args.smoke:
        args.hot, args.cold, args.gap_ms = 200, 5, 5.0
    recs = records(args.hot + args.cold)
    with tempfile.TemporaryDirectory() as tmp:
        hot = measure(recs[: args.hot], gap_s=0.0, path=Path(tmp) / "hot.jsonl")
        cold = measure(recs[args.hot :], gap_s=args.gap_ms / 1e3, path=Path(tmp) / "cold.jsonl")
    result: dict[str, Any] = {"command": " ".join(["benchmarks/decision_line.py", *sys.argv[1:]])}
    result["load_avg"] = os.getloadavg()
    print(f"{'mode':6s} {'path':14s} {'p50 us':>8s} {'p99 us':>8s} {'p50 vs structlog':>17s}")
    for mode, res in (("hot", hot), ("cold", cold)):
        base = float(np.percentile(res["structlog"], 50))
        result[mode] = {}
        for name, vals in res.items():
            p50, p99 = float(np.percentile(vals, 50)), float(np.percentile(vals, 99))
            result[mode][name] = {"p50_us": p50, "p99_us": p99, "n": len(vals)}
            print(f"{mode:6s} {name:14s} {p50:8.2f} {p99:8.2f} {p50 / base:16.2f}x")
    out = output_path(args.out, "decision_line", ".json", smoke=args.smoke, quick=args.quick)
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
