"""Kline history from Bybit v5 REST (`offline fetch`, the nightly retrain) and the one klines CSV writer.

`fetch_history` pages `/v5/market/kline` through the bot's own REST client (retries, rate limits);
`write_klines_csv` writes `start_ms,open,high,low,close,volume,turnover` staged (a temporary sibling, then a
rename) and replaces only a CSV it wrote itself.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Sequence
from pathlib import Path

from bot.config import Config
from bot.core.bars import Bar, interval_ms
from bot.outputs import StagedOutput

KLINES_HEADER = ["start_ms", "open", "high", "low", "close", "volume", "turnover"]


def klines_csv_reason(path: Path) -> str | None:
    """None when `path` is a klines CSV as `write_klines_csv` writes it (so `fetch` may replace it)."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            header = next(csv.reader(fh), None)
    except (OSError, UnicodeDecodeError):
        header = None
    if header != KLINES_HEADER:
        return f"exists and is not a klines CSV written by offline fetch (header {','.join(KLINES_HEADER)})"
    return None


def klines_output(path: str | Path) -> StagedOutput:
    """The staged output of `fetch`: replaces only a klines CSV `fetch` wrote."""
    return StagedOutput(path, kind="klines-csv", recognise=klines_csv_reason, is_file=True)


def write_klines_csv(bars: Sequence[Bar], path: Path) -> None:
    """Write bars as `start_ms,open,high,low,close,volume,turnover` (staged: a temp sibling, then a rename).

    Raises:
        OutputPathError: `path` is something else than a klines CSV (nothing touched), or not writable.
    """
    stage = klines_output(path)
    with stage as tmp:
        with (tmp / path.name).open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(KLINES_HEADER)
            for b in bars:
                w.writerow(
                    [
                        b.start_ms,
                        repr(b.open),
                        repr(b.high),
                        repr(b.low),
                        repr(b.close),
                        repr(b.volume),
                        repr(b.turnover),
                    ]
                )
        stage.commit()


async def fetch_history(
    cfg: Config, *, symbol: str, interval: str, days: float, rest_url: str | None, end_ms: int | None = None
) -> list[Bar]:
    """Confirmed bars of the last `days` days (ascending, de-duplicated) via `RestClient.history`."""
    from bot.bybit.rest import RestClient  # the bot's REST client (bot/bybit/rest.py)

    ex = cfg.exchange
    step = interval_ms(interval)
    now_ms = end_ms if end_ms is not None else time.time_ns() // 1_000_000  # wall clock only picks the window
    start_ms = (now_ms - int(days * 86_400_000)) // step * step
    async with RestClient(
        rest_url or ex.rest_url,
        timeout_s=ex.rest_timeout_s,
        max_retries=ex.rest_max_retries,
        backoff_initial_s=ex.rest_backoff_initial_s,
        backoff_max_s=ex.rest_backoff_max_s,
    ) as rest:
        bars: list[Bar] = await rest.history(symbol, interval, start_ms=start_ms, end_ms=end_ms)
    return bars
