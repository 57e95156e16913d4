"""`bot backtest`: parity with the live service, the prediction cache, outputs and their safety."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
import support

from bot.__main__ import main
from bot.app import Service
from bot.core.bars import Bar, interval_ms
from bot.core.decision import DecisionRecord, decode_line, encode_line
from bot.ledger.writer import Ledger
from bot.models.family import TierFamily
from bot.observe import logs
from bot.outputs import MARKER
from bot.sim.backtest import Backtest
from bot.sim.backtest_cache import compute
from bot.sim.csvbars import read_csv_arrays
from bot.sim.replay import ReplayExchange
from bot.sim.synthetic import SyntheticMarket
from offline.fetch import write_klines_csv

SYMBOLS = ("SYNTHUSDT", "OTHERUSDT")
#: The live-parity test's symbols (issue 21: decisions.jsonl equals the live records on 5 symbols).
FIVE = (*SYMBOLS, "THIRDUSDT", "FOURTHUSDT", "FIFTHUSDT")
STEP = interval_ms("5")


def synthetic_csvs(tmp: Path, n: int = 900, symbols: tuple[str, ...] = SYMBOLS) -> dict[str, Path]:
    """One `{SYMBOL}_5m.csv` per symbol, different seeds, in `tmp`."""
    tmp.mkdir(parents=True, exist_ok=True)
    out = {}
    for k, sym in enumerate(symbols):
        bars = [s.bar for s in SyntheticMarket(seed=41 + k, symbol=sym).generate(n)]
        path = tmp / f"{sym}_5m.csv"
        write_klines_csv(bars, path)
        out[sym] = path
    return out


def comparable(rec: DecisionRecord) -> dict[str, Any]:
    """Every field of a record but `latency_us` and `source`."""
    d: dict[str, Any] = msgspec.to_builtins(rec)
    del d["latency_us"], d["source"]
    return d


async def test_backtest_equals_the_live_service_field_by_field(trained_family: Path, tmp_path: Path) -> None:
    """Same bars of 5 symbols: the backtest's records (the kernel pass) equal the service's (vs the replay
    exchange) field by field but latency/source (each symbol's backtest warms on the bars the service
    backfilled for it; the merged order of several symbols is pinned against the per-bar engine below)."""
    csvs = synthetic_csvs(tmp_path / "data", symbols=FIVE)
    buf = io.StringIO()
    async with ReplayExchange(
        symbols=list(FIVE),
        data=tmp_path / "data",
        bar_seconds=0.006,
        updates_per_bar=1,
        history_bars=200,
        book=False,
    ) as ex:
        cfg = support.loop_config(
            ex.rest_url, ex.ws_url, trained_family, tmp_path, symbol=SYMBOLS[0], use_book=False
        )
        cfg = msgspec.structs.replace(
            cfg,
            market=msgspec.structs.replace(cfg.market, symbols=list(FIVE)),
            # one family (trained on SYNTHUSDT) serves every symbol here
            models=msgspec.structs.replace(cfg.models, symbols="any"),
            # a loaded CI machine may fall a few fast bars behind; that is not what this test pins
            service=msgspec.structs.replace(
                cfg.service, decision_lag_warn_bars=100, decision_lag_restart_bars=1000
            ),
        )
        logs.configure_logging(fmt="json", decisions_path=cfg.logging.decisions_path, stream=buf)
        try:
            service = Service(cfg, max_decisions=5 * 150)
            await asyncio.wait_for(service.run(asyncio.Event()), timeout=90)
        finally:
            logs.close_logging()
    live = [
        decode_line(line)
        for line in (tmp_path / "decisions.jsonl").read_text(encoding="utf-8").splitlines()
        if '"bar_decided"' in line
    ]
    assert len(live) == 5 * 150
    ledger = Ledger.open(cfg.ledger.path)
    try:
        spans = {s: (ledger.bars(s)[0].start_ms, ledger.live_from(s)) for s in FIVE}
    finally:
        ledger.close()
    starts = {s: [b.start_ms for b in support_bars(p)] for s, p in csvs.items()}
    results: dict[str, list[DecisionRecord]] = {}
    for sym in FIVE:
        first_ms, live_from = spans[sym]
        assert live_from is not None
        warm = starts[sym].index(live_from) - starts[sym].index(first_ms)
        last = max(r.start_ms for r in live if r.symbol == sym)
        bt = Backtest(
            cfg,
            [f"{sym}={csvs[sym]}"],
            trained_family,
            warmup_bars=warm,
            from_ms=live_from,
            to_ms=last + 1,
            check=True,  # every cached prediction is also recomputed through the live tier and compared
        )
        results[sym] = bt.run(cfg).records
    for sym in FIVE:
        mine = [comparable(r) for r in results[sym]]
        theirs = [comparable(r) for r in live if r.symbol == sym]
        assert len(mine) == len(theirs) > 100
        for a, b in zip(mine, theirs, strict=True):
            assert a == b
    assert {r.source for r in results[SYMBOLS[0]]} == {"backtest"}
    assert len({r.regime for r in live}) >= 2


@pytest.mark.parametrize("sizing", ["fixed", "vol_target"])
def test_the_kernel_pass_equals_the_per_bar_engine(trained_family: Path, tmp_path: Path, sizing: str) -> None:
    """`Backtest.run` (one regime and one paper kernel call per symbol) writes byte for byte the
    decisions.jsonl lines of `Engine.on_bar` per bar (latency aside), over 5 symbols merged in time, and its
    policy-only pass gives the per-time PnL those records sum to."""
    csvs = synthetic_csvs(tmp_path, n=800, symbols=FIVE)
    paper = {"sizing": sizing, "long_threshold_bps": 1.0, "short_threshold_bps": 1.0}
    cfg = support.small_config(paper=paper)
    bt = Backtest(cfg, [f"{s}={p}" for s, p in csvs.items()], trained_family, warmup_bars=150)
    kernel, per_bar = bt.run(cfg), bt.run_per_bar(cfg)
    assert len(kernel.records) == len(per_bar.records) > 5 * 500
    assert len({r.regime for r in kernel.records}) >= 2
    assert sum(len(r.fills) for r in kernel.records) > 50
    assert kernel.routes == per_bar.routes
    assert kernel.warmup_bars == per_bar.warmup_bars

    def line(r: DecisionRecord) -> bytes:
        return encode_line(msgspec.structs.replace(r, latency_us={}, source="x"))

    assert [line(r) for r in kernel.records] == [line(r) for r in per_bar.records]
    times, pnl = bt.policy_pnl(cfg)
    per_time: dict[int, float] = {}
    for r in per_bar.records:
        per_time[r.start_ms] = per_time.get(r.start_ms, 0.0) + r.bar_pnl_usd
    assert times.tolist() == sorted(per_time)
    assert pnl.tolist() == [per_time[t] for t in sorted(per_time)]


def support_bars(path: Path) -> list[Bar]:
    from bot.sim.csvbars import read_csv_bars

    return list(read_csv_bars(path))


def test_batched_predictions_equal_the_per_bar_path(trained_family: Path, tmp_path: Path) -> None:
    """One batched call per tier (both heads) gives exactly (float32) the per-bar `Tier.predict` answers."""
    csv = synthetic_csvs(tmp_path, n=700)[SYMBOLS[0]]
    bars = read_csv_arrays(csv)
    family = TierFamily.load(trained_family)
    batched = compute(bars, family, interval_ms=STEP, batched=True)
    single = compute(bars, family, interval_ms=STEP, batched=False)
    for tier in family.names:
        a, b = batched.predictions[tier], single.predictions[tier]
        assert np.array_equal(np.isnan(a), np.isnan(b))
        ok = ~np.isnan(a)
        assert ok.sum() > 600
        np.testing.assert_array_equal(a[ok], b[ok])
        va, vb = batched.vol_predictions[tier], single.vol_predictions[tier]
        np.testing.assert_array_equal(va[ok], vb[ok])  # the vol head too
        assert np.all(va[ok] > 0.0)
    assert batched.max_abs_diff == 0.0


def test_cached_vol_forecasts_leave_the_decisions_unchanged_without_onnx_per_bar(
    trained_family: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The backtest reads vol forecasts from the cache: its records equal those of a run that checks every
    cached answer (return and vol) against the live tier, while the live `predict_vol` is never called."""
    csv = synthetic_csvs(tmp_path, n=700)[SYMBOLS[0]]
    cfg = support.small_config()
    checked = Backtest(cfg, [f"{SYMBOLS[0]}={csv}"], trained_family, warmup_bars=200, check=True).run(cfg)
    bt = Backtest(cfg, [f"{SYMBOLS[0]}={csv}"], trained_family, warmup_bars=200)
    assert bt.family.has_vol_head

    def no_onnx(tier: str, x: Any) -> float | None:
        raise AssertionError(f"predict_vol of tier {tier} ran onnxruntime during the backtest")

    monkeypatch.setattr(bt.family, "predict_vol", no_onnx)
    cached = bt.run(cfg)
    assert len(cached.records) == len(checked.records) > 300
    assert [comparable(r) for r in cached.records] == [comparable(r) for r in checked.records]
    assert all(r.vol_forecast is not None and r.vol_forecast > 0.0 for r in cached.records)


def test_cli_writes_outputs_reuses_the_cache_and_refuses_foreign_out(
    trained_family: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Outputs and marker written; a rerun hits the cache; a foreign --out is refused untouched (exit 2)."""
    csvs = synthetic_csvs(tmp_path / "data", n=800)
    cfg_path = tmp_path / "cfg.toml"
    cfg_path.write_text(support.to_toml(support.small_config(models={"symbols": "any"})), encoding="utf-8")
    out = tmp_path / "bt"
    argv = [
        "backtest",
        "--config",
        str(cfg_path),
        *(x for p in csvs.values() for x in ("--data", str(p))),
        "--out",
        str(out),
        "--models",
        str(trained_family),
        "--warmup-bars",
        "100",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--compare-tiers",
    ]
    assert main(argv) == 0
    assert {p.name for p in out.iterdir()} >= {"decisions.jsonl", "report.json", MARKER}
    lines = (out / "decisions.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 * 700
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert set(report["symbols"]) == set(SYMBOLS)
    assert set(report["fixed_tiers"]) == set(TierFamily.load(trained_family).names)
    for key in ("bars", "ic", "hit_rate", "pnl_usd", "turnover", "max_drawdown_usd", "sharpe", "exposure"):
        assert key in report["total"]
    assert report["run"]["cache"]["hits"] == 0
    for sym in SYMBOLS:  # each symbol's own regime shares, as decided
        shares = report["symbols"][sym]["regime_share"]
        decided = [json.loads(x) for x in lines if json.loads(x)["symbol"] == sym]
        assert shares["crisis"] == pytest.approx(sum(d["regime"] == "crisis" for d in decided) / len(decided))
        assert sum(shares.values()) == pytest.approx(1.0)
    assert f"{SYMBOLS[0]} regimes: calm_trend" in capsys.readouterr().out
    assert main(argv) == 0  # replaces its own previous output
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["run"]["cache"]["hits"] == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bt.")]
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine", encoding="utf-8")
    capsys.readouterr()
    assert main([*argv[: argv.index("--out") + 1], str(foreign), *argv[argv.index("--out") + 2 :]]) == 2
    err = capsys.readouterr().err
    assert "not written by this command" in err
    assert "Traceback" not in err
    assert [p.name for p in foreign.iterdir()] == ["keep.txt"]
    missing = tmp_path / "nope.csv"
    assert main([*argv[:3], "--data", str(missing), "--out", str(tmp_path / "x")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
