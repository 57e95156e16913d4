"""Feature drift: a rolling Population Stability Index per feature and symbol against the training bins.

The manifest stores, per monitored feature, quantile bin edges and the share of training rows in each bin
(`fit_bins`, run by `offline/export.py` on the training rows). `DriftMonitor` keeps, per symbol, the bin
of every feature for the last `window_bars` live rows in a ring buffer and a count per (feature, bin): a
new row increments its bins and decrements the bins of the row it pushes out, so an update costs one
vectorised bin lookup plus O(n_features) work, whatever the window. Once a symbol's window is full
(`window_bars` rows; `min_rows` in tests), each update returns every feature's

    PSI = sum over bins (p_live - p_train) * ln(p_live / p_train)

where both shares are floored at `eps` (default 1e-4) so an empty bin adds a large but finite term
instead of infinity (a bin empty in training and live adds 0). 0.1 is the usual "moderate" and 0.25 the
"significant shift" level.

A window shorter than a feature's own memory (a day of bars for a day-long volatility average, or one
volatility regime) holds few independent values, so its PSI is large even on the training rows: on real
5m data every window of 288 bars has some feature above 0.25 (docs/service.md, benchmarks/drift.py). Each
feature therefore warns from its own threshold, `max(warn_psi, baseline)`, where the baseline is the
highest PSI a rolling window of the same length reached over the training rows (`training_psi_max`,
stored in the manifest at export): a warning means "further from the training distribution than any
stretch of the training period itself". The PSI is reported only over full windows, the statistic the
baseline was measured on (a partial window is noisier: it alarmed on most inputs at once at the start of
the real-data benchmark). Warnings have hysteresis: a (symbol, feature) turns *drifting*
when its PSI reaches its threshold (reported once, `crossed`) and *recovers* when it falls below
`recover_ratio` x the threshold (reported once, `recovered`), not a line per bar.

Pure and synchronous: no logging, no clock; the service shell logs and exports what `update` returns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from bot.core.features import FEATURE_NAMES, FEATURE_SETS

F64 = npt.NDArray[np.float64]

#: Floor of a bin share (training and live) inside the PSI: an empty bin counts as this share.
PSI_EPS: Final = 1e-4
#: The shortest window. Sampling alone gives a PSI of about (bins - 1) / rows for a window drawn from the
#: training distribution itself (0.09 at 100 rows of 10 bins, 0.03 at 288), so a shorter window would put
#: the noise within reach of the 0.25 warning.
MIN_WINDOW: Final = 100
#: Bins per feature the export fits (deciles of the training rows).
N_BINS: Final = 10


def monitored_features(used: Iterable[str]) -> tuple[str, ...]:
    """The features drift is watched on: those in `used` (the tiers' inputs), in FEATURE_NAMES order,
    except the calendar ones (hour/day of week: a day-long live window always differs from the training
    weeks, without any change in the market)."""
    wanted = set(used) & set(FEATURE_SETS["no_calendar"])
    return tuple(n for n in FEATURE_NAMES if n in wanted)


def fit_bins(values: F64, n_bins: int) -> tuple[list[float], list[float]]:
    """Quantile bins of one feature's training values: (interior edges, share of rows per bin).

    Edges are the `k / n_bins` quantiles (k = 1..n_bins-1) with ties merged, so a feature with repeated
    values gets fewer, still strictly increasing, edges. Rows are assigned with the same rule as
    `DriftMonitor` (bin i holds edges[i-1] < x <= edges[i]), so the shares are exact for the training rows.

    Raises:
        ValueError: `n_bins` < 2, or no finite value.
    """
    if n_bins < 2:
        raise ValueError(f"n_bins must be >= 2, got {n_bins}")
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise ValueError("no finite values to fit bins on")
    edges = np.unique(np.quantile(v, np.arange(1, n_bins) / n_bins))
    counts = np.bincount(np.searchsorted(edges, v, side="left"), minlength=edges.size + 1)
    return [float(e) for e in edges], [float(c) / v.size for c in counts]


def training_psi_max(
    bins: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    columns: Mapping[str, int],
    rows: F64,
    *,
    window_bars: int,
) -> dict[str, float] | None:
    """Per feature, the highest PSI that `DriftMonitor` (same window) reports while the training `rows`
    stream through it in time order against `bins`: its level on data without drift. None when there are
    fewer rows than a window."""
    if len(rows) < window_bars:
        return None
    m = DriftMonitor(bins, columns, window_bars=window_bars, warn_psi=1.0)
    top = np.zeros(len(m.features))
    for row in rows:
        psi = m.update("train", row).psi
        if psi is not None:
            np.maximum(top, psi, out=top)
    return dict(zip(m.features, (float(v) for v in top), strict=True))


class RecentRows:
    """The last `window_bars` full feature rows per symbol (any family's monitored columns are in them), so
    that a new monitor - after a reload, or a restart that replayed the ledger - starts with a full window
    instead of `window_bars` bars without drift.

    Args:
        window_bars: rows kept per symbol.
        n_features: width of a row.
    """

    def __init__(self, window_bars: int, n_features: int) -> None:
        self.window_bars = window_bars
        self.n_features = n_features
        self._rows: dict[str, F64] = {}
        self._n: dict[str, int] = {}

    def append(self, symbol: str, row: F64) -> None:
        """Keep `row` (copied) as `symbol`'s newest, forgetting the oldest once full."""
        buf = self._rows.get(symbol)
        if buf is None:
            buf = self._rows[symbol] = np.empty((self.window_bars, self.n_features))
        n = self._n.get(symbol, 0)
        buf[n % self.window_bars] = row
        self._n[symbol] = n + 1

    def rows(self, symbol: str) -> F64:
        """`symbol`'s kept rows, oldest first ([0, n_features] when none)."""
        n = self._n.get(symbol, 0)
        buf = self._rows.get(symbol)
        if buf is None:
            return np.empty((0, self.n_features))
        if n <= self.window_bars:
            return buf[:n]
        pos = n % self.window_bars
        out: F64 = np.concatenate([buf[pos:], buf[:pos]])
        return out

    @property
    def symbols(self) -> tuple[str, ...]:
        """Symbols with rows."""
        return tuple(self._rows)


@dataclass(frozen=True, slots=True)
class DriftUpdate:
    """One symbol's drift after a row.

    Attributes:
        rows: live rows in the window.
        psi: PSI per feature (monitor order), or None while the window holds fewer than `min_rows` rows.
        crossed: features that turned drifting with this row, with their PSI (log once per crossing).
        recovered: features that recovered with this row, with their PSI.
    """

    rows: int
    psi: F64 | None
    crossed: tuple[tuple[str, float], ...] = ()
    recovered: tuple[tuple[str, float], ...] = ()


class _Window:
    __slots__ = ("bins", "counts", "drifting", "n", "pos", "psi")

    def __init__(self, window: int, n_features: int, n_bins: int) -> None:
        # ring buffer of each row's flat bins: 4 bytes per feature and bar (288 x 37: 43 kB per symbol)
        self.bins = np.zeros((window, n_features), dtype=np.int32)
        self.counts = np.zeros(n_features * n_bins, dtype=np.float64)  # per (feature, bin), flattened
        self.drifting = np.zeros(n_features, dtype=bool)
        self.n = 0
        self.pos = 0
        self.psi: F64 | None = None


class DriftMonitor:
    """Rolling PSI of live feature rows against training bins, per symbol.

    Args:
        bins: per monitored feature (in the order results are reported), its (edges, train_frac) as in the
            manifest's `drift.features` (`fit_bins`).
        columns: per monitored feature, its column in the rows passed to `update`.
        window_bars: live rows per symbol the PSI is computed over (the oldest is forgotten).
        warn_psi: a feature is drifting from this PSI up ...
        baseline: ... or from its baseline PSI, when higher (per feature; a feature not named has none).
        recover_ratio: ... and recovers below `recover_ratio` x its threshold (hysteresis; 1 = none).
        min_rows: rows needed before a PSI is reported (None: a full window; capped at `window_bars`).
        eps: floor of a bin share in the PSI.
    """

    def __init__(
        self,
        bins: Mapping[str, tuple[Sequence[float], Sequence[float]]],
        columns: Mapping[str, int],
        *,
        window_bars: int,
        warn_psi: float,
        baseline: Mapping[str, float] | None = None,
        recover_ratio: float = 0.8,
        min_rows: int | None = None,
        eps: float = PSI_EPS,
    ) -> None:
        if not bins:
            raise ValueError("bins: at least one feature is required")
        if window_bars < 2:
            raise ValueError(f"window_bars must be >= 2, got {window_bars}")
        if not warn_psi > 0 or not 0 < recover_ratio <= 1:
            raise ValueError(
                f"warn_psi must be > 0 and recover_ratio in (0, 1], got {warn_psi}, {recover_ratio}"
            )
        if min_rows is not None and min_rows < 1:
            raise ValueError(f"min_rows must be >= 1 or None (a full window), got {min_rows}")
        missing = [f for f in bins if f not in columns]
        if missing:
            raise ValueError(f"no column for feature(s) {missing}")
        self.features: tuple[str, ...] = tuple(bins)
        self.window_bars = window_bars
        self.warn_psi = warn_psi
        base = baseline or {}
        #: per feature (monitor order), the PSI it warns from
        self.threshold: F64 = np.array([max(warn_psi, base.get(f, 0.0)) for f in self.features])
        self._recover = recover_ratio * self.threshold
        self.min_rows = window_bars if min_rows is None else min(min_rows, window_bars)
        self.eps = eps
        n_f = len(self.features)
        self.n_bins = max(len(bins[f][0]) + 1 for f in self.features)
        # padded edges: one [n_features, n_bins - 1] comparison finds every feature's bin at once
        edges = np.full((n_f, self.n_bins - 1), np.inf)
        train = np.zeros((n_f, self.n_bins))
        for i, f in enumerate(self.features):
            e, frac = bins[f]
            if len(frac) != len(e) + 1:
                raise ValueError(f"{f}: {len(e)} edges need {len(e) + 1} train_frac values, got {len(frac)}")
            edges[i, : len(e)] = e
            train[i, : len(frac)] = frac
        self._edges = edges
        self._cols = np.array([columns[f] for f in self.features], dtype=np.intp)
        self._offset = np.arange(n_f, dtype=np.intp) * self.n_bins
        # padding bins (beyond a feature's own) hold no rows, live or in training: both shares are `eps`
        # and their term is exactly 0
        q = np.maximum(train, eps)
        self._q = q
        self._log_q = np.log(q)
        self._windows: dict[str, _Window] = {}

    def _window(self, symbol: str) -> _Window:
        w = self._windows.get(symbol)
        if w is None:
            w = self._windows[symbol] = _Window(self.window_bars, len(self.features), self.n_bins)
        return w

    def update(self, symbol: str, row: F64) -> DriftUpdate:
        """Absorb one live feature row of `symbol` (a row with a non-finite monitored value is skipped)."""
        w = self._window(symbol)
        x = row[self._cols]
        if not np.isfinite(x).all():
            return DriftUpdate(w.n, w.psi)
        flat = (x[:, None] > self._edges).sum(axis=1) + self._offset
        if w.n == self.window_bars:
            w.counts[w.bins[w.pos]] -= 1.0  # the row pushed out (distinct indices: one per feature)
        else:
            w.n += 1
        w.bins[w.pos] = flat
        w.counts[flat] += 1.0  # one row: every feature's bin is a distinct flat index
        w.pos = (w.pos + 1) % self.window_bars
        if w.n < self.min_rows:
            return DriftUpdate(w.n, None)
        p = np.maximum(w.counts.reshape(self._q.shape) / w.n, self.eps)
        psi: F64 = ((p - self._q) * (np.log(p) - self._log_q)).sum(axis=1)
        w.psi = psi
        up = ~w.drifting & (psi >= self.threshold)
        down = w.drifting & (psi < self._recover)
        if not (up.any() or down.any()):
            return DriftUpdate(w.n, psi)
        w.drifting = (w.drifting | up) & ~down
        return DriftUpdate(
            w.n,
            psi,
            crossed=tuple((self.features[i], float(psi[i])) for i in np.flatnonzero(up)),
            recovered=tuple((self.features[i], float(psi[i])) for i in np.flatnonzero(down)),
        )

    # ---- reading ---------------------------------------------------------------------------------
    def rows(self, symbol: str) -> int:
        """Live rows in `symbol`'s window (0 before the first)."""
        w = self._windows.get(symbol)
        return 0 if w is None else w.n

    def psi(self, symbol: str) -> dict[str, float] | None:
        """PSI per feature of `symbol` after its last update (None before the window has `min_rows` rows)."""
        w = self._windows.get(symbol)
        if w is None or w.psi is None:
            return None
        return dict(zip(self.features, (float(v) for v in w.psi), strict=True))

    def worst(self, symbol: str) -> tuple[str, float] | None:
        """`symbol`'s feature with the highest PSI and that PSI (None before `min_rows` rows)."""
        w = self._windows.get(symbol)
        if w is None or w.psi is None:
            return None
        i = int(np.argmax(w.psi))
        return self.features[i], float(w.psi[i])

    def threshold_of(self, feature: str) -> float:
        """The PSI `feature` warns from."""
        return float(self.threshold[self.features.index(feature)])

    def thresholds(self) -> dict[str, float]:
        """Every feature's warning threshold."""
        return dict(zip(self.features, (float(v) for v in self.threshold), strict=True))

    def closest(self, symbol: str) -> tuple[str, float, float] | None:
        """`symbol`'s feature nearest its warning (highest PSI / threshold): (feature, PSI, threshold);
        None before the window has `min_rows` rows."""
        w = self._windows.get(symbol)
        if w is None or w.psi is None:
            return None
        i = int(np.argmax(w.psi / self.threshold))
        return self.features[i], float(w.psi[i]), float(self.threshold[i])

    def drifting(self, symbol: str) -> tuple[str, ...]:
        """`symbol`'s features currently drifting (between a crossing and its recovery)."""
        w = self._windows.get(symbol)
        return () if w is None else tuple(self.features[i] for i in np.flatnonzero(w.drifting))
