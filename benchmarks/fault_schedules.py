"""Random fault schedules: the real service against the replay exchange, many seeds, missing/doubled per seed.

Each seed draws a schedule of faults while a short market plays (drops at every stage, REST 10006 with and
without a reset header, 5xx, slow answers, the issue-15 chain "gap + REST rate limit + drop while the retry
waits", skipped, duplicated and late confirms) and runs the service through it like systemd would: if the
service exits (a stall ends in PipelineStalledError), it is restarted on the same ledger. At the end every
bar the exchange closed from the ledger's `live_from` on must be decided exactly once: `missing` counts
closed bars with no decision in the ledger or no line in the decision log, `doubled` counts decision log lines
for a bar already decided (and ledger rows twice), `unexpected` decisions of a bar the exchange never closed.

The multi-connection mode (`--multi`, issue 22) runs many symbols whose topics `[exchange] max_topics`
spreads over several websocket connections: it drops single connections (only those subscribed to a random
symbol's topic), several at once, connections at a handshake stage, confirms of single symbols (skipped,
duplicated, late), and puts REST errors in the way of the gap fills that follow a drop or a skipped
confirm. Every closed bar of every symbol is checked as above. Without a book (kline topics only).

    .venv/bin/python benchmarks/fault_schedules.py --seeds 50
    .venv/bin/python benchmarks/fault_schedules.py --quick      # 10 seeds
    .venv/bin/python benchmarks/fault_schedules.py --multi      # 200 symbols on 3 connections, 20 seeds
    .venv/bin/python benchmarks/fault_schedules.py --smoke      # 1 seed of 80 bars, then 20 symbols on 3
                                                                # connections for 1 seed: seconds

Writes docs/results/fault_schedules[_multi][_quick].json (smoke: a temp dir, or `--out`). Not a test: run it
by hand;
tests/test_fault_schedules.py runs one short multi-connection schedule.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import os
import random
import resource
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from bot.app import Service  # noqa: E402
from bot.config import Config  # noqa: E402
from bot.core.errors import BotError  # noqa: E402
from bot.ledger.writer import Ledger  # noqa: E402
from bot.observe import logs  # noqa: E402
from bot.sim.replay import ReplayExchange  # noqa: E402

sys.path.insert(0, str(REPO / "benchmarks"))
from _smoke import SMOKE_HELP, output_path  # noqa: E402

SYMBOL = "SYNTHUSDT"
FAULTS = ("drop", "drop_stage", "rest", "rest_then_drop", "gap_rest_drop", "skip", "dup", "late")
#: The multi-connection mode's faults; `drop_conn`, `rest_fill` and `gap_rest_drop` aim at one connection.
MULTI_FAULTS = (
    "drop_conn",
    "drop_conns",
    "drop_all",
    "drop_stage",
    "rest_fill",
    "gap_rest_drop",
    "skip",
    "dup",
    "late",
)
REST_FAULTS = ("10006", "10006_no_reset", "5xx", "slow")


@dataclasses.dataclass(frozen=True, slots=True)
class Scale:
    """What one seed runs: the symbols, how many topics a connection may carry, the bar pace.

    `pause_s`: (low, high) real seconds between two drawn faults.
    """

    symbols: tuple[str, ...] = (SYMBOL,)
    max_topics: int = 400
    bars: int = 150
    bar_seconds: float = 0.03
    restart_bars: int = 200
    pause_s: tuple[float, float] = (0.05, 0.5)

    @property
    def multi(self) -> bool:
        return len(self.symbols) > 1


def multi_scale(n_symbols: int, *, connections: int = 3, bars: int = 40, bar_seconds: float = 0.5) -> Scale:
    """`n_symbols` kline topics spread over `connections` websockets by `max_topics`; decision-lag restart
    after 6 s without progress, as in the single-symbol mode."""
    return Scale(
        symbols=tuple(f"S{i:03d}USDT" for i in range(n_symbols)),
        max_topics=max(2, math.ceil(n_symbols / connections)),
        bars=bars,
        bar_seconds=bar_seconds,
        restart_bars=max(10, math.ceil(6.0 / bar_seconds)),
        pause_s=(0.1, 1.0),
    )


def build_family(out: Path) -> Path:
    """A small real tier family (offline pipeline), built once per run."""
    from support import small_config

    from offline.pipeline import pipeline_distill

    pipeline_distill(small_config(), data="synthetic", out_dir=out, quick=True)
    return out


def run_config(ex: ReplayExchange, models: Path, out: Path, *, book: bool, scale: Scale) -> Config:
    from support import loop_config

    cfg = loop_config(ex.rest_url, ex.ws_url, models, out, symbol=SYMBOL, use_book=book, backfill_bars=100)
    if scale.multi:
        market = msgspec.structs.replace(cfg.market, symbols=list(scale.symbols))
        models_cfg = msgspec.structs.replace(cfg.models, symbols="any")
        cfg = msgspec.structs.replace(cfg, market=market, models=models_cfg)
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
        max_topics=scale.max_topics,
    )
    service = msgspec.structs.replace(
        cfg.service, decision_lag_warn_bars=3, decision_lag_restart_bars=scale.restart_bars
    )
    done: Config = msgspec.structs.replace(cfg, exchange=exchange, service=service)
    return done


async def _rest_hit_after(ex: ReplayExchange, seen: int, timeout_s: float) -> None:
    """Wait until the exchange served a REST request past the first `seen` (or `timeout_s` passed)."""
    deadline = time.monotonic() + timeout_s
    while len(ex.rest_hits) <= seen and time.monotonic() < deadline:  # noqa: ASYNC110 - polls exchange state
        await asyncio.sleep(0.005)


async def inject(ex: ReplayExchange, rng: random.Random, drawn: Counter[str], scale: Scale) -> None:
    """Draw and apply faults until the market is done."""
    if scale.multi:
        await inject_multi(ex, rng, drawn, scale)
        return
    while not ex.done.is_set():
        await asyncio.sleep(rng.uniform(*scale.pause_s))
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
                    await _rest_hit_after(ex, seen, 3.0)
                else:
                    await ex.drop_connections()
                    await _rest_hit_after(ex, seen, 3.0)
                await ex.drop_connections()
        elif kind == "skip":
            ex.skip_confirms(rng.randint(1, 3))
        elif kind == "dup":
            ex.duplicate_confirms(rng.randint(1, 3))
        else:
            ex.late_confirms(rng.randint(1, 3), lag_bars=rng.randint(1, 3))


async def inject_multi(ex: ReplayExchange, rng: random.Random, drawn: Counter[str], scale: Scale) -> None:
    """Draw and apply multi-connection faults until the market is done. A connection is aimed at by one of
    its symbols' kline topic: `drop_connections(topic=...)` drops only the connections subscribed to it."""

    def topic(symbol: str) -> str:
        return f"kline.{ex.interval}.{symbol}"

    async def drop_one() -> None:
        await ex.drop_connections(abort=rng.random() < 0.5, topic=topic(rng.choice(scale.symbols)))

    def rest_faults() -> int:
        fault = rng.choice(REST_FAULTS)
        value = rng.uniform(0.05, 0.5) if fault != "slow" else rng.uniform(0.05, 1.5)
        seen = len(ex.rest_hits)
        ex.rest_fault(fault, n=rng.randint(1, 3), value=value)  # type: ignore[arg-type]
        return seen

    while not ex.done.is_set():
        await asyncio.sleep(rng.uniform(*scale.pause_s))
        kind = rng.choice(MULTI_FAULTS)
        drawn[kind] += 1
        if kind == "drop_conn":
            await drop_one()
        elif kind == "drop_conns":
            for _ in range(rng.randint(2, 3)):
                await drop_one()
        elif kind == "drop_all":
            await ex.drop_connections(abort=rng.random() < 0.5)
        elif kind == "drop_stage":
            ex.drop_next(rng.randint(1, 3), stage=rng.choice(["handshake", "open", "subscribe"]))
            await drop_one()
        elif kind == "rest_fill":
            # The dropped connection's gap fill after its reconnect meets the REST errors; half the time it
            # is dropped again while the fill's retry waits.
            seen = rest_faults()
            symbol = rng.choice(scale.symbols)
            await ex.drop_connections(topic=topic(symbol))
            if rng.random() < 0.5:
                await _rest_hit_after(ex, seen, 3.0)
                await ex.drop_connections(topic=topic(symbol))
        elif kind == "gap_rest_drop":
            # The issue-15 chain on one connection: a symbol's confirm goes missing, its overdue fill meets
            # the REST errors, and its connection drops while the retry waits.
            symbol = rng.choice(scale.symbols)
            ex.skip_confirms(rng.randint(1, 2), symbol=symbol)
            seen = rest_faults()
            await _rest_hit_after(ex, seen, 3.0)
            await ex.drop_connections(topic=topic(symbol))
        elif kind == "skip":
            ex.skip_confirms(rng.randint(1, 3), symbol=rng.choice(scale.symbols))
        elif kind == "dup":
            ex.duplicate_confirms(rng.randint(1, 3), symbol=rng.choice(scale.symbols))
        else:
            symbol = rng.choice(scale.symbols)
            ex.late_confirms(rng.randint(1, 3), lag_bars=rng.randint(1, 3), symbol=symbol)


async def one_seed(
    seed: int, scale: Scale, models: Path, work: Path, timeout_s: float, *, log_dir: Path | None = None
) -> dict[str, Any]:
    """Run the service through seed `seed`'s fault schedule (restarting it when it exits) and count, per
    symbol, closed bars decided 0 or 2+ times (ledger and decision log). The service's log goes to
    `log_dir/seed{seed}.log` (None: nowhere)."""
    rng = random.Random(seed)
    book = rng.random() < 0.5 and not scale.multi  # drawn either way: a seed's schedule stays the same
    out = work / f"seed{seed}"
    out.mkdir()
    drawn: Counter[str] = Counter()
    restarts = 0
    exits: Counter[str] = Counter()
    connections = 0
    reconnects = 0
    excluded: set[str] = set()  # left out by a start-up backfill that failed
    t0 = time.perf_counter()
    async with ReplayExchange(
        symbols=scale.symbols,
        data="synthetic",
        seed=1000 + seed,
        bar_seconds=scale.bar_seconds,
        updates_per_bar=2,
        history_bars=200,
        max_bars=scale.bars,
        book=book,
    ) as ex:
        cfg = run_config(ex, models, out, book=book, scale=scale)
        last_closed: dict[str, int] = {}
        log_path = os.devnull if log_dir is None else log_dir / f"seed{seed}.log"
        with open(log_path, "w", encoding="utf-8") as log_file:  # noqa: ASYNC230 - before the service runs
            logs.configure_logging(fmt="json", decisions_path=cfg.logging.decisions_path, stream=log_file)
            faults = asyncio.create_task(inject(ex, rng, drawn, scale))
            deadline = time.monotonic() + timeout_s
            complete = False
            while not complete and time.monotonic() < deadline:
                service = Service(cfg)
                stop = asyncio.Event()
                task = asyncio.create_task(service.run(stop))

                def caught_up(svc: Service = service) -> bool:
                    if not ex.done.is_set():
                        return False
                    if not last_closed:
                        last_closed.update({s: ex.closed_keys(s)[-1] for s in scale.symbols})
                    left_out = svc.feed.excluded if svc.feed is not None else {}
                    for symbol, closed_ms in last_closed.items():
                        if symbol in left_out:  # not served by this run: the next start takes it up
                            continue
                        last = svc._last_seen.get(symbol)
                        if last is None or last < closed_ms:
                            return False
                    return True

                while not task.done() and not caught_up() and time.monotonic() < deadline:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
                complete = caught_up()
                if service.feed is not None:
                    connections = max(connections, len(service.feed.connections))
                    reconnects += service.feed.stats.reconnects
                    excluded.update(service.feed.excluded)
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
        closed = {s: ex.closed_keys(s) for s in scale.symbols}
        # kline requests (start-up backfills and gap fills) answered with an error (10006, HTTP 5xx)
        rest_errors = sum(
            h.path.endswith("/kline") and (h.status != 200 or bool(h.ret_code)) for h in ex.rest_hits
        )
    counts = exactly_once(out, closed)
    return {
        "seed": seed,
        "book": book,
        "faults": dict(drawn),
        **counts,
        "restarts": restarts,
        "exits": dict(exits),
        "complete": complete,
        "connections": connections,
        "reconnects": reconnects,
        "rest_errors": rest_errors,
        "excluded": sorted(excluded),
        "wall_s": round(time.perf_counter() - t0, 2),
    }


def exactly_once(out: Path, closed: dict[str, list[int]]) -> dict[str, Any]:
    """Check every symbol's closed bars (open times, from its ledger `live_from` on) against the ledger in
    `out` and its decision log. Returns the counts and up to 10 examples of each kind of violation as
    (symbol, start_ms)."""
    lines = [json.loads(x) for x in (out / "decisions.jsonl").read_text(encoding="utf-8").splitlines()]
    logged = Counter(
        (rec["symbol"], rec["start_ms"]) for rec in lines if rec.get("event") == logs.BAR_DECIDED
    )
    missing: list[tuple[str, int]] = []
    doubled: list[tuple[str, int]] = []
    unexpected: list[tuple[str, int]] = []
    n_expected = n_decided = n_doubled = 0
    ledger = Ledger.open(out / "ledger.sqlite")
    try:
        for symbol, keys in closed.items():
            decided = ledger.decided_keys(symbol)
            live_from = ledger.live_from(symbol)
            expected = {k for k in keys if live_from is not None and k >= live_from}
            n_expected += len(expected)
            n_decided += len(decided)
            seen = Counter(decided)
            missing += [(symbol, k) for k in sorted(expected) if not seen[k] or not logged[symbol, k]]
            twice = {k: n - 1 for k, n in seen.items() if n > 1}
            for k in {k for (s, k), n in logged.items() if s == symbol and n > 1}:
                twice[k] = twice.get(k, 0) + logged[symbol, k] - 1
            n_doubled += sum(twice.values())
            doubled += [(symbol, k) for k in sorted(twice)]
            unexpected += [(symbol, k) for k in sorted(seen.keys() - expected)]
    finally:
        ledger.close()
    unexpected += sorted((s, k) for s, k in logged if s not in closed)
    return {
        "closed": n_expected,
        "decided": n_decided,
        "missing": len(missing),
        "doubled": n_doubled,
        "unexpected": len(unexpected),
        "examples": {"missing": missing[:10], "doubled": doubled[:10], "unexpected": unexpected[:10]},
    }


async def run_seeds(
    scale: Scale, seeds: Sequence[int], models: Path, *, timeout_s: float, log_dir: Path | None = None
) -> dict[str, Any]:
    """Every seed of `seeds` at `scale`: one table row each as it finishes, then the totals, with the
    machine's load and this process's CPU (the replay exchange and the service run in it) over the run."""
    load_start = os.getloadavg()
    cpu0 = _cpu_s()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rows = []
        print(
            f"\n{len(scale.symbols)} symbol(s), max_topics {scale.max_topics}, {scale.bars} bars of "
            f"{scale.bar_seconds} s per seed"
        )
        print(
            f"{'seed':>5} {'book':>5} {'conns':>5} {'closed':>7} {'missing':>8} {'doubled':>8} "
            f"{'restarts':>9} {'reconn':>6} {'rest_err':>8} {'wall_s':>7}  faults"
        )
        for seed in seeds:
            row = await one_seed(seed, scale, models, work, timeout_s, log_dir=log_dir)
            rows.append(row)
            faults = " ".join(f"{k}={v}" for k, v in sorted(row["faults"].items()))
            print(
                f"{row['seed']:>5} {row['book']!s:>5} {row['connections']:>5} {row['closed']:>7} "
                f"{row['missing']:>8} {row['doubled']:>8} {row['restarts']:>9} {row['reconnects']:>6} "
                f"{row['rest_errors']:>8} {row['wall_s']:>7}  {faults}",
                flush=True,
            )
    wall_s = time.perf_counter() - t0
    total: Counter[str] = Counter()
    for row in rows:
        total.update(row["faults"])
    return {
        "command": " ".join(["benchmarks/fault_schedules.py", *sys.argv[1:]]),
        "symbols": len(scale.symbols),
        "max_topics": scale.max_topics,
        "connections": sorted({r["connections"] for r in rows}),
        "seeds": len(rows),
        "bars_per_seed": scale.bars,
        "bar_seconds": scale.bar_seconds,
        "closed_total": sum(r["closed"] for r in rows),
        "missing_total": sum(r["missing"] for r in rows),
        "doubled_total": sum(r["doubled"] for r in rows),
        "unexpected_total": sum(r["unexpected"] for r in rows),
        "incomplete_seeds": [r["seed"] for r in rows if not r["complete"]],
        "restarts_total": sum(r["restarts"] for r in rows),
        "reconnects_total": sum(r["reconnects"] for r in rows),
        "rest_errors_total": sum(r["rest_errors"] for r in rows),
        "excluded": {r["seed"]: r["excluded"] for r in rows if r["excluded"]},
        "exits_total": dict(sum((Counter(r["exits"]) for r in rows), Counter())),
        "faults_total": dict(total),
        "wall_s": round(wall_s, 1),
        "cpu_pct_of_one_core": round(100 * (_cpu_s() - cpu0) / wall_s, 1),
        "loadavg_start": [round(x, 2) for x in load_start],
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "cores": os.cpu_count(),
        "rows": rows,
    }


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def report(result: dict[str, Any], out: Path) -> bool:
    """Print the run's summary line, write its JSON to `out`; True when every bar was decided once."""
    print(
        f"\n{result['seeds']} seeds x {result['symbols']} symbol(s) on {result['connections']} "
        f"connection(s), "
        f"{result['closed_total']} closed bars: missing {result['missing_total']}, "
        f"doubled {result['doubled_total']}, unexpected {result['unexpected_total']}, "
        f"incomplete seeds {result['incomplete_seeds']}, restarts {result['restarts_total']}, "
        f"left out at a start (seed: symbols) {result['excluded']}; "
        f"wall {result['wall_s']} s, CPU {result['cpu_pct_of_one_core']}% of one core, "
        f"load {result['loadavg_start'][0]} -> {result['loadavg_end'][0]} on {result['cores']} cores"
    )
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    bad = (
        result["missing_total"]
        or result["doubled_total"]
        or result["unexpected_total"]
        or result["incomplete_seeds"]
    )
    return not bad


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=None, help="default 50 (--multi: 20)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument(
        "--bars", type=int, default=None, help="live bars the exchange closes per seed (150; --multi: 40)"
    )
    parser.add_argument("--timeout-s", type=float, default=None, help="per seed (60; --multi: 180)")
    parser.add_argument(
        "--restart-bars",
        type=int,
        default=None,
        help="[service] decision_lag_restart_bars (default: 6 s of bars without a decision, 200 at 0.03 s)",
    )
    parser.add_argument("--multi", action="store_true", help="many symbols on several connections")
    parser.add_argument("--symbols", type=int, default=200, help="with --multi")
    parser.add_argument(
        "--connections",
        type=int,
        default=3,
        help="with --multi: [exchange] max_topics = ceil(symbols / connections) forces the sharding",
    )
    parser.add_argument("--bar-seconds", type=float, default=None, help="real s per bar (0.03; --multi: 0.5)")
    parser.add_argument("--quick", action="store_true", help="10 seeds")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help=f"{SMOKE_HELP}: 1 seed of 80 bars, then 20 symbols on 3 connections for 1 seed of 20 bars",
    )
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--logs", type=Path, default=None, help="write each seed's service log to LOGS/seed{N}.log"
    )
    args = parser.parse_args()

    def scale_of(multi: bool, n_symbols: int, bars: int | None, connections: int) -> Scale:
        if multi:
            base = multi_scale(
                n_symbols, connections=connections, bars=bars or 40, bar_seconds=args.bar_seconds or 0.5
            )
        else:
            base = Scale(bars=bars or 150, bar_seconds=args.bar_seconds or 0.03)
            base = dataclasses.replace(base, restart_bars=math.ceil(6.0 / base.bar_seconds))
        return (
            base if args.restart_bars is None else dataclasses.replace(base, restart_bars=args.restart_bars)
        )

    runs: list[tuple[Scale, int, str]] = []
    if args.smoke:
        runs = [
            (scale_of(False, 1, 80, 1), 1, "fault_schedules"),
            (scale_of(True, 20, 20, 3), 1, "fault_schedules_multi"),
        ]
    elif args.multi:
        runs = [
            (
                scale_of(True, args.symbols, args.bars, args.connections),
                args.seeds or 20,
                "fault_schedules_multi",
            )
        ]
    else:
        runs = [(scale_of(False, 1, args.bars, 1), args.seeds or 50, "fault_schedules")]
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        models = build_family(Path(tmp) / "models")
        for scale, n_seeds, name in runs:
            timeout_s = args.timeout_s or (180.0 if scale.multi else 60.0)
            seeds = range(args.first_seed, args.first_seed + (10 if args.quick else n_seeds))
            result = asyncio.run(run_seeds(scale, seeds, models, timeout_s=timeout_s, log_dir=args.logs))
            out = args.out
            if out is not None and len(runs) > 1:
                out = out.with_stem(f"{out.stem}_{len(scale.symbols)}")
            path = output_path(out, name, ".json", smoke=args.smoke, quick=args.quick)
            ok = report(result, path) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
