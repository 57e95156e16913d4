"""Hot reload under load: 20 reloads while the replay exchange closes one bar every 10 ms.

The real service runs against the replay exchange (real HTTP + websocket on 127.0.0.1, a real SQLite ledger,
real ONNX families). Two versions of one trained family (different manifests, so different `model_sha`) sit
side by side in a models directory; each round promotes the other one and sends the process a real SIGHUP
(what `systemctl reload` does), then waits for the switch and a few more decisions. At the end:

- `missing` / `doubled`: closed bars from the ledger's `live_from` on with no decision, and bars decided more
  than once (ledger keys and decision-log lines);
- `mixed`: decisions whose `model_sha` is not the version current when the switch line says it was;
- the switch cost: `recv_to_decision` latency (websocket frame -> decision, which includes the switch) of the
  bars a switch landed on, against the median of every other bar in the same run, and the time of the
  switch call itself (`Engine.swap_family`, timed around the service's own call).

    .venv/bin/python benchmarks/reload_bench.py               # 20 reloads at 10 ms per bar
    .venv/bin/python benchmarks/reload_bench.py --quick       # 5 reloads
    .venv/bin/python benchmarks/reload_bench.py --smoke       # 2 reloads, 5 bars apart: seconds

Writes docs/results/reload_bench[_quick].json (smoke: a temp dir, or `--out`). Not a test: run it by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from bot.app import Service, install_signal_handlers  # noqa: E402
from bot.core.decision import decode_line  # noqa: E402
from bot.core.engine import Engine  # noqa: E402
from bot.core.predictor import Predictor  # noqa: E402
from bot.ledger.writer import Ledger  # noqa: E402
from bot.models import store as modelstore  # noqa: E402 (after the sys.path insert)
from bot.models.family import TierFamily  # noqa: E402
from bot.observe import logs  # noqa: E402
from bot.sim.replay import ReplayExchange  # noqa: E402

sys.path.insert(0, str(REPO / "benchmarks"))
from _smoke import SMOKE_HELP, output_path  # noqa: E402

SYMBOL = "SYNTHUSDT"
BAR_S = 0.01


def build_store(work: Path) -> Path:
    """A models directory with two versions of one real family (offline pipeline), `a` current."""
    from support import small_config

    from offline.pipeline import pipeline_distill

    trained = work / "trained"
    pipeline_distill(small_config(), data="synthetic", out_dir=trained, quick=True)
    family = modelstore.resolve(trained)
    store = work / "models"
    store.mkdir()
    for name in ("a", "b"):
        dst = store / name
        shutil.copytree(family, dst)
        manifest = json.loads((dst / "manifest.json").read_text(encoding="utf-8"))
        manifest["provenance"]["note"] = f"reload benchmark version {name}"
        (dst / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    modelstore.promote(store, "a")
    return store


class SwapTimer:
    """Times `Engine.swap_family` around the service's own call (the code that runs is unchanged)."""

    def __init__(self) -> None:
        self.us: list[float] = []
        self._orig = Engine.swap_family

    def __enter__(self) -> SwapTimer:
        orig = self._orig
        timings = self.us

        def timed(engine: Engine, family: Predictor) -> None:
            t0 = time.perf_counter_ns()
            try:
                orig(engine, family)
            finally:
                timings.append((time.perf_counter_ns() - t0) / 1e3)

        Engine.swap_family = timed  # type: ignore[method-assign,assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        Engine.swap_family = self._orig  # type: ignore[method-assign]


def events(buf: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(x) for x in buf.getvalue().splitlines() if x.startswith("{")]


async def until(pred: Any, timeout_s: float = 30.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not pred():  # noqa: ASYNC110 - polls the log buffer
            await asyncio.sleep(0.005)


async def run(reloads: int, settle_bars: int, work: Path) -> dict[str, Any]:
    from support import loop_config

    store = build_store(work)
    shas = {v: TierFamily.load(store / v).model_sha for v in ("a", "b")}
    state = work / "state"
    buf = io.StringIO()
    max_bars = 200 + (reloads + 2) * (settle_bars + 40)
    async with ReplayExchange(
        symbols=[SYMBOL],
        data="synthetic",
        seed=23,
        bar_seconds=BAR_S,
        updates_per_bar=1,
        history_bars=200,
        max_bars=max_bars,
        book=False,
    ) as ex:
        base = loop_config(ex.rest_url, ex.ws_url, store, state, use_book=False, synchronous="normal")
        cfg = msgspec.structs.replace(base, models=msgspec.structs.replace(base.models, reload_poll_s=0.0))
        logs.configure_logging(fmt="json", decisions_path=cfg.logging.decisions_path, stream=buf)
        service = Service(cfg)
        stop = asyncio.Event()
        t0 = time.perf_counter()
        with SwapTimer() as swaps:
            task = asyncio.create_task(service.run(stop))
            try:
                await asyncio.wait_for(service.ready_event.wait(), timeout=60)
                install_signal_handlers(stop, service)
                current = "a"
                for _ in range(reloads):
                    target = service.summary.decisions + settle_bars
                    await until(lambda t=target: service.summary.decisions >= t)
                    current = "b" if current == "a" else "a"
                    modelstore.promote(store, current)
                    n_switched = sum(e["event"] == logs.MODEL_SWITCHED for e in events(buf))
                    os.kill(os.getpid(), signal.SIGHUP)
                    await until(
                        lambda n=n_switched: sum(e["event"] == logs.MODEL_SWITCHED for e in events(buf)) > n
                    )
                target = service.summary.decisions + settle_bars
                await until(lambda t=target: service.summary.decisions >= t)
                await until(lambda: ex.done.is_set(), timeout_s=120)
                last_closed = ex.closed_keys(SYMBOL)[-1]
                await until(lambda: (service._last_seen.get(SYMBOL) or 0) >= last_closed)
            finally:
                stop.set()
                await asyncio.wait_for(task, timeout=30)
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
                logs.close_logging()
        wall_s = time.perf_counter() - t0
        closed = ex.closed_keys(SYMBOL)

    with Ledger.open(state / "ledger.sqlite") as led:
        decided = led.decided_keys(SYMBOL)
        live_from = led.live_from(SYMBOL)
    records = [
        decode_line(x)
        for x in (state / "decisions.jsonl").read_text(encoding="utf-8").splitlines()
        if '"bar_decided"' in x
    ]
    logged = Counter(r.start_ms for r in records)
    expected = [k for k in closed if live_from is not None and k >= live_from]
    switched = [e for e in events(buf) if e["event"] == logs.MODEL_SWITCHED]
    refused = [e for e in events(buf) if e["event"] == logs.MODEL_RELOAD_REFUSED]

    # every record after a switch carries the switched-to sha, until the next switch
    boundaries = sorted((e["from_start_ms"], e["model_sha"]) for e in switched)
    mixed = 0
    for r in records:
        active = shas["a"][:12]
        for start_ms, sha in boundaries:
            if r.start_ms >= start_ms:
                active = sha
        mixed += r.model_sha[:12] != active

    switch_bars = {e["from_start_ms"] for e in switched}
    lat_switch = [r.latency_us["recv_to_decision"] for r in records if r.start_ms in switch_bars]
    lat_other = [r.latency_us["recv_to_decision"] for r in records if r.start_ms not in switch_bars]
    median_other = statistics.median(lat_other)
    p99_other = statistics.quantiles(lat_other, n=100)[98]
    added = [x - median_other for x in lat_switch]
    return {
        "reloads_requested": reloads,
        "switched": len(switched),
        "refused": len(refused),
        "bar_s": BAR_S,
        "closed_live": len(expected),
        "decided": len(decided),
        "missing": len(set(expected) - set(decided)),
        "doubled": sum(n - 1 for n in logged.values() if n > 1) + len(decided) - len(set(decided)),
        "mixed": mixed,
        "recv_to_decision_us_other_median": round(median_other, 1),
        "recv_to_decision_us_other_p99": round(p99_other, 1),
        "recv_to_decision_us_switch_bars": [round(x, 1) for x in lat_switch],
        "switch_added_us_median": round(statistics.median(added), 1),
        "switch_added_us_max": round(max(added), 1),
        "swap_family_us_median": round(statistics.median(swaps.us), 1),
        "swap_family_us_max": round(max(swaps.us), 1),
        "wall_s": round(wall_s, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reloads", type=int, default=20)
    parser.add_argument("--settle-bars", type=int, default=15, help="decisions between reloads")
    parser.add_argument("--quick", action="store_true", help="5 reloads, written to reload_bench_quick.json")
    parser.add_argument("--smoke", action="store_true", help=f"{SMOKE_HELP}: 2 reloads, 5 decisions apart")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.reloads = 5
    if args.smoke:
        args.reloads, args.settle_bars = 2, 5
    args.out = output_path(args.out, "reload_bench", ".json", smoke=args.smoke, quick=args.quick)
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(run(args.reloads, args.settle_bars, Path(tmp)))
    result["load_1m"] = round(os.getloadavg()[0], 2)
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    ok = result["missing"] == 0 and result["doubled"] == 0 and result["mixed"] == 0
    fast = result["switch_added_us_median"] < 1000 and result["swap_family_us_max"] < 1000
    print(f"target: 0 missed/doubled/mixed across {args.reloads} reloads: {'PASS' if ok else 'FAIL'}")
    print(f"target: the switch adds < 1 ms to its bar: {'PASS' if fast else 'FAIL'}")
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
