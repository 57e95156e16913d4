"""Issue 21 item 3: a bar close decided together vs one bar at a time, measured in the same run.

(a) `engine`: a bar-close burst of N symbols (default 500), engine only: `Engine.on_bars` (features and
    regime per symbol, one model call per routed tier, paper per symbol) vs `Engine.on_bar` per symbol
    (the baseline) on a twin engine in the same state; wall ms per close, p50/p99 (target <= 5 ms at 500).
(b) `service`: the real `bot.app.Service` against the replay exchange (same process, confirms only, no book
    pushes, no frame latency), ledger `synchronous = "full"`: per close, from the first confirm frame received
    to the last symbol's decision committed (and to all observers done), p50/p99 over the closes, at 50 / 200
    / 500 symbols; batched (`max_burst=None`) vs one bar at a time (`max_burst=1`, the baseline; fewer closes
    at 200 and 500 because each close takes seconds). Target <= 50 ms at 500. The ledger is seeded with
    every symbol's history (one transaction), so the service starts warm.
(c) `live`: one symbol, one bar at a time, no ledger: bars/s with every bar routed to the edge tier and with
    the family's own routes (targets >= 150,000 / >= 50,000); edge and research bar -> decision cold with the
    warm-up (one bar per `--gap-ms`, its partial rehearsed first) including encoding the log line, p50/p99
    (target edge <= 15 / <= 50 us) and research p50 / edge p50 (target >= 3x). The service's path for one
    symbol is `on_bars([bar])`; the baseline is `on_bar(bar)`.

Wall times on a shared machine: the load average is printed with the table; compare ratios within a run.

    .venv/bin/python benchmarks/burst.py --models /tmp/bench_models     # full, a few minutes
    .venv/bin/python benchmarks/burst.py --smoke                        # seconds, a tiny family
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _smoke import SMOKE_HELP, smoke_dir, tiny_family  # noqa: E402

from bot.app import Service  # noqa: E402
from bot.config import Config, engine_params  # noqa: E402
from bot.core.bars import Bar  # noqa: E402
from bot.core.decision import Decided, DecisionRecord, encode_line  # noqa: E402
from bot.core.engine import Engine  # noqa: E402
from bot.core.kernels import compiled  # noqa: E402
from bot.core.paper import PaperTrader  # noqa: E402
from bot.core.params import REGIME_NAMES  # noqa: E402
from bot.core.stream import PartialBar  # noqa: E402
from bot.ledger.writer import Ledger  # noqa: E402
from bot.models.family import TierFamily  # noqa: E402
from bot.observe import logs  # noqa: E402 (after the sys.path insert)
from bot.sim.synthetic import SyntheticMarket  # noqa: E402

DEFAULT_MODELS = Path(tempfile.gettempdir()) / "bench_models"
#: mode -> sizes
SIZES: dict[str, dict[str, Any]] = {
    "smoke": {
        "engine_symbols": 20,
        "engine_closes": 5,
        "service": [(10, 3, 3)],
        "live_bars": 2_000,
        "cold": 5,
        "gap_ms": 10.0,
    },
    "full": {
        "engine_symbols": 500,
        "engine_closes": 40,
        "service": [(50, 25, 25), (200, 25, 10), (500, 25, 6)],  # (symbols, closes batched, closes baseline)
        "live_bars": 60_000,
        "cold": 100,
        "gap_ms": 100.0,
    },
}
WARM_BARS = 120  # history before the measured closes: features need 49, the regime windows 48


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of `values`, nearest rank."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def _markets(n_symbols: int, n_bars: int) -> list[list[Bar]]:
    return [
        [s.bar for s in SyntheticMarket(seed=1000 + k, symbol=f"S{k:04d}USDT").generate(n_bars)]
        for k in range(n_symbols)
    ]


def _config(symbols: list[str], routes: dict[str, str] | str | None = None) -> Config:
    data: dict[str, Any] = msgspec.to_builtins(Config())
    data["market"]["symbols"] = symbols
    data["models"]["symbols"] = "any"
    if routes is not None:
        data["regime"]["routes"] = routes
    data.pop("logging")
    return msgspec.convert(data, Config)


# ---- (a) engine only ---------------------------------------------------------------------------------


def engine_part(family: TierFamily, n_symbols: int, n_closes: int) -> dict[str, Any]:
    """Wall ms of a close of `n_symbols` decided by `on_bars` vs `on_bar` per symbol (twin engines)."""
    markets = _markets(n_symbols, WARM_BARS + n_closes)
    cfg = _config([m[0].symbol for m in markets])
    batched = Engine(engine_params(cfg), family, PaperTrader(cfg.paper))
    single = Engine(engine_params(cfg), family, PaperTrader(cfg.paper))
    for t in range(WARM_BARS):
        bars = [m[t] for m in markets]
        batched.on_bars(bars, decide=[False] * n_symbols)
        single.replay(bars)
    clock = time.perf_counter_ns
    on_bars: list[float] = []
    on_bar: list[float] = []
    tiers: dict[str, int] = {}
    for t in range(WARM_BARS, WARM_BARS + n_closes):
        bars = [m[t] for m in markets]
        t0 = clock()
        got = batched.on_bars(bars)
        t1 = clock()
        expected = [single.on_bar(bar) for bar in bars]
        t2 = clock()
        on_bars.append((t1 - t0) / 1e6)
        on_bar.append((t2 - t1) / 1e6)
        for g, e in zip(got, expected, strict=True):
            assert g is not None
            assert e is not None
            assert msgspec.structs.replace(g, latency_us={}) == msgspec.structs.replace(e, latency_us={})
            tiers[g.tier] = tiers.get(g.tier, 0) + 1
    return {
        "symbols": n_symbols,
        "closes": n_closes,
        "tiers": tiers,
        "on_bars_ms": {"p50": pct(on_bars, 0.5), "p99": pct(on_bars, 0.99)},
        "on_bar_loop_ms": {"p50": pct(on_bar, 0.5), "p99": pct(on_bar, 0.99)},
    }


# ---- (b) through the service ------------------------------------------------------------------------


class _TimedService(Service):
    """The service, stamping when each decision is committed and when each burst's observers are done."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.first_recv: dict[int, int] = {}
        self.decided: dict[int, int] = {}
        self.observed: dict[int, int] = {}
        self.count: dict[int, int] = {}
        self.bursts: list[int] = []
        self.want: tuple[int, int] | None = None  # (symbols, closes) after which `enough` is set
        self.enough = asyncio.Event()

    def _on_bars(self, taken: list[tuple[Bar, int]], engine: Engine, ledger: Ledger) -> None:
        super()._on_bars(taken, engine, ledger)
        now = time.perf_counter_ns()
        self.bursts.append(len(taken))
        for bar, recv_ns in taken:
            k = bar.start_ms
            r = bar.recv_ns or recv_ns
            self.first_recv[k] = min(self.first_recv.get(k, r), r)
            self.observed[k] = max(self.observed.get(k, now), now)

    def _decided(self, decided: list[Decided]) -> None:
        """The burst's decisions are committed to the ledger and their log lines written."""
        now = time.perf_counter_ns()
        for d in decided:
            k = d.bar.start_ms
            self.decided[k] = max(self.decided.get(k, now), now)
            self.count[k] = self.count.get(k, 0) + 1
        if self.want is not None and sum(n == self.want[0] for n in self.count.values()) >= self.want[1]:
            self.enough.set()
        super()._decided(decided)


async def _service_run(
    models: Path, n_symbols: int, n_closes: int, *, max_burst: int | None, workdir: Path
) -> dict[str, Any]:
    """The service against the replay exchange running in a child process (`python -m bot replay-server`),
    as a real exchange is: the measured process does only the bot's work. The service backfills its
    history over REST (rate limits on), goes READY, and decides `n_closes` live closes."""
    symbols = [f"S{k:04d}USDT" for k in range(n_symbols)]
    bar_s = 1.0 if max_burst is None else max(1.0, n_symbols * 0.006)
    n_bars = WARM_BARS + 10 * n_closes + 300  # room for the backfill, start-up and slow closes
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "replay-server", "--port", "0", "--symbols", ",".join(symbols),
        "--bar-seconds", str(bar_s), "--updates-per-bar", "0", "--history-bars", str(WARM_BARS),
        "--max-bars", str(n_bars), "--latency-ms", "0", "--no-book",
        stdout=asyncio.subprocess.PIPE, cwd=str(ROOT),
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        ready = json.loads(await asyncio.wait_for(proc.stdout.readline(), 300))
        cfg = _config(symbols)
        data: dict[str, Any] = msgspec.to_builtins(cfg)
        data["exchange"].update(rest_url=ready["rest_url"], ws_url=ready["ws_url"], backfill_bars=WARM_BARS)
        data["ledger"]["path"] = str(workdir / f"ledger_{n_symbols}_{max_burst}.sqlite")
        data["models"]["dir"] = str(models)
        cfg = msgspec.convert(data, Config)
        assert cfg.ledger.synchronous == "full"
        service = _TimedService(cfg, max_burst=max_burst)
        stop = asyncio.Event()
        t_start = time.perf_counter()
        run = asyncio.create_task(service.run(stop))
        await service.ready_event.wait()
        ready_s = time.perf_counter() - t_start
        cpu0, wall0 = time.process_time(), time.perf_counter()
        service.want = (n_symbols, n_closes + 2)
        enough = asyncio.create_task(service.enough.wait())
        # a service that cannot keep up never decides enough full closes: report what it did decide
        await asyncio.wait([run, enough], timeout=bar_s * (4 * n_closes + 60), return_when="FIRST_COMPLETED")
        enough.cancel()
        cpu_s, wall_s = time.process_time() - cpu0, time.perf_counter() - wall0
        stop.set()
        summary = await run
    finally:
        proc.terminate()
        await proc.wait()
    full = sorted(k for k, n in service.count.items() if n == n_symbols)[1 : 1 + n_closes]
    decided = [(service.decided[k] - service.first_recv[k]) / 1e6 for k in full]
    observed = [(service.observed[k] - service.first_recv[k]) / 1e6 for k in full]
    closes_seen = max(1, len([k for k, n in service.count.items() if n == n_symbols]))
    return {
        "symbols": n_symbols,
        "max_burst": max_burst,
        "bar_seconds": bar_s,
        "closes": len(full),
        "ready_s": ready_s,
        "decisions": summary.decisions,
        "largest_burst": max(service.bursts, default=0),
        "cpu_share_live": cpu_s / wall_s,
        # CPU seconds per bar close, and what it would be as a share of one core at 1-minute bars
        "cpu_s_per_close": cpu_s / closes_seen,
        "cpu_share_at_1m_bars": cpu_s / closes_seen / 60.0,
        "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "decided_ms": {"p50": pct(decided, 0.5), "p99": pct(decided, 0.99)} if decided else None,
        "observed_ms": {"p50": pct(observed, 0.5), "p99": pct(observed, 0.99)} if observed else None,
    }


def service_part(models: Path, plan: list[tuple[int, int, int]]) -> list[dict[str, Any]]:
    devnull = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 (closed below)
    logs.configure_logging(level="warning", fmt="json", decisions_path=None, stream=devnull)
    out = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench_burst_") as tmp:
            for n_symbols, closes, closes_baseline in plan:
                for max_burst, closes_n in ((None, closes), (1, closes_baseline)):
                    out.append(
                        asyncio.run(
                            _service_run(models, n_symbols, closes_n, max_burst=max_burst, workdir=Path(tmp))
                        )
                    )
    finally:
        logs.configure_logging(level="info", fmt="json", stream=sys.stderr)
        devnull.close()
    return out


# ---- (c) one symbol, live path --------------------------------------------------------------------------


def _engine(family: TierFamily, routes: dict[str, str] | str | None) -> Engine:
    cfg = _config(["BTCUSDT"], routes)
    return Engine(engine_params(cfg), family, PaperTrader(cfg.paper))


def live_part(family: TierFamily, n_bars: int, n_cold: int, gap_ms: float) -> dict[str, Any]:
    """Bars/s one bar at a time (edge-only and the family's routes), and cold-with-warm-up latency."""
    bars = [
        s.bar for s in SyntheticMarket(seed=23, symbol="BTCUSDT").generate(WARM_BARS + n_bars + 2 * n_cold)
    ]
    warm, hot, cold = bars[:WARM_BARS], bars[WARM_BARS : WARM_BARS + n_bars], bars[WARM_BARS + n_bars :]
    everything = {r: "edge" for r in REGIME_NAMES}
    out: dict[str, Any] = {"rate": {}, "cold_warm_us": {}}
    paths: dict[str, Callable[[Engine, Bar], DecisionRecord | None]] = {
        "on_bar": lambda e, b: e.on_bar(b),
        "on_bars": lambda e, b: e.on_bars([b])[0],
    }
    for label, routes in (("edge", everything), ("routes", None)):
        for path, fn in paths.items():
            engine = _engine(family, routes)
            engine.replay(warm)
            t0, c0 = time.perf_counter(), time.process_time()
            for bar in hot:
                fn(engine, bar)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            out["rate"][f"{label}/{path}"] = {"bars_per_s": n_bars / wall, "bars_per_cpu_s": n_bars / cpu}
    devnull = open(os.devnull, "wb")  # noqa: SIM115 (closed below)
    try:
        for tier in ("edge", "research"):
            for path, fn in paths.items():
                engine = _engine(family, {r: tier for r in REGIME_NAMES})
                engine.replay(warm + hot)
                totals: list[float] = []
                for bar in cold:
                    time.sleep(gap_ms / 1e3)
                    engine.on_partial(PartialBar.of(bar, ts_ms=bar.start_ms + 299_000))
                    t0 = time.perf_counter_ns()
                    d = fn(engine, bar)
                    assert d is not None
                    devnull.write(encode_line(d, {"ledger": 0.0, "recv_to_decision": 0.0}))
                    totals.append((time.perf_counter_ns() - t0) / 1e3)
                out["cold_warm_us"][f"{tier}/{path}"] = {"p50": pct(totals, 0.5), "p99": pct(totals, 0.99)}
    finally:
        devnull.close()
    return out


# ---- table ----------------------------------------------------------------------------------------------


def table(res: dict[str, Any]) -> str:
    lines = [
        f"load average before/after: {res['load_before']} / {res['load_after']}; kernels compiled: "
        f"{res['compiled']}; tiers: {res['runtimes']}",
        "",
        "| figure | batched (item 3) | one at a time (baseline) | ratio | target |",
        "|---|---|---|---|---|",
    ]
    e = res["engine"]
    a, b = e["on_bars_ms"], e["on_bar_loop_ms"]
    lines.append(
        f"| (a) engine burst, {e['symbols']} symbols, ms p50 / p99 ({e['closes']} closes) | {a['p50']:.2f} / "
        f"{a['p99']:.2f} | {b['p50']:.2f} / {b['p99']:.2f} | {b['p50'] / a['p50']:.1f}x | <= 5 ms at 500 |"
    )
    runs = res["service"]
    for batched, single in zip(runs[::2], runs[1::2], strict=True):
        x, y = batched["decided_ms"], single["decided_ms"]
        xo = batched["observed_ms"]
        if x is None or y is None:
            lines.append(f"| (b) service, {batched['symbols']} symbols | no full close measured | | | |")
            continue
        lines.append(
            f"| (b) service, {batched['symbols']} symbols, first confirm -> last decided, ms p50 / p99 "
            f"({batched['closes']} / {single['closes']} closes; all observers done: {xo['p50']:.1f} / "
            f"{xo['p99']:.1f}) | {x['p50']:.1f} / {x['p99']:.1f} | {y['p50']:.1f} / {y['p99']:.1f} | "
            f"{y['p99'] / x['p99']:.1f}x | <= 50 ms at 500 |"
        )
    r = res["live"]["rate"]
    for label, target in (("edge", ">= 150,000"), ("routes", ">= 50,000")):
        bb, bs = r[f"{label}/on_bars"], r[f"{label}/on_bar"]
        lines.append(
            f"| (c) 1 symbol, 1 bar at a time, {label}, bars/s (per CPU s) | {bb['bars_per_s']:,.0f} "
            f"({bb['bars_per_cpu_s']:,.0f}) | {bs['bars_per_s']:,.0f} ({bs['bars_per_cpu_s']:,.0f}) | "
            f"{bb['bars_per_s'] / bs['bars_per_s']:.2f}x | {target} |"
        )
    c = res["live"]["cold_warm_us"]
    for tier, target in (("edge", "<= 15 / <= 50 us"), ("research", "")):
        cb, cs = c[f"{tier}/on_bars"], c[f"{tier}/on_bar"]
        lines.append(
            f"| (c) {tier} bar -> decision + log line, cold with warm-up, us p50 / p99 | {cb['p50']:.1f} / "
            f"{cb['p99']:.1f} | {cs['p50']:.1f} / {cs['p99']:.1f} | {cs['p50'] / cb['p50']:.2f}x | {target} |"
        )
    rb = c["research/on_bars"]["p50"] / c["edge/on_bars"]["p50"]
    rs = c["research/on_bar"]["p50"] / c["edge/on_bar"]["p50"]
    lines.append(f"| (c) research p50 / edge p50, same run | {rb:.2f}x | {rs:.2f}x | | >= 3x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP + "; a tiny family unless --models")
    ap.add_argument("--models", type=Path, default=None, help=f"tier family (default {DEFAULT_MODELS})")
    ap.add_argument("--out", type=Path, default=None, help="JSON results (default: printed only)")
    ap.add_argument("--parts", default="engine,service,live", help="comma-separated parts to run")
    args = ap.parse_args(argv)
    size = SIZES["smoke" if args.smoke else "full"]
    models = args.models or (tiny_family(smoke_dir("models")) if args.smoke else DEFAULT_MODELS)
    family = TierFamily.load(models)
    parts = set(args.parts.split(","))
    res: dict[str, Any] = {
        "load_before": [round(x, 2) for x in os.getloadavg()],
        "compiled": all(compiled().values()),
        "runtimes": {t.name: t.runtime for t in family},
    }
    if "engine" in parts:
        res["engine"] = engine_part(family, size["engine_symbols"], size["engine_closes"])
    if "service" in parts:
        res["service"] = service_part(models, size["service"])
    if "live" in parts:
        res["live"] = live_part(family, size["live_bars"], size["cold"], size["gap_ms"])
    res["load_after"] = [round(x, 2) for x in os.getloadavg()]
    if parts == {"engine", "service", "live"}:
        print(table(res))
    print(json.dumps(res, indent=1))
    if args.out is not None:
        args.out.write_text(json.dumps(res, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
