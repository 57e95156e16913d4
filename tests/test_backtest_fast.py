"""`bot backtest`'s array paths: decisions.jsonl and report.json from the kernels' arrays equal what the
decision records give, byte for byte, and the prediction cache computes only the routed rows."""

from __future__ import annotations

import json
import math
from pathlib import Path

import msgspec
import numpy as np
import pytest
import support
from test_backtest import FIVE, synthetic_csvs

from bot.config import Config
from bot.core.decision import encode_lines
from bot.core.kernels import paper as _kp
from bot.core.params import REGIME_NAMES
from bot.sim import pass_records, policy_pass
from bot.sim.backtest import Backtest
from bot.sim.backtest_report import RunResult, build_report

REAL = Path(__file__).resolve().parents[2] / "shared/data/bybit_linear_cobra0506_crypto_backtester/normalized"
_P = _kp.SLOTS


def _records_only(res: RunResult) -> RunResult:
    """The same run with its decisions as records only (the report's record path)."""
    return RunResult(
        records=res.records,
        warmup_bars=res.warmup_bars,
        wall_s=res.wall_s,
        symbols=res.symbols,
        closes={s: list(zip(*(a.tolist() for a in res.closes_of(s)), strict=True)) for s in res.symbols},
        routes=res.routes,
    )


def _same_outputs(bt: Backtest, cfg: Config) -> None:
    """The array run's decisions.jsonl and report.json equal those of its records, byte for byte."""
    res = bt.run(cfg)
    lines = res.lines()
    assert lines == encode_lines(res.records)
    assert lines.count(b"\n") == len(res.records) > 1000
    report = json.dumps(build_report(bt.config_for(cfg), res, {}), indent=2)
    assert report == json.dumps(build_report(bt.config_for(cfg), _records_only(res), {}), indent=2)
    assert json.loads(report)["total"]["bars"] == len(res.records)


@pytest.mark.skipif(not REAL.is_dir(), reason="../shared/data is not present")
@pytest.mark.parametrize("sizing", ["fixed", "vol_target"])
def test_lines_and_report_from_arrays_equal_the_records_on_real_data(
    trained_family: Path, sizing: str
) -> None:
    """5 real symbols (4,000 bars each): decisions.jsonl and report.json from arrays equal the records'."""
    data = [f"{s}={REAL / f'{s}_5m.csv'}" for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "BNBUSDT")]
    paper = {"sizing": sizing, "long_threshold_bps": 0.5, "short_threshold_bps": 0.5}
    cfg = support.small_config(paper=paper, models={"symbols": "any"})
    first = int(np.loadtxt(REAL / "BTCUSDT_5m.csv", delimiter=",", skiprows=1, max_rows=1)[0])
    bt = Backtest(cfg, data, trained_family, warmup_bars=300, to_ms=first + 4000 * 300_000)
    res = bt.run(cfg)
    assert sum(len(r.fills) for r in res.records) > 100
    assert all(isinstance(r.position, int) for r in res.records) == (sizing == "fixed")
    _same_outputs(bt, cfg)


@pytest.mark.parametrize("sizing", ["fixed", "vol_target"])
def test_lines_and_report_from_arrays_equal_the_records_on_synthetic_data(
    trained_family: Path, tmp_path: Path, sizing: str
) -> None:
    """5 synthetic symbols merged in time: the same byte equality, with fills on many bars."""
    csvs = synthetic_csvs(tmp_path, n=700, symbols=FIVE)
    cfg = support.small_config(
        paper={"sizing": sizing, "long_threshold_bps": 0.0, "short_threshold_bps": 0.0}
    )
    _same_outputs(Backtest(cfg, [f"{s}={p}" for s, p in csvs.items()], trained_family, warmup_bars=150), cfg)


_EDGE = [1e16, 1e-7, 1.5e-5, 123456789.0, 1.7976931348623157e308, 5e-324, -0.0, 0.1, -2.5e22, 3.0]


@pytest.mark.parametrize("fixed", [True, False])
def test_lines_equal_the_records_encoding_on_edge_values(fixed: bool) -> None:
    """Exponent forms (1e16, 1e-07), subnormals, -0.0, NaN, whole floats, flat positions, two fills and
    no holding: `lines` writes exactly what msgspec writes for the records."""
    m = len(_EDGE)
    out = np.zeros((m, _P["N_OUT"]), dtype=np.float64)
    values = np.array(_EDGE, dtype=np.float64)
    for k, slot in enumerate(("R_QTY", "R_FEE", "R_REALIZED", "R_UNREALIZED", "R_EQUITY", "R_BAR_PNL")):
        out[:, _P[slot]] = np.roll(values, k)
    out[:, _P["R_HOLDING"]] = np.roll(values, 7)
    out[:, _P["R_TRADE_PNL"]] = math.nan
    out[:, _P["R_SIGNAL"]] = [1, -1, 0, 1, 1, 0, -1, 1, 0, 1]
    out[:, _P["R_POSITION"]] = [3.0, -0.0, 0.0, 2.5, -1.0, 0.0, 1e16, 5e-324, -2.0, 0.0]
    out[:, _P["R_HOLDING_TIER"]] = [0, 1, -1, 0, 1, -1, 0, 1, 0, -1]
    out[:, _P["R_HOLDING_REGIME"]] = [0, 3, -1, 2, 1, -1, 0, 1, 2, -1]
    out[:, _P["R_N_FILLS"]] = [0, 1, 2, 0, 0, 1, 0, 0, 2, 0]
    out[:, _P["R_FILL_PRICE"]] = values
    w, f0 = _P["FILL_WIDTH"], _P["R_FILL0"]
    for j in range(2):
        block = out[:, f0 + j * w : f0 + (j + 1) * w]
        block[:] = np.roll(values, j)[:, None]
        block[:, _P["X_SIDE"]] = 1.0 if j == 0 else -1.0
    res = policy_pass.SymbolOutput(
        symbol="EDGEUSDT",
        rows=np.arange(m, dtype=np.int64),
        start_ms=np.arange(m, dtype=np.int64) * 300_000 + 1_700_000_000_000,
        close=np.abs(values) + 1.0,
        regime=np.array([0, 1, 2, 3, 0, 1, 2, 3, 0, 1], dtype=np.int64),
        tier=np.array([0, 1, 0, 1, 0, 1, 0, 1, 0, 1], dtype=np.int64),
        prediction=values,
        vol_forecast=np.roll(values, 3),
        out=out,
    )
    for vols in (None, {"EDGEUSDT": np.ones((2, len(REGIME_NAMES)))}):
        policy = policy_pass.Policy(
            tiers=("big", "small"),
            routes={},
            route_codes=np.zeros(len(REGIME_NAMES), dtype=np.int64),
            iparams=np.zeros(0, dtype=np.int64),
            fparams={},
            paper=np.zeros(0, dtype=np.float64),
            fixed=fixed,
            vol_factors=vols,
            model_sha="abc",
        )
        records = pass_records.records(res, policy, source="backtest")
        got = pass_records.lines([res], policy, source="backtest")
        assert got == encode_lines(records)
        assert b"1e16" in got
        assert b"null" in got
        assert got.count(b'"side":"sell"') == 2


def test_a_first_run_computes_only_the_routed_tiers_and_a_rerun_the_rest(
    trained_family: Path, tmp_path: Path
) -> None:
    """Predictions are computed for the tier each row is routed to, cached on disk, and a rerun routed
    elsewhere computes the missing ones; decisions equal those of a run with every prediction computed."""
    csvs = synthetic_csvs(tmp_path / "data", n=700)
    data = [f"{s}={p}" for s, p in csvs.items()]
    cache = tmp_path / "cache"
    cfg = support.small_config()
    bt = Backtest(cfg, data, trained_family, warmup_bars=150, cache_dir=cache)
    names = bt.family.names
    edge = names[-1]
    first = bt.run(cfg, tier=edge)
    for inp in bt.inputs:
        done = bt.cached[inp.symbol].done
        assert done[names.index(edge), inp.decide].all()  # every decided row (warm-up rows are not)
        assert not done[: names.index(edge)].any()  # no other tier was asked for
        assert done.sum() == inp.decide.sum() > 400
    again = Backtest(cfg, data, trained_family, warmup_bars=150, cache_dir=cache)
    assert all(c.hit for c in again.cached.values())
    rerun = again.run(cfg, tier=edge)
    assert sum(c.computed_rows for c in again.cached.values()) == 0
    assert rerun.lines() == first.lines()
    other = again.run(cfg, tier=names[0])  # routed elsewhere: that tier's rows are computed now
    assert sum(c.computed_rows for c in again.cached.values()) == sum(
        int(i.decide.sum()) for i in again.inputs
    )
    assert other.lines() != first.lines()
    routes = {"calm_trend": names[0], "normal": edge, "volatile": names[1], "crisis": names[0]}
    mixed = support.small_config(regime={"routes": routes})
    routed = again.run(mixed)
    assert len({r.tier for r in routed.records}) >= 2
    full = Backtest(cfg, data, trained_family, warmup_bars=150)
    for c in full.cached.values():
        c.ensure_all()
    assert full.run(mixed).lines() == routed.lines()
    per_bar = full.run_per_bar(mixed)

    def strip(b: bytes) -> list[bytes]:
        return [
            msgspec.json.encode({**json.loads(x), "latency_us": {}, "source": ""}) for x in b.splitlines()
        ]

    assert strip(routed.lines()) == strip(encode_lines(per_bar.records))
