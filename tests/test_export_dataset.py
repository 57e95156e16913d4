"""Recording for the next retrain (issue 14): the service stores each bar with its book top and every
tier's shadow forecast and scores; `offline export-dataset` writes the recorded bars as a CSV that the one
reader reads back."""

from __future__ import annotations

import asyncio
import io
import os
import sqlite3
from pathlib import Path

import pytest
import support

from bot.app import Service
from bot.core.bars import Bar, BookTop
from bot.core.errors import DataError
from bot.core.paper import PaperTrader
from bot.core.params import PaperConfig
from bot.ledger.writer import Ledger, LedgerError, LedgerLock
from bot.observe import logs
from bot.observe.shadow import ShadowScorer
from bot.sim.csvbars import read_csv_bars, read_csv_rows
from bot.sim.replay import ReplayExchange
from offline.__main__ import main as offline_main
from offline.recorded import EXPORT_HEADER, RecordedDataError, recorded_bars, recorded_rows

SYMBOL = "SYNTHUSDT"
STEP_MS = 300_000


def _ohlcv(b: Bar) -> tuple[int, float, float, float, float, float, float]:
    return (b.start_ms, b.open, b.high, b.low, b.close, b.volume, b.turnover)


async def _run(cfg: object, n: int) -> Service:
    service = Service(cfg, max_decisions=n)  # type: ignore[arg-type]
    await asyncio.wait_for(service.run(asyncio.Event()), timeout=90)
    return service


async def test_a_service_run_records_book_tops_and_shadow_rows_and_the_export_round_trips(
    trained_family: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real run against the replay exchange: every decided bar has its book top and every tier's forecast
    in the ledger, score snapshots every 10 bars; the export reads back through csvbars as the exact bars the
    exchange served; a restart re-seeds the scorer from the ledger."""
    state = tmp_path / "state"
    async with ReplayExchange(
        symbols=[SYMBOL], data="synthetic", seed=23, bar_seconds=0.01, updates_per_bar=2, history_bars=150
    ) as ex:
        cfg = support.loop_config(ex.rest_url, ex.ws_url, trained_family, state, symbol=SYMBOL)
        logs.configure_logging(fmt="json", decisions_path=cfg.logging.decisions_path, stream=io.StringIO())
        try:
            first = await _run(cfg, 45)
            second = await _run(cfg, 2)
        finally:
            logs.close_logging()
        served = {b.start_ms: _ohlcv(b) for b in ex.bars_closed(SYMBOL)}

    ledger_path = Path(cfg.ledger.path)
    with Ledger.open_readonly(ledger_path) as led:
        decisions = led.decisions(SYMBOL)
        rows = led.recorded(SYMBOL)
        forecasts = led.shadow_forecasts(SYMBOL)
        scores = led.shadow_scores()
        history = led.shadow_history([SYMBOL], last_bars=10_000)
    assert len(decisions) == 47
    tiers = set(first.shadow.tiers)
    assert tiers == {"research", "staging", "production", "edge"}
    assert set(forecasts) == {d.start_ms for d in decisions}, "a decided bar lacks its shadow forecasts"
    for d in decisions:
        assert set(forecasts[d.start_ms]) == tiers
        assert forecasts[d.start_ms][d.tier] == (d.prediction, d.vol_forecast)  # the routed tier's own
    # snapshots after every 10th decided bar of a run (4 of the first run's 45), one row per tier
    assert [(s, t.tier) for s, _, t in scores][:4] == [(SYMBOL, t) for t in sorted(tiers)]
    assert len(scores) == 4 * len(tiers)
    first_snapshot = {t.tier: t for _, ms, t in scores if ms == max(m for _, m, _ in scores)}
    assert all(t.window == first.shadow.window and t.n > 0 for t in first_snapshot.values())

    # the bars are exactly what the exchange served; decided ws bars carry a plausible, fresh book top
    assert [_ohlcv(r[0]) for r in rows] == [served[r[0].start_ms] for r in rows]
    decided = {d.start_ms for d in decisions}
    with_book = [r for r in rows if r[0].start_ms in decided and r[0].source == "ws"]
    assert with_book, "no bar was decided from the websocket"
    for bar, spread, imbalance, book_ts in with_book:
        assert spread is not None
        assert 0.0 < spread < 100.0
        assert imbalance is not None
        assert -1.0 <= imbalance <= 1.0
        assert book_ts is not None
        assert bar.start_ms <= book_ts <= bar.start_ms + 3 * STEP_MS
    assert all(r[1] is None for r in rows if r[0].start_ms not in decided), "a warm-up bar has a book"

    # restart: the second run's scorer continued the first's windows instead of starting empty
    assert second.shadow.scored_bars(SYMBOL, "edge") > 2
    reseeded = ShadowScorer(
        horizon_bars=cfg.distill.horizon_bars, vol_horizon_bars=cfg.distill.vol_horizon_bars
    )
    reseeded.replay(history)
    assert reseeded.snapshot() == second.shadow.snapshot()

    out = tmp_path / "recorded.csv"
    assert offline_main(["export-dataset", "--ledger", str(ledger_path), "--out", str(out)]) == 0
    assert f"wrote {len(rows)} {SYMBOL} bars" in capsys.readouterr().out
    back = list(read_csv_rows(out, SYMBOL))
    assert [_ohlcv(b) for b, _, _ in back] == [_ohlcv(r[0]) for r in rows]
    assert [(s, i) for _, s, i in back] == [(r[1], r[2]) for r in rows]  # exact: repr round-trips floats
    assert [_ohlcv(b) for b in read_csv_bars(out, SYMBOL)] == [_ohlcv(b) for b in recorded_bars(ledger_path)]


# ---- bad inputs (no service: hand-written ledgers) --------------------------------------------------------


def _ledger(path: Path, symbols: tuple[str, ...] = ("BTCUSDT",), n: int = 5) -> None:
    """A ledger with `n` bars per symbol, the last two decided with a book top."""
    trader = PaperTrader(PaperConfig())
    with Ledger.open(path) as led:
        for sym in symbols:
            for i in range(n):
                c = 100.0 + i * 0.37
                bar = Bar(sym, i * STEP_MS, c, c * 1.002, c * 0.997, c * 1.001, 3.5, 350.0 + i, "rest")
                if i < n - 2:
                    led.record_bar(bar)
                    continue
                book = BookTop(sym, bar.start_ms + STEP_MS, c - 0.05, 2.0, c + 0.05, 6.0)
                r = trader.on_bar(sym, bar.start_ms, bar.close, 0.0, "edge", "normal")
                led.record_result(bar, r, regime="normal", tier="edge", prediction=0.0, book=book)


def _export(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    rc = offline_main(["export-dataset", *args])
    return rc, capsys.readouterr().err.strip()


def test_export_writes_the_book_columns_and_reads_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Book columns are empty for warm-up bars and hold the decision's spread/imbalance otherwise."""
    _ledger(tmp_path / "l.sqlite")
    out = tmp_path / "BTCUSDT_5m.csv"
    assert _export(capsys, "--ledger", str(tmp_path / "l.sqlite"), "--out", str(out)) == (0, "")
    lines = out.read_text().splitlines()
    assert lines[0] == ",".join(EXPORT_HEADER)
    assert lines[1].endswith(",,")
    assert not lines[-1].endswith(",")
    back = list(read_csv_rows(out))
    assert back[-1][1] == pytest.approx(
        0.1 / 100.0 * 1e4 / (1 + 4 * 0.0037), rel=1e-3
    )  # spread 0.1 at ~101.5
    assert back[-1][2] == pytest.approx((2.0 - 6.0) / 8.0)
    assert back[0][0].symbol == "BTCUSDT"
    assert back[0][1:] == (None, None)


def test_export_refuses_bad_inputs_with_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Missing, directory, junk and empty ledgers, an ambiguous or unknown symbol, and an --out that is the
    user's file or the ledger itself: exit 2, one line naming the path and the fix, nothing written."""
    two = tmp_path / "two.sqlite"
    _ledger(two, ("BTCUSDT", "ETHUSDT"))
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all" * 100)
    empty = tmp_path / "empty.sqlite"
    Ledger.open(empty).close()
    mine = tmp_path / "mine.csv"
    mine.write_text("my notes\n")
    out = str(tmp_path / "out.csv")
    cases = [
        (["--ledger", str(tmp_path / "nope.sqlite"), "--out", out], "nope.sqlite: does not exist"),
        (["--ledger", str(tmp_path), "--out", out], "is a directory"),
        (["--ledger", str(junk), "--out", out], "junk.sqlite: not a usable SQLite ledger"),
        (["--ledger", str(empty), "--out", out], "holds no recorded bars; run the bot on it first"),
        (["--ledger", str(two), "--out", out], "holds bars of BTCUSDT, ETHUSDT; pick one with --symbol"),
        (
            ["--ledger", str(two), "--out", out, "--symbol", "XRPUSDT"],
            "no bars of it; it holds BTCUSDT, ETHUSDT",
        ),
        (["--ledger", str(two), "--out", out, "--symbol", "btc"], "--symbol: expected a Bybit symbol"),
        (
            ["--ledger", str(two), "--out", str(mine), "--symbol", "ETHUSDT"],
            "not a CSV written by offline export",
        ),
        (["--ledger", str(two), "--out", str(two), "--symbol", "ETHUSDT"], "two.sqlite: holds the input"),
    ]
    for args, expected in cases:
        rc, err = _export(capsys, *args)
        assert rc == 2, (args, err)
        assert err.startswith("error: "), (args, err)
        assert "\n" not in err, (args, err)
        assert expected in err, (args, err)
        assert "Traceback" not in err
    assert not Path(out).exists()
    assert mine.read_text() == "my notes\n"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no staging left


def test_a_previous_export_is_replaced_and_a_running_bot_does_not_block_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exporting while the bot holds its lock and writes works (WAL reader), and re-exporting replaces the
    previous export with the newer bars."""
    path = tmp_path / "l.sqlite"
    _ledger(path, n=4)
    out = tmp_path / "out.csv"
    with LedgerLock(path), Ledger.open(path) as led:
        assert _export(capsys, "--ledger", str(path), "--out", str(out))[0] == 0
        led.record_bar(Bar("BTCUSDT", 4 * STEP_MS, 101.0, 101.5, 100.5, 101.2, 1.0, 101.0, "ws"))
        assert _export(capsys, "--ledger", str(path), "--out", str(out))[0] == 0
    assert [b.start_ms for b in read_csv_bars(out)] == [i * STEP_MS for i in range(5)]


def test_a_locked_ledger_is_one_clear_error(tmp_path: Path) -> None:
    """A ledger another process holds exclusively (not the bot's WAL writer) is a LedgerError saying so."""
    path = tmp_path / "l.sqlite"
    _ledger(path)
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("PRAGMA locking_mode = EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        holder.execute("INSERT INTO live_from VALUES ('X', 0)")
        with pytest.raises(LedgerError, match=r"ledger is locked .*retry in a moment"):
            recorded_rows(path, busy_timeout_s=0.05)
    finally:
        holder.close()
    assert recorded_rows(path)[0] == "BTCUSDT"


def test_recorded_rows_names_the_symbol_it_picked_and_needs_one_when_several(tmp_path: Path) -> None:
    """One symbol is picked by itself; with several `symbol` is required (RecordedDataError)."""
    _ledger(tmp_path / "two.sqlite", ("BTCUSDT", "ETHUSDT"), n=3)
    sym, rows = recorded_rows(tmp_path / "two.sqlite", "ETHUSDT")
    assert sym == "ETHUSDT"
    assert [r.bar.start_ms for r in rows] == [0, STEP_MS, 2 * STEP_MS]
    assert [r.book_ts_ms for r in rows] == [None, 2 * STEP_MS, 3 * STEP_MS]
    with pytest.raises(RecordedDataError, match="pick one with --symbol"):
        recorded_rows(tmp_path / "two.sqlite")


# ---- the CSV format's optional book columns (bot/sim/csvbars.py) ------------------------------------------


def test_csv_book_columns_are_optional_checked_and_ignored_by_the_bar_reader(tmp_path: Path) -> None:
    """Strict reading accepts `...,turnover,spread_bps,imbalance` (empty = none), names a bad value's line,
    and refuses a partial book header; the lenient (replay) reader ignores the columns."""
    head = "start_ms,open,high,low,close,volume,turnover,spread_bps,imbalance\n"
    good = tmp_path / "good.csv"
    good.write_text(head + "0,1,2,0.5,1.5,3,4,,\n300000,1.5,2,1,1.8,3,4,1.25,-0.5\n")
    assert [r[1:] for r in read_csv_rows(good, "X")] == [(None, None), (1.25, -0.5)]
    assert [b.turnover for b in read_csv_bars(good, "X")] == [4.0, 4.0]
    assert [b.close for b in read_csv_bars(good, "X", lenient=True)] == [1.5, 1.8]
    bad = tmp_path / "bad.csv"
    bad.write_text(head + "0,1,2,0.5,1.5,3,4,1.0,1.5\n")
    with pytest.raises(DataError, match=r"bad.csv: line 2: imbalance must be in \[-1, 1\], got 1.5"):
        list(read_csv_bars(bad, "X"))
    bad.write_text(head + "0,1,2,0.5,1.5,3,4,-2,0\n")
    with pytest.raises(DataError, match="line 2: spread_bps must be >= 0"):
        list(read_csv_bars(bad, "X"))
    partial = tmp_path / "partial.csv"
    partial.write_text("start_ms,open,high,low,close,volume,turnover,spread_bps\n0,1,2,0.5,1.5,3,4,1\n")
    with pytest.raises(DataError, match=r"line 1: expected header .*\[,turnover\[,spread_bps,imbalance\]\]"):
        list(read_csv_bars(partial, "X"))


# ---- snapshot-ledger: the retrain unit's copy of the bot's private ledger ----------------------------


def _snapshot(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    rc = offline_main(["snapshot-ledger", *args])
    return rc, capsys.readouterr().err.strip()


def test_snapshot_copies_a_ledger_the_bot_is_writing_and_replaces_only_a_snapshot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The copy is consistent while the bot holds its lock and writes, is one self-contained file the
    retrain reads like the ledger, replaces a previous snapshot, and never the ledger or a user's file."""
    path = tmp_path / "l.sqlite"
    _ledger(path, symbols=("BTCUSDT", "ETHUSDT"), n=4)
    snap = tmp_path / "snap" / "copy.sqlite"
    snap.parent.mkdir()
    with LedgerLock(path), Ledger.open(path) as led:
        assert _snapshot(capsys, "--ledger", str(path), "--out", str(snap))[0] == 0
        assert recorded_bars(snap, "ETHUSDT") == recorded_bars(path, "ETHUSDT")
        led.record_bar(Bar("BTCUSDT", 4 * STEP_MS, 101.0, 101.5, 100.5, 101.2, 1.0, 101.0, "ws"))
        assert _snapshot(capsys, "--ledger", str(path), "--out", str(snap))[0] == 0  # replaces the old copy
    assert [b.start_ms for b in recorded_bars(snap, "BTCUSDT")] == [i * STEP_MS for i in range(5)]
    assert sqlite3.connect(snap).execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert sorted(p.name for p in snap.parent.iterdir()) == ["copy.sqlite"]  # no staging, no -wal left

    mine = tmp_path / "notes.sqlite"
    mine.write_text("my notes\n")
    for out in (mine, path):
        before = out.read_bytes()
        rc, err = _snapshot(capsys, "--ledger", str(path), "--out", str(out))
        assert rc == 2
        assert len(err.splitlines()) == 1
        assert "Traceback" not in err
        assert str(out) in err
        assert out.read_bytes() == before
    missing = tmp_path / "none.sqlite"
    rc, err = _snapshot(capsys, "--ledger", str(missing), "--out", str(tmp_path / "x.sqlite"))
    assert rc == 2
    assert "does not exist" in err
    assert not (tmp_path / "x.sqlite").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can hand files to another owner")
def test_snapshot_as_root_hands_sqlite_side_files_back_to_the_ledger_owner(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The retrain unit copies the ledger with full privileges: -wal/-shm files SQLite creates beside a
    cleanly closed ledger must stay the bot's (a root-owned -shm would stop the bot opening its ledger);
    SQLite's unix VFS hands them to the database file's owner when it runs as root."""
    path = tmp_path / "l.sqlite"
    _ledger(path)
    assert not path.with_name("l.sqlite-wal").exists()  # cleanly closed
    os.chown(path, 4242, 4343)
    assert _snapshot(capsys, "--ledger", str(path), "--out", str(tmp_path / "copy.sqlite"))[0] == 0
    sides = [path.with_name(path.name + s) for s in ("-wal", "-shm")]
    assert all(p.exists() for p in sides)  # created by the read-only open
    assert {(p.stat().st_uid, p.stat().st_gid) for p in sides} == {(4242, 4343)}
