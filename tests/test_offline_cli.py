"""`python -m offline distill` as a subprocess: success; bad config / CSV -> exit 2, nothing written."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import onnxruntime as ort

from bot.core.bars import Bar

REPO = Path(__file__).resolve().parents[1]
TINY_TOML = """
[tiers.research]
layers = 2
width = 24
[tiers.staging]
layers = 2
width = 12
[tiers.production]
layers = 1
width = 10
features = "price_volume"
[tiers.edge]
layers = 1
width = 6
features = "newest_bar"
[distill]
synthetic_bars = 2000
quick_bars = 1500
quick_epochs = 2
embargo_bars = 5
batch_size = 128
"""


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "offline", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )


def test_cli_distill_quick_end_to_end(tmp_path: Path) -> None:
    """--quick on a tiny synthetic config exits 0, prints the table, writes a loadable hash-true family."""
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY_TOML)
    out = tmp_path / "models"
    proc = _run(
        "distill",
        "--config",
        str(cfg),
        "--data",
        "synthetic",
        "--out",
        str(out),
        "--quick",
        "--seed",
        "4",
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    assert "exported: research=teacher" in proc.stdout
    assert "progressive_no_transfer" in proc.stdout
    assert "teacher research" in proc.stderr  # per-stage progress lines
    assert (out / "current").is_symlink()  # a new version, made current
    version = os.readlink(out / "current")
    assert f"version {version} in {out}: current" in proc.stdout
    out = out / version
    m = json.loads((out / "manifest.json").read_text())
    assert [t["name"] for t in m["tiers"]] == ["research", "staging", "production", "edge"]
    assert m["provenance"]["rows"] == 1500
    report = json.loads((out / "report.json").read_text())
    assert report["info"]["seed"] == 4
    assert report["info"]["epochs"] == 2
    for t in m["tiers"]:
        blob = (out / t["file"]).read_bytes()
        assert hashlib.sha256(blob).hexdigest() == t["sha256"]
        ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    assert m["tiers"][3]["features"] == [
        "ret_1",
        "range_vol",
        "vol_chg",
        "body",
        "upper_wick",
        "lower_wick",
        "close_pos",
    ]


def test_cli_bad_config_names_the_key_and_writes_nothing(tmp_path: Path) -> None:
    """An out-of-range config key exits 2 with the key path on stderr and creates no output."""
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[distill]\nembargo_bars = -3\n")
    out = tmp_path / "models"
    proc = _run("distill", "--config", str(cfg), "--out", str(out), "--quick", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 2
    assert "$.distill.embargo_bars" in proc.stderr
    assert str(cfg) in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]


def test_cli_unknown_config_key_is_rejected(tmp_path: Path) -> None:
    """An unknown key under [distill] exits 2 naming it."""
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[distill]\nepochz = 3\n")
    proc = _run("distill", "--config", str(cfg), "--out", str(tmp_path / "m"), "--no-progress", cwd=tmp_path)
    assert proc.returncode == 2
    assert "epochz" in proc.stderr
    assert not (tmp_path / "m").exists()


def test_cli_bad_csv_names_the_row_and_writes_nothing(tmp_path: Path) -> None:
    """A CSV with high < low exits 2 naming the line, and no output directory appears."""
    csv = tmp_path / "BTCUSDT_5m.csv"
    csv.write_text("start_ms,open,high,low,close,volume\n0,10,11,9,10,1\n300000,10,9,11,10,1\n")
    out = tmp_path / "models"
    proc = _run("distill", "--data", str(csv), "--out", str(out), "--no-progress", cwd=tmp_path)
    assert proc.returncode == 2
    assert "line 3: high 9.0 < low 11.0" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["BTCUSDT_5m.csv"]


def test_cli_gap_needs_allow_gaps(tmp_path: Path) -> None:
    """A CSV with a time gap exits 2 naming the gap and suggesting --allow-gaps."""
    rows = [f"{i * 300_000 + (600_000 if i >= 5 else 0)},10,11,9,10,1" for i in range(10)]
    csv = tmp_path / "BTCUSDT_5m.csv"
    csv.write_text("start_ms,open,high,low,close,volume\n" + "\n".join(rows) + "\n")
    proc = _run("distill", "--data", str(csv), "--out", str(tmp_path / "m"), "--no-progress", cwd=tmp_path)
    assert proc.returncode == 2
    assert "gap before data row 6 (line 7)" in proc.stderr
    assert "--allow-gaps" in proc.stderr


def _synthetic_csv(path: Path, seed: int) -> Path:
    from offline.data import synthetic_bars

    rows = [
        f"{b.start_ms},{b.open},{b.high},{b.low},{b.close},{b.volume}\n"
        for b in synthetic_bars(1800, seed=seed)
    ]
    path.write_text("start_ms,open,high,low,close,volume\n" + "".join(rows), encoding="utf-8")
    return path


def test_cli_distill_pooled_symbols(tmp_path: Path) -> None:
    """--data twice with a --symbol each trains one family on both (provenance lists them); a --symbol count
    that does not match the files exits 2 naming --symbol and writes nothing."""
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY_TOML)
    a = _synthetic_csv(tmp_path / "A_5m.csv", 1)
    b = _synthetic_csv(tmp_path / "B_5m.csv", 2)
    bad = _run(
        "distill", "--config", str(cfg), "--data", str(a), "--data", str(b), "--symbol", "AAAUSDT",
        "--out", str(tmp_path / "bad"), "--no-progress", cwd=tmp_path,
    )  # fmt: skip
    assert bad.returncode == 2
    assert "--symbol: give one per --data file" in bad.stderr
    assert not (tmp_path / "bad").exists()
    out = tmp_path / "models"
    proc = _run(
        "distill", "--config", str(cfg), "--data", str(a), "--data", str(b), "--symbol", "AAAUSDT",
        "--symbol", "BBBUSDT", "--out", str(out), "--quick", "--no-progress", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "current" / "manifest.json").read_text())
    assert manifest["provenance"]["symbols"] == ["AAAUSDT", "BBBUSDT"]
    assert manifest["provenance"]["source"] == "pooled"
    assert "vol R2/sym" in proc.stdout


def test_cli_distill_selects_symbols_of_a_data_directory(tmp_path: Path) -> None:
    """--data DIR --symbols all --top 2 --exclude trains one pooled family on the two symbols with the most
    turnover over their last day (not the excluded one), logs what it chose, and records them."""
    from offline.data import synthetic_bars
    from offline.fetch import write_klines_csv

    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY_TOML)
    data = tmp_path / "data"
    data.mkdir()
    for k, sym in enumerate(("AAAUSDT", "BBBUSDT", "CCCUSDT", "DDDUSDT")):
        bars = [
            Bar(b.symbol, b.start_ms, b.open, b.high, b.low, b.close, b.volume, float(k + 1))
            for b in synthetic_bars(1800, seed=k + 1)
        ]
        write_klines_csv(bars, data / f"{sym}_5m.csv")
    out = tmp_path / "models"
    proc = _run(
        "distill", "--config", str(cfg), "--data", str(data), "--symbols", "all", "--top", "2",
        "--exclude", "DDDUSDT", "--out", str(out), "--quick", "--no-progress", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"selected: 2 of the 4 symbol files in {data}" in proc.stderr
    manifest = json.loads((out / "current" / "manifest.json").read_text())
    assert manifest["provenance"]["symbols"] == ["CCCUSDT", "BBBUSDT"]
    assert manifest["provenance"]["source"] == "pooled"
