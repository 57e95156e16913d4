"""SQLite ledger: schema and pragmas, one transaction per bar close, no bar twice, exact resume, crash
safety."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.core.bars import Bar, BookTop
from bot.core.decision import DecisionRecord
from bot.core.paper import Fill, PaperTrader
from bot.core.params import PaperConfig
from bot.ledger.writer import AlreadyDecidedError, BarWrite, Ledger, LedgerError
from bot.observe.shadow import ShadowScore

STEP_MS = 300_000
REPO = Path(__file__).resolve().parents[1]


def _bar(symbol: str, i: int, close: float) -> Bar:
    return Bar(symbol, i * STEP_MS, close, close * 1.001, close * 0.999, close, 12.5, 0.0, "rest")


def _decide(
    ledger: Ledger, trader: PaperTrader, bar: Bar, pred: float, tier: str, regime: str
) -> DecisionRecord:
    r = trader.on_bar(bar.symbol, bar.start_ms, bar.close, pred, tier, regime)
    return ledger.record_result(bar, r, regime=regime, tier=tier, prediction=pred, latency_us={"total": 42})


def _replay(fills: list[Fill]) -> tuple[float, float, float, float]:
    """Average-cost replay of fills: (signed qty, avg entry, realised PnL, fees), written independently."""
    qty = avg = realized = fees = 0.0
    for f in fills:
        signed = f.qty if f.side == "buy" else -f.qty
        fees += f.fee_usd
        if qty == 0.0 or (qty > 0) == (signed > 0):
            avg = (abs(qty) * avg + f.qty * f.price) / (abs(qty) + f.qty)
            qty += signed
        else:
            closed = min(abs(qty), f.qty)
            realized += closed * (f.price - avg) * (1.0 if qty > 0 else -1.0)
            qty += signed
            if abs(qty) < 1e-9:
                qty, avg = 0.0, 0.0
    return qty, avg, realized, fees


def test_open_creates_schema_wal_and_full_sync(tmp_path: Path) -> None:
    """open() creates parent dirs, WAL journal, synchronous FULL and the schema version."""
    path = tmp_path / "deep" / "dir" / "ledger.sqlite"
    with Ledger.open(path) as led:
        assert led.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert led.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert led.conn.execute("PRAGMA user_version").fetchone()[0] == 1
        tables = {r[0] for r in led.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert tables == {
            "bars", "decisions", "fills", "positions", "live_from", "stops", "shadow_forecasts",
            "shadow_scores",
        }  # fmt: skip
        assert led.last_decided("BTCUSDT") is None
    with Ledger.open(path, synchronous="normal") as led:
        assert led.conn.execute("PRAGMA synchronous").fetchone()[0] == 1


def test_open_refuses_other_schema_and_non_sqlite(tmp_path: Path) -> None:
    """A ledger of another schema version, or a file that is not SQLite, raises LedgerError."""
    other = tmp_path / "other.sqlite"
    conn = sqlite3.connect(other)
    conn.execute("PRAGMA user_version = 7")
    conn.close()
    with pytest.raises(LedgerError, match="schema version 7, this bot writes 1"):
        Ledger.open(other)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(LedgerError, match="not a usable SQLite ledger"):
        Ledger.open(junk)


def test_record_and_query(tmp_path: Path) -> None:
    """A recorded bar is decided; decisions, fills, latency and the position read back as written."""
    trader = PaperTrader(PaperConfig(long_threshold_bps=2.0, short_threshold_bps=2.0))
    with Ledger.open(tmp_path / "l.sqlite") as led:
        d0 = _decide(led, trader, _bar("BTCUSDT", 1, 100.0), 0.001, "edge", "calm_trend")
        d1 = _decide(led, trader, _bar("BTCUSDT", 2, 101.0), -0.001, "research", "crisis")
        assert led.last_decided("BTCUSDT") == 2 * STEP_MS
        assert led.is_decided("BTCUSDT", STEP_MS)
        assert not led.is_decided("BTCUSDT", 3 * STEP_MS)
        assert led.last_decided("ETHUSDT") is None
        assert led.decisions("BTCUSDT") == [d0, d1]
        assert d1.latency_us == {"total": 42}
        assert [f.side for f in led.fills("BTCUSDT")] == ["buy", "sell", "sell"]
        assert led.load_positions() == {"BTCUSDT": trader.state("BTCUSDT")}


def test_the_decision_columns_are_the_records_fields_with_their_types(tmp_path: Path) -> None:
    """One record: the `decisions` table has a column per field of DecisionRecord (but close, fills and
    latency, stored elsewhere), typed as the field; a fractional vol_target position reads back as written."""
    with Ledger.open(tmp_path / "l.sqlite") as led:
        cols = {r[1]: (r[2], bool(r[3])) for r in led.conn.execute("PRAGMA table_info(decisions)")}
    fields = set(DecisionRecord.__struct_fields__) - {"close", "fills", "latency_us"}
    assert set(cols) == fields | {"latency_json"}
    assert cols["position"] == ("REAL", True)  # a float field (an int under fixed sizing)
    assert cols["vol_forecast"] == ("REAL", False)
    assert cols["holding_tier"] == ("TEXT", False)
    assert cols["signal"] == ("INTEGER", True)
    trader = PaperTrader(PaperConfig(sizing="vol_target", target_vol_bps=7.0, max_units=3))
    with Ledger.open(tmp_path / "v.sqlite") as led:
        bar = _bar("BTCUSDT", 1, 100.0)
        r = trader.on_bar(bar.symbol, bar.start_ms, bar.close, 0.005, "edge", "normal", vol_forecast=0.0011)
        d = led.record_result(bar, r, regime="normal", tier="edge", prediction=0.005)
        assert 0.0 < d.position < 3.0
        assert not float(d.position).is_integer()
        assert led.decisions("BTCUSDT") == [d]


def test_second_record_of_a_bar_raises_and_changes_nothing(tmp_path: Path) -> None:
    """Recording an already decided (symbol, start_ms) raises AlreadyDecidedError; the ledger is unchanged."""
    trader = PaperTrader(PaperConfig(long_threshold_bps=2.0, short_threshold_bps=2.0))
    bar = _bar("BTCUSDT", 1, 100.0)
    with Ledger.open(tmp_path / "l.sqlite") as led:
        _decide(led, trader, bar, 0.001, "edge", "calm_trend")
        before = (led.decisions("BTCUSDT"), led.fills("BTCUSDT"), led.load_positions())
        other = PaperTrader(
            PaperConfig(long_threshold_bps=2.0, short_threshold_bps=2.0)
        )  # a second trader would decide the same bar differently
        r = other.on_bar(bar.symbol, bar.start_ms, bar.close, -0.001, "research", "crisis")
        with pytest.raises(AlreadyDecidedError, match="already decided; nothing written"):
            led.record_result(bar, r, regime="crisis", tier="research", prediction=-0.001)
        assert (led.decisions("BTCUSDT"), led.fills("BTCUSDT"), led.load_positions()) == before


def test_failed_write_rolls_back_the_whole_bar(tmp_path: Path) -> None:
    """A fill SQLite refuses (qty 0) rolls back the whole bar; mismatched keys are refused upfront."""
    trader = PaperTrader(PaperConfig(long_threshold_bps=2.0, short_threshold_bps=2.0))
    bar = _bar("BTCUSDT", 1, 100.0)
    r = trader.on_bar(bar.symbol, bar.start_ms, bar.close, 0.001, "edge", "normal")
    d = DecisionRecord.of(
        r, source="ws", regime="normal", tier="edge", prediction=0.001, close=bar.close, latency_us={}
    )
    with Ledger.open(tmp_path / "l.sqlite") as led:
        bad = msgspec.structs.replace(d, fills=(msgspec.structs.replace(r.fills[0], qty=0.0),))
        with pytest.raises(LedgerError, match="ledger refused the bar"):
            led.record(bar, bad, r.state)
        assert not led.is_decided("BTCUSDT", bar.start_ms)
        assert led.count_decisions() == 0
        assert led.conn.execute("SELECT COUNT(*) FROM bars").fetchone()[0] == 0
        with pytest.raises(LedgerError, match="expected decision and state for"):
            led.record(_bar("BTCUSDT", 2, 100.0), d, r.state)
        led.record(bar, d, r.state)
        assert led.count_decisions("BTCUSDT") == 1


def test_a_bar_close_is_one_transaction_all_or_nothing(tmp_path: Path) -> None:
    """record_close writes a close's decided and warm-up bars in one commit; one bar already decided (or a
    refused fill) leaves the whole close unwritten, and a bad key is refused before any write."""
    trader = PaperTrader(PaperConfig(long_threshold_bps=2.0, short_threshold_bps=2.0))

    def decided(symbol: str, i: int, pred: float) -> BarWrite:
        bar = _bar(symbol, i, 100.0 + i)
        r = trader.on_bar(bar.symbol, bar.start_ms, bar.close, pred, "edge", "normal")
        d = DecisionRecord.of(r, source="ws", regime="normal", tier="edge", prediction=pred, close=bar.close)
        return BarWrite(bar, d, r.state, BookTop(symbol, bar.start_ms, 99.9, 1.0, 100.1, 2.0))

    with Ledger.open(tmp_path / "l.sqlite") as led:
        first = [
            decided("BTCUSDT", 1, 0.001),
            decided("ETHUSDT", 1, -0.001),
            BarWrite(_bar("SOLUSDT", 1, 9.0)),
        ]
        led.record_close(first)
        assert led.count_decisions() == 2
        assert led.symbols() == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
        assert led.load_positions()["ETHUSDT"] == first[1].state
        assert led.recorded("BTCUSDT")[0][3] == 300_000
        again = decided("XRPUSDT", 1, 0.001)
        with pytest.raises(
            AlreadyDecidedError, match=r"ETHUSDT@300000: bar already decided; nothing written"
        ):
            led.record_close([again, first[1]])
        assert not led.is_decided("XRPUSDT", 300_000)
        bad = again.decision
        assert bad is not None
        assert bad.fills
        refused = msgspec.structs.replace(bad, fills=(msgspec.structs.replace(bad.fills[0], qty=0.0),))
        with pytest.raises(LedgerError, match="2 decided bars"):
            led.record_close([BarWrite(again.bar, refused, again.state), decided("BNBUSDT", 1, 0.001)])
        assert led.count_decisions() == 2
        with pytest.raises(LedgerError, match="expected decision and state for"):
            led.record_close([BarWrite(_bar("XRPUSDT", 2, 1.0), again.decision, again.state)])
        led.record_close([again])
        assert led.count_decisions() == 3


def test_an_older_ledger_gains_the_book_columns_and_shadow_tables_on_open(tmp_path: Path) -> None:
    """A ledger written before the book columns existed opens: its bars read back with NULL book fields,
    and new bars record their book top."""
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE bars (symbol TEXT NOT NULL, start_ms INTEGER NOT NULL, open REAL NOT NULL,
            high REAL NOT NULL, low REAL NOT NULL, close REAL NOT NULL, volume REAL NOT NULL,
            turnover REAL NOT NULL, source TEXT NOT NULL, PRIMARY KEY (symbol, start_ms)) WITHOUT ROWID;
        INSERT INTO bars VALUES ('BTCUSDT', 0, 100, 101, 99, 100.5, 3, 300, 'rest');
        PRAGMA user_version = 1;
        """
    )
    conn.close()
    trader = PaperTrader(PaperConfig())
    with Ledger.open(path) as led:
        bar = _bar("BTCUSDT", 1, 100.0)
        r = trader.on_bar(bar.symbol, bar.start_ms, bar.close, 0.0, "edge", "normal")
        book = BookTop("BTCUSDT", 2 * STEP_MS - 5, 99.99, 3.0, 100.01, 1.0)
        led.record_result(bar, r, regime="normal", tier="edge", prediction=0.0, book=book)
        rows = led.recorded("BTCUSDT")
    assert rows[0][1:] == (None, None, None)
    assert rows[0][0] == Bar("BTCUSDT", 0, 100.0, 101.0, 99.0, 100.5, 3.0, 300.0, "rest")
    assert rows[1][1] == pytest.approx(2.0)  # 0.02 / 100 in bps
    assert rows[1][2:] == (0.5, 2 * STEP_MS - 5)


def test_shadow_rows_ride_with_the_next_transaction_and_close_flushes_them(tmp_path: Path) -> None:
    """Staged shadow rows are not written on their own; the next bar's commit (or close) writes them; a bar
    the ledger refuses rolls them back and keeps them staged."""
    path = tmp_path / "l.sqlite"
    trader = PaperTrader(PaperConfig())
    score = ShadowScore(
        "BTCUSDT", "edge", window=500, n=3, ic=None, vol_ic=None, vol_qlike=0.25, regret=-1e-6
    )
    with Ledger.open(path) as led:
        b1 = _decide(led, trader, _bar("BTCUSDT", 1, 100.0), 0.0, "edge", "normal")
        led.stage_shadow("BTCUSDT", b1.start_ms, {"edge": (0.0, 0.01), "research": (1e-4, None)}, [score])
        with Ledger.open_readonly(path) as reader:
            assert reader.shadow_forecasts("BTCUSDT") == {}
            b2 = _decide(led, trader, _bar("BTCUSDT", 2, 100.0), 0.0, "edge", "normal")
            assert reader.shadow_forecasts("BTCUSDT") == {
                b1.start_ms: {"edge": (0.0, 0.01), "research": (1e-4, None)}
            }
            assert reader.shadow_scores() == [("BTCUSDT", b1.start_ms, score)]
        led.stage_shadow("BTCUSDT", b2.start_ms, {"edge": (2e-4, 0.02)})
        with pytest.raises(AlreadyDecidedError):
            _decide(led, PaperTrader(PaperConfig()), _bar("BTCUSDT", 2, 100.0), 0.0, "edge", "normal")
        assert set(led.shadow_forecasts("BTCUSDT")) == {b1.start_ms}
    with Ledger.open_readonly(path) as reader:
        assert reader.shadow_forecasts("BTCUSDT")[b2.start_ms] == {"edge": (2e-4, 0.02)}
        assert [h.forecasts for h in reader.shadow_history(["BTCUSDT"], last_bars=1)] == [
            {"edge": (2e-4, 0.02)}
        ]
        with pytest.raises(LedgerError, match="opened read-only"):
            reader.record_bar(_bar("BTCUSDT", 3, 100.0))


def test_an_older_ledgers_pooled_shadow_scores_stay_readable_beside_per_symbol_ones(tmp_path: Path) -> None:
    """Scores a ledger stored before they were per symbol read back as pooled (symbol None), read-only even
    before any migration; opened for writing it gains `per_symbol`, and new scores are per symbol; a score
    of another symbol is refused."""
    path = tmp_path / "old.sqlite"
    with Ledger.open(path):
        pass
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        DROP TABLE shadow_scores;
        CREATE TABLE shadow_scores (symbol TEXT NOT NULL, start_ms INTEGER NOT NULL, tier TEXT NOT NULL,
            window INTEGER NOT NULL, n INTEGER NOT NULL, ic REAL, vol_ic REAL, vol_qlike REAL, regret REAL,
            PRIMARY KEY (symbol, start_ms, tier)) WITHOUT ROWID;
        INSERT INTO shadow_scores VALUES ('ETHUSDT', 0, 'edge', 500, 40, 0.1, NULL, 0.3, 1e-7);
        """
    )
    conn.close()
    pooled = ShadowScore(None, "edge", window=500, n=40, ic=0.1, vol_ic=None, vol_qlike=0.3, regret=1e-7)
    with Ledger.open_readonly(path) as reader:
        assert reader.shadow_scores() == [("ETHUSDT", 0, pooled)]
    mine = ShadowScore("BTCUSDT", "edge", window=500, n=5, ic=0.2, vol_ic=0.5, vol_qlike=0.1, regret=0.0)
    with Ledger.open(path) as led:
        led.stage_shadow("BTCUSDT", STEP_MS, {"edge": (0.0, None)}, [mine])
        with pytest.raises(LedgerError, match="are not 'ETHUSDT'"):
            led.stage_shadow("ETHUSDT", STEP_MS, {}, [mine])
    with Ledger.open_readonly(path) as reader:
        assert reader.shadow_scores() == [("ETHUSDT", 0, pooled), ("BTCUSDT", STEP_MS, mine)]
        assert reader.shadow_scores(symbol="BTCUSDT") == [("BTCUSDT", STEP_MS, mine)]


def test_open_readonly_creates_nothing_and_refuses_what_is_not_a_ledger(tmp_path: Path) -> None:
    """open_readonly never creates a ledger, and names a missing file, a foreign database and junk."""
    with pytest.raises(LedgerError, match="does not exist"):
        Ledger.open_readonly(tmp_path / "none.sqlite")
    assert list(tmp_path.iterdir()) == []
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(LedgerError, match="not a ledger of this bot"):
        Ledger.open_readonly(other)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(LedgerError, match="not a usable SQLite ledger"):
        Ledger.open_readonly(junk)


def test_summary_per_tier_and_regime_sums_to_equity(tmp_path: Path) -> None:
    """Per-tier and per-regime PnL add up to the final equity; bar counts add up to the bars decided."""
    trader = PaperTrader(PaperConfig(long_threshold_bps=2.0, short_threshold_bps=2.0))
    rng = random.Random(2)
    price = 100.0
    with Ledger.open(tmp_path / "l.sqlite") as led:
        for i in range(200):
            price *= 1 + rng.gauss(0, 0.003)
            tier, regime = rng.choice(
                [("edge", "calm_trend"), ("production", "normal"), ("staging", "volatile")]
            )
            _decide(led, trader, _bar("BTCUSDT", i, price), rng.gauss(0, 0.0005), tier, regime)
        equity = trader.state("BTCUSDT").equity_usd
        for by in ("tier", "regime"):
            rows = led.summary(by)  # type: ignore[arg-type]
            assert sum(s.bars for s in rows) == 200
            assert sum(s.pnl_usd for s in rows) == pytest.approx(equity, abs=1e-8)
            assert sum(s.fees_usd for s in rows) == pytest.approx(trader.state("BTCUSDT").fees_usd, abs=1e-9)
        assert {s.name for s in led.summary("tier")} == {"edge", "production", "staging"}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["BTCUSDT", "ETHUSDT"]),
            st.integers(min_value=0, max_value=40),  # bar index (repeats and out-of-order happen)
            st.floats(min_value=-0.002, max_value=0.002),  # prediction
            st.floats(min_value=-0.01, max_value=0.01),  # return of the close
            st.sampled_from(["edge", "production", "research"]),
        ),
        max_size=60,
    )
)
def test_ledger_invariants_property(tmp_path_factory: pytest.TempPathFactory, steps: list[tuple]) -> None:  # type: ignore[type-arg]
    """No bar is decided twice, and every stored position equals an independent replay of its fills."""
    path = tmp_path_factory.mktemp("prop") / "l.sqlite"
    trader = PaperTrader(PaperConfig(max_units=2, long_threshold_bps=2.0, short_threshold_bps=2.0))
    prices = {"BTCUSDT": 100.0, "ETHUSDT": 10.0}
    decided: set[tuple[str, int]] = set()
    with Ledger.open(path) as led:
        for sym, idx, pred, ret, tier in steps:
            prices[sym] *= 1 + ret
            bar = _bar(sym, idx, prices[sym])
            last = led.last_decided(sym)
            if (sym, bar.start_ms) in decided:
                assert led.is_decided(sym, bar.start_ms)
                other = PaperTrader(PaperConfig(long_threshold_bps=2.0, short_threshold_bps=2.0)).on_bar(
                    sym, bar.start_ms, bar.close, pred, tier, "normal"
                )
                with pytest.raises(AlreadyDecidedError):
                    led.record_result(bar, other, regime="normal", tier=tier, prediction=pred)
                continue
            if last is not None and bar.start_ms < last:
                continue  # the engine never decides an older bar; the trader would refuse it
            _decide(led, trader, bar, pred, tier, "normal")
            decided.add((sym, bar.start_ms))
    with Ledger.open(path) as led:
        n = led.conn.execute(
            "SELECT COUNT(*), COUNT(DISTINCT symbol || ':' || start_ms) FROM decisions"
        ).fetchone()
        assert n[0] == n[1] == len(decided)
        positions = led.load_positions()
        for sym, state in positions.items():
            assert state == trader.state(sym)
            qty, avg, realized, fees = _replay(led.fills(sym))
            assert qty == pytest.approx(state.qty, abs=1e-9)
            assert avg == pytest.approx(state.avg_entry_px, rel=1e-9, abs=1e-12)
            assert realized == pytest.approx(state.realized_pnl_usd, abs=1e-8)
            assert fees == pytest.approx(state.fees_usd, abs=1e-9)
            assert state.last_start_ms == led.last_decided(sym)


_WRITER = """
import sys
from bot.core.bars import Bar, BookTop
from bot.core.params import PaperConfig
from bot.ledger.writer import Ledger
from bot.core.paper import PaperTrader
led = Ledger.open(sys.argv[1])
cfg = PaperConfig(long_threshold_bps=2.0, short_threshold_bps=2.0)
trader = PaperTrader(cfg, positions=led.load_positions())
start = (led.last_decided("BTCUSDT") or -300000) // 300000 + 1
for i in range(start, start + 100000):
    c = 100.0 + (i % 17) - 8 * (i % 3)
    bar = Bar("BTCUSDT", i * 300000, c, c, c, c, 1.0, 0.0, "ws")
    pred = 0.001 if (i // 3) % 2 else -0.001
    r = trader.on_bar("BTCUSDT", bar.start_ms, c, pred, "edge", "normal")
    led.record_result(bar, r, regime="normal", tier="edge", prediction=pred)
    print(i, flush=True)
"""


def test_sigkill_mid_run_leaves_a_consistent_resumable_ledger(tmp_path: Path) -> None:
    """SIGKILL mid-write: the ledger opens, bars are whole, positions match fills, a restart resumes."""
    path = tmp_path / "crash.sqlite"
    for _ in range(2):
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path)], cwd=REPO, stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        printed = 0
        while printed < 150:
            line = proc.stdout.readline()
            assert line, "writer exited early"
            printed += 1
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        proc.stdout.close()
        time.sleep(0.05)
    with Ledger.open(path) as led:
        assert led.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        n = led.count_decisions("BTCUSDT")
        last = led.last_decided("BTCUSDT")
        assert n >= 300
        assert last == (n - 1) * STEP_MS  # contiguous: nothing missing, nothing twice across the restart
        bars = led.conn.execute("SELECT COUNT(*) FROM bars").fetchone()[0]
        assert bars == n
        state = led.load_positions()["BTCUSDT"]
        assert state.last_start_ms == last
        qty, _, realized, fees = _replay(led.fills("BTCUSDT"))
        assert qty == pytest.approx(state.qty, abs=1e-9)
        assert realized == pytest.approx(state.realized_pnl_usd, abs=1e-8)
        assert fees == pytest.approx(state.fees_usd, abs=1e-8)
