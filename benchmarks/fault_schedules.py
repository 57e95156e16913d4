"""Random fault schedules: the real service against the replay exchange, many seeds, missing/doubled per seed.

Each seed draws a schedule of faults while a short market plays (drops at every stage, REST 10006 with and
without a reset header, 5xx, slow answers, the issue-15 chain "gap + REST rate limit + drop while the retry
waits", skipped, duplicated and late confirms) and runs the service through it like systemd would: if the
service exits (a stall ends in PipelineStalledError), it is restarted on the same ledger. At the end every
bar the exchange closed from the ledger's `live_from` on must be decided exactly once: `missing` counts
closed bars with no decision, `doubled` counts decision log lines for a bar already decided.

    .venv/bin/python benchmarks/fault_schedules.py --seeds 50
    .venv/bin/python benchmarks/fault_schedules.py --quick      # 10 seeds
    .venv/bin/python benchmarks/fault_schedules.py --smoke      # 1 seed of 80 bars: seconds

Writes docs/fault_schedules[_quick].json (smoke: a temp dir, or `--out`). Not a test: run it by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from bot import logs  # noqa: E402
from bot.app import Service  # noqa: E402
from bot.config import Config  # noqa: E402
from bot.core.errors import BotError  # noqa: E402
from bot.ledger import Ledger  # noqa: E402
from bot.sim.replay import ReplayExchange  # noqa: E402

sys.path.insert(0, str(REPO / "benchmarks"))
from _smoke import SMOKE_HELP, output_path  # noqa: E402

SYMBOL = "SYNTHUSDT"
FAULTS = ("drop", "drop_stage", "rest", "rest_then_drop", "gap_rest_drop", "skip", "dup", "late")


def build_family(out: Path) -> Path:
    """A small real tier family (offline pipeline), built once per run."""
    from support import small_config

    from offline.pipeline import pipeline_distill

    pipeline_distill(small_config(), data="synthetic", out_dir=out, quick=True)
    return out


def run_config(ex: ReplayExchange, models: Path, out: Path, *, book: bool, restart_bars: int) -> Config:
    from support import loop_config

    cfg = loop_config(ex.rest_url, ex.ws_url, models, out, symbol=SYMBOL, use_book=book, backfill_bars=100)
    exchange = msgspec.structs.replace(
        cfg.exchange,
        rest_timeout_s=1.0,
        rest_max_retries=3,
        rest_backoff_initial_s=0.01,
        rest_backoff_max_s=0.3,
        reconnect_backoff_initial_s=0.01,
        reconnect_backoff_max_s=0.1,
        ping_interval_s=0.5,
        stale_feed_s=2.0,
        bar_overdue_s=0.3,
        healthy_reset_s=0.5,
    )
    service = msgspec.structs.replace(
        cfg.service, decision_lag_warn_bars=3, decision_lag_restart_bars=restart_bars
    )
    return msgspec.structs.replace(cfg, exchange=exchange, service=service)


async def _until(pred: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred() and time.monotonic() < deadline:  # noqa: ASYNC110 - polls exchange state
        await asyncio.sleep(0.005)


async def inject(ex: ReplayExchange, rng: random.Random, drawn: Counter[str]) -> None:
    """Draw and apply faults until the market is done."""
    while not ex.done.is_set():
        await asyncio.sleep(rng.uniform(0.05, 0.5))
        kind = rng.choice(FAULTS)
        drawn[kind] += 1
        if kind == "drop":
            await ex.drop_connections(abort=rng.random() < 0.5)
        elif kind == "drop_stage":
            ex.drop_next(rng.randint(1, 3), stage=rng.choice(["handshake", "open", "subscribe"]))
            await ex.drop_connections()
        elif kind in ("rest", "rest_then_drop", "gap_rest_drop"):
            if kind == "gap_rest_drop":
                ex.skip_confirms(rng.randint(1, 2))
            fault = rng.choice(["10006", "10006_no_reset", "5xx", "slow"])
            value = rng.uniform(0.05, 0.5) if fault != "slow" else rng.uniform(0.05, 1.5)
            seen = len(ex.rest_hits)
            ex.rest_fault(fault, n=rng.randint(1, 3), value=value)  # type: ignore[arg-type]
            if kind != "rest":
                if kind == "gap_rest_drop":
                    await _until(lambda n=seen: len(ex.rest_hits) > n, 3.0)
                else:
                    await ex.drop_connections()
                    await _until(lambda n=seen: len(ex.rest_hits) > n, 3.0)
                await ex.drop_connections()
        elif kind == "skip":
            ex.skip_confirms(rng.randint(1, 3))
        elif kind == "dup":
            ex.duplicate_confirms(rng.randint(1, 3))
        else:
            ex.late_confirms(rng.randint(1, 3), lag_bars=rng.randint(1, 3))


async def one_seed(
    seed: int, bars: int, models: Path, work: Path, timeout_s: float, restart_bars: int
) -> dict[str, Any]:
    rng = random.Random(seed)
    book = rng.random() < 0.5
    out = work / f"seed{seed}"
    out.mkdir()
    drawn: Counter[str] = Counter()
    restarts = 0
    exits: Counter[str] = Counter()
    t0 = time.perf_counter()
    async with ReplayExchange(
        symbols=[SYMBOL],
        data="synthetic",
        seed=1000 + seed,
        bar_seconds=0.03,
        updates_per_bar=2,
        history_bars=200,
        max_bars=bars,
        book=book,
    ) as ex:
        cfg = run_config(ex, models, out, book=book, restart_bars=restart_bars)
        with open(os.devnull, "w") as devnull:  # noqa: ASYNC230 - /dev/null
            logs.configure_logging(fmt="json", decisions_path=cfg.logging.decisions_path, stream=devnull)
            faults = asyncio.create_task(inject(ex, rng, drawn))
            deadline = time.monotonic() + timeout_s
            complete = False
            while not complete and time.monotonic() < deadline:
                service = Service(cfg)
                stop = asyncio.Event()
                task = asyncio.create_task(service.run(stop))

                def caught_up(svc: Service = service) -> bool:
                    last = svc._last_seen.get(SYMBOL)
                    return ex.done.is_set() and last is not None and last >= ex.closed_keys(SYMBOL)[-1]

                while not task.done() and not caught_up() and time.monotonic() < deadline:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
                complete = caught_up()
                stop.set()
                try:
                    await asyncio.wait_for(task, timeout=10)
                except (BotError, ExceptionGroup) as exc:
                    leaf = exc.exceptions[0] if isinstance(exc, ExceptionGroup) else exc
                    exits[f"{type(leaf).__name__}: {str(leaf)[:80]}"] += 1
                if not complete:
                    restarts += 1
            faults.cancel()
            logs.close_logging()
        closed = ex.closed_keys(SYMBOL)
    ledger = Ledger.open(out / "ledger.sqlite")
    try:
        decided = ledger.decided_keys(SYMBOL)
        live_from = ledger.live_from(SYMBOL)
    finally:
        ledger.close()
    lines = [json.loads(x) for x in (out / "decisions.jsonl").read_text(encoding="utf-8").splitlines()]
    logged = Counter(rec["start_ms"] for rec in lines if rec.get("event") == logs.BAR_DECIDED)
    expected = [k for k in closed if live_from is not None and k >= live_from]
    return {
        "seed": seed,
        "book": book,
        "faults": dict(drawn),
        "closed": len(expected),
        "decided": len(decided),
        "missing": len(set(expected) - set(decided)),
        "doubled": sum(n - 1 for n in logged.values() if n > 1) + len(decided) - len(set(decided)),
        "restarts": restarts,
        "exits": dict(exits),
        "complete": complete,
        "wall_s": round(time.perf_counter() - t0, 2),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        models = build_family(work / "models")
        rows = []
        print(
            f"{'seed':>5} {'book':>5} {'closed':>7} {'missing':>8} {'doubled':>8} {'restarts':>9} "
            f"{'wall_s':>7}  faults"
        )
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            row = await one_seed(seed, args.bars, models, work, args.timeout_s, args.restart_bars)
            rows.append(row)
            faults = " ".join(f"{k}={v}" for k, v in sorted(row["faults"].items()))
            print(
                f"{row['seed']:>5} {row['book']!s:>5} {row['closed']:>7} {row['missing']:>8} "
                f"{row['doubled']:>8} {row['restarts']:>9} {row['wall_s']:>7}  {faults}",
                flush=True,
            )
    total: Counter[str] = Counter()
    for row in rows:
        total.update(row["faults"])
    return {
        "command": " ".join(["benchmarks/fault_schedules.py", *sys.argv[1:]]),
        "seeds": len(rows),
        "bars_per_seed": args.bars,
        "closed_total": sum(r["closed"] for r in rows),
        "missing_total": sum(r["missing"] for r in rows),
        "doubled_total": sum(r["doubled"] for r in rows),
        "incomplete_seeds": [r["seed"] for r in rows if not r["complete"]],
        "restarts_total": sum(r["restarts"] for r in rows),
        "exits_total": dict(sum((Counter(r["exits"]) for r in rows), Counter())),
        "faults_total": dict(total),
        "rows": rows,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--bars", type=int, default=150, help="live bars the exchange closes per seed")
    parser.add_argument("--timeout-s", type=float, default=60.0, help="per seed")
    parser.add_argument(
        "--restart-bars",
        type=int,
        default=200,
        help="[service] decision_lag_restart_bars; at 0.03 s per bar, 200 bars are 6 s of no decision",
    )
    parser.add_argument("--quick", action="store_true", help="10 seeds")
    parser.add_argument("--smoke", action="store_true", help=f"{SMOKE_HELP}: 1 seed of 80 bars")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.seeds = 10
    if args.smoke:
        args.seeds, args.bars = 1, 80
    result = asyncio.run(main_async(args))
    print(
        f"\n{result['seeds']} seeds, {result['closed_total']} closed bars: "
        f"missing {result['missing_total']}, "
        f"doubled {result['doubled_total']}, incomplete seeds {result['incomplete_seeds']}, "
        f"restarts {result['restarts_total']}"
    )
    out = output_path(args.out, "fault_schedules", ".json", smoke=args.smoke, quick=args.quick)
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    bad = result["missing_total"] or result["doubled_total"] or result["incomplete_seeds"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
