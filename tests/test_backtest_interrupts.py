"""`bot backtest` stopped by SIGINT/SIGTERM (a real subprocess, a real signal) in each phase: exit 130/143,
one line naming the phase, the previous `--out` byte-identical and no temporary sibling left behind."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import REPO, small_config, to_toml

from bot.interrupts import deferred

pytestmark = pytest.mark.timeout(300)

HEADER = "start_ms,open,high,low,close,volume\n"
T0 = 1_700_000_100_000  # on the 5-minute grid
OPTS = ["--config", "cfg.toml", "--warmup-bars", "50", "--no-cache", "--out", "bt1"]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def _csv(path: Path, n: int) -> None:
    """`n` valid 5-minute klines rows (a slow zig-zag)."""
    rows = (f"{T0 + i * 300_000},{100 + (i % 7) * 0.3},{100.5 + (i % 7) * 0.3},{99.5 + (i % 7) * 0.3},"
            f"{100 + (i % 7) * 0.3},10\n" for i in range(n))  # fmt: skip
    path.write_text(HEADER + "".join(rows), encoding="utf-8")


def _snapshot(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def previous(tmp_path_factory: pytest.TempPathFactory, trained_family: Path) -> Path:
    """A directory with cfg.toml, a 60,000-bar CSV and a real earlier backtest's output `bt1`."""
    d = tmp_path_factory.mktemp("bt_interrupts")
    cfg = small_config(models={"dir": str(trained_family), "symbols": "any"})
    (d / "cfg.toml").write_text(to_toml(cfg), encoding="utf-8")
    _csv(d / "small.csv", 400)
    _csv(d / "big.csv", 60_000)
    argv = [sys.executable, "-m", "bot", "backtest", "--data", "BTCUSDT=small.csv", *OPTS]
    subprocess.run(argv, cwd=d, capture_output=True, timeout=120, check=True, env=ENV)
    return d


@pytest.mark.parametrize(
    ("phase", "sig", "said"),
    [
        ("reading", signal.SIGINT, "while reading 1 CSV(s) and computing features and predictions"),
        ("deciding", signal.SIGTERM, "while deciding 60,000 bars"),
        ("deciding", signal.SIGINT, "while deciding 60,000 bars"),
        ("writing", signal.SIGTERM, "while writing the report and plots of bt1"),
    ],
)
def test_a_signal_stops_the_backtest_and_keeps_the_previous_output(
    previous: Path, tmp_path: Path, phase: str, sig: signal.Signals, said: str
) -> None:
    """SIGINT/SIGTERM while reading the data (blocked on a FIFO), deciding or writing: exit 128 + signal,
    one line naming the phase and saying nothing was written, bt1 byte-identical, no temporary sibling."""
    for name in ("cfg.toml", "big.csv"):
        shutil.copy(previous / name, tmp_path / name)
    shutil.copytree(previous / "bt1", tmp_path / "bt1")
    before = _snapshot(tmp_path / "bt1")
    data = "big.csv"
    if phase == "reading":
        data = "fifo.csv"
        os.mkfifo(tmp_path / data)  # nobody writes it: the run waits in its reading phase
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "backtest", "--data", f"BTCUSDT={data}", *OPTS],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    for line in proc.stdout:  # "backtest: <phase> ..." when a phase begins
        if line.startswith(f"backtest: {phase}") or time.monotonic() > deadline:
            break
    time.sleep(0.2)  # into the phase (each lasts more than a second)
    proc.send_signal(sig)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 128 + sig, err
    kept = "nothing was written; bt1 is as it was"
    assert err == f"interrupted by {sig.name} {said}: bot backtest stopped; {kept}\n"
    assert _snapshot(tmp_path / "bt1") == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_signal_during_the_swap_is_raised_after_it() -> None:
    """`deferred()` (around StagedOutput's swap) holds SIGINT back and raises it to the handler after."""
    seen: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: seen.append(signum))
    try:
        with deferred():
            signal.raise_signal(signal.SIGINT)
            assert seen == []
        assert seen == [signal.SIGINT]
    finally:
        signal.signal(signal.SIGINT, previous)
