"""`offline distill --data DIR --symbols all ...`: the symbols of a data directory, chosen as the bot chooses.

A directory of klines CSVs holds one file per symbol, named as `offline fetch` and the nightly retrain name
them: the symbol, then optionally `_` and anything (`BTCUSDT_5m.csv`, `ETHUSDT.csv.gz`). A selection over it
is the bot's own `[market] symbols` selection (`bot.config.SymbolSelection`, the same keys and checks),
applied by the bot's own `bot.bybit.universe.select`: every file stands for a `Trading` USDT perpetual, and
its "24h turnover" is the sum of its `turnover` column over the file's last 24 hours of bars, so `top` and
`min_turnover_usd` rank the symbols as the exchange would have on the day the data ends. A plain list of
symbols picks those files. The chosen files are pooled into one family (`offline.data.load_pooled`).
"""

from __future__ import annotations

import collections
import gzip
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec

from bot.bybit.universe import select
from bot.bybit.wire import RestInstrument, RestTicker
from bot.config import Config, SymbolSelection
from bot.core.errors import ConfigError

_SYMBOL: Final = re.compile(r"^[A-Z0-9]{2,30}$")  # the config's Symbol pattern
_DAY_MS: Final = 86_400_000
_TAIL_ROWS: Final = 1441  # a day of 1-minute bars, and the bar before it


@dataclass(frozen=True, slots=True)
class Chosen:
    """The CSVs a selection chose: `symbols` (by turnover for a selection, as given for a list) and their
    `paths`, out of `found` symbol files in `directory`."""

    directory: Path
    symbols: tuple[str, ...]
    paths: tuple[Path, ...]
    found: int
    turnover_usd: dict[str, float]  # last-24h turnover of each chosen symbol (selection with a ranking)

    def describe(self, what: str) -> str:
        """One line for the log: how many of how many, and by what."""
        return f"{what}: {len(self.symbols)} of the {self.found} symbol files in {self.directory}"


def symbol_of(path: Path) -> str | None:
    """The symbol a data file holds by its name (`BTCUSDT_5m.csv` -> BTCUSDT), None if not a klines CSV."""
    name = path.name
    for suffix in (".csv.gz", ".csv"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)].split("_")[0].upper()
    return None


def symbol_files(directory: Path) -> dict[str, Path]:
    """Every symbol's CSV in `directory` (one per symbol).

    Raises:
        ConfigError: not a directory, no CSV, a CSV not named after a symbol, or two CSVs for one symbol.
    """
    try:
        entries = sorted(p for p in directory.iterdir() if p.is_file())
    except OSError as exc:
        raise ConfigError(f"--data {directory}: cannot list the directory: {exc.strerror}") from exc
    out: dict[str, Path] = {}
    for p in entries:
        sym = symbol_of(p)
        if sym is None:
            continue  # README.md, PROVENANCE.md, ...: not data
        if _SYMBOL.fullmatch(sym) is None:
            raise ConfigError(
                f"--data {directory}: {p.name} is not named after a symbol (expected e.g. BTCUSDT_5m.csv); "
                "rename it or move it out"
            )
        if sym in out:
            raise ConfigError(
                f"--data {directory}: two files for {sym} ({out[sym].name}, {p.name}); keep one per symbol"
            )
        out[sym] = p
    if not out:
        raise ConfigError(f"--data {directory}: no klines CSV in it (expected SYMBOL_5m.csv files)")
    return out


def last_day_turnover_usd(path: Path) -> float | None:
    """Sum of the `turnover` column over the file's last 24 hours of bars (quote currency); None when the
    file has no turnover column.

    Raises:
        ConfigError: the file cannot be read or its last rows are not klines rows.
    """
    try:
        with (
            gzip.open(path, "rt", encoding="utf-8")
            if path.name.lower().endswith(".gz")
            else path.open(encoding="utf-8") as fh
        ):
            header = fh.readline().lstrip("\ufeff").strip().split(",")
            tail = collections.deque(fh, maxlen=_TAIL_ROWS)
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise ConfigError(f"{path}: cannot read it to rank its symbol by turnover: {exc}") from exc
    if len(header) < 7 or header[6].strip() != "turnover":
        return None
    try:
        rows = [(int(f[0]), float(f[6] or 0.0)) for f in (line.split(",") for line in tail if line.strip())]
    except (ValueError, IndexError) as exc:
        raise ConfigError(f"{path}: a row in its last day is not a klines row ({exc})") from exc
    if not rows:
        return 0.0
    last_ms = rows[-1][0]
    return float(sum(t for ms, t in rows if ms > last_ms - _DAY_MS))


def choose(directory: Path, symbols: SymbolSelection | Sequence[str]) -> Chosen:
    """The CSVs of `directory` that `symbols` (a selection, or a list of symbols) chooses.

    Raises:
        ConfigError: a listed symbol has no file, a ranking selection meets a file without turnover, or the
            selection leaves no symbol (naming what was found).
    """
    files = symbol_files(directory)
    if not isinstance(symbols, SymbolSelection):
        missing = [s for s in symbols if s not in files]
        if missing:
            raise ConfigError(
                f"--symbols: no CSV for {', '.join(missing)} in {directory} ({len(files)} symbol files there)"
            )
        return Chosen(directory, tuple(symbols), tuple(files[s] for s in symbols), len(files), {})
    ranked = symbols.top is not None or symbols.min_turnover_usd > 0.0
    turnover: dict[str, float] = {}
    for sym, path in files.items():
        if not ranked or sym in symbols.exclude:
            continue
        t = last_day_turnover_usd(path)
        if t is None:
            raise ConfigError(
                f"{path}: no turnover column, and --top / --min-turnover-usd rank symbols by their last day "
                "of turnover; fetch it with offline fetch (which writes the column) or leave them out"
            )
        turnover[sym] = t
    rows = [RestInstrument(s, "Trading", "LinearPerpetual", "USDT", "USDT") for s in files]
    tickers = [RestTicker(s, turnover24h=turnover.get(s, 0.0)) for s in files]
    universe = select(rows, tickers, symbols)  # the bot's own meaning of a selection
    if not universe.symbols:
        raise ConfigError(
            f"--symbols: the selection {msgspec.to_builtins(symbols)} leaves no symbol of the {len(files)} "
            f"in {directory}; lower --min-turnover-usd or shorten --exclude"
        )
    chosen = universe.symbols if ranked else tuple(sorted(universe.symbols))
    kept = {s: turnover[s] for s in chosen if s in turnover}
    return Chosen(directory, chosen, tuple(files[s] for s in chosen), len(files), kept)


def selection_of(
    cfg: Config,
    *,
    symbols: str | None,
    top: int | None,
    min_turnover_usd: float | None,
    exclude: Sequence[str],
    from_config: bool,
) -> SymbolSelection | list[str]:
    """The selection the distill flags ask for, checked as the bot checks `[market] symbols`.

    `symbols` is "all" or a comma-separated list; None takes `[market] symbols` of the `--config` (when
    `from_config`), with `--top` / `--min-turnover-usd` / `--exclude` overriding a selection's keys.

    Raises:
        ConfigError: one line naming the flag and what was expected.
    """
    ranking = {"top": top, "min_turnover_usd": min_turnover_usd, "exclude": list(exclude) or None}
    given = {k: v for k, v in ranking.items() if v is not None}
    if symbols is None:
        if not from_config:
            raise ConfigError(
                "--data DIR: say which of its symbols to train on: --symbols all (every CSV, or the --top N "
                "by turnover), --symbols BTCUSDT,ETHUSDT, or a --config whose [market] symbols chooses them"
            )
        base = cfg.market.symbols
        if not isinstance(base, SymbolSelection):
            if given:
                raise ConfigError(
                    f"--{next(iter(given)).replace('_', '-')}: only with a selection (--symbols all)"
                )
            return list(base)
        fields: dict[str, Any] = {**msgspec.to_builtins(base), **given}
    elif symbols.strip().lower() == "all":
        fields = {"all": True, **given}
    else:
        if given:
            flag = next(iter(given)).replace("_", "-")
            raise ConfigError(f"--{flag}: only with --symbols all (a list names its symbols itself)")
        names = [s.strip() for s in symbols.split(",") if s.strip()]
        bad = [s for s in names if _SYMBOL.fullmatch(s) is None]
        if bad or not names:
            raise ConfigError(
                "--symbols: expected 'all' or Bybit symbols such as BTCUSDT,ETHUSDT (A-Z, 0-9), "
                f"got {symbols!r}"
            )
        return list(dict.fromkeys(names))
    try:
        return msgspec.convert(fields, SymbolSelection)
    except msgspec.ValidationError as exc:
        raise ConfigError(_flag_message(exc)) from exc


def _flag_message(exc: msgspec.ValidationError) -> str:
    """`Expected int <= 1000 - at `$.top`` as `--top: expected int <= 1000`."""
    text = str(exc)
    m = re.search(r" - at `\$\.(\w+)(.*)`$", text)
    if m is None:
        return f"selection: {text}"
    what = text[: m.start()]
    flag = {"min_turnover_usd": "--min-turnover-usd", "top": "--top", "exclude": "--exclude"}.get(m[1], m[1])
    return f"{flag}: {what[0].lower()}{what[1:]}"
