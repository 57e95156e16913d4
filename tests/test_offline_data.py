"""offline.data: CSV checks naming the row, gaps, forward-return targets, splits with embargo."""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import pytest

from bot.config import DistillConfig
from bot.core.bars import Bar
from bot.core.errors import DataError
from bot.core.features import WARMUP_BARS
from offline.data import (
    build_dataset,
    calendar_splits,
    check_gaps,
    forward_returns,
    load_csv,
    load_dataset,
    load_pooled,
    synthetic_bars,
)

STEP_MS = 300_000
HEADER = "start_ms,open,high,low,close,volume\n"


def _rows(n: int, *, start_ms: int = 1_700_000_000_000) -> list[str]:
    out = []
    price = 100.0
    for i in range(n):
        c = price * (1.0 + 0.001 * ((i * 7919) % 13 - 6))
        out.append(
            f"{start_ms + i * STEP_MS},{price},{max(price, c) + 0.5},{min(price, c) - 0.5},{c},{10 + i % 5}\n"
        )
        price = c
    return out


def _write(tmp_path: Path, rows: list[str], header: str = HEADER) -> Path:
    p = tmp_path / "TESTUSDT_5m.csv"
    p.write_text(header + "".join(rows), encoding="utf-8")
    return p


def test_load_csv_reads_bars_with_the_given_symbol_never_the_file_name(tmp_path: Path) -> None:
    """A clean CSV loads as csv-sourced Bars with the symbol given, never one guessed from its name."""
    path = _write(tmp_path, _rows(5))
    assert load_csv(path)[0].symbol == "UNKNOWN"
    bars = load_csv(path, symbol="ETHUSDT")
    assert len(bars) == 5
    assert bars[0].symbol == "ETHUSDT"
    assert bars[0].source == "csv"
    assert bars[1].start_ms - bars[0].start_ms == STEP_MS


@pytest.mark.parametrize(
    ("line", "replacement", "message"),
    [
        (3, "DUP", "line 5: duplicate start_ms"),
        (3, "BACK", "line 5: start_ms 1700000000000 is before"),
        (2, "{t},nan,101,99,100,1\n", "line 3: open must be finite"),
        (2, "{t},100,101,99,0,1\n", "line 3: prices must be > 0"),
        (2, "{t},100,101,-99,100,1\n", "line 3: prices must be > 0"),
        (2, "{t},100,98,99,98.5,1\n", "line 3: high 98.0 < low 99.0"),
        (2, "{t},100,101,99,abc,1\n", "line 3: close must be a number"),
        (2, "{t},100,101,99,100\n", "line 3: expected 6 fields"),
        (2, "{t},100,100.5,99,102,1\n", "line 3: open/close outside [low, high]"),
    ],
)
def test_bad_csv_row_is_rejected_naming_the_line(
    tmp_path: Path, line: int, replacement: str, message: str
) -> None:
    """Each malformed row raises DataError naming its line number (header = line 1) and the problem."""
    rows = _rows(6)
    t = 1_700_000_000_000 + (line - 1) * STEP_MS
    if replacement == "DUP":
        rows[line] = rows[line - 1]
    elif replacement == "BACK":
        rows[line] = rows[line].replace(str(t + STEP_MS), str(t - 2 * STEP_MS), 1)
    else:
        rows[line - 1] = replacement.format(t=t)
    with pytest.raises(DataError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_csv(_write(tmp_path, rows))


def test_bad_header_is_rejected(tmp_path: Path) -> None:
    """A file without the start_ms,open,high,low,close,volume header is rejected naming line 1."""
    with pytest.raises(DataError, match="line 1: expected header"):
        load_csv(_write(tmp_path, _rows(3), header="time,o,h,l,c,v\n"))


def test_gap_is_an_error_naming_the_first_gap_unless_allowed(tmp_path: Path) -> None:
    """A time gap raises DataError naming the first gap's row; allow_gaps counts the gaps instead."""
    rows = _rows(10)
    rows[6:] = _rows(4, start_ms=1_700_000_000_000 + 20 * STEP_MS)
    bars = load_csv(_write(tmp_path, rows))
    with pytest.raises(DataError, match=r"gap before data row 7 \(line 8\).*--allow-gaps"):
        check_gaps(bars, STEP_MS, allow_gaps=False)
    assert check_gaps(bars, STEP_MS, allow_gaps=True) == 1


def test_targets_are_forward_returns_and_never_span_a_gap() -> None:
    """y_t = c_{t+h}/c_t - 1, and rows whose horizon crosses a gap are not usable."""
    bars = synthetic_bars(400, seed=2)
    from bot.core.bars import Bar

    gapped = [
        *bars[:200],
        *(Bar(b.symbol, b.start_ms + STEP_MS, b.open, b.high, b.low, b.close, b.volume) for b in bars[200:]),
    ]
    y, ok = forward_returns(gapped, 3, STEP_MS)
    c = np.array([b.close for b in gapped])
    np.testing.assert_allclose(y[:197], c[3:200] / c[:197] - 1.0)
    assert not ok[197:200].any()
    assert ok[200:397].all()
    assert not ok[397:].any()


def test_dataset_rows_splits_and_embargo() -> None:
    """Usable rows are warm and gap-free with both targets complete (the 12-bar vol target is the longer);
    splits are chronological, disjoint, separated by the embargo."""
    cfg = DistillConfig(horizon_bars=2, embargo_bars=30, synthetic_bars=3000)
    ds = load_dataset("synthetic", cfg)
    assert ds.bar_index[0] == WARMUP_BARS - 1
    assert ds.n_rows == 3000 - (WARMUP_BARS - 1) - 12
    c = np.array([b.close for b in ds.bars])
    np.testing.assert_allclose(ds.y, c[ds.bar_index + 2] / c[ds.bar_index] - 1.0)
    assert ds.log_vol is not None
    assert ds.vol_horizon_bars == 12
    i = int(ds.bar_index[5])
    rms = np.sqrt(np.mean(np.log(c[i + 1 : i + 13] / c[i : i + 12]) ** 2))
    assert ds.log_vol[5] == pytest.approx(np.log(rms), rel=1e-12)
    s = ds.splits
    assert s.train[-1] < s.val[0] < s.val[-1] < s.test[0]
    assert s.val[0] - s.train[-1] == 31
    assert s.test[0] - s.val[-1] == 31
    assert len(s.train) == int(ds.n_rows * 0.6)
    assert ds.provenance["source"] == "synthetic"
    assert ds.provenance["rows"] == 3000
    assert ds.train_bars()[-1].start_ms == ds.bars[int(ds.bar_index[s.train[-1]]) + 12].start_ms
    no_vol = load_dataset("synthetic", msgspec.structs.replace(cfg, vol_head=False))
    assert no_vol.log_vol is None
    assert no_vol.n_rows == 3000 - (WARMUP_BARS - 1) - 2


def test_too_few_rows_is_a_data_error() -> None:
    """A series too short for the splits raises DataError saying what is needed."""
    bars = synthetic_bars(200, seed=1)
    with pytest.raises(DataError, match="too few usable rows"):
        build_dataset(bars, DistillConfig(), step_ms=STEP_MS)


def test_drop_last_removes_the_still_open_candle_of_a_download(tmp_path: Path) -> None:
    """`drop_last` drops exactly the CSV's last row (a Bybit download's open candle) and says so."""
    path = _write(tmp_path, _rows(400))
    cfg = DistillConfig(embargo_bars=5)
    kept = load_dataset(path, cfg)
    dropped = load_dataset(path, cfg, drop_last=True)
    assert dropped.provenance["rows"] == kept.provenance["rows"] - 1
    assert dropped.provenance["last_start_ms"] == kept.provenance["last_start_ms"] - 300_000
    assert dropped.provenance["dropped_last_row"] is True
    assert kept.provenance["symbol"] is None  # never guessed from TESTUSDT_5m.csv
    assert load_dataset(path, cfg, symbol="TESTUSDT").provenance["symbol"] == "TESTUSDT"


def _csv_of(tmp_path: Path, name: str, bars: list[Bar], *, shift_ms: int = 0) -> Path:
    p = tmp_path / f"{name}.csv"
    lines = [f"{b.start_ms + shift_ms},{b.open},{b.high},{b.low},{b.close},{b.volume}\n" for b in bars]
    p.write_text(HEADER + "".join(lines), encoding="utf-8")
    return p


def test_pooled_dataset_splits_every_symbol_at_the_same_dates(tmp_path: Path) -> None:
    """Pooling two CSVs (one starting a day later) gives time-ordered rows from both, cut at the same
    calendar boundaries with the embargo between splits, and each row equals its own symbol's dataset row."""
    cfg = msgspec.structs.replace(DistillConfig(), embargo_bars=20)
    a = _csv_of(tmp_path, "A", synthetic_bars(1500, seed=1))
    b = _csv_of(tmp_path, "B", synthetic_bars(1200, seed=2), shift_ms=288 * STEP_MS)
    ds = load_pooled([a, b], cfg, symbols=["AAAUSDT", "BBBUSDT"])
    one_a = load_dataset(a, cfg, symbol="AAAUSDT")
    one_b = load_dataset(b, cfg, symbol="BBBUSDT")
    assert ds.n_rows == one_a.n_rows + one_b.n_rows
    assert ds.n_series == 2
    assert ds.series is not None
    assert np.all(np.diff(ds.start_ms) >= 0)
    sp = ds.splits
    assert ds.start_ms[sp.train].max() < ds.start_ms[sp.val].min() < ds.start_ms[sp.test].min()
    # the embargo is counted in bar times: >= embargo_rows bars between the splits
    assert ds.start_ms[sp.val].min() - ds.start_ms[sp.train].max() > 20 * STEP_MS
    assert ds.start_ms[sp.test].min() - ds.start_ms[sp.val].max() > 20 * STEP_MS
    for k, one in enumerate((one_a, one_b)):
        rows = np.flatnonzero(ds.series == k)
        np.testing.assert_array_equal(ds.X[rows], one.X)
        np.testing.assert_array_equal(ds.start_ms[rows], one.start_ms)
        assert ds.log_vol is not None
        assert one.log_vol is not None
        np.testing.assert_array_equal(ds.log_vol[rows], one.log_vol)
        assert ds.har_tod_X is not None
        assert one.har_tod_X is not None
        np.testing.assert_array_equal(ds.har_tod_X[rows], one.har_tod_X)
        for split in ("train", "val", "test"):  # both symbols have rows in every split
            assert np.any(ds.series[getattr(sp, split)] == k), (k, split)
    assert ds.provenance["symbols"] == ["AAAUSDT", "BBBUSDT"]
    assert ds.provenance["source"] == "pooled"
    assert ds.train_bars()[-1].start_ms <= ds.start_ms[sp.val].min()


def test_calendar_splits_of_one_series_equal_the_chronological_splits() -> None:
    """For one series the calendar split is exactly the row split."""
    cfg = DistillConfig()
    ds = build_dataset(synthetic_bars(3000, seed=4), cfg, step_ms=STEP_MS)
    cal = calendar_splits(ds.start_ms, cfg)
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(cal, split), getattr(ds.splits, split))


def test_pooled_files_of_different_intervals_are_refused(tmp_path: Path) -> None:
    """Pooling a 5m and a 15m file is a DataError naming both intervals."""
    bars = synthetic_bars(1500, seed=1)
    a = _csv_of(tmp_path, "A", bars)
    slow = [Bar(b.symbol, b.start_ms * 3, b.open, b.high, b.low, b.close, b.volume) for b in bars]
    b = _csv_of(tmp_path, "B", slow)
    with pytest.raises(DataError, match=r"one bar interval, got \[300000, 900000\] ms"):
        load_pooled([a, b], DistillConfig())
    with pytest.raises(DataError, match="'synthetic' cannot be pooled"):
        load_pooled([a, "synthetic"], DistillConfig())
