"""Routing study on real data (issue 13): routed family vs each fixed tier, vol head and both sizing modes.

Data: BTCUSDT, ETHUSDT, SOLUSDT, XRPUSDT, BNBUSDT 5m (../shared/data, the last row, a still-open candle,
dropped). Test periods: with `--folds K` (default 4; needs offline/walkforward.py) the expanding walk-forward
test blocks of `offline.walkforward.walkforward_folds` (first half of the rows history only, the rest cut
into K blocks); fold k's family is distilled by `offline.pipeline.pipeline_distill` (the `offline distill`
run) on the bars before its test block minus the embargo, so no bar of the block, and no target reaching
into it, trained, validated or selected it. `--folds 0`: one family per symbol on all bars, decided on the
pipeline's own chronological test split.

Each test block is decided in-process by `bot.core.engine.Engine` with the real `TierFamily` (ONNX), the
regime detector and the paper trader, after a warm-up on the bars before it (no decisions), once per
variant (routed with the config's routes; always-<tier> with every regime routed to one tier), per sizing
mode (`fixed`, `vol_target`) and per entry threshold (the config's, and 0 bps = always in the market, which
gives the risk metrics a position on every bar).

Per variant: the routed vol forecast's QLIKE (raw, and bias-corrected as in offline/vol.py: the variance
scale of each tier fitted on its family's training rows, applied per bar to the tier that answered), vol
IC (Spearman of log forecast vs log realised forward vol over vol_horizon_bars), return IC (vs the next-bar
return), mean inference cost per bar (multiply-adds of the answering tier, and the engine's measured
microseconds); per sizing mode and threshold: PnL after fees and slippage, max drawdown, fills, exposure,
and the risk-targeting error per regime of bot/sim/riskmetrics.py (RMS of per-bar holding PnL in bps of
notional_usd over bars carrying a position, / [paper] target_vol_bps, by the regime that sized it).
Output: docs/results/study_routing[_quick].{json,md,png}.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/routing_study.py --quick   # < 5 min
    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/routing_study.py           # full
    .venv/bin/python benchmarks/routing_study.py --smoke    # BTCUSDT + ETHUSDT, last 4,000 bars, tiny tiers

`--smoke` distils benchmarks/_smoke.py's tiny tiers into a temp dir (nothing cached), writes its outputs to a
temp dir (or `--out`), and uses a synthetic market when ../shared/data is absent.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _smoke import SMOKE_HELP, data_or_synthetic, output_path, smoke_dir, tiny_config  # noqa: E402

from bot.config import Config, engine_params  # noqa: E402 (after the sys.path insert)
from bot.core.bars import Bar  # noqa: E402
from bot.core.decision import DecisionRecord  # noqa: E402
from bot.core.engine import Engine  # noqa: E402
from bot.core.paper import PaperTrader  # noqa: E402
from bot.core.params import GUESSED_ROUTES, REGIME_NAMES  # noqa: E402
from bot.models.family import TierFamily  # noqa: E402
from bot.sim.backtest_report import spearman  # noqa: E402
from bot.sim.riskmetrics import (  # noqa: E402
    RISK_TOLERANCE,
    max_drawdown,
    ratios,
    risk_table,
    spread,
    within,
)
from offline import vol as volmod  # noqa: E402
from offline.data import Dataset, embargo_rows, load_csv, load_dataset, load_pooled  # noqa: E402
from offline.pipeline import pipeline_distill  # noqa: E402

DATA_DIR = ROOT.parent / "shared" / "data" / "bybit_linear_cobra0506_crypto_backtester" / "normalized"
SYMBOLS = "BTCUSDT,ETHUSDT,SOLUSDT,XRPUSDT,BNBUSDT"
SIZINGS = ("fixed", "vol_target")
WARM_BARS = 2000  # bars before a test block that warm features and regime: the service's backfill_bars
QLIKE_TOL = 0.02
COST_MAX = 0.30
MIN_RISK_BARS = 200  # fewer positioned bars in a regime: no evidence either way
SENS_TARGETS_BPS = (
    2.5,
    5.0,
    10.0,
    20.0,
)  # routed vol_target sensitivity to [paper] target_vol_bps (always in)
FIRST_TRAIN_FRAC = {True: 0.75, False: 0.5}  # quick: shorter test blocks
QUICK_BARS = 10_000  # quick: families distilled on the last 10k bars of their history, quick_epochs


def log(msg: str, t0: float) -> None:
    print(f"[{time.perf_counter() - t0:7.1f} s] {msg}", file=sys.stderr, flush=True)


def git_state(source_commit: str | None = None) -> dict[str, Any]:
    """HEAD commit and whether bot/, offline/ or config.toml differ from it (others' work in progress); for
    a tree exported with `git archive` (no .git), `source_commit` as given."""
    if source_commit is not None:
        return {"commit": source_commit, "dirty_paths": [], "exported_tree": str(ROOT)}

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD"),
        "dirty_paths": git("status", "--porcelain", "--", "bot", "offline", "config.toml").splitlines(),
    }


def multiply_adds(hidden: Sequence[int], n_in: int, n_out: int) -> int:
    sizes = [n_in, *hidden, n_out]
    return sum(a * b for a, b in itertools.pairwise(sizes))


@dataclass
class Block:
    """One test block of one symbol: the family that decides it and what scoring needs."""

    symbol: str
    fold: int
    family: TierFamily
    models: Path
    first: int  # index of the first decided bar in `bars`
    end: int  # one past the last decided bar
    scale: dict[str, float]  # per tier: QLIKE variance scale fitted on the family's training rows
    distill_s: float


def _write_head(src: Path, dst: Path, n_rows: int) -> None:
    """The header and the first `n_rows` data rows of `src` (bytes unchanged)."""
    with src.open("rb") as fh:
        lines = [fh.readline() for _ in range(n_rows + 1)]
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(b"".join(lines))


def _distill(cfg: Config, csv: Path, models: Path, *, quick: bool, symbol: str) -> float:
    t0 = time.perf_counter()
    if not (models / "manifest.json").exists():
        pipeline_distill(cfg, data=csv, out_dir=models, quick=quick, symbol=symbol)
    return time.perf_counter() - t0


def _scales(cfg: Config, csv: Path, family: TierFamily, *, quick: bool, symbol: str) -> dict[str, float]:
    """Per tier, `offline.vol.qlike_scale` of its vol forecasts on the training rows of its own run."""
    ds = load_dataset(csv, cfg.distill, n_bars=cfg.distill.quick_bars if quick else None, symbol=symbol)
    return _scales_ds(ds, family)


def _scales_ds(ds: Dataset, family: TierFamily) -> dict[str, float]:
    tr = ds.splits.train
    if ds.log_vol is None:
        raise SystemExit("the routing study needs [distill] vol_head = true")
    out: dict[str, float] = {}
    for t in family:
        v = t.predict_batch(ds.X[tr], output=t.spec.vol_output_name).astype(np.float64)
        out[t.name] = volmod.qlike_scale(np.exp(ds.log_vol[tr]), v)
    return out


def blocks_for(
    symbol: str, cfg: Config, bars: list[Bar], *, folds: int, quick: bool, work: Path, data_dir: Path
) -> list[Block]:
    """The test blocks of `symbol` and their families (distilled here unless already in `work`)."""
    csv = data_dir / f"{symbol}_5m.csv"
    tag = "quick" if quick else "full"
    out: list[Block] = []
    if folds == 0:
        models = work / f"{symbol}_{tag}_split"
        s = _distill(cfg, csv, models, quick=quick, symbol=symbol)
        family = TierFamily.load(models)
        ds = load_dataset(
            csv, cfg.distill, n_bars=cfg.distill.quick_bars if quick else None, symbol=symbol, drop_last=True
        )
        offset = len(bars) - len(ds.bars)
        first = offset + int(ds.bar_index[ds.splits.test[0]])
        out.append(Block(symbol, 0, family, models, first, len(bars), _scales_ds(ds, family), s))
        return out
    from offline.walkforward import walkforward_folds

    ds_all = load_dataset(csv, cfg.distill, symbol=symbol, drop_last=True)
    starts = [b.start_ms for b in bars]
    emb_ms = embargo_rows(cfg.distill) * ds_all.step_ms
    for f in walkforward_folds(ds_all, folds, cfg.distill, first_train_frac=FIRST_TRAIN_FRAC[quick]):
        first = starts.index(f.test_start_ms)
        end = starts.index(f.test_end_ms) + 1 if f.index < folds else len(bars)
        n_hist = sum(1 for s in starts if s < f.test_start_ms - emb_ms)
        fold_csv = work / f"{symbol}_fold{f.index}of{folds}_5m.csv"
        if not fold_csv.exists():
            _write_head(csv, fold_csv, n_hist)
        models = work / f"{symbol}_{tag}_fold{f.index}of{folds}"
        s = _distill(cfg, fold_csv, models, quick=quick, symbol=symbol)
        family = TierFamily.load(models)
        scale = _scales(cfg, fold_csv, family, quick=quick, symbol=symbol)
        out.append(Block(symbol, f.index, family, models, first, end, scale, s))
    return out


def pooled_blocks(
    symbols: Sequence[str],
    cfg: Config,
    bars: dict[str, list[Bar]],
    *,
    folds: int,
    quick: bool,
    work: Path,
    data_dir: Path,
    t0: float,
) -> dict[str, list[Block]]:
    """One family per fold for all `symbols` (`pipeline_distill` on several CSVs, the shipping way), the test
    blocks cut at the same dates for every symbol (the walk-forward folds of the first symbol's rows; all
    five files cover the same span)."""
    csvs = [data_dir / f"{s}_5m.csv" for s in symbols]
    tag = "quick" if quick else "full"
    n_bars = cfg.distill.quick_bars if quick else None
    out: dict[str, list[Block]] = {s: [] for s in symbols}
    starts = {s: [b.start_ms for b in bars[s]] for s in symbols}
    if folds == 0:
        models = work / f"pooled_{tag}_split"
        t = time.perf_counter()
        if not (models / "manifest.json").exists():
            pipeline_distill(
                cfg, data=csvs, out_dir=models, quick=quick, symbol=list(symbols), drop_last=True
            )
        sec = time.perf_counter() - t
        family = TierFamily.load(models)
        ds = load_pooled(csvs, cfg.distill, symbols=list(symbols), n_bars=n_bars, drop_last=True)
        scale = _scales_ds(ds, family)
        test_ms = int(ds.start_ms[ds.splits.test].min())
        for s in symbols:
            first = next(i for i, x in enumerate(starts[s]) if x >= test_ms)
            out[s].append(Block(s, 0, family, models, first, len(bars[s]), scale, sec))
        return out
    from offline.walkforward import walkforward_folds

    ds0 = load_dataset(csvs[0], cfg.distill, symbol=symbols[0], drop_last=True)
    emb_ms = embargo_rows(cfg.distill) * ds0.step_ms
    for f in walkforward_folds(ds0, folds, cfg.distill, first_train_frac=FIRST_TRAIN_FRAC[quick]):
        cut_ms = f.test_start_ms - emb_ms
        fold_csvs = []
        for s, csv in zip(symbols, csvs, strict=True):
            fold_csv = work / f"fold{f.index}of{folds}" / f"{s}_5m.csv"
            if not fold_csv.exists():
                _write_head(csv, fold_csv, sum(1 for x in starts[s] if x < cut_ms))
            fold_csvs.append(fold_csv)
        models = work / f"pooled_{tag}_fold{f.index}of{folds}"
        log(f"fold {f.index}: distilling one family for {len(symbols)} symbols (bars before {cut_ms} ms)", t0)
        t = time.perf_counter()
        if not (models / "manifest.json").exists():
            pipeline_distill(cfg, data=fold_csvs, out_dir=models, quick=quick, symbol=list(symbols))
        sec = time.perf_counter() - t
        family = TierFamily.load(models)
        scale = _scales_ds(load_pooled(fold_csvs, cfg.distill, symbols=list(symbols), n_bars=n_bars), family)
        for s in symbols:
            first = next(i for i, x in enumerate(starts[s]) if x >= f.test_start_ms)
            end = (
                next(i for i, x in enumerate(starts[s]) if x > f.test_end_ms)
                if f.index < folds
                else len(bars[s])
            )
            out[s].append(Block(s, f.index, family, models, first, end, scale, sec))
    return out


def decide(cfg: Config, block: Block, bars: list[Bar]) -> list[DecisionRecord]:
    """Warm a fresh engine on the bars before the block, then decide every bar of it."""
    cfg = msgspec.structs.replace(cfg, market=msgspec.structs.replace(cfg.market, symbols=[block.symbol]))
    engine = Engine(engine_params(cfg), block.family, PaperTrader(cfg.paper))
    engine.replay(bars[max(0, block.first - WARM_BARS) : block.first])
    out: list[DecisionRecord] = []
    for bar in bars[block.first : block.end]:
        d = engine.on_bar(bar)
        if d is not None:
            out.append(d)
    return out


def variant_configs(cfg: Config, names: Sequence[str]) -> list[tuple[str, Config]]:
    """routed (the config's routes), fixed_routes (the default table, when the config says "auto") and
    always-<tier> for every tier."""
    out = [("routed", cfg)]
    if cfg.regime.routes == "auto":
        table = dict(GUESSED_ROUTES)
        fixed = msgspec.structs.replace(cfg, regime=msgspec.structs.replace(cfg.regime, routes=table))
        out.append(("fixed_routes", fixed))
    for name in names:
        routes = dict.fromkeys(REGIME_NAMES, name)
        out.append(
            (
                f"always_{name}",
                msgspec.structs.replace(cfg, regime=msgspec.structs.replace(cfg.regime, routes=routes)),
            )
        )
    return out


def policy(cfg: Config, sizing: str, threshold_bps: float | None, target_bps: float | None = None) -> Config:
    p = msgspec.structs.replace(cfg.paper, sizing=sizing)
    if target_bps is not None:
        p = msgspec.structs.replace(p, target_vol_bps=target_bps)
    if threshold_bps is not None:
        p = msgspec.structs.replace(p, long_threshold_bps=threshold_bps, short_threshold_bps=threshold_bps)
    return msgspec.structs.replace(cfg, paper=p)


# ---- scoring ---------------------------------------------------------------------------------------------


@dataclass
class Scored:
    """Per-bar forecast data of one variant over every block (all symbols), aligned."""

    pred: list[float]
    next_ret: list[float]
    vol: list[float]
    vol_bc: list[float]
    rv: list[float]
    macs: list[int]
    infer_us: list[float]
    tiers: list[str]
    regimes: list[str]
    folds: list[int]
    loss_bc: list[float]  # per-bar QLIKE of the bias-corrected forecast (NaN: no realised vol)
    har: list[float]  # HAR-RV + hour fitted on the symbol's training bars, with its training QLIKE scale

    @classmethod
    def empty(cls) -> Scored:
        return cls([], [], [], [], [], [], [], [], [], [], [], [])

    def add(
        self, recs: Sequence[DecisionRecord], block: Block, bars: list[Bar], rv: np.ndarray, har: np.ndarray
    ) -> None:
        index = {b.start_ms: i for i, b in enumerate(bars[block.first : block.end], start=block.first)}
        mac_of = {
            t.name: multiply_adds(t.spec.entry.hidden, t.n_features, 2 if t.has_vol_head else 1)
            for t in block.family
        }
        for r in recs:
            i = index[r.start_ms]
            assert r.vol_forecast is not None
            self.pred.append(r.prediction)
            self.next_ret.append(bars[i + 1].close / bars[i].close - 1.0 if i + 1 < len(bars) else math.nan)
            self.vol.append(r.vol_forecast)
            self.vol_bc.append(r.vol_forecast * math.sqrt(block.scale[r.tier]))
            self.rv.append(float(rv[i]))
            self.macs.append(mac_of[r.tier])
            self.infer_us.append(r.latency_us["inference"])
            self.tiers.append(r.tier)
            self.regimes.append(r.regime)
            self.folds.append(block.fold)
            self.har.append(float(har[i]))
            s, h = float(rv[i]) ** 2, self.vol_bc[-1] ** 2
            self.loss_bc.append(s / h - math.log(s / h) - 1.0 if s > 0.0 and h > 0.0 else math.nan)

    def metrics(self) -> dict[str, Any]:
        p, y = np.asarray(self.pred), np.asarray(self.next_ret)
        ok = np.isfinite(y)
        v, vbc, rv = np.asarray(self.vol), np.asarray(self.vol_bc), np.asarray(self.rv)
        okv = np.isfinite(rv) & (rv > 0)
        n = len(self.pred)
        tiers = {k: self.tiers.count(k) / n for k in sorted(set(self.tiers))}
        regimes = {k: self.regimes.count(k) / n for k in REGIME_NAMES}
        har = np.asarray(self.har)
        okh = okv & np.isfinite(har) & (har > 0)
        return {
            "bars": n,
            "return_ic": spearman(p[ok], y[ok]),
            # realised / forecast variance (mean of the ratio, QLIKE's optimal scale): 1 = unbiased as served
            "var_ratio": volmod.qlike_scale(rv[okv], v[okv]),
            "vol_qlike_on_har_rows": volmod.qlike(rv[okh], v[okh]),
            "har_tod_qlike": volmod.qlike(rv[okh], har[okh]),
            "har_tod_var_ratio": volmod.qlike_scale(rv[okh], har[okh]),
            "vol_qlike": volmod.qlike(rv[okv], v[okv]),
            "vol_qlike_bc": volmod.qlike(rv[okv], vbc[okv]),
            "vol_ic": volmod.spearman_ic(np.log(rv[okv]), np.log(v[okv])),
            "vol_r2_log": volmod.r2(np.log(rv[okv]), np.log(v[okv])),
            "mean_multiply_adds": float(np.mean(self.macs)),
            "mean_inference_us": float(np.mean(self.infer_us)),
            "p99_inference_us": float(np.percentile(self.infer_us, 99)),
            "tier_share": tiers,
            "regime_share": regimes,
        }


def har_served(design: np.ndarray, rv: np.ndarray, block: Block, cfg: Config) -> np.ndarray:
    """HAR-RV + hour of day as it would be served: OLS of log realised vol and the QLIKE variance scale, both
    fitted on the symbol's bars before the block less the embargo (the family's training span), forecasting
    every bar (NaN where the design or the target is undefined)."""
    y = np.log(np.where(rv > 0, rv, np.nan))
    rows = np.arange(design.shape[0])
    ok = np.all(np.isfinite(design), axis=1)
    fit = (rows < block.first - embargo_rows(cfg.distill)) & np.isfinite(y) & ok
    model = volmod.HarRV().fit(design[fit], y[fit])
    out = np.full(design.shape[0], np.nan)
    out[ok] = np.exp(model.predict(design[ok]))
    scale = volmod.qlike_scale(rv[fit], out[fit])
    return out * math.sqrt(scale)


def trading(records: Sequence[DecisionRecord], cfg: Config) -> dict[str, Any]:
    """PnL, drawdown and the risk-targeting table of one symbol's (or pooled) records."""
    pnl = np.array([r.bar_pnl_usd for r in records], dtype=np.float64)
    risk = risk_table(
        records,
        notional_usd=cfg.paper.notional_usd,
        target_vol_bps=cfg.paper.target_vol_bps,
        names=REGIME_NAMES,
    )
    return {
        "pnl_usd": float(pnl.sum()),
        "fees_usd": float(sum(r.fee_usd for r in records)),
        "fills": sum(len(r.fills) for r in records),
        "max_drawdown_usd": max_drawdown(pnl),
        "exposure": float(np.mean([r.position != 0 for r in records])) if records else 0.0,
        "mean_abs_units": float(np.mean([abs(r.position) for r in records])) if records else 0.0,
        "risk": risk,
        "risk_spread": spread(ratios(risk, REGIME_NAMES)),
        "risk_all_regimes_within": all(within(x) for x in ratios(risk, REGIME_NAMES)),
    }


def _drawdown_pooled(by_symbol: dict[str, list[DecisionRecord]]) -> float:
    """Max drawdown of the portfolio (per-bar PnL summed over symbols at each bar time)."""
    per_time: dict[int, float] = {}
    for recs in by_symbol.values():
        for r in recs:
            per_time[r.start_ms] = per_time.get(r.start_ms, 0.0) + r.bar_pnl_usd
    return max_drawdown(np.array([per_time[t] for t in sorted(per_time)], dtype=np.float64))


def run_study(args: argparse.Namespace, cfg: Config, t0: float) -> dict[str, Any]:
    symbols = args.symbols.split(",")
    alt_targets = [tb for tb in SENS_TARGETS_BPS if tb != cfg.paper.target_vol_bps]
    thresholds: dict[str, float | None] = {"config": None, "always_in": 0.0}
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    forecast: dict[str, Scored] = {}
    forecast_sym: dict[str, dict[str, Scored]] = {}
    # records[variant][sizing][threshold][symbol]
    records: dict[str, dict[str, dict[str, dict[str, list[DecisionRecord]]]]] = {}
    blocks_meta: list[dict[str, Any]] = []
    # last row of each file: the still-open candle
    all_bars = {s: load_csv(args.data_dir / f"{s}_5m.csv", symbol=s)[:-1] for s in symbols}
    pooled_fam = (
        pooled_blocks(
            symbols,
            cfg,
            all_bars,
            folds=args.folds,
            quick=args.quick,
            work=work,
            data_dir=args.data_dir,
            t0=t0,
        )
        if not args.per_symbol
        else None
    )
    for sym in symbols:
        bars = all_bars[sym]
        closes = np.array([b.close for b in bars], dtype=np.float64)
        rv = volmod.forward_rv(closes, cfg.distill.vol_horizon_bars)
        if pooled_fam is not None:
            blocks = pooled_fam[sym]
        else:
            log(f"{sym}: distilling", t0)
            blocks = blocks_for(
                sym, cfg, bars, folds=args.folds, quick=args.quick, work=work, data_dir=args.data_dir
            )
        starts = np.array([b.start_ms for b in bars], dtype=np.int64)
        har_design = volmod.har_design(closes, starts, time_of_day=True)
        for block in blocks:
            names = block.family.names
            har = har_served(har_design, rv, block, cfg)
            blocks_meta.append(
                {
                    "symbol": sym,
                    "fold": block.fold,
                    "models": str(block.models),
                    "distill_s": block.distill_s,
                    "test_first_start_ms": bars[block.first].start_ms,
                    "test_last_start_ms": bars[block.end - 1].start_ms,
                    "test_bars": block.end - block.first,
                    "qlike_scale": block.scale,
                    "auto_routes": block.family.auto_routes,
                    "vol_var_scale": {t.name: t.vol_var_scale for t in block.family.manifest.tiers},
                    "tiers": [
                        {
                            "name": t.name,
                            "recipe": t.spec.recipe,
                            "hidden": t.spec.entry.hidden,
                            "n_features": t.n_features,
                            "params": t.spec.params,
                        }
                        for t in block.family
                    ],
                }
            )
            log(f"{sym} fold {block.fold}: {block.end - block.first} test bars, deciding", t0)
            for label, vcfg in variant_configs(cfg, names):
                first_run = True
                for sizing in SIZINGS:
                    for th_name, th in thresholds.items():
                        recs = decide(policy(vcfg, sizing, th), block, bars)
                        if first_run:
                            forecast.setdefault(label, Scored.empty()).add(recs, block, bars, rv, har)
                            forecast_sym.setdefault(label, {}).setdefault(sym, Scored.empty()).add(
                                recs, block, bars, rv, har
                            )
                            first_run = False
                        slot = records.setdefault(label, {}).setdefault(sizing, {}).setdefault(th_name, {})
                        slot.setdefault(sym, []).extend(recs)
                if label == "routed":
                    for tb in alt_targets:
                        recs = decide(policy(vcfg, "vol_target", 0.0, tb), block, bars)
                        alt = records.setdefault(label, {}).setdefault(f"vol_target@{tb:g}", {})
                        alt.setdefault("always_in", {}).setdefault(sym, []).extend(recs)
    log("scoring", t0)
    teacher = f"always_{names[0]}"
    variants: dict[str, Any] = {}
    for label, sc in forecast.items():
        row: dict[str, Any] = {"forecast": sc.metrics(), "per_symbol": {}, "trading": {}}
        for sym, s in forecast_sym[label].items():
            row["per_symbol"][sym] = {"forecast": s.metrics(), "trading": {}}
        for sizing in SIZINGS:
            row["trading"][sizing] = {}
            for th_name, th in thresholds.items():
                pcfg = policy(cfg, sizing, th)
                by_sym = records[label][sizing][th_name]
                pooled = trading([r for recs in by_sym.values() for r in recs], pcfg)
                pooled["max_drawdown_usd"] = _drawdown_pooled(by_sym)
                row["trading"][sizing][th_name] = pooled
                for sym, recs in by_sym.items():
                    row["per_symbol"][sym]["trading"].setdefault(sizing, {})[th_name] = trading(recs, pcfg)
        variants[label] = row
    sensitivity: dict[str, Any] = {}
    for tb in (*alt_targets, cfg.paper.target_vol_bps):
        key = f"vol_target@{tb:g}" if tb != cfg.paper.target_vol_bps else "vol_target"
        pcfg = policy(cfg, "vol_target", 0.0, tb)
        by_sym = records["routed"][key]["always_in"]
        sensitivity[f"{tb:g}"] = {
            "pooled": trading([r for recs in by_sym.values() for r in recs], pcfg),
            "per_symbol": {sym: trading(recs, pcfg) for sym, recs in by_sym.items()},
        }
    t_fc = variants[teacher]["forecast"]
    for row in variants.values():
        fc = row["forecast"]
        fc["cost_ratio_vs_teacher"] = fc["mean_multiply_adds"] / t_fc["mean_multiply_adds"]
        fc["us_ratio_vs_teacher"] = fc["mean_inference_us"] / t_fc["mean_inference_us"]
        fc["qlike_bc_vs_teacher"] = fc["vol_qlike_bc"] / t_fc["vol_qlike_bc"] - 1.0
    return {
        "blocks": blocks_meta,
        "variants": variants,
        "teacher": teacher,
        "targets": targets(variants, teacher, symbols, thresholds),
        "decision_targets": decision_targets(variants, forecast_sym, teacher, symbols, cfg),
        "target_vol_sensitivity": sensitivity,
        "route_search": route_search(forecast, names),
    }


def route_search(forecast: dict[str, Scored], names: Sequence[str]) -> dict[str, Any]:
    """The cheapest route map (regime -> tier) whose bias-corrected vol QLIKE is within QLIKE_TOL of
    always-teacher on fold 1 of every symbol, then scored on the later folds (out of sample).

    The regime path does not depend on the tiers (the detector reads bars and the family's calibration), so
    every map's per-bar forecasts are taken from the always-<tier> runs.
    """
    base = forecast[f"always_{names[0]}"]
    regimes = np.asarray(base.regimes)
    folds = np.asarray(base.folds)
    loss = {t: np.asarray(forecast[f"always_{t}"].loss_bc) for t in names}
    macs = {t: np.asarray(forecast[f"always_{t}"].macs, dtype=np.float64) for t in names}
    for t in names:
        if len(loss[t]) != len(regimes) or forecast[f"always_{t}"].regimes != base.regimes:
            raise RuntimeError(f"always_{t}: its bars or regimes differ from always_{names[0]}'s")
    ok = np.all([np.isfinite(v) for v in loss.values()], axis=0)
    sel = ok & (folds == folds.min())
    held = ok & (folds != folds.min())
    in_sample = not held.any()
    if in_sample:
        held = sel

    def score(routes: dict[str, str], mask: np.ndarray) -> tuple[float, float]:
        lo = np.zeros(int(mask.sum()))
        mc = np.zeros(int(mask.sum()))
        reg = regimes[mask]
        for regime, tier in routes.items():
            m = reg == regime
            lo[m] = loss[tier][mask][m]
            mc[m] = macs[tier][mask][m]
        return float(lo.mean()), float(mc.mean())

    t_sel = score(dict.fromkeys(REGIME_NAMES, names[0]), sel)
    t_held = score(dict.fromkeys(REGIME_NAMES, names[0]), held)
    best: tuple[float, float, dict[str, str]] | None = None
    for combo in itertools.product(names, repeat=len(REGIME_NAMES)):
        routes = dict(zip(REGIME_NAMES, combo, strict=True))
        q, c = score(routes, sel)
        if q <= (1 + QLIKE_TOL) * t_sel[0] and (best is None or (c, q) < (best[1], best[0])):
            best = (q, c, routes)
    assert best is not None  # always-teacher itself qualifies
    q_held, c_held = score(best[2], held)
    return {
        "chosen_on": "fold 1 of every symbol",
        "scored_on": "fold 1 (in sample: only one fold)" if in_sample else "the later folds",
        "routes": best[2],
        "selection": {
            "qlike_bc_vs_teacher": best[0] / t_sel[0] - 1,
            "cost_ratio_vs_teacher": best[1] / t_sel[1],
        },
        "held_out": {
            "qlike_bc_vs_teacher": q_held / t_held[0] - 1,
            "cost_ratio_vs_teacher": c_held / t_held[1],
        },
        "pass_held_out": q_held <= (1 + QLIKE_TOL) * t_held[0] and c_held <= COST_MAX * t_held[1],
    }


def targets(
    variants: dict[str, Any], teacher: str, symbols: Sequence[str], thresholds: dict[str, float | None]
) -> dict[str, Any]:
    """PASS/FAIL of the issue's three routing/sizing targets (on the routed variant)."""
    routed = variants["routed"]
    out: dict[str, Any] = {}
    for th in thresholds:
        vt = routed["trading"]["vol_target"][th]
        fx = routed["trading"]["fixed"][th]
        r_vt = ratios(vt["risk"], REGIME_NAMES)
        n_vt = [vt["risk"][k]["bars"] for k in REGIME_NAMES]
        out[f"risk_within_{th}"] = {
            "verdict": risk_verdict(r_vt, n_vt),
            "bars": dict(zip(REGIME_NAMES, n_vt, strict=True)),
            "ratios_vol_target": dict(zip(REGIME_NAMES, r_vt, strict=True)),
            "ratios_fixed": dict(zip(REGIME_NAMES, ratios(fx["risk"], REGIME_NAMES), strict=True)),
            "fixed_spread": fx["risk_spread"],
            "vol_target_spread": vt["risk_spread"],
            "symbols_passing": [
                s
                for s in symbols
                if routed["per_symbol"][s]["trading"]["vol_target"][th]["risk_all_regimes_within"]
            ],
        }
        lower: dict[str, bool] = {}
        for s in symbols:
            dd_vt = routed["per_symbol"][s]["trading"]["vol_target"][th]["max_drawdown_usd"]
            dd_fx = routed["per_symbol"][s]["trading"]["fixed"][th]["max_drawdown_usd"]
            if dd_vt > 0.0 or dd_fx > 0.0:  # both 0: never traded, no evidence
                lower[s] = dd_vt < dd_fx
        out[f"drawdown_{th}"] = {
            "verdict": "NO EVIDENCE"
            if not lower
            else _pf(all(lower.values()) and vt["max_drawdown_usd"] < fx["max_drawdown_usd"]),
            "portfolio_vol_target_usd": vt["max_drawdown_usd"],
            "portfolio_fixed_usd": fx["max_drawdown_usd"],
            # per unit of mean |position|: how much of the gap is just holding less
            "per_mean_unit_vol_target_usd": vt["max_drawdown_usd"] / vt["mean_abs_units"]
            if vt["mean_abs_units"] > 0
            else None,
            "per_mean_unit_fixed_usd": fx["max_drawdown_usd"] / fx["mean_abs_units"]
            if fx["mean_abs_units"] > 0
            else None,
            "per_symbol_lower": lower,
        }
    fc = routed["forecast"]
    out["routed_qlike"] = {
        "verdict": _pf(fc["qlike_bc_vs_teacher"] <= QLIKE_TOL and fc["cost_ratio_vs_teacher"] <= COST_MAX),
        "qlike_bc_vs_teacher": fc["qlike_bc_vs_teacher"],
        "cost_ratio_vs_teacher": fc["cost_ratio_vs_teacher"],
        "us_ratio_vs_teacher": fc["us_ratio_vs_teacher"],
    }
    return out


SHARE_BAND = 0.08  # every regime's share of test bars within +- this of its intended share
CRISIS_BAND = (0.03, 0.12)
VAR_RATIO_BAND = (0.95, 1.05)
RISK_BAND = (0.9, 1.1)


def _later_folds_qlike(sc: Scored) -> tuple[float, float]:
    """Served vol QLIKE and mean multiply-adds over the folds after the first (all folds when only one)."""
    folds = np.asarray(sc.folds)
    rv, v = np.asarray(sc.rv), np.asarray(sc.vol)
    m = (folds != folds.min()) if len(set(sc.folds)) > 1 else np.ones(folds.shape, dtype=bool)
    m &= np.isfinite(rv) & (rv > 0)
    return volmod.qlike(rv[m], v[m]), float(np.mean(np.asarray(sc.macs, dtype=np.float64)[m]))


def decision_targets(
    variants: dict[str, Any],
    forecast_sym: dict[str, dict[str, Scored]],
    teacher: str,
    symbols: Sequence[str],
    cfg: Config,
) -> dict[str, Any]:
    """Issue 24's targets, every one per symbol on the routed variant: regime shares against the intended
    ones, realised / forecast variance, served QLIKE vs HAR-RV + hour, vol_target risk per regime, and the
    auto routes vs always-teacher (later folds)."""
    from offline.calibrate import intended_shares

    intended = intended_shares(cfg.regime)
    routed = variants["routed"]["per_symbol"]
    shares = {s: routed[s]["forecast"]["regime_share"] for s in symbols}
    share_ok = {
        s: CRISIS_BAND[0] <= shares[s]["crisis"] <= CRISIS_BAND[1]
        and all(abs(shares[s][r] - intended[r]) <= SHARE_BAND for r in REGIME_NAMES)
        for s in symbols
    }
    ratio = {s: routed[s]["forecast"]["var_ratio"] for s in symbols}
    served = {s: routed[s]["forecast"]["vol_qlike_on_har_rows"] for s in symbols}
    har = {s: routed[s]["forecast"]["har_tod_qlike"] for s in symbols}
    risk: dict[str, dict[str, float]] = {}
    risk_ok: dict[str, bool] = {}
    for s in symbols:
        table = routed[s]["trading"]["vol_target"]["always_in"]["risk"]
        risk[s] = dict(zip(REGIME_NAMES, ratios(table, REGIME_NAMES), strict=True))
        risk_ok[s] = all(
            RISK_BAND[0] <= risk[s][r] <= RISK_BAND[1]
            for r in REGIME_NAMES
            if table[r]["bars"] >= MIN_RISK_BARS
        )
    tol = cfg.distill.route_qlike_tolerance
    auto: dict[str, dict[str, float]] = {}
    for s in symbols:
        q, c = _later_folds_qlike(forecast_sym["routed"][s])
        qt, ct = _later_folds_qlike(forecast_sym[teacher][s])
        auto[s] = {"qlike_vs_teacher": q / qt - 1.0, "cost_ratio_vs_teacher": c / ct}
        if "fixed_routes" in forecast_sym:
            qf, cf = _later_folds_qlike(forecast_sym["fixed_routes"][s])
            auto[s] |= {"fixed_qlike_vs_teacher": qf / qt - 1.0, "fixed_cost_ratio_vs_teacher": cf / ct}
    return {
        "intended_shares": intended,
        "regime_shares": {"verdict": _pf(all(share_ok.values())), "per_symbol": shares, "ok": share_ok},
        "var_ratio": {
            "verdict": _pf(all(VAR_RATIO_BAND[0] <= x <= VAR_RATIO_BAND[1] for x in ratio.values())),
            "per_symbol": ratio,
            "har_tod": {s: routed[s]["forecast"]["har_tod_var_ratio"] for s in symbols},
        },
        "served_vs_har_tod": {
            "verdict": _pf(all(served[s] < har[s] for s in symbols)),
            "served_qlike": served,
            "har_tod_qlike": har,
        },
        "vol_target_risk": {"verdict": _pf(all(risk_ok.values())), "per_symbol": risk, "ok": risk_ok},
        "auto_routes": {
            "verdict": _pf(
                all(
                    a["qlike_vs_teacher"] <= tol and a["cost_ratio_vs_teacher"] <= COST_MAX
                    for a in auto.values()
                )
            ),
            "tolerance": tol,
            "per_symbol": auto,
        },
    }


def format_decision_targets(dt: dict[str, Any], symbols: Sequence[str]) -> list[str]:
    """Markdown for `decision_targets`: one table per target, one row per symbol."""
    out = ["## Decisions on every symbol (issue 24)", ""]
    rs = dt["regime_shares"]
    intended = ", ".join(f"{r} {x:.0%}" for r, x in dt["intended_shares"].items())
    out.append(
        f"**{rs['verdict']}** regime shares of test bars (routed): crisis in {CRISIS_BAND[0]:.0%}-"
        f"{CRISIS_BAND[1]:.0%} and every regime within ±{SHARE_BAND:.0%} of its intended share ({intended})."
    )
    out += ["", "| symbol | " + " | ".join(REGIME_NAMES) + " | ok |", "|---|" + "---:|" * 4 + "---|"]
    for s in symbols:
        sh = rs["per_symbol"][s]
        out.append(f"| {s} | " + " | ".join(f"{sh[r]:.1%}" for r in REGIME_NAMES) + f" | {rs['ok'][s]} |")
    vr, sv, rk, au = dt["var_ratio"], dt["served_vs_har_tod"], dt["vol_target_risk"], dt["auto_routes"]
    out += [
        "",
        f"**{vr['verdict']}** realised / forecast variance of the served vol_forecast in "
        f"{VAR_RATIO_BAND[0]}-{VAR_RATIO_BAND[1]}; **{sv['verdict']}** served QLIKE below HAR-RV + hour "
        "(OLS and variance scale fitted on the symbol's bars before the block, less the embargo); "
        f"**{rk['verdict']}** vol_target realised / target PnL vol in {RISK_BAND[0]}-{RISK_BAND[1]} in every "
        f"regime with >= {MIN_RISK_BARS} positioned bars (always in); **{au['verdict']}** auto routes' vol "
        f"QLIKE within {au['tolerance']:.0%} of always-teacher at <= {COST_MAX:.0%} of its multiply-adds "
        "(later folds).",
        "",
        "| symbol | var ratio | HAR+hour var ratio | QLIKE served | QLIKE HAR+hour | vol_target risk "
        "(calm/normal/volatile/crisis) | auto QLIKE vs teacher | auto cost | fixed-table QLIKE vs teacher "
        "| fixed-table cost |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for s in symbols:
        a = au["per_symbol"][s]
        risk = " / ".join(_f(x, ".2f") for x in rk["per_symbol"][s].values())
        out.append(
            f"| {s} | {vr['per_symbol'][s]:.3f} | {vr['har_tod'][s]:.3f} | {sv['served_qlike'][s]:.4f} | "
            f"{sv['har_tod_qlike'][s]:.4f} | {risk} | {a['qlike_vs_teacher']:+.2%} | "
            f"{a['cost_ratio_vs_teacher']:.1%} | {_f(a.get('fixed_qlike_vs_teacher'), '+.2%')} | "
            f"{_f(a.get('fixed_cost_ratio_vs_teacher'), '.1%')} |"
        )
    out.append("")
    return out


def risk_verdict(ratio: Sequence[float], bars: Sequence[int]) -> str:
    """FAIL if a regime with >= MIN_RISK_BARS positioned bars is outside the band; PASS if every regime has
    enough bars and is inside; else NO EVIDENCE."""
    enough = [n >= MIN_RISK_BARS for n in bars]
    if any(e and not within(r) for r, e in zip(ratio, enough, strict=True)):
        return "FAIL"
    return "PASS" if all(enough) else "NO EVIDENCE"


# ---- output ----------------------------------------------------------------------------------------------


def _pf(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _f(x: float | None, spec: str) -> str:
    return "n/a" if x is None or not math.isfinite(x) else format(x, spec)


def format_md(result: dict[str, Any]) -> str:
    m = result["meta"]
    v = result["variants"]
    tg = result["targets"]
    lines: list[str] = []
    lines.append(f"# Routing study on real data ({m['mode']})")
    lines.append("")
    lines.append(
        f"Generated by `{m['command']}` in {m['wall_s'] / 60:.1f} min on commit `{m['git']['commit'][:12]}`"
        + (
            f" (working tree differed in {len(m['git']['dirty_paths'])} path(s) of bot/, offline/, "
            "config.toml)"
            if m["git"]["dirty_paths"]
            else ""
        )
        + f". Symbols: {', '.join(m['symbols'])} 5m. Test periods: {m['test_periods']}. "
        f"Routes: {m['routes']}. [paper]: notional {m['paper']['notional_usd']:,.0f} USD, max_units "
        f"{m['paper']['max_units']}, target_vol_bps {m['paper']['target_vol_bps']:g}, rebalance_band "
        f"{m['paper']['rebalance_band']:g}, fees {m['paper']['taker_fee_bps']:g} + slippage "
        f"{m['paper']['slippage_bps']:g} bps per fill; entry threshold `config` = "
        f"{m['paper']['long_threshold_bps']:g} bps, `always_in` = 0 bps."
    )
    lines.append("")
    if "decision_targets" in result:
        lines.extend(format_decision_targets(result["decision_targets"], m["symbols"]))
    lines.append("## Targets")
    lines.append("")
    tol = f"±{RISK_TOLERANCE:.0%}"
    for th in ("always_in", "config"):
        r = tg[f"risk_within_{th}"]
        vt = ", ".join(f"{k} {_f(x, '.2f')}" for k, x in r["ratios_vol_target"].items())
        fx = ", ".join(f"{k} {_f(x, '.2f')}" for k, x in r["ratios_fixed"].items())
        nb = ", ".join(f"{x}" for x in r["bars"].values())
        lines.append(
            f"- **{r['verdict']}** vol_target realised PnL vol within {tol} of target in every regime "
            f"(routed, threshold `{th}`, 5 symbols pooled; positioned bars {nb}; < {MIN_RISK_BARS} in a "
            f"regime is no evidence): ratios {vt}; symbols passing alone: "
            f"{len(r['symbols_passing'])}/{len(m['symbols'])}. Fixed sizing (same signals): {fx}; spread "
            f"max/min {_f(r['fixed_spread'], '.2f')} (vol_target {_f(r['vol_target_spread'], '.2f')})."
        )
        d = tg[f"drawdown_{th}"]
        n_low = sum(d["per_symbol_lower"].values())
        lines.append(
            f"- **{d['verdict']}** max drawdown under vol_target below fixed (routed, threshold `{th}`): "
            f"portfolio {d['portfolio_vol_target_usd']:,.0f} vs {d['portfolio_fixed_usd']:,.0f} USD; "
            f"lower in {n_low}/{len(d['per_symbol_lower'])} symbols that traded. Per unit of mean |position| "
            f"(vol_target holds less on average): {_f(d['per_mean_unit_vol_target_usd'], ',.0f')} vs "
            f"{_f(d['per_mean_unit_fixed_usd'], ',.0f')} USD."
        )
    q = tg["routed_qlike"]
    lines.append(
        f"- **{q['verdict']}** routed vol QLIKE (bias-corrected) within {QLIKE_TOL:.0%} of always-teacher "
        f"at <= {COST_MAX:.0%} of its cost: {q['qlike_bc_vs_teacher']:+.1%} at "
        f"{q['cost_ratio_vs_teacher']:.1%} of its multiply-adds ({q['us_ratio_vs_teacher']:.0%} of its "
        "measured µs)."
    )
    rs = result["route_search"]
    lines.append(
        f"- Route search (not the config's routes): the cheapest regime -> tier map within {QLIKE_TOL:.0%} "
        f"of always-teacher's QLIKE bc, chosen on {rs['chosen_on']}: {rs['routes']}; scored on "
        f"{rs['scored_on']}: **{_pf(rs['pass_held_out'])}** "
        f"{rs['held_out']['qlike_bc_vs_teacher']:+.1%} QLIKE at "
        f"{rs['held_out']['cost_ratio_vs_teacher']:.1%} of the teacher's multiply-adds (selection: "
        f"{rs['selection']['qlike_bc_vs_teacher']:+.1%} at "
        f"{rs['selection']['cost_ratio_vs_teacher']:.1%})."
    )
    lines.append("")
    lines.append("## Forecasts and cost (all test bars of the 5 symbols pooled)")
    lines.append("")
    n = v["routed"]["forecast"]["bars"]
    lines.append(
        f"{n} decided bars. Return IC standard error under no skill ≈ 1/√n = {1 / math.sqrt(n):.4f}. QLIKE: "
        "lower is better (0 = perfect); `bc` = variance scale fitted on each family's training rows. "
        "Inference µs are the engine's measured `inference` stage (return + vol from one ONNX run) on a "
        "shared 2-core machine; multiply-adds are the load-free cost."
    )
    lines.append("")
    lines.append(
        "| variant | vol QLIKE | vol QLIKE bc | vs teacher | vol IC | vol R² (log) | return IC | "
        "MACs vs teacher | µs (mean) | µs vs teacher | tier share |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for label, row in v.items():
        fc = row["forecast"]
        share = ", ".join(f"{k} {x:.0%}" for k, x in fc["tier_share"].items())
        lines.append(
            f"| {label} | {fc['vol_qlike']:.4f} | {fc['vol_qlike_bc']:.4f} | "
            f"{fc['qlike_bc_vs_teacher']:+.1%} | {fc['vol_ic']:.3f} | {fc['vol_r2_log']:.3f} | "
            f"{fc['return_ic']:+.4f} | {fc['cost_ratio_vs_teacher']:.3f} | {fc['mean_inference_us']:.1f} | "
            f"{fc['us_ratio_vs_teacher']:.2f} | {share} |"
        )
    lines.append("")
    shares = v["routed"]["forecast"]["regime_share"]
    lines.append(
        "Regime share of decided bars: " + ", ".join(f"{k} {x:.1%}" for k, x in shares.items()) + "."
    )
    lines.append("")
    lines.append("Per symbol, vol QLIKE bc (routed / always-teacher) and return IC (routed):")
    lines.append("")
    lines.append("| symbol | routed QLIKE bc | teacher QLIKE bc | routed vol IC | routed return IC |")
    lines.append("|---|---|---|---|---|")
    for sym in m["symbols"]:
        a = v["routed"]["per_symbol"][sym]["forecast"]
        b = v[result["teacher"]]["per_symbol"][sym]["forecast"]
        lines.append(
            f"| {sym} | {a['vol_qlike_bc']:.4f} | {b['vol_qlike_bc']:.4f} | {a['vol_ic']:.3f} | "
            f"{a['return_ic']:+.4f} |"
        )
    lines.append("")
    for th in ("always_in", "config"):
        lines.append(f"## Trading, threshold `{th}` (5 symbols; PnL after fees and slippage)")
        lines.append("")
        lines.append(
            "Risk ratio = RMS of per-bar holding PnL (bps of notional_usd, bars carrying a position) ÷ "
            "target_vol_bps, by the regime that sized the position; 1.00 is on target. Drawdown: of the "
            "portfolio (PnL summed over symbols per bar time)."
        )
        lines.append("")
        head = " | ".join(f"ratio {k}" for k in REGIME_NAMES)
        lines.append(
            f"| variant | sizing | PnL USD | max DD USD | fills | exposure | mean units | {head} | spread |"
        )
        lines.append("|---|---|---|---|---|---|---|" + "---|" * len(REGIME_NAMES) + "---|")
        for label, row in v.items():
            for sizing in SIZINGS:
                t = row["trading"][sizing][th]
                rs = " | ".join(
                    f"{_f(t['risk'][k]['ratio'], '.2f')} ({t['risk'][k]['bars']})" for k in REGIME_NAMES
                )
                lines.append(
                    f"| {label} | {sizing} | {t['pnl_usd']:+,.0f} | {t['max_drawdown_usd']:,.0f} | "
                    f"{t['fills']} | {t['exposure']:.0%} | {t['mean_abs_units']:.2f} | {rs} | "
                    f"{_f(t['risk_spread'], '.2f')} |"
                )
        lines.append("")
        lines.append(f"Routed, per symbol (threshold `{th}`):")
        lines.append("")
        lines.append(f"| symbol | sizing | PnL USD | max DD USD | {head} |")
        lines.append("|---|---|---|---|" + "---|" * len(REGIME_NAMES))
        for sym in m["symbols"]:
            for sizing in SIZINGS:
                t = v["routed"]["per_symbol"][sym]["trading"][sizing][th]
                rs = " | ".join(f"{_f(t['risk'][k]['ratio'], '.2f')}" for k in REGIME_NAMES)
                lines.append(
                    f"| {sym} | {sizing} | {t['pnl_usd']:+,.0f} | {t['max_drawdown_usd']:,.0f} | {rs} |"
                )
        lines.append("")
    lines.append("## Sensitivity: [paper] target_vol_bps (routed, vol_target, always in)")
    lines.append("")
    lines.append(
        f"Units are capped at max_units = {m['paper']['max_units']}: where the forecast vol is below the "
        "target the position cannot reach it and the ratio falls below 1."
    )
    lines.append("")
    head = " | ".join(f"ratio {k}" for k in REGIME_NAMES)
    lines.append(f"| target bps | symbol | mean units | PnL USD | max DD USD | {head} | all within |")
    lines.append("|---|---|---|---|---|" + "---|" * len(REGIME_NAMES) + "---|")
    for tb, sens in sorted(result["target_vol_sensitivity"].items(), key=lambda kv: float(kv[0])):
        for sym, t in [("pooled", sens["pooled"]), *sens["per_symbol"].items()]:
            rs_ = " | ".join(f"{_f(t['risk'][k]['ratio'], '.2f')}" for k in REGIME_NAMES)
            lines.append(
                f"| {tb} | {sym} | {t['mean_abs_units']:.2f} | {t['pnl_usd']:+,.0f} | "
                f"{t['max_drawdown_usd']:,.0f} | {rs_} | {'yes' if t['risk_all_regimes_within'] else 'no'} |"
            )
    lines.append("")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> bool:
    """Per-regime risk-targeting ratio of the routed variant (always in): fixed vs vol_target sizing, and
    vol_target at each target_vol_bps of the sensitivity run. Bars: 5 symbols pooled; dots: per symbol."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot skipped: matplotlib is not installed (pip install 'progdistill[plot]')", file=sys.stderr)
        return False
    routed = result["variants"]["routed"]
    syms = result["meta"]["symbols"]
    sens = result["target_vol_sensitivity"]
    target = result["meta"]["paper"]["target_vol_bps"]
    left = [
        (
            f"fixed (ratio to {target:g} bps)",
            "#7f8c8d",
            routed["trading"]["fixed"]["always_in"]["risk"],
            [routed["per_symbol"][s]["trading"]["fixed"]["always_in"]["risk"] for s in syms],
        ),
        (
            f"vol_target {target:g} bps",
            "#2e86c1",
            routed["trading"]["vol_target"]["always_in"]["risk"],
            [routed["per_symbol"][s]["trading"]["vol_target"]["always_in"]["risk"] for s in syms],
        ),
    ]
    blues = ["#aed6f1", "#2e86c1", "#1b4f72", "#0b2436"]
    right = [
        (
            f"vol_target {tb} bps",
            blues[k % len(blues)],
            v["pooled"]["risk"],
            [v["per_symbol"][s]["risk"] for s in syms],
        )
        for k, (tb, v) in enumerate(sorted(sens.items(), key=lambda kv: float(kv[0])))
    ]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    x = np.arange(len(REGIME_NAMES))
    titles = (
        "fixed vs vol_target sizing, same signals",
        "vol_target at several targets (units capped at max_units)",
    )
    for ax, series, title in zip(axes, (left, right), titles, strict=True):
        ax.axhspan(1 - RISK_TOLERANCE, 1 + RISK_TOLERANCE, color="#d5f5e3", lw=0, label="target ±25%")
        ax.axhline(1.0, color="#27ae60", lw=1)
        width = 0.8 / len(series)
        for k, (label, color, pooled, per) in enumerate(series):
            xs = x + (k - (len(series) - 1) / 2) * width
            r = ratios(pooled, REGIME_NAMES)
            ax.bar(xs, [0 if not math.isfinite(v) else v for v in r], width * 0.95, color=color, label=label)
            for table in per:
                ax.plot(xs, ratios(table, REGIME_NAMES), "k.", ms=3)
        ax.set_xticks(x, REGIME_NAMES)
        ax.set_title(f"routed, always in: {title}", fontsize=9)
        ax.set_ylabel("realised PnL vol / target_vol_bps")
        ax.legend(fontsize=8)
    fig.suptitle(
        f"Risk-targeting error per regime ({result['meta']['mode']}; bars: {len(syms)} symbols pooled, "
        "dots: per symbol)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--quick", action="store_true", help="quick families (10k bars, quick_epochs), 2 short folds"
    )
    ap.add_argument("--smoke", action="store_true", help=f"{SMOKE_HELP}: 2 symbols x 4,000 bars, tiny tiers")
    ap.add_argument("--symbols", default=None, help=f"comma list (default {SYMBOLS}; smoke BTCUSDT,ETHUSDT)")
    ap.add_argument(
        "--per-symbol",
        action="store_true",
        help="one family per symbol (default: one pooled family per fold)",
    )
    ap.add_argument(
        "--folds",
        type=int,
        default=None,
        help="walk-forward test blocks (default 4, quick 2); 0: the pipeline's split",
    )
    ap.add_argument("--data-dir", type=Path, default=DATA_DIR)
    ap.add_argument(
        "--source-commit", default=None, help="commit a `git archive` export was made from (it has no .git)"
    )
    ap.add_argument(
        "--work", type=Path, default=None, help="families and fold CSVs (default: a temp dir per commit)"
    )
    ap.add_argument(
        "--out", type=Path, default=None, help="output stem (default docs/results/study_routing[_quick])"
    )
    args = ap.parse_args(argv)
    cfg = Config()
    if args.smoke:  # the quick path on tiny tiers and the last 4,000 bars of two symbols
        args.quick = True
        args.symbols = args.symbols or "BTCUSDT,ETHUSDT"
        args.data_dir = data_or_synthetic(args.data_dir, args.symbols.split(","), last_bars=4_000)
        args.work = args.work or smoke_dir("routing_work")
        cfg = tiny_config()
    args.symbols = args.symbols or SYMBOLS
    if args.quick and not args.smoke:
        cfg = msgspec.structs.replace(
            cfg, distill=msgspec.structs.replace(cfg.distill, quick_bars=QUICK_BARS)
        )
    if args.folds is None:
        try:
            import offline.walkforward  # noqa: F401 (is the walk-forward harness there?)

            args.folds = 2 if args.quick else 4
        except ImportError:
            args.folds = 0
    git = git_state(args.source_commit)
    if args.work is None:
        key = hashlib.sha256(json.dumps([git, msgspec.to_builtins(cfg)], sort_keys=True).encode()).hexdigest()
        args.work = Path(tempfile.gettempdir()) / "routing_study" / key[:16]
    stem = output_path(args.out, "study_routing", smoke=args.smoke, quick=args.quick)
    t0 = time.perf_counter()
    result: dict[str, Any] = {
        "meta": {
            "mode": "smoke" if args.smoke else "quick" if args.quick else "full",
            "command": "python benchmarks/routing_study.py "
            + " ".join(sys.argv[1:] if argv is None else argv),
            "git": git,
            "symbols": args.symbols.split(","),
            "folds": args.folds,
            "families": "one per symbol and fold"
            if args.per_symbol
            else "one per fold, pooled over the symbols",
            "test_periods": (
                f"walk-forward, {args.folds} expanding folds (offline.walkforward.walkforward_folds)"
                if args.folds
                else "the pipeline's chronological test split"
            ),
            "routes": cfg.regime.routes if isinstance(cfg.regime.routes, str) else dict(cfg.regime.routes),
            "paper": msgspec.to_builtins(cfg.paper),
            "distill": {
                "quick": args.quick,
                "epochs": cfg.distill.quick_epochs if args.quick else cfg.distill.epochs,
            },
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    }
    result.update(run_study(args, cfg, t0))
    result["meta"]["wall_s"] = time.perf_counter() - t0
    stem.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_finite(result), indent=1, allow_nan=False)
    stem.with_suffix(".json").write_text(text + "\n", encoding="utf-8")
    md = format_md(result)
    if plot(result, stem.with_suffix(".png")):
        md += f"\n![risk-targeting ratio per regime]({stem.with_suffix('.png').name})\n"
    stem.with_suffix(".md").write_text(md, encoding="utf-8")
    print(md)
    return 0


def _finite(o: Any) -> Any:
    """`o` with every non-finite float as None (JSON has no NaN)."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(x) for k, x in o.items()}
    if isinstance(o, list | tuple):
        return [_finite(x) for x in o]
    return o


if __name__ == "__main__":
    raise SystemExit(main())
