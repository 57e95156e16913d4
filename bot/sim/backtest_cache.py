"""The backtest's inputs: one symbol's bars from a CSV, and a cache of its features and tier predictions.

Features and predictions depend only on the bars and the models (never on policy keys: routes, thresholds,
sizing, regime thresholds, fees), so they are computed once per (data, models) pair and kept on disk:
`<cache_dir>/<key>.npz`, `key` a sha256 over the CSV bytes, the symbol, the bar range, the bar interval,
`bot.core.features.FEATURE_VERSION` and the manifest bytes. A rerun that changes only policy keys loads them
instead of recomputing.

Features come from `bot.core.features.replay_features`: the live feature kernel, one T-bar call per symbol.
Predictions (the return head, and the volatility head when the family has one) are computed per bar through
`Tier.predict` / `Tier.predict_vol` (the live path: the same float64 -> float32 gather into the bound buffer)
by default; `batched=True` uses one onnxruntime call per tier and head over all rows (`Tier.predict_batch`),
which tests/test_backtest.py proves equal to the per-bar path (float32, exactly, on the test family;
`max_abs_diff` is kept in the cache for any other family).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from bot.core.bars import Bar
from bot.core.errors import DataError
from bot.core.features import FEATURE_VERSION, N_FEATURES, replay_features
from bot.sim.csvbars import read_csv_bars
from bot.tiers import MANIFEST_NAME, TierFamily

F64 = npt.NDArray[np.float64]

#: Bump when the cache file layout changes.
CACHE_VERSION: Final = "2"  # 2: the vol head's predictions are cached too


@dataclass(frozen=True, slots=True)
class SymbolBars:
    """One symbol's bars (ascending) and the CSV they came from; `start_ms`, `closes` and `volumes` are the
    bars' fields as arrays (what the kernels take)."""

    symbol: str
    path: Path
    bars: tuple[Bar, ...]
    sha256: str
    start_ms: npt.NDArray[np.int64]
    closes: F64
    volumes: F64


def parse_data_arg(arg: str) -> tuple[str | None, Path]:
    """`SYMBOL=PATH` or `PATH` (the symbol is then the file name's prefix before "_": BTCUSDT_5m.csv)."""
    if "=" in arg:
        sym, _, path = arg.partition("=")
        if sym and sym.upper() == sym and "/" not in sym:
            return sym, Path(path)
    return None, Path(arg)


def load_symbol(arg: str, *, interval_ms: int) -> SymbolBars:
    """Read one CSV strictly (`bot.sim.csvbars`); check its bars are `interval_ms` apart (gaps allowed:
    features and regime signals restart after a gap, as live).

    Raises:
        DataError: unreadable or malformed file, or a spacing that is not a multiple of the interval.
    """
    symbol, path = parse_data_arg(arg)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read klines CSV: {exc.strerror}") from exc
    bars = tuple(read_csv_bars(path, symbol))
    if len(bars) < 2:
        raise DataError(f"{path}: expected at least 2 bars, got {len(bars)}")
    starts = np.fromiter((b.start_ms for b in bars), dtype=np.int64, count=len(bars))
    steps = np.diff(starts)
    bad = np.flatnonzero(steps % interval_ms != 0)
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"{path}: line {i + 3}: start_ms {int(starts[i + 1])} is {int(steps[i])} ms after the previous "
            f"bar; expected a multiple of the config's [market] interval ({interval_ms} ms)"
        )
    closes = np.fromiter((b.close for b in bars), dtype=np.float64, count=len(bars))
    volumes = np.fromiter((b.volume for b in bars), dtype=np.float64, count=len(bars))
    return SymbolBars(bars[0].symbol, path, bars, hashlib.sha256(raw).hexdigest(), starts, closes, volumes)


@dataclass(frozen=True, slots=True)
class Cached:
    """Features and predictions of a bar range: row i belongs to the range's i-th bar."""

    features: F64  # [n, N_FEATURES], NaN rows while warming up
    valid: npt.NDArray[np.bool_]
    predictions: dict[str, F64]  # tier -> [n] (float32 values widened to float64, NaN when not valid)
    hit: bool  # loaded from disk
    max_abs_diff: float  # batched vs per-bar on the checked rows, both heads (0.0 when per-bar)
    vol_predictions: dict[str, F64] = field(default_factory=dict)  # as `predictions`; {} without a vol head


def cache_key(sb: SymbolBars, lo: int, hi: int, *, interval_ms: int, models_dir: Path) -> str:
    """Key of bars `sb.bars[lo:hi]` under the models in `models_dir`."""
    h = hashlib.sha256()
    manifest = (models_dir / MANIFEST_NAME).read_bytes()
    for part in (
        CACHE_VERSION,
        FEATURE_VERSION,
        sb.sha256,
        sb.symbol,
        str(sb.bars[lo].start_ms),
        str(sb.bars[hi - 1].start_ms),
        str(interval_ms),
        hashlib.sha256(manifest).hexdigest(),
    ):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:32]


def compute(
    bars: Sequence[Bar], family: TierFamily, *, interval_ms: int, batched: bool = True, check_rows: int = 256
) -> Cached:
    """Features (the live feature kernel) and every tier's prediction for every bar of `bars`.

    Args:
        batched: one onnxruntime call per tier (checked against the per-bar path on `check_rows` rows).
    """
    x, valid = replay_features(bars, interval_ms=interval_ms)
    rows = np.flatnonzero(valid)
    vol_head = family.manifest.vol_head if family.has_vol_head else None
    preds: dict[str, F64] = {}
    vols: dict[str, F64] = {}
    max_diff = 0.0
    for tier in family:
        heads: list[tuple[dict[str, F64], str | None, Callable[[F64], float | None]]] = [
            (preds, None, tier.predict)
        ]
        if vol_head is not None:
            heads.append((vols, vol_head.output_name, tier.predict_vol))
        for into, output, one in heads:
            out = np.full(len(bars), np.nan, dtype=np.float64)
            if rows.size:
                if batched:
                    out[rows] = tier.predict_batch(x[rows], output=output).astype(np.float64)
                    probe = rows[:: max(1, rows.size // check_rows)]
                    single = np.array([one(x[i]) for i in probe], dtype=np.float64)
                    max_diff = max(max_diff, float(np.max(np.abs(single - out[probe]))))
                else:
                    out[rows] = [one(x[i]) for i in rows]
            into[tier.name] = out
    return Cached(x, valid, preds, hit=False, max_abs_diff=max_diff, vol_predictions=vols)


def load_or_compute(
    sb: SymbolBars,
    lo: int,
    hi: int,
    family: TierFamily,
    *,
    interval_ms: int,
    cache_dir: Path | None,
    batched: bool = True,
) -> Cached:
    """`compute` for `sb.bars[lo:hi]`, through the on-disk cache when `cache_dir` is given."""
    path: Path | None = None
    if cache_dir is not None:
        key = cache_key(sb, lo, hi, interval_ms=interval_ms, models_dir=family.models_dir)
        path = cache_dir / f"{key}.npz"
        got = _read(path, hi - lo, family.names, vol=family.has_vol_head)
        if got is not None:
            return got
    cached = compute(sb.bars[lo:hi], family, interval_ms=interval_ms, batched=batched)
    if path is not None:
        _write(path, cached)
    return cached


def _read(path: Path, n: int, tiers: Sequence[str], *, vol: bool) -> Cached | None:
    try:
        with np.load(path) as z:
            data: Mapping[str, Any] = {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError):
        return None  # absent or unreadable: recompute
    x = data.get("features")
    keys = [f"pred_{t}" for t in tiers] + ([f"vol_{t}" for t in tiers] if vol else [])
    if x is None or x.shape != (n, N_FEATURES) or any(k not in data for k in keys):
        return None
    preds = {t: np.asarray(data[f"pred_{t}"], dtype=np.float64) for t in tiers}
    vols = {t: np.asarray(data[f"vol_{t}"], dtype=np.float64) for t in tiers} if vol else {}
    return Cached(
        np.asarray(x, dtype=np.float64),
        np.asarray(data["valid"], dtype=np.bool_),
        preds,
        hit=True,
        max_abs_diff=float(data["max_abs_diff"]),
        vol_predictions=vols,
    )


def _write(path: Path, cached: Cached) -> None:
    """Atomic write (temp file + rename), so concurrent trials never read half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = {
        "features": cached.features,
        "valid": cached.valid,
        "max_abs_diff": np.float64(cached.max_abs_diff),
    }
    arrays.update({f"pred_{t}": p for t, p in cached.predictions.items()})
    arrays.update({f"vol_{t}": p for t, p in cached.vol_predictions.items()})
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class CachedFamily:
    """A `Predictor` that answers from cached predictions: the engine asks as live (tier + feature row), the
    answer is the cached prediction (return, or vol) of the bar the backtest loop is at (`at(symbol, i)`
    before each bar); no onnxruntime call per bar.

    `check=True` also recomputes each answer through the real tier and raises on any difference (tests).
    """

    def __init__(self, family: TierFamily, cached: Mapping[str, Cached], *, check: bool = False) -> None:
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
