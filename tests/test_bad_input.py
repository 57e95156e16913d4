"""Bad input and hostile environment, as a table: input -> exit code -> message fragment -> files untouched.

Each row runs the real command line (`python -m bot ...`, `python -m offline ...`) in a subprocess in its
own directory; the rows run concurrently (a few at a time) once per module and each test checks one row.
Every row requires the documented exit code (docs/errors.md), the fragment on stderr, no traceback, and the
listed paths byte-identical afterwards (or still absent). `offline distill --out DIR` adds a version to the
model store DIR (docs/service.md), so a DIR holding anything but tier families is refused. Faults that need
a running service, a signal or a real disk are pinned below the table as plain tests.
"""

from __future__ import annotations

import asyncio
import atexit
import gzip
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
import websockets
from support import REPO, loop_config, small_config, to_toml

from bot.bybit.backoff import permanent_cause
from bot.bybit.connection import is_retryable
from bot.core.bars import Bar
from bot.ledger.writer import Ledger, LedgerError
from bot.observe.metrics import Metrics
from bot.outputs import OutputPathError, StagedOutput

pytestmark = pytest.mark.timeout(600)  # the module fixture trains the family (if first) and runs every row

HEADER = "start_ms,open,high,low,close,volume\n"
T0 = 1_700_000_100_000  # on the 5-minute grid


def csv_rows(n: int, *, step_ms: int = 300_000, flat: bool = False) -> str:
    """`n` valid klines rows (a slow zig-zag, or one constant price when `flat`)."""
    out = []
    for i in range(n):
        c = 100.0 if flat else 100.0 + (i % 7) * 0.3
        out.append(f"{T0 + i * step_ms},{c},{c + 0.5},{c - 0.5},{c},10\n")
    return "".join(out)


# ---- the table -----------------------------------------------------------------------------------------


@dataclass
class Case:
    """One row: `setup(dir, family)` writes the inputs; `argv` is run in `dir` (`{family}` is substituted)."""

    id: str
    argv: list[str]
    code: int
    fragment: str
    untouched: list[str] = field(default_factory=list)  # paths (relative to dir) that must not change
    absent: list[str] = field(default_factory=list)  # paths that must still not exist
    setup: Callable[[Path, Path], None] | None = None


def _write(rel: str, text: str | bytes) -> Callable[[Path, Path], None]:
    def setup(d: Path, family: Path) -> None:
        p = d / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            p.write_bytes(text)
        else:
            p.write_text(text, encoding="utf-8")

    return setup


def _all(*steps: Callable[[Path, Path], None]) -> Callable[[Path, Path], None]:
    def setup(d: Path, family: Path) -> None:
        for step in steps:
            step(d, family)

    return setup


def _family_copy(rel: str = "models") -> Callable[[Path, Path], None]:
    def setup(d: Path, family: Path) -> None:
        shutil.copytree(family, d / rel)

    return setup


def _bot_config(**overrides: dict[str, Any]) -> Callable[[Path, Path], None]:
    """config.toml for `bot run`: the tiny loop config (models = the trained family, nothing listening on
    the exchange URLs), with section keys overridden (values the schema accepts; `_raw_config` for others)."""

    def setup(d: Path, family: Path) -> None:
        cfg = loop_config("http://127.0.0.1:9", "ws://127.0.0.1:9", family, d / "state")
        data = msgspec.to_builtins(cfg)
        for section, values in overrides.items():
            data[section].update(values)
        (d / "config.toml").write_text(to_toml(msgspec.convert(data, type(cfg))), encoding="utf-8")

    return setup


def _raw_config(section: str, key: str, raw: str) -> Callable[[Path, Path], None]:
    """Replace one `key = value` line of config.toml with `key = raw`."""

    def setup(d: Path, family: Path) -> None:
        path = d / "config.toml"
        lines = path.read_text(encoding="utf-8").splitlines()
        current = ""
        for i, line in enumerate(lines):
            if line.startswith("["):
                current = line.strip("[]")
            elif current == section and line.startswith(f"{key} ="):
                lines[i] = f"{key} = {raw}"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    return setup


def _ledger_with_1m_bars(d: Path, family: Path) -> None:
    ledger = Ledger.open(d / "state" / "ledger.sqlite")
    try:
        for i in range(3):
            ms = 1_700_000_040_000 + i * 60_000
            ledger.record_bar(Bar("SYNTHUSDT", ms, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, "rest"))
    finally:
        ledger.close()


def _bad_file_name(d: Path, family: Path) -> None:
    shutil.copytree(family, d / "models")
    manifest = json.loads((d / "models" / "manifest.json").read_text(encoding="utf-8"))
    manifest["tiers"][0]["file"] = ".."
    (d / "models" / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


USER_DIR = _all(_write("mine/notes.txt", "my own notes\n"), _write("mine/sub/data.bin", b"\x00\x01"))
RUN = ["-m", "bot", "run", "--config", "config.toml"]
DISTILL = ["-m", "offline", "distill", "--quick", "--no-progress"]
STATE = ["state/ledger.sqlite", "state/ledger.sqlite.lock", "state/decisions.jsonl"]


def _held_port() -> str:
    """A loopback port held (listening) for as long as this module runs: "a port in use" for the rows."""
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    atexit.register(held.close)
    return str(held.getsockname()[1])


HELD_PORT = _held_port()
BT_CSV = "BTCUSDT_5m.csv"
BT_OPTS = ["--config", "cfg.toml", "--warmup-bars", "50", "--no-cache", "--no-plots"]
BACKTEST = ["-m", "bot", "backtest", *BT_OPTS]
REPLAY = ["-m", "bot", "replay-server", "--port", "0", "--bar-seconds", "0", "--latency-ms", "0"]


def _backtest_inputs(d: Path, family: Path) -> None:
    """cfg.toml (the small config, models = the trained family, any symbol) and a 400-bar BTCUSDT CSV."""
    cfg = small_config(models={"dir": str(family), "symbols": "any"})
    (d / "cfg.toml").write_text(to_toml(cfg), encoding="utf-8")
    (d / BT_CSV).write_text(HEADER + csv_rows(400), encoding="utf-8")


def _previous_backtest(rel: str) -> Callable[[Path, Path], None]:
    """A real earlier `bot backtest --out rel` (the CLI, in a subprocess) over `_backtest_inputs`."""

    def setup(d: Path, family: Path) -> None:
        argv = [sys.executable, *BACKTEST, "--data", BT_CSV, "--out", rel]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        subprocess.run(argv, cwd=d, capture_output=True, timeout=120, check=True, env=env)

    return _all(_backtest_inputs, setup)


def _marker(rel: str, text: str) -> Callable[[Path, Path], None]:
    return _write(f"{rel}/.progdistill-output.json", text)


# Issue 25's rows, one block per surface: the bot's commands (backtest, run, replay-server, demo,
# latency-report) and the offline ones (sweep, models, distill, retrain, fetch, export-dataset).
BOT_ROWS: list[Case] = [
    # --- one output policy: an --out is reused only while it holds nothing but the command's listed files
    Case("backtest-out-holds-its-data-csv", [*BACKTEST, "--data", f"bt1/{BT_CSV}", "--out", "bt1"], 2,
         f"holds the input bt1/{BT_CSV}", untouched=["bt1"],
         setup=_all(_previous_backtest("bt1"), lambda d, f: shutil.copy(d / BT_CSV, d / "bt1" / BT_CSV))),
    Case("backtest-out-holds-a-user-note", [*BACKTEST, "--data", BT_CSV, "--out", "bt1"], 2,
         "holds 'mynotes.txt', which this command did not write", untouched=["bt1"],
         setup=_all(_previous_backtest("bt1"), _write("bt1/mynotes.txt", "my notes\n"))),
    Case("backtest-out-report-edited-since", [*BACKTEST, "--data", BT_CSV, "--out", "bt1"], 2,
         "holds 'report.json', which this command did not write (or it changed since)", untouched=["bt1"],
         setup=_all(_previous_backtest("bt1"), _write("bt1/report.json", "{}\n"))),
    Case("backtest-out-is-another-commands-output", [*BACKTEST, "--data", BT_CSV, "--out", "r"], 2,
         "holds another command's output (.progdistill-output.json says 'latency-report'", untouched=["r"],
         setup=_all(_backtest_inputs, _write("r/report.json", "{}\n"),
                    _marker("r", '{"kind": "latency-report", "files": {"report.json": 3}}'))),
    Case("backtest-out-marker-lists-no-files", [*BACKTEST, "--data", BT_CSV, "--out", "bt1"], 2,
         "does not list its files", untouched=["bt1"],
         setup=_all(_backtest_inputs, _write("bt1/decisions.jsonl", "x\n"),
                    _marker("bt1", '{"kind": "backtest"}'))),
    Case("backtest-cache-dir-is-a-file", [*BACKTEST[:-2], "--cache-dir", "notes.txt", "--data", BT_CSV,
         "--out", "bt1"], 2, "--cache-dir notes.txt: exists and is not a directory",
         untouched=["notes.txt"], absent=["bt1"],
         setup=_all(_backtest_inputs, _write("notes.txt", "keep\n"))),
    Case("demo-out-is-a-backtest-output", ["-m", "bot", "demo", "--out", "bt1", "--models", "{family}",
         "--bars", "5"], 2, "holds another command's output", untouched=["bt1"],
         setup=_all(_write("bt1/decisions.jsonl", "x\n"),
                    _marker("bt1", '{"kind": "backtest", "files": {"decisions.jsonl": 2}}'))),
    Case("report-out-holds-its-log", ["-m", "bot", "latency-report", "r/d.jsonl", "--out", "r"], 2,
         "holds the input r/d.jsonl", untouched=["r"], setup=_write("r/d.jsonl", "x\n")),
    # --- bot run: every config error before any file (README: "exits 2 before anything is opened")
    Case("run-metrics-port-in-use", RUN, 2, f"127.0.0.1:{HELD_PORT}: cannot listen", absent=["state"],
         setup=_bot_config(service={"metrics_enabled": True, "metrics_port": int(HELD_PORT)})),
    Case("run-ledger-path-is-a-dir", RUN, 2, "[ledger] path ldir: is a directory", untouched=["ldir"],
         absent=["ldir.lock", "state"],
         setup=_all(_bot_config(ledger={"path": "ldir"}), _write("ldir/keep.txt", "x\n"))),
    Case("run-ledger-path-is-a-user-file", RUN, 2, "exists and is not an SQLite file", untouched=["notes.db"],
         absent=["notes.db.lock", "state"],
         setup=_all(_bot_config(ledger={"path": "notes.db"}), _write("notes.db", "my notes\n"))),
    Case("run-ledger-path-under-a-file", RUN, 2, "[ledger] path notes.txt/ledger.sqlite: notes.txt is not a "
         "directory", untouched=["notes.txt"], absent=["state"],
         setup=_all(_bot_config(ledger={"path": "notes.txt/ledger.sqlite"}), _write("notes.txt", "x\n"))),
    # --- replay-server: bad options and a port in use exit 2 before it serves
    Case("replay-server-negative-bar-seconds", [*REPLAY, "--bar-seconds", "-1"], 2,
         "--bar-seconds: expected a finite number >= 0 (0 = flat out), got -1.0"),
    Case("replay-server-nan-latency", [*REPLAY, "--latency-ms", "nan"], 2, "--latency-ms: expected a finite"),
    Case("replay-server-negative-updates", [*REPLAY, "--updates-per-bar", "-1"], 2, "--updates-per-bar"),
    Case("replay-server-port-out-of-range", [*REPLAY, "--port", "70000"], 2, "--port: expected 0..65535"),
    Case("replay-server-unknown-interval", [*REPLAY, "--interval", "7"], 2, "--interval: expected one of"),
    Case("replay-server-bad-symbols", [*REPLAY, "--symbols", "btc/usd"], 2, "--symbols: expected"),
    Case("replay-server-missing-data", [*REPLAY, "--data", "nope.csv"], 2,
         "--data nope.csv: no such file or directory; expected 'synthetic'"),
    Case("replay-server-port-in-use", [*REPLAY, "--port", HELD_PORT], 2,
         "address already in use); stop what holds the port, or choose another --port"),
]  # fmt: skip


def _sweep_inputs(n: int = 2700) -> Callable[[Path, Path], None]:
    """`data/SYNTHUSDT_5m.csv` (`n` bars) and a valid policy grid `g.toml`."""

    def setup(d: Path, family: Path) -> None:
        from test_backtest import synthetic_csvs

        synthetic_csvs(d / "data", n=n)
        (d / "g.toml").write_text('"paper.long_threshold_bps" = [2.0, 5.0]\n', encoding="utf-8")

    return setup


def _earlier_sweep(d: Path, family: Path) -> None:
    """`out`: a sweep's marked outputs whose trials carry another fingerprint (another grid)."""
    from bot.outputs import MARKER, listing

    row = {"id": "x", "status": "ok", "fingerprint": "0123456789abcdef", "overrides": {"paper.fee_bps": 1.0}}
    (d / "out").mkdir()
    (d / "out" / "trials.json").write_text(json.dumps([row]) + "\n", encoding="utf-8")
    marker = {"kind": "sweep", "files": listing(d / "out")}
    (d / "out" / MARKER).write_text(json.dumps(marker) + "\n", encoding="utf-8")


def _store(*, current: str) -> Callable[[Path, Path], None]:
    """`models`: the family as version V1; `current` a link to `current`, or a real copy when "copy"."""

    def setup(d: Path, family: Path) -> None:
        shutil.copytree(family, d / "models" / V1)
        if current == "copy":
            shutil.copytree(family, d / "models" / "current")
        else:
            (d / "models" / "current").symlink_to(current)

    return setup


V1 = "20260101T000000Z-00000001"


def _sweep_argv(*extra: str, **flags: str) -> list[str]:
    """`offline sweep` on the `_sweep_inputs`, with flags replaced (`out="mine"` is `--out mine`)."""
    opts = {"grid": "g.toml", "data": "data/SYNTHUSDT_5m.csv", "out": "out", "models": "{family}",
            "warmup_bars": "100", "num_cpus": "1", **flags}  # fmt: skip
    argv = ["-m", "offline", "sweep"]
    for key, value in opts.items():
        argv += [f"--{key.replace('_', '-')}", value]
    return [*argv, *extra]


MODELS = ["-m", "offline", "models", "--dir", "models"]
UNREACHABLE = (
    '[market]\nsymbols = ["BTCUSDT"]\n[exchange]\nrest_url = "http://127.0.0.1:9"\n'
    'rest_max_retries = 1\nreconnect_backoff_initial_s = 0.05\n[models]\ndir = "models"\n'
)

OFFLINE_ROWS: list[Case] = [
    # --- offline sweep: every check before a file is created or Ray starts ------------------------------
    Case("sweep-out-user-dir", _sweep_argv(out="mine"), 2,
         "was not written by offline sweep", untouched=["mine"],
         setup=_all(_sweep_inputs(), _write("mine/trials.csv", "mine\n"),
                    _write("mine/best.toml", "# mine\n"), _write("mine/notes.txt", "notes\n"))),
    Case("sweep-folds-over-data", _sweep_argv(folds="100000"), 2,
         "--folds 100000: the trials decide 2600 bars, which fill at most 130 folds", absent=["out"],
         setup=_sweep_inputs()),
    Case("sweep-data-missing", _sweep_argv(data="missing.csv"), 2,
         "missing.csv: cannot read klines CSV", absent=["out"], setup=_sweep_inputs()),
    Case("sweep-grid-later-value-wrong-type", _sweep_argv(), 2,
         "paper.long_threshold_bps[1] = 'abc'", absent=["out"],
         setup=_all(_sweep_inputs(), _write("g.toml", '"paper.long_threshold_bps" = [2.0, "abc"]\n'))),
    Case("sweep-resume-another-grid", _sweep_argv(), 2, "holds trials of another sweep", untouched=["out"],
         setup=_all(_sweep_inputs(), _earlier_sweep)),
    Case("sweep-out-holds-data", _sweep_argv(out="data"), 2, "holds the input",
         untouched=["data"], setup=_sweep_inputs()),
    Case("sweep-out-is-a-file", _sweep_argv(out="notes.txt"), 2,
         "exists and is not a directory", untouched=["notes.txt"],
         setup=_all(_sweep_inputs(), _write("notes.txt", "keep\n"))),
    Case("sweep-trials-zero", _sweep_argv(trials="0"), 2, "--trials: expected at least 1",
         absent=["out"], setup=_sweep_inputs()),
    Case("sweep-models-missing", _sweep_argv(models="nope"), 3, "nope/manifest.json",
         absent=["out"], setup=_sweep_inputs()),
    Case("sweep-warmup-eats-the-data", _sweep_argv(warmup_bars="5000"), 2, "no bar left to decide",
         absent=["out"], setup=_sweep_inputs()),
    Case("sweep-grid-is-a-dir", _sweep_argv(grid="data"), 2, "cannot read grid",
         absent=["out"], setup=_sweep_inputs()),
    # --- offline models: a dangling or copied `current` -------------------------------------------------
    Case("models-list-dangling-current", [*MODELS, "list"], 0, "points to 'gone', which is not a complete "
         "version; run `python -m offline models --dir models promote VERSION`", untouched=["models"],
         setup=_store(current="gone")),
    Case("models-prune-dangling-current", [*MODELS, "prune", "--keep", "1"], 0, "promote VERSION",
         untouched=["models"], setup=_store(current="gone")),
    Case("models-prune-current-is-a-copy", [*MODELS, "prune", "--keep", "1"], 2,
         "models/current is a real directory, not a link", untouched=["models"],
         setup=_store(current="copy")),
    # --- offline distill: the store's health before training ---------------------------------------------
    Case("distill-store-current-is-a-copy", [*DISTILL, "--out", "models"], 2,
         "models/current is a real directory, not a link to a version", untouched=["models"],
         setup=_store(current="copy")),
    Case("distill-seed-negative", [*DISTILL, "--seed", "-1", "--out", "models"], 2, "--seed: expected",
         absent=["models"]),
    # --- offline distill: a selection over a data directory (issue 22 item 5), refused before any work -----
    Case("distill-selection-top-zero", [*DISTILL, "--data", "d", "--symbols", "all", "--top", "0",
         "--out", "models"], 2, "--top: expected `int` >= 1", absent=["models"], untouched=["d"],
         setup=_write("d/AAAUSDT_5m.csv", "start_ms,open,high,low,close,volume,turnover\n0,1,1,1,1,1,1\n")),
    Case("distill-selection-unknown-symbol", [*DISTILL, "--data", "d", "--symbols", "ZZZUSDT",
         "--out", "models"], 2, "--symbols: no CSV for ZZZUSDT in d (1 symbol files there)",
         absent=["models"], untouched=["d"],
         setup=_write("d/AAAUSDT_5m.csv", "start_ms,open,high,low,close,volume\n0,1,1,1,1,1\n")),
    Case("distill-selection-top-without-turnover", [*DISTILL, "--data", "d", "--symbols", "all", "--top", "1",
         "--out", "models"], 2, "no turnover column, and --top / --min-turnover-usd rank symbols",
         absent=["models"], untouched=["d"],
         setup=_write("d/AAAUSDT_5m.csv", "start_ms,open,high,low,close,volume\n0,1,1,1,1,1\n")),
    Case("distill-selection-two-files-one-symbol", [*DISTILL, "--data", "d", "--symbols", "all",
         "--out", "models"], 2, "two files for AAAUSDT (AAAUSDT_1m.csv, AAAUSDT_5m.csv)",
         absent=["models"], untouched=["d"],
         setup=_all(_write("d/AAAUSDT_5m.csv", "x\n"), _write("d/AAAUSDT_1m.csv", "x\n"))),
    Case("distill-selection-without-a-directory", [*DISTILL, "--top", "3", "--out", "models"], 2,
         "--top: chooses among the CSVs of a directory; pass --data DIR", absent=["models"]),
    Case("distill-selection-bad-exclude", [*DISTILL, "--data", "d", "--symbols", "all", "--exclude",
         "btc-usdt", "--out", "models"], 2, "--exclude: expected `str` matching", absent=["models"],
         setup=_write("d/AAAUSDT_5m.csv", "x\n")),
    # --- offline fetch, retrain ----------------------------------------------------------------------------
    Case("fetch-rest-url-not-http", ["-m", "offline", "fetch", "--out", "x.csv", "--rest-url", "ftp://x"], 2,
         "--rest-url: expected a http:// or https:// URL", absent=["x.csv"]),
    Case("fetch-end-ms-negative", ["-m", "offline", "fetch", "--out", "x.csv", "--end-ms", "-5"], 2,
         "--end-ms: expected epoch milliseconds", absent=["x.csv"]),
    Case("retrain-dry-run-unreachable", ["-m", "offline", "retrain", "--config", "c.toml", "--dry-run"], 3,
         "retrying GET /v5/market/kline BTCUSDT", absent=["models"], setup=_write("c.toml", UNREACHABLE)),
]  # fmt: skip

CASES = [
    # --- output safety: offline distill --out -------------------------------------------------------
    Case("distill-out-user-dir", [*DISTILL, "--out", "mine"], 2, "not a tier-family version",
         untouched=["mine"], setup=USER_DIR),
    Case("distill-out-regular-file", [*DISTILL, "--out", "notes.txt"], 2, "exists and is not a directory",
         untouched=["notes.txt"], setup=_write("notes.txt", "keep me\n")),
    Case("distill-out-data-dir", [*DISTILL, "--data", "d/x.csv", "--out", "d"], 2, "holds 'x.csv', which",
         untouched=["d"], setup=_write("d/x.csv", HEADER + csv_rows(500))),
    Case("distill-out-cwd", [*DISTILL, "--out", "."], 2, "holds 'keep.txt', which is not",
         untouched=["."], setup=_write("keep.txt", "x\n")),
    Case("distill-out-parent-of-cwd", [*DISTILL, "--out", ".."], 2, "which is not a tier-family version",
         untouched=["."], setup=_write("keep.txt", "x\n")),
    Case("distill-out-under-a-file", [*DISTILL, "--out", "notes.txt/models"], 2, "is not a directory",
         untouched=["notes.txt"], setup=_write("notes.txt", "keep me\n")),
    Case("distill-out-family-with-user-files", [*DISTILL, "--out", "models"], 2,
         "holds 'mine.txt', which is not a tier-family version",
         untouched=["models"], setup=_all(_family_copy(), _write("models/mine.txt", "x\n"))),
    # --- data files ---------------------------------------------------------------------------------
    Case("distill-drop-last-2-rows", [*DISTILL, "--data", "x.csv", "--drop-last", "--out", "models"], 2,
         "--drop-last leaves 1 data row", absent=["models"], setup=_write("x.csv", HEADER + csv_rows(2))),
    Case("distill-flat-prices", [*DISTILL, "--data", "x.csv", "--out", "models"], 2, "degenerate data",
         absent=["models"], setup=_write("x.csv", HEADER + csv_rows(500, flat=True))),
    Case("distill-too-few-rows", [*DISTILL, "--data", "x.csv", "--out", "models"], 2, "too few usable rows",
         absent=["models"], setup=_write("x.csv", HEADER + csv_rows(80))),
    Case("distill-bom-csv-is-read", [*DISTILL, "--data", "x.csv", "--out", "models"], 2,
         "too few usable rows", absent=["models"],
         setup=_write("x.csv", b"\xef\xbb\xbf" + (HEADER + csv_rows(80)).encode())),
    Case("distill-gzip-csv-is-read", [*DISTILL, "--data", "x.csv.gz", "--out", "models"], 2,
         "too few usable rows", absent=["models"],
         setup=_write("x.csv.gz", gzip.compress((HEADER + csv_rows(80)).encode()))),
    Case("distill-non-utf8-csv", [*DISTILL, "--data", "x.csv", "--out", "models"], 2,
         "line 3: not UTF-8", absent=["models"],
         setup=_write("x.csv", (HEADER + csv_rows(1)).encode() + b"\xff\xfe,1,1,1,1,1\n")),
    Case("distill-bad-symbol", [*DISTILL, "--data", "x.csv", "--symbol", "btc/usd", "--out", "models"], 2,
         "--symbol", absent=["models"], setup=_write("x.csv", HEADER + csv_rows(3))),
    # --- offline fetch --------------------------------------------------------------------------------
    Case("fetch-out-user-file", ["-m", "offline", "fetch", "--out", "notes.txt", "--rest-url", "http://127.0.0.1:9"],
         2, "not a klines CSV", untouched=["notes.txt"], setup=_write("notes.txt", "keep me\n")),
    Case("fetch-days-inf", ["-m", "offline", "fetch", "--out", "x.csv", "--days", "inf"], 2, "--days",
         absent=["x.csv"]),
    # --- models must fit the config (exit 3 before any file) ------------------------------------------
    Case("run-interval-mismatch", RUN, 3, "interval '5' bars ($.provenance.interval), config [market] "
         "interval is '1'", absent=["state"], setup=_bot_config(market={"interval": "1"})),
    Case("run-symbol-mismatch", RUN, 3, "symbols = 'any'", absent=["state"],
         setup=_bot_config(market={"symbols": ["BTCUSDT"]})),
    Case("run-feature-set-mismatch", RUN, 3, "config [tiers.edge] features = 'newest_bar'", absent=["state"],
         setup=_all(_bot_config(), _raw_config("tiers.edge", "features", '"newest_bar"'))),
    Case("run-horizon-mismatch", RUN, 3, "horizon_bars is 3", absent=["state"],
         setup=_bot_config(distill={"horizon_bars": 3})),
    Case("run-manifest-file-outside-models", [*RUN], 3, "inside the models dir", absent=["state"],
         setup=_all(_bad_file_name, _bot_config(), _raw_config("models", "dir", '"models"'))),
    # --- config values ----------------------------------------------------------------------------------
    Case("run-timeout-inf", RUN, 2, "$.exchange.rest_timeout_s: expected a finite number, got inf",
         absent=["state"], setup=_all(_bot_config(), _raw_config("exchange", "rest_timeout_s", "inf"))),
    Case("run-nan", RUN, 2, "$.paper.slippage_bps: expected a finite number", absent=["state"],
         setup=_all(_bot_config(), _raw_config("paper", "slippage_bps", "nan"))),
    Case("run-ws-url-https", RUN, 2, "$.exchange.ws_url: expected a ws:// or wss:// URL", absent=["state"],
         setup=_all(_bot_config(), _raw_config("exchange", "ws_url", '"https://stream.bybit.com"'))),
    Case("run-rest-url-wss", RUN, 2, "$.exchange.rest_url: expected a http:// or https:// URL",
         absent=["state"], setup=_all(_bot_config(), _raw_config("exchange", "rest_url", '"wss://x.y"'))),
    Case("run-decisions-path-is-dir", RUN, 2, "decisions_path", absent=STATE[:2],
         setup=_all(_bot_config(logging={"decisions_path": "logs"}), _write("logs/keep.txt", "x\n"))),
    Case("run-interval-changed-against-ledger", RUN, 2,
         "bars of interval '1', config [market] interval is '5'",
         setup=_all(_bot_config(ledger={"path": "state/ledger.sqlite"}), _ledger_with_1m_bars)),
    # --- tools --------------------------------------------------------------------------------------------
    Case("report-empty-log", ["-m", "bot", "latency-report", "d.jsonl", "--out", "r"], 2,
         "no bar_decided lines",
         absent=["r"], setup=_write("d.jsonl", "")),
    Case("report-garbage-log", ["-m", "bot", "latency-report", "d.jsonl", "--out", "r"], 2, "1 malformed",
         absent=["r"], setup=_write("d.jsonl", "\x00garbage{\n")),
    Case("report-unknown-log", ["-m", "bot", "latency-report", "nope.jsonl", "--out", "r"], 2, "cannot read",
         absent=["r"]),
    Case("report-out-user-dir", ["-m", "bot", "latency-report", "d.jsonl", "--out", "mine"], 2,
         "not written by this command", untouched=["mine"], setup=_all(USER_DIR, _write("d.jsonl", "x\n"))),
    Case("demo-negative-bars", ["-m", "bot", "demo", "--bars", "-5", "--models", "{family}"], 2, "--bars",
         absent=["demo-out"]),
    Case("demo-out-user-dir", ["-m", "bot", "demo", "--out", "mine", "--models", "{family}", "--bars", "5"],
         2,
         "not written by this command", untouched=["mine"], setup=USER_DIR),
    # a bad row after the replayed history: the clock does not freeze silently, the row is named
    Case("replay-server-bad-row", ["-m", "bot", "replay-server", "--data", "BTCUSDT_5m.csv",
          "--symbols", "BTCUSDT", "--port", "0", "--bar-seconds", "0.01", "--history-bars", "5"], 1,
         "line 16: close must be a number",
         untouched=["BTCUSDT_5m.csv"],
         setup=_write("BTCUSDT_5m.csv", "start_ms,open,high,low,close,volume\n" + "".join(
             f"{i * 300_000},10,11,9,{'x' if i == 14 else 10},1\n" for i in range(20)))),
    *BOT_ROWS,
    *OFFLINE_ROWS,
]  # fmt: skip


def _snapshot(path: Path) -> dict[str, bytes] | None:
    if not path.exists():
        return None
    if path.is_file():
        return {"": path.read_bytes()}
    return {str(p.relative_to(path)): (p.read_bytes() if p.is_file() else b"<dir>") for p in path.rglob("*")}


@dataclass
class Outcome:
    dir: Path
    proc: subprocess.CompletedProcess[str]
    before: dict[str, dict[str, bytes] | None]


def _run_case(case: Case, root: Path, family: Path) -> Outcome:
    d = root / case.id
    d.mkdir()
    if case.setup is not None:
        case.setup(d, family)
    before = {rel: _snapshot(d / rel) for rel in case.untouched}
    argv = [a.replace("{family}", str(family)) for a in case.argv]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, *argv], cwd=d, capture_output=True, text=True, timeout=120, check=False, env=env
    )
    return Outcome(d, proc, before)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory, trained_family: Path) -> Iterator[dict[str, Outcome]]:
    """Every row run once, three at a time."""
    root = tmp_path_factory.mktemp("bad_input")
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {c.id: pool.submit(_run_case, c, root, trained_family) for c in CASES}
        yield {cid: f.result() for cid, f in futures.items()}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, outcomes: dict[str, Outcome]) -> None:
    """The row's exit code, one-line reason on stderr (no traceback), and nothing of the user's touched."""
    out = outcomes[case.id]
    err = out.proc.stderr
    assert out.proc.returncode == case.code, err
    assert case.fragment in err, err
    assert "Traceback" not in err, err
    for rel, before in out.before.items():
        assert _snapshot(out.dir / rel) == before, f"{rel} was touched"
    for rel in case.absent:
        assert not (out.dir / rel).exists(), f"{rel} was created"
    leftovers = [p.name for p in out.dir.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    assert leftovers == [], "a temporary sibling was left behind"


# ---- faults that need a service, a signal or a real disk -------------------------------------------------


def test_decision_log_on_a_full_disk_is_one_line_exit_1(tmp_path: Path, trained_family: Path) -> None:
    """The decision log's disk refuses the write (/dev/full): one line naming the cause, exit 1."""
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    cfg = loop_config("http://127.0.0.1:9", "ws://127.0.0.1:9", trained_family, tmp_path / "state")
    data = msgspec.to_builtins(cfg)
    data["logging"]["decisions_path"] = "/dev/full"
    (tmp_path / "config.toml").write_text(to_toml(msgspec.convert(data, type(cfg))), encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, *RUN], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 1, proc.stderr
    assert "No space left on device" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_ledger_on_a_full_disk_is_a_ledger_error_and_rolls_back(tmp_path: Path) -> None:
    """A ledger write the disk refuses (SQLITE_FULL) is a LedgerError naming the file, rolled back."""
    ledger = Ledger.open(tmp_path / "ledger.sqlite")
    try:
        pages = ledger.conn.execute("PRAGMA page_count").fetchone()[0]
        ledger.conn.execute(f"PRAGMA max_page_count = {pages}")
        error: LedgerError | None = None
        for i in range(10_000):
            try:
                ledger.record_bar(Bar("BTCUSDT", i * 300_000, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, "rest"))
            except LedgerError as exc:
                error = exc
                break
        assert error is not None
        assert "ledger.sqlite: cannot write the ledger" in str(error)
        assert "full" in str(error)
        kept = len(ledger.bars("BTCUSDT"))
        assert kept < 10_000
        assert not ledger.conn.in_transaction
    finally:
        ledger.close()


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_during_training_keeps_the_family_and_exits_128_plus_signal(
    tmp_path: Path, trained_family: Path, sig: signal.Signals, code: int
) -> None:
    """SIGINT/SIGTERM while training stop the run at once (not swallowed by partial_fit), leave the previous
    family byte-identical, name the stage on stderr (with the progress bar on) and exit 130/143."""
    models = tmp_path / "models"
    shutil.copytree(trained_family, models)
    before = _snapshot(models)
    # long enough that no machine finishes before the signal (it is never run to the end)
    cfg = small_config(distill={"quick_epochs": 100_000, "patience": 100_000})
    (tmp_path / "c.toml").write_text(to_toml(cfg), encoding="utf-8")
    proc = subprocess.Popen(
        [sys.executable, "-m", "offline", "distill", "--quick", "--config", "c.toml", "--out", "models"],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    deadline = time.monotonic() + 60
    while not list(models.glob("*incoming-*")) and time.monotonic() < deadline:
        time.sleep(0.1)  # the staging dir exists: the output was accepted, data and training follow
    time.sleep(3.0)  # into the training
    proc.send_signal(sig)
    t0 = time.monotonic()
    err = proc.communicate(timeout=30)[1]
    assert time.monotonic() - t0 < 10
    assert proc.returncode == code, err
    assert f"interrupted by {sig.name}: offline distill stopped while training " in err
    assert "nothing was written; models is as it was" in err
    assert "Traceback" not in err
    assert _snapshot(models) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_staged_output_checks_free_space_up_front(tmp_path: Path) -> None:
    """Not enough free space for the output: refused before any work, naming what is needed."""
    stage = StagedOutput(tmp_path / "out", kind="demo", min_free_mib=1 << 40)
    with pytest.raises(OutputPathError, match=r"MiB free .* need 1099511627776 MiB"):
        stage.check()
    assert list(tmp_path.iterdir()) == []


def test_non_transient_connection_errors_are_not_retried() -> None:
    """Unknown host and TLS failures are permanent (REST and websocket); a refused connection or a resolver
    that did not answer is transient; a websocket 4xx handshake is fatal, 429 and 5xx are retried."""
    assert permanent_cause(socket.gaierror(socket.EAI_NONAME, "Name or service not known")) is not None
    assert permanent_cause(ssl.SSLCertVerificationError("certificate verify failed")) is not None
    assert permanent_cause(socket.gaierror(socket.EAI_AGAIN, "Temporary failure")) is None
    assert permanent_cause(ConnectionRefusedError(111, "refused")) is None
    wrapped = OSError("connect failed")
    wrapped.__cause__ = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    assert not is_retryable(wrapped)
    assert is_retryable(ConnectionRefusedError(111, "refused"))
    for status, retry in ((404, False), (401, False), (429, True), (503, True)):
        resp = websockets.http11.Response(status, "x", websockets.datastructures.Headers())
        assert is_retryable(websockets.exceptions.InvalidStatus(resp)) is retry


async def test_rest_unknown_host_fails_at_once() -> None:
    """An unresolvable REST host is an EndpointError after one attempt, not six retries."""
    from bot.bybit.errors import EndpointError
    from bot.bybit.rest import RestClient

    probe = None
    try:
        socket.getaddrinfo("no-such-host.invalid", 80)
    except socket.gaierror as exc:
        probe = exc.errno
    if probe != socket.EAI_NONAME:
        pytest.skip(f"this resolver answers {probe} for an unknown name")
    async with RestClient("http://no-such-host.invalid", timeout_s=5, max_retries=6) as rc:
        t0 = time.monotonic()
        with pytest.raises(EndpointError, match=r"no-such-host\.invalid: unknown host"):
            await rc.klines_page("BTCUSDT", "5")
        assert rc.requests == 1
        assert time.monotonic() - t0 < 5


async def test_metrics_start_on_a_held_port_is_a_config_error() -> None:
    """Metrics.start on a port in use raises ConfigError naming host:port (the CLI maps it to exit 2)."""
    from bot.core.errors import ConfigError

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with pytest.raises(ConfigError, match=f"127.0.0.1:{port}: cannot listen"):
            await Metrics(stale_s=1.0).start("127.0.0.1", port)
    await asyncio.sleep(0)


# ---- issue 25: interrupts at every phase of the offline runs (real subprocesses, real signals) ----------


def _interrupt_at(phase: str, sig: signal.Signals, argv: list[str], cwd: Path) -> tuple[int, str]:
    """Run `python argv` in `cwd` paused at `phase` (offline.interrupts.PAUSE_ENV), send `sig` there."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PROGDISTILL_PAUSE_AT": phase}
    proc = subprocess.Popen(
        [sys.executable, *argv],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith(f"paused at phase {phase} "):
            proc.send_signal(sig)
            break
    err = "".join(seen) + proc.communicate(timeout=60)[1]
    return proc.returncode, err


def _versioned_store(root: Path, family: Path) -> Path:
    """A models store holding `family` as version v1, current."""
    shutil.copytree(family, root / "models" / "20260101T000000Z-00000001")
    (root / "models" / "current").symlink_to("20260101T000000Z-00000001")
    return root / "models"


@pytest.mark.parametrize(
    ("phase", "sig"),
    [
        ("data", signal.SIGINT),
        ("training", signal.SIGTERM),
        ("export", signal.SIGINT),
        ("export", signal.SIGTERM),
        ("promote", signal.SIGINT),
    ],
)
def test_distill_interrupted_at_each_phase_keeps_current(
    tmp_path: Path, trained_family: Path, phase: str, sig: signal.Signals
) -> None:
    """SIGINT/SIGTERM at distill's data, training, export or promote phase: exit 128 + signal, the line names
    the phase, the store (and its `current`) byte-identical, no temporary left."""
    models = _versioned_store(tmp_path, trained_family)
    before = _snapshot(models)
    (tmp_path / "c.toml").write_text(to_toml(small_config()), encoding="utf-8")
    rc, err = _interrupt_at(phase, sig, [*DISTILL, "--config", "c.toml", "--out", "models"], tmp_path)
    assert rc == 128 + sig, err
    what = {"data": "reading the data", "training": "training", "export": "exporting the tiers"}
    stopped = f"offline distill stopped while {what.get(phase, 'adding the version')}"
    assert f"interrupted by {sig.name}: {stopped}" in err
    assert "Traceback" not in err
    assert _snapshot(models) == before
    assert os.readlink(models / "current") == "20260101T000000Z-00000001"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def _sweep_dir(d: Path, family: Path) -> None:
    """The inputs of a policy sweep, and --out holding a previous sweep's marked outputs."""
    from test_backtest import synthetic_csvs

    from bot.outputs import MARKER, listing

    synthetic_csvs(d / "data", n=400)
    (d / "grid.toml").write_text('"paper.long_threshold_bps" = [0.0, 5.0]\n', encoding="utf-8")
    out = d / "sweep"
    out.mkdir()
    (out / "trials.json").write_text("[]\n", encoding="utf-8")
    (out / "best.toml").write_text("# an earlier sweep's best\n", encoding="utf-8")
    marker = {"kind": "sweep", "files": listing(out)}
    (out / MARKER).write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")


SWEEP = ["-m", "offline", "sweep", "--grid", "grid.toml", "--data", "data/SYNTHUSDT_5m.csv", "--data",
         "data/OTHERUSDT_5m.csv", "--out", "sweep", "--models", "{family}", "--folds", "3", "--warmup-bars",
         "100", "--num-cpus", "1", "--cache-dir", "cache"]  # fmt: skip


@pytest.mark.parametrize(
    ("phase", "sig"), [("data", signal.SIGTERM), ("training", signal.SIGINT), ("export", signal.SIGINT)]
)
def test_sweep_interrupted_at_each_phase_keeps_earlier_outputs(
    tmp_path: Path, trained_family: Path, phase: str, sig: signal.Signals
) -> None:
    """SIGINT/SIGTERM at the sweep's data, training (Ray up) or export phase: exit 128 + signal naming the
    phase; an earlier sweep's outputs in --out byte-identical (a journal of finished trials may be added)."""
    _sweep_dir(tmp_path, trained_family)
    before = _snapshot(tmp_path / "sweep")
    argv = [a.replace("{family}", str(trained_family)) for a in SWEEP]
    rc, err = _interrupt_at(phase, sig, argv, tmp_path)
    assert rc == 128 + sig, err
    assert f"interrupted by {sig.name}: offline sweep stopped while " in err
    assert "Traceback" not in err
    after = _snapshot(tmp_path / "sweep")
    assert after is not None
    assert before is not None
    after.pop(".trials.partial.json", None)
    assert after == before
