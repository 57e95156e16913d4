"""Training for the whole exchange (issue 22 item 5): one pooled family over N symbols x D days of 5m bars.

For each N it runs, each in a fresh child process whose peak RSS is read with `os.wait4` (ru_maxrss):

- `build`: the pooled dataset of N symbols (`offline.data.load_pooled`, rows held once: offline/pooled.py),
  through the same selection the CLI uses (`offline.selection.choose`, `--symbols all --top N`);
- `distill`: the real `python -m offline distill --data DIR --symbols all --top N --quick` end to end (the
  data, the teacher and every student recipe, ONNX export with its parity check, the report), with
  `[distill] quick_epochs = --epochs` and the default `[tiers]`;
- `idle`: a child that imports what `build` imports and stops, the RSS floor both are read against.

The symbols are synthetic where real data is missing: `SyntheticMarket(seed=k)` bars written as klines
CSVs (`offline.fetch.write_klines_csv`) into `--data-dir` (kept, so a second run reuses them).

    nice -n 10 .venv/bin/python benchmarks/train_scale.py                      # 50 and 200 x 90 days
    nice -n 10 .venv/bin/python benchmarks/train_scale.py --symbols 50 --stages build
    .venv/bin/python benchmarks/train_scale.py --smoke                         # 3 symbols x 5 days
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _smoke import SMOKE_HELP, TINY_SHAPES  # noqa: E402

BARS_PER_DAY = 288


def write_symbols(data: Path, n: int, bars: int, log: Any) -> None:
    """`n` synthetic symbols of `bars` 5m bars as `S0000USDT_5m.csv`, ... (existing ones are kept)."""
    from bot.sim.synthetic import SyntheticMarket
    from offline.fetch import write_klines_csv

    data.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    made = 0
    for k in range(n):
        path = data / f"S{k:04d}USDT_5m.csv"
        if path.exists() and sum(1 for _ in path.open(encoding="utf-8")) == bars + 1:
            continue
        market = SyntheticMarket(seed=1000 + k, symbol=f"S{k:04d}USDT")
        write_klines_csv([s.bar for s in market.generate(bars)], path)
        made += 1
    log(f"data: {n} symbols x {bars} bars in {data} ({made} written, {time.perf_counter() - t0:.0f} s)")


def child(kind: str, data: Path, n: int, bars: int) -> None:
    """Run in the child: `idle` or `build`; prints one JSON line."""
    from bot.config import DistillConfig, SymbolSelection
    from offline.data import load_pooled
    from offline.selection import choose

    if kind == "idle":
        print(json.dumps({"rows": 0}))
        return
    t0 = time.perf_counter()
    chosen = choose(data, SymbolSelection(all=True, top=n))
    ds = load_pooled(list(chosen.paths), DistillConfig(), symbols=list(chosen.symbols), n_bars=bars)
    build_s = time.perf_counter() - t0
    arrays = (ds.X, ds.y, ds.log_vol, ds.har_X, ds.har_tod_X, ds.start_ms, ds.bar_index, ds.series)
    rows_bytes = sum(int(a.nbytes) for a in arrays if a is not None)
    bar_bytes = sum(int(getattr(b, "nbytes", 0)) for b in ds.series_bars or [])
    print(
        json.dumps({"rows": ds.n_rows, "build_s": build_s, "rows_bytes": rows_bytes, "bar_bytes": bar_bytes})
    )


def measure(cmd: list[str], env: dict[str, str] | None = None) -> tuple[dict[str, Any], float, float, str]:
    """Run `cmd`; (its last stdout JSON line or {}, wall s, peak RSS MiB, stderr tail)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall_s = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        text, tail = out.read().decode(), err.read().decode()[-2000:]
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}:\n{tail}")
    lines = [ln for ln in text.splitlines() if ln.startswith("{")]
    return (json.loads(lines[-1]) if lines else {}), wall_s, usage.ru_maxrss / 1024, tail


def distill_config(path: Path, bars: int, epochs: int, *, tiny: bool) -> Path:
    tiers = ""
    if tiny:
        names = ("research", "staging", "production", "edge")
        shapes = zip(names, TINY_SHAPES, strict=True)
        tiers = "".join(f"[tiers.{n}]\nlayers = {lay}\nwidth = {w}\n" for n, (lay, w) in shapes)
    path.write_text(f"{tiers}[distill]\nquick_bars = {bars}\nquick_epochs = {epochs}\n", encoding="utf-8")
    return path


def run_n(n: int, args: argparse.Namespace, data: Path, work: Path, log: Any) -> dict[str, Any]:
    bars = int(args.days * BARS_PER_DAY)
    me = [sys.executable, str(Path(__file__).resolve()), "--data-dir", str(data)]
    row: dict[str, Any] = {"symbols": n, "days": args.days, "bars": bars}
    if "build" in args.stages:
        _, _, idle_mib, _ = measure([*me, "--child", "idle"])
        got, wall_s, rss_mib, _ = measure([*me, "--child", "build", "--n", str(n), "--bars", str(bars)])
        row.update(
            rows=got["rows"],
            build_s=got["build_s"],
            build_rows_per_s=got["rows"] / got["build_s"],
            build_rss_mib=rss_mib,
            idle_rss_mib=idle_mib,
            rows_mib=got["rows_bytes"] / 2**20,
            bars_mib=got["bar_bytes"] / 2**20,
        )
        log(f"build {n}: {json.dumps(row)}")
    if "distill" in args.stages:
        cfg = distill_config(work / f"c{n}.toml", bars, args.epochs, tiny=args.smoke)
        out = work / f"models{n}"
        cmd = [sys.executable, "-m", "offline", "distill", "--config", str(cfg), "--data", str(data)]
        cmd += ["--symbols", "all", "--top", str(n), "--quick", "--no-progress", "--out", str(out)]
        _, wall_s, rss_mib, _ = measure(cmd, env={**os.environ, "PYTHONPATH": str(REPO)})
        report = json.loads((out / "current" / "report.json").read_text(encoding="utf-8"))
        info = report["info"]
        split_rows = sum(int(info.get(k) or 0) for k in ("train_rows", "val_rows", "test_rows"))
        rows = int(row.get("rows") or split_rows)  # without the build stage: the rows in the splits
        row.update(
            distill_s=wall_s,
            distill_rss_mib=rss_mib,
            distill_rows=rows,
            distill_rows_per_s=rows / wall_s if rows else None,
            epochs=args.epochs,
            dataset_s=report["info"].get("dataset_s"),
        )
        log(f"distill {n}: {json.dumps(row)}")
    return row


def table(rows: list[dict[str, Any]], load: tuple[float, float, float]) -> str:
    def f(v: Any, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    lines = [
        "| symbols x days | rows | build s | build rows/s | build peak RSS MiB | rows MiB | bars MiB "
        "| idle RSS MiB | distill s | distill rows/s | distill peak RSS MiB | epochs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['symbols']} x {r['days']:g} | {f(r.get('rows') or r.get('distill_rows'), ',')} "
            f"| {f(r.get('build_s'), '.1f')} | {f(r.get('build_rows_per_s'), ',.0f')} "
            f"| {f(r.get('build_rss_mib'), ',.0f')} | {f(r.get('rows_mib'), ',.0f')} "
            f"| {f(r.get('bars_mib'), ',.0f')} "
            f"| {f(r.get('idle_rss_mib'), ',.0f')} | {f(r.get('distill_s'), '.0f')} "
            f"| {f(r.get('distill_rows_per_s'), ',.0f')} | {f(r.get('distill_rss_mib'), ',.0f')} "
            f"| {f(r.get('epochs'), 'd')} |"
        )
    lines.append(
        f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} cores)"
    )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--symbols", default="50,200", help="comma list of symbol counts (default 50,200)")
    p.add_argument("--days", type=float, default=90.0, help="days of 5m bars per symbol (default 90)")
    p.add_argument("--epochs", type=int, default=1, help="epochs per model in the distill stage (default 1)")
    p.add_argument("--stages", default="build,distill", help="build, distill or both (default both)")
    p.add_argument("--data-dir", default=None, help="synthetic CSVs (default: $TMPDIR/train_scale_data)")
    p.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    p.add_argument("--child", choices=("idle", "build"), default=None, help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--bars", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    data = Path(args.data_dir or Path(tempfile.gettempdir()) / "train_scale_data")
    if args.child is not None:
        child(args.child, data, args.n, args.bars)
        return 0
    with tempfile.TemporaryDirectory(prefix="train_scale_") as tmp:
        if args.smoke:
            args.symbols, args.days, args.epochs = "3", 5.0, 1
            data = Path(tmp) / "data"
        return run(args, data, Path(tmp))


def run(args: argparse.Namespace, data: Path, work: Path) -> int:
    counts = [int(x) for x in args.symbols.split(",")]

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    write_symbols(data, max(counts), int(args.days * BARS_PER_DAY), log)
    rows = [run_n(n, args, data, work, log) for n in counts]
    print(table(rows, os.getloadavg()))
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
