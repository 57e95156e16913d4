"""offline.selection: a data directory's CSVs chosen by the bot's own `[market] symbols` selection."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import Config, MarketConfig, SymbolSelection
from bot.core.errors import ConfigError
from offline.selection import choose, last_day_turnover_usd, selection_of, symbol_of

STEP_MS = 300_000
HEADER = "start_ms,open,high,low,close,volume,turnover\n"


def _csv(path: Path, turnover_per_bar: float, *, n: int = 400, last_day_extra: float = 0.0) -> Path:
    """`n` flat-ish 5m bars; every bar of the last day gets `last_day_extra` more turnover."""
    rows = []
    for i in range(n):
        extra = last_day_extra if i >= n - 288 else 0.0
        rows.append(f"{i * STEP_MS},10,11,9,10,1,{turnover_per_bar + extra}\n")
    path.write_text(HEADER + "".join(rows), encoding="utf-8")
    return path


def _dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    _csv(d / "AAAUSDT_5m.csv", 100.0)
    _csv(d / "BBBUSDT_5m.csv", 10.0, last_day_extra=1000.0)  # quiet history, busy last day
    _csv(d / "CCCUSDT.csv", 50.0)
    (d / "README.md").write_text("not data\n", encoding="utf-8")
    return d


def test_symbol_is_the_file_name_before_the_first_underscore() -> None:
    """BTCUSDT_5m.csv, ethusdt.csv.gz and SOLUSDT.csv name their symbols; other files are not data."""
    assert symbol_of(Path("BTCUSDT_5m.csv")) == "BTCUSDT"
    assert symbol_of(Path("ethusdt.csv.gz")) == "ETHUSDT"
    assert symbol_of(Path("SOLUSDT.csv")) == "SOLUSDT"
    assert symbol_of(Path("README.md")) is None


def test_last_day_turnover_sums_the_final_24_hours_only(tmp_path: Path) -> None:
    """The turnover that ranks a file is its last 288 five-minute bars' sum; no column gives None."""
    p = _csv(tmp_path / "X_5m.csv", 2.0, last_day_extra=1.0)
    assert last_day_turnover_usd(p) == pytest.approx(288 * 3.0)
    bare = tmp_path / "Y_5m.csv"
    bare.write_text("start_ms,open,high,low,close,volume\n0,1,1,1,1,1\n", encoding="utf-8")
    assert last_day_turnover_usd(bare) is None


def test_top_ranks_by_last_day_turnover_and_exclude_drops(tmp_path: Path) -> None:
    """top=2 keeps the two busiest last days (BBB first, its history is quiet), exclude removes one."""
    d = _dir(tmp_path)
    got = choose(d, SymbolSelection(all=True, top=2))
    assert got.symbols == ("BBBUSDT", "AAAUSDT")  # 288*1010 > 288*100 > 288*50
    assert got.paths == (d / "BBBUSDT_5m.csv", d / "AAAUSDT_5m.csv")
    assert got.found == 3
    assert choose(d, SymbolSelection(all=True, top=2, exclude=["BBBUSDT"])).symbols == ("AAAUSDT", "CCCUSDT")
    assert choose(d, SymbolSelection(all=True, min_turnover_usd=288 * 60.0)).symbols == ("BBBUSDT", "AAAUSDT")
    assert choose(d, SymbolSelection(all=True)).symbols == ("AAAUSDT", "BBBUSDT", "CCCUSDT")
    assert choose(d, ["CCCUSDT", "AAAUSDT"]).symbols == ("CCCUSDT", "AAAUSDT")


def test_a_selection_that_leaves_nothing_or_names_a_missing_file_is_one_config_error(tmp_path: Path) -> None:
    """Too high a turnover floor, or a listed symbol without a file, is a ConfigError naming what is there."""
    d = _dir(tmp_path)
    with pytest.raises(ConfigError, match="leaves no symbol of the 3 in"):
        choose(d, SymbolSelection(all=True, min_turnover_usd=1e12))
    with pytest.raises(ConfigError, match="no CSV for ZZZUSDT"):
        choose(d, ["AAAUSDT", "ZZZUSDT"])
    (d / "bad name.csv").write_text("x\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="is not named after a symbol"):
        choose(d, SymbolSelection(all=True))


def test_flags_build_the_bots_selection_and_refuse_what_it_refuses() -> None:
    """--symbols all with --top/--exclude is the config's SymbolSelection; its checks name the flag; a list
    takes no ranking flag; no --symbols takes the --config's [market] symbols, overridden by the flags."""
    cfg = Config()
    got = selection_of(
        cfg, symbols="all", top=5, min_turnover_usd=None, exclude=["BTCUSDT"], from_config=False
    )
    assert got == SymbolSelection(all=True, top=5, exclude=["BTCUSDT"])
    assert selection_of(
        cfg, symbols="ETHUSDT, BTCUSDT", top=None, min_turnover_usd=None, exclude=[], from_config=False
    ) == ["ETHUSDT", "BTCUSDT"]
    with pytest.raises(ConfigError, match=r"^--top: expected `int` <= 1000$"):
        selection_of(cfg, symbols="all", top=5000, min_turnover_usd=None, exclude=[], from_config=False)
    with pytest.raises(ConfigError, match=r"^--min-turnover-usd: expected"):
        selection_of(cfg, symbols="all", top=None, min_turnover_usd=-1.0, exclude=[], from_config=False)
    with pytest.raises(ConfigError, match="--top: only with --symbols all"):
        selection_of(cfg, symbols="BTCUSDT", top=3, min_turnover_usd=None, exclude=[], from_config=False)
    with pytest.raises(ConfigError, match="say which of its symbols"):
        selection_of(cfg, symbols=None, top=None, min_turnover_usd=None, exclude=[], from_config=False)
    sel = Config(market=MarketConfig(symbols=SymbolSelection(all=True, min_turnover_usd=5e6, top=300)))
    assert selection_of(
        sel, symbols=None, top=50, min_turnover_usd=None, exclude=[], from_config=True
    ) == SymbolSelection(all=True, min_turnover_usd=5e6, top=50)
