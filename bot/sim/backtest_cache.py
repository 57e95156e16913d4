"""The backtest's inputs: one symbol's bars from a CSV, and a cache of its tier predictions.

Predictions depend only on the bars and the models (never on policy keys: routes, thresholds, sizing,
regime thresholds, fees), so they are kept on disk per (data, models) pair: `<cache_dir>/<key>.npz`, `key`
a sha256 over the CSV bytes, the symbol, the bar range, the bar interval,
`bot.core.features.FEATURE_VERSION` and the manifest bytes. A tier's prediction of a row is computed the
first time a run routes that row to the tier (`Predictions.ensure`), and kept: a first run pays only for
the tiers its routes serve, a rerun that changes only policy keys loads what earlier runs computed and
computes only rows now routed elsewhere (`--compare-tiers` and the per-bar reference path ask for every
tier on every row).

Features come from `bot.core.features.features_of_arrays` (the live feature kernel, one T-bar call per
symbol); they are not kept on disk (the kernel recomputes them faster than they load), only which rows have
them. Predictions (the return head and, when the family has one, the volatility head) come from one
`Tier.predict_rows` call per tier and batch of rows (both heads of the tier's runtime at once); a probe of
each batch is recomputed per row through `Tier.predict` / `Tier.predict_vol` (the live path) and the largest
difference is kept (`max_abs_diff`; tests/test_backtest.py proves it 0 on the test family). `batched=False`
computes every row through the per-row path instead.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from bot.core.bars import Bar
from bot.core.errors import DataError
from bot.core.features import FEATURE_VERSION, features_of_arrays
from bot.models.family import MANIFEST_NAME, TierFamily
from bot.sim.csvbars import BarArrays, read_csv_arrays

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bool = npt.NDArray[np.bool_]

#: Bump when the cache file layout changes.
CACHE_VERSION: Final = "3"  # 3: per-tier rows computed on demand (`done_<tier>`), no features on disk
#: Rows of each computed batch also run through the per-row path (`max_abs_diff`).
CHECK_ROWS: Final = 32


@dataclass(frozen=True, slots=True)
class SymbolBars:
    """One symbol's bars (ascending, as arrays: what the kernels take) and the CSV they came from."""

    symbol: str
    path: Path
    arrays: BarArrays
    sha256: str
    _bars: list[tuple[Bar, ...]] = field(default_factory=list, repr=False, compare=False)

    @property
    def start_ms(self) -> I64:
        return self.arrays.start_ms

    @property
    def closes(self) -> F64:
        return self.arrays.close

    @property
    def volumes(self) -> F64:
        return self.arrays.volume

    @property
    def bars(self) -> tuple[Bar, ...]:
        """The rows as `Bar`s (source "csv"), built on first use (the per-bar path and `offline` use them)."""
        if not self._bars:
            self._bars.append(tuple(self.arrays.bars()))
        return self._bars[0]


def parse_data_arg(arg: str) -> tuple[str | None, Path]:
    """`SYMBOL=PATH` or `PATH` (the symbol is then the file name's prefix before "_": BTCUSDT_5m.csv)."""
    if "=" in arg:
        sym, _, path = arg.partition("=")
        if sym and sym.upper() == sym and "/" not in sym:
            return sym, Path(path)
    return None, Path(arg)


def load_symbol(arg: str, *, interval_ms: int) -> SymbolBars:
    """Read one CSV strictly (`bot.sim.csvbars.read_csv_arrays`); check its bars are `interval_ms` apart
    (gaps allowed: features and regime signals restart after a gap, as live).

    Raises:
        DataError: unreadable or malformed file, or a spacing that is not a multiple of the interval.
    """
    symbol, path = parse_data_arg(arg)
    arrays = read_csv_arrays(path, symbol)
    if len(arrays) < 2:
        raise DataError(f"{path}: expected at least 2 bars, got {len(arrays)}")
    starts = arrays.start_ms
    steps = np.diff(starts)
    bad = np.flatnonzero(steps % interval_ms != 0)
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"{path}: line {i + 3}: start_ms {int(starts[i + 1])} is {int(steps[i])} ms after the previous "
            f"bar; expected a multiple of the config's [market] interval ({interval_ms} ms)"
        )
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read klines CSV: {exc.strerror}") from exc
    return SymbolBars(arrays.symbol, path, arrays, hashlib.sha256(raw).hexdigest())


def cache_key(sb: SymbolBars, lo: int, hi: int, *, interval_ms: int, models_dir: Path) -> str:
    """Key of bars `lo:hi` of `sb` under the models in `models_dir`."""
    h = hashlib.sha256()
    manifest = (models_dir / MANIFEST_NAME).read_bytes()
    for part in (
        CACHE_VERSION,
        FEATURE_VERSION,
        sb.sha256,
        sb.symbol,
        str(int(sb.start_ms[lo])),
        str(int(sb.start_ms[hi - 1])),
        str(interval_ms),
        hashlib.sha256(manifest).hexdigest(),
    ):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:32]


def window_arrays(a: BarArrays, lo: int, hi: int) -> BarArrays:
    """Rows `lo:hi` of `a` (contiguous copies)."""

    def cut(x: F64) -> F64:
        return np.ascontiguousarray(x[lo:hi])

    start_ms = np.ascontiguousarray(a.start_ms[lo:hi])
    return BarArrays(a.symbol, start_ms, cut(a.open), cut(a.high), cut(a.low), cut(a.close), cut(a.volume),
                     cut(a.turnover))  # fmt: skip


class Predictions:
    """Every tier's predictions of one symbol's bar range, filled on demand (row i: the range's i-th bar).

    `preds` / `vols` are [n_tiers, n] in the family's tier order (float32 values widened to float64, NaN
    where not computed or not valid); `done` marks the computed ones; `valid` the rows with features.
    `vols` is None without a vol head. The arrays are updated in place, so views of them stay current.
    """

    def __init__(
        self,
        bars: BarArrays,
        family: TierFamily,
        *,
        interval_ms: int,
        path: Path | None = None,
        batched: bool = True,
    ) -> None:
        self.bars = bars
        self.family = family
        self.interval_ms = interval_ms
        self.path = path
        self.batched = batched
        n, k = len(bars), len(family.names)
        self.preds: F64 = np.full((k, n), np.nan, dtype=np.float64)
        self.vols: F64 | None = np.full((k, n), np.nan, dtype=np.float64) if family.has_vol_head else None
        self.done: Bool = np.zeros((k, n), dtype=np.bool_)
        self.valid: Bool = np.zeros(n, dtype=np.bool_)
        self.max_abs_diff = 0.0
        self.hit = False  # read from disk
        self.computed_rows = 0  # (tier, row) predictions computed by this instance
        self._features: F64 | None = None
        if not (path is not None and self._read(path)):
            self.valid = self.features()[1]

    @property
    def predictions(self) -> dict[str, F64]:
        """tier -> its row of `preds` (a view)."""
        return dict(zip(self.family.names, self.preds, strict=True))

    @property
    def vol_predictions(self) -> dict[str, F64]:
        """tier -> its row of `vols` (a view); {} without a vol head."""
        return {} if self.vols is None else dict(zip(self.family.names, self.vols, strict=True))

    def features(self) -> tuple[F64, Bool]:
        """The range's feature rows [n, N_FEATURES] (NaN while warming up) and which are valid (the live
        feature kernel, computed on first use)."""
        b = self.bars
        x, valid = features_of_arrays(
            b.start_ms,
            b.open,
            b.high,
            b.low,
            b.close,
            b.volume,
            interval_ms=self.interval_ms,
            symbol=b.symbol,
        )
        self._features = x
        return x, valid

    def ensure(self, tier: I64, rows: I64) -> None:
        """Compute the missing predictions of tier code `tier[j]` for row `rows[j]` (valid rows only), one
        batch per tier; rewrite the cache file when anything was computed."""
        want = self.valid[rows] & ~self.done[tier, rows]
        if not want.any():
            return
        x = self._features if self._features is not None else self.features()[0]
        for code in np.unique(tier[want]).tolist():
            todo = np.unique(rows[want & (tier == code)])
            self._compute(int(code), todo, x)
        if self.path is not None:
            self._write(self.path)

    def ensure_all(self) -> None:
        """Every tier's prediction of every valid row."""
        rows = np.flatnonzero(self.valid)
        k = len(self.family.names)
        self.ensure(np.repeat(np.arange(k, dtype=np.int64), rows.size), np.tile(rows, k))

    def _compute(self, code: int, rows: I64, x: F64) -> None:
        t = self.family[self.family.names[code]]
        if self.batched:
            ret, vol = t.predict_rows(x[rows])
            probe = rows[:: max(1, rows.size // CHECK_ROWS)]
            single = np.array([t.predict(x[i]) for i in probe], dtype=np.float64)
            diff = float(np.max(np.abs(single - ret[:: max(1, rows.size // CHECK_ROWS)])))
            if vol is not None:
                one = np.array([t.predict_vol(x[i]) for i in probe], dtype=np.float64)
                diff = max(diff, float(np.max(np.abs(one - vol[:: max(1, rows.size // CHECK_ROWS)]))))
            self.max_abs_diff = max(self.max_abs_diff, diff)
        else:
            ret = np.array([t.predict(x[i]) for i in rows], dtype=np.float64)
            vol = np.array([t.predict_vol(x[i]) for i in rows], dtype=np.float64) if t.has_vol_head else None
        self.preds[code, rows] = ret
        if self.vols is not None and vol is not None:
            self.vols[code, rows] = vol
        self.done[code, rows] = True
        self.computed_rows += int(rows.size)

    def _read(self, path: Path) -> bool:
        """Load the cache file; False (nothing loaded) when absent, unreadable or not of this range."""
        n, names = len(self.bars), self.family.names
        vol = self.vols is not None
        keys = ["valid", "max_abs_diff"] + [f"{p}_{t}" for t in names for p in ("pred", "done")]
        keys += [f"vol_{t}" for t in names] if vol else []
        try:
            with np.load(path) as z:
                data: Mapping[str, Any] = {k: z[k] for k in keys if k in z.files}
        except (OSError, ValueError, KeyError):
            return False  # absent or unreadable: recompute
        if len(data) != len(keys) or any(data[k].shape != (n,) for k in keys if k != "max_abs_diff"):
            return False
        self.valid = np.asarray(data["valid"], dtype=np.bool_)
        for code, t in enumerate(names):
            self.preds[code] = data[f"pred_{t}"]
            self.done[code] = data[f"done_{t}"]
            if self.vols is not None:
                self.vols[code] = data[f"vol_{t}"]
        self.max_abs_diff = float(data["max_abs_diff"])
        self.hit = True
        return True

    def _write(self, path: Path) -> None:
        """Atomic write (temp file + rename), so concurrent trials never read half a file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, Any] = {"valid": self.valid, "max_abs_diff": np.float64(self.max_abs_diff)}
        for code, t in enumerate(self.family.names):
            arrays[f"pred_{t}"] = self.preds[code]
            arrays[f"done_{t}"] = self.done[code]
            if self.vols is not None:
                arrays[f"vol_{t}"] = self.vols[code]
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **arrays)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def compute(bars: BarArrays, family: TierFamily, *, interval_ms: int, batched: bool = True) -> Predictions:
    """Every tier's prediction of every valid row of `bars`, nothing on disk.

    Args:
        batched: one `Tier.predict_rows` call per tier (else every row through the per-row path).
    """
    p = Predictions(bars, family, interval_ms=interval_ms, batched=batched)
    p.ensure_all()
    return p


def load(
    sb: SymbolBars,
    lo: int,
    hi: int,
    family: TierFamily,
    *,
    interval_ms: int,
    cache_dir: Path | None,
    batched: bool = True,
) -> Predictions:
    """The predictions of bars `lo:hi` of `sb`, backed by the on-disk cache when `cache_dir` is given
    (nothing is computed yet: `Predictions.ensure`)."""
    path: Path | None = None
    if cache_dir is not None:
        key = cache_key(sb, lo, hi, interval_ms=interval_ms, models_dir=family.models_dir)
        path = cache_dir / f"{key}.npz"
    return Predictions(window_arrays(sb.arrays, lo, hi), family, interval_ms=interval_ms, path=path,
                       batched=batched)  # fmt: skip


class CachedFamily:
    """A `Predictor` that answers from cached predictions: the engine asks as live (tier + feature row), the
    answer is the cached prediction (return, or vol) of the bar the backtest loop is at (`at(symbol, i)`
    before each bar); no onnxruntime call per bar. Every row of every tier must have been computed
    (`Predictions.ensure_all`).

    `check=True` also recomputes each answer through the real tier and raises on any difference (tests).
    """

    def __init__(self, family: TierFamily, cached: Mapping[str, Predictions], *, check: bool = False) -> None:
        self.family = family
        self.model_sha = family.model_sha
        self.cached = dict(cached)
        self.check = check
        self._preds: dict[str, F64] = {}
        self._vols: dict[str, F64] = {}
        self._i = 0

    @property
    def regime_calibration(self) -> dict[str, Any]:
        return self.family.regime_calibration

    @property
    def auto_routes(self) -> dict[str, str] | None:
        return self.family.auto_routes

    def vol_factor(self, tier: str, symbol: str, regime: str) -> float:
        return self.family.vol_factor(tier, symbol, regime)

    def check_routes(self, routes: Mapping[str, str] | str) -> None:
        self.family.check_routes(routes)

    def at(self, symbol: str, i: int) -> None:
        """The next `predict` answers for bar `i` of `symbol`'s cached range."""
        self._preds = self.cached[symbol].predictions
        self._vols = self.cached[symbol].vol_predictions
        self._i = i

    def predict(self, tier: str, x: F64) -> float:
        value = float(self._preds[tier][self._i])
        if self.check:
            self._same(value, self.family.predict(tier, x), "prediction", tier)
        return value

    @property
    def has_vol_head(self) -> bool:
        return self.family.has_vol_head

    def predict_vol(self, tier: str, x: F64) -> float | None:
        if not self.family.has_vol_head:
            return None
        value = float(self._vols[tier][self._i])
        if self.check:
            self._same(value, self.family.predict_vol(tier, x), "vol forecast", tier)
        return value

    @staticmethod
    def _same(cached: float, live: float | None, what: str, tier: str) -> None:
        if live != cached:
            raise AssertionError(f"cached {what} {cached!r} != live {live!r} for tier {tier}")

    def warm(self, tier: str) -> None:
        """Nothing to warm: answers come from memory."""
