"""Which teacher shape earns its size on the vol head: one two-head MLP per (shape, feature set, L2) on the
5 real symbols pooled, against HAR-RV and HAR-RV + hour fitted on the same rows.

Each model is trained exactly as `offline distill` trains the teacher (`offline.train.fit_mlp` with the
`[distill]` teacher L2 candidates, teacher learning rate and batch size, epochs and patience of config.toml;
standardised return and log-vol targets; early stopping on the embargoed chronological validation tail) on
all training rows of the pooled calendar split (`offline.data.load_pooled`), one seed. HAR-RV and HAR-RV +
hour are fitted per symbol on its own training rows. Scores on the test rows: vol R^2 over all rows, the
mean over symbols of each symbol's own R^2, Spearman IC and bias-corrected QLIKE.

    .venv/bin/python benchmarks/teacher_shapes.py --quick     # last 10,000 bars per symbol, 3 shapes
    .venv/bin/python benchmarks/teacher_shapes.py             # all bars, 5 shapes -> docs/teacher_shapes.json
    .venv/bin/python benchmarks/teacher_shapes.py --smoke     # 2 symbols x 3,000 bars, 2 tiny shapes: seconds

`--smoke` writes to a temp dir (or `--out`) and uses a synthetic market when ../shared/data is absent.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _smoke import SMOKE_HELP, data_or_synthetic, output_path  # noqa: E402 (benchmarks/, beside this script)

from bot.config import load_config  # noqa: E402 - after the path insert
from bot.core.features import FEATURE_SETS, feature_indices  # noqa: E402
from offline import vol as volmod  # noqa: E402
from offline.data import Dataset, load_pooled  # noqa: E402
from offline.train import fit_mlp, param_count  # noqa: E402

DATA = REPO.parent / "shared/data/bybit_linear_cobra0506_crypto_backtester/normalized"
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "BNBUSDT")
#: (layers, width, feature set, L2 candidates): the teacher is the candidate with the best validation MSE.
FULL = (
    (8, 256, "research"),
    (3, 256, "research"),
    (3, 256, "v1"),
    (3, 128, "price_volume_vol"),
    (2, 32, "edge_vol"),
)
QUICK = ((8, 256, "research"), (3, 256, "research"), (2, 32, "edge_vol"))
SMOKE = ((2, 16, "research"), (1, 8, "edge_vol"))


def _scores(ds: Dataset, raw: np.ndarray, corrected: np.ndarray, rows: np.ndarray) -> dict[str, float]:
    """R^2 (all rows and per symbol) and IC of the raw log-vol forecast; QLIKE of the bias-corrected one."""
    assert ds.log_vol is not None
    assert ds.series is not None
    lv = ds.log_vol
    m = volmod.vol_metrics(np.exp(lv[rows]), raw[rows])
    s = ds.series[rows]
    per = [volmod.r2(lv[rows][s == k], raw[rows][s == k]) for k in np.unique(s)]
    return {
        "vol_r2": m["r2_log_vol"],
        "vol_r2_sym": float(np.mean(per)),
        "vol_ic": m["ic"],
        "vol_qlike_bc": volmod.qlike(np.exp(lv[rows]), np.exp(corrected[rows])),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument(
        "--smoke", action="store_true", help=f"{SMOKE_HELP}: 2 symbols x 3,000 bars, 2 tiny shapes"
    )
    ap.add_argument("--out", type=Path, default=None, help="JSON (default docs/teacher_shapes[_quick].json)")
    args = ap.parse_args()
    cfg = load_config(REPO / "config.toml").distill
    n_bars = 3_000 if args.smoke else 10_000 if args.quick else None
    symbols = SYMBOLS[:2] if args.smoke else SYMBOLS
    data = data_or_synthetic(DATA, symbols) if args.smoke else DATA
    t0 = time.perf_counter()
    ds = load_pooled([data / f"{s}_5m.csv" for s in symbols], cfg, symbols=list(symbols), n_bars=n_bars)
    assert ds.log_vol is not None
    assert ds.har_X is not None
    assert ds.har_tod_X is not None
    tr, va, te = ds.splits.train, ds.splits.val, ds.splits.test
    lv = ds.log_vol
    print(
        f"{ds.n_rows} rows ({len(tr)} train, {len(va)} val, {len(te)} test), {time.perf_counter() - t0:.1f} s"
    )
    rows: list[dict[str, Any]] = []
    assert ds.series is not None
    is_train = np.zeros(ds.n_rows, dtype=np.bool_)
    is_train[tr] = True
    for key, design in (("HAR-RV", ds.har_X), ("HAR-RV + hour", ds.har_tod_X)):
        p = np.full(ds.n_rows, np.nan)  # one HAR per symbol, fitted on its own training rows
        bc = np.full(ds.n_rows, np.nan)
        for k in range(ds.n_series):
            fit_rows = np.flatnonzero((ds.series == k) & is_train)
            har = volmod.HarRV().fit(design[fit_rows], lv[fit_rows])
            own = ds.series == k
            p[own] = har.predict(design[own])
            scale = volmod.qlike_scale(np.exp(lv[fit_rows]), np.exp(p[fit_rows]))
            bc[own] = p[own] + 0.5 * np.log(scale)  # the symbol's own variance scale
        rows.append({"model": key + " (per symbol)", "params": None, **_scores(ds, p, bc, te)})
    ym, ys = float(ds.y[tr].mean()), float(ds.y[tr].std())
    vm, vs = float(lv[tr].mean()), float(lv[tr].std())
    targets = np.column_stack([(ds.y - ym) / ys, (lv - vm) / vs])
    shapes = SMOKE if args.smoke else QUICK if args.quick else FULL
    epochs = 2 if args.smoke else cfg.quick_epochs if args.quick else cfg.epochs
    l2_candidates = (cfg.teacher_l2 or [cfg.l2])[: 1 if args.smoke else None]
    with threadpool_limits(1):
        for layers, width, fset in shapes:
            cols = feature_indices(FEATURE_SETS[fset])
            sc = StandardScaler().fit(ds.X[tr][:, cols])
            X = np.asarray(sc.transform(ds.X[:, cols]), dtype=np.float32)
            best: tuple[float, Any, float, float] | None = None
            for l2 in l2_candidates:
                c = msgspec.structs.replace(
                    cfg,
                    l2=l2,
                    learning_rate=cfg.teacher_learning_rate or cfg.learning_rate,
                    batch_size=cfg.teacher_batch_size or cfg.batch_size,
                )
                t1 = time.perf_counter()
                fit = fit_mlp(
                    (width,) * layers,
                    X[tr],
                    targets[tr].astype(np.float32),
                    X[va],
                    targets[va],
                    c,
                    epochs=epochs,
                    seed=0,
                )
                secs = time.perf_counter() - t1
                if best is None or fit.val_mse < best[0]:
                    best = (fit.val_mse, fit, l2, secs)
            assert best is not None
            _, fit, l2, secs = best
            p = np.asarray(fit.mlp.predict(X), dtype=np.float64).reshape(len(X), -1)[:, 1] * vs + vm
            bc = p + 0.5 * np.log(volmod.qlike_scale(np.exp(lv[tr]), np.exp(p[tr])))  # as the pipeline does
            row = {
                "model": f"{layers}x{width} {fset}",
                "params": param_count(len(cols), (width,) * layers, n_outputs=2),
                "l2": l2,
                "best_epoch": fit.best_epoch,
                "fit_s": round(secs, 1),
                "val_vol_r2": volmod.r2(lv[va], p[va]),
                **_scores(ds, p, bc, te),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\n{'model':28s} {'params':>8s} {'vol R2':>7s} {'R2/sym':>7s} {'IC':>6s} {'QLIKE bc':>8s}")
    for r in rows:
        params = "-" if r["params"] is None else f"{r['params']:,}"
        print(
            f"{r['model']:28s} {params:>8s} {r['vol_r2']:7.4f} {r['vol_r2_sym']:7.4f} {r['vol_ic']:6.3f} "
            f"{r['vol_qlike_bc']:8.4f}"
        )
    out = output_path(args.out, "teacher_shapes", ".json", smoke=args.smoke, quick=args.quick)
    out.write_text(json.dumps({"quick": args.quick, "rows": rows}, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
