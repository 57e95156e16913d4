"""latency-report on a small generated decision log."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import msgspec
import numpy as np
import pytest

from bot.models.manifest import decode_manifest
from bot.sim.report import add_report_args, main_report, read_decisions, run_report

TIERS = {"edge": ("calm_trend", 40.0), "production": ("normal", 120.0), "research": ("crisis", 900.0)}


def _decision(
    i: int, tier: str, *, source: str = "ws", pnl: float = 0.0, fee: float = 0.0
) -> dict[str, object]:
    regime, base = TIERS[tier]
    inf = base + i  # distinct, known values
    lat = {
        "features": 30 + i % 5,
        "regime": 5,
        "inference": inf,
        "paper": 10,
        "total": 45 + i % 5 + inf + 10,
        "recv_to_decision": 2 * inf + 100,
    }
    return {
        "event": "bar_decided",
        "symbol": "BTCUSDT",
        "start_ms": 1_735_689_600_000 + i * 300_000,
        "source": source,
        "regime": regime,
        "tier": tier,
        "prediction": 0.0001,
        "signal": 1,
        "position": 1,
        "fill_price": 95000.0,
        "fee_usd": fee,
        "realized_pnl_usd": pnl,
        "unrealized_pnl_usd": 1.5 * i,
        "qty": 0.1,
        "equity_usd": pnl - fee,
        "bar_pnl_usd": 0.0,
        "holding_pnl_usd": 0.0,
        "holding_tier": None,
        "holding_regime": None,
        "trade_pnl_usd": -fee,
        "close": 95000.0,
        "latency_us": lat,
        "level": "info",
    }


@pytest.fixture
def log(tmp_path: Path) -> Path:
    lines: list[str] = []
    i = 0
    for tier, n in (("edge", 100), ("production", 50), ("research", 10)):
        for _ in range(n):
            src = "rest" if i < 5 else "ws"
            lines.append(
                json.dumps(_decision(i, tier, source=src, pnl=1.0 if tier == "edge" else -0.5, fee=0.25))
            )
            i += 1
        lines.append(json.dumps({"event": "ws_reconnect", "delay_s": 0.5, "level": "warning"}))
    lines.append("{not json")
    lines.append("[1, 2]")
    bad = _decision(999, "edge")
    del bad["latency_us"]
    lines.append(json.dumps(bad))
    wrong = _decision(998, "edge")
    wrong["start_ms"] = "yesterday"
    lines.append(json.dumps(wrong))
    lines.append("")
    dup = _decision(3, "edge", pnl=1.0, fee=0.25)  # bar 3 decided again (e.g. logged twice around a crash)
    lines.append(json.dumps(dup))
    path = tmp_path / "decisions.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_counts_and_skips(log: Path) -> None:
    """bar_decided lines are kept, other events ignored, malformed lines and duplicate bars counted."""
    decisions, counts = read_decisions(log)
    assert counts == {"lines": 168, "decisions": 160, "other_events": 3, "malformed": 4, "duplicates": 1}
    assert len({(d.symbol, d.start_ms) for d in decisions}) == 160


def test_latency_quantiles_pnl_and_files(log: Path, tmp_path: Path) -> None:
    """Per-tier quantiles match numpy on known inputs; PnL per tier/regime; JSON and PNGs written."""
    out = tmp_path / "out"
    report = run_report(log, out)
    edge = report["tiers"]["edge"]
    inf = np.arange(100) + 40.0
    assert edge["bars"] == 100
    assert edge["latency_us"]["inference"]["p50"] == pytest.approx(np.percentile(inf, 50))
    assert edge["latency_us"]["inference"]["p99"] == pytest.approx(np.percentile(inf, 99))
    assert edge["latency_us"]["inference"]["max"] == 139.0
    assert edge["latency_us"]["recv_to_decision"]["max"] == 2 * 139.0 + 100
    research = report["tiers"]["research"]
    assert research["latency_us"]["inference"]["p90"] == pytest.approx(
        np.percentile(np.arange(150, 160) + 900.0, 90)
    )
    assert edge["realized_pnl_usd"] == pytest.approx(100.0)
    assert report["tiers"]["production"]["realized_pnl_usd"] == pytest.approx(-25.0)
    assert report["regimes"]["crisis"] == {"bars": 10, "realized_pnl_usd": -5.0, "fee_usd": 2.5}
    assert report["total"]["bars"] == 160
    assert report["total"]["fee_usd"] == pytest.approx(40.0)
    assert report["bars_by_source"] == {"rest": 4, "ws": 156}  # bar 3's last line came over ws
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["tiers"]["edge"]["latency_us"]["inference"]["max"] == 139.0
    for tier in TIERS:
        png = out / f"latency_{tier}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.stat().st_size > 5_000


def test_cli_prints_table(log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The subcommand prints one row per tier and returns 0; an unreadable log returns 2 with the path."""
    parser = argparse.ArgumentParser()
    add_report_args(parser)
    assert main_report(parser.parse_args([str(log), "--out", str(tmp_path / "r"), "--no-plots"])) == 0
    text = capsys.readouterr().out
    rows = [line.split() for line in text.splitlines()]
    assert rows[2][:4] == ["edge", "100", "100.00", "25.00"]
    assert "160 decisions from 168 lines" in text
    assert not list((tmp_path / "r").glob("*.png"))
    assert (
        main_report(parser.parse_args([str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "r")])) == 2
    )
    assert "missing.jsonl: cannot read decision log" in capsys.readouterr().err


def test_the_return_heads_skill_is_shown_only_from_the_manifest_the_log_names(
    trained_family: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With `--models` the report shows the return IC +- SE of the manifest whose sha256 the log's
    `model_sha` is; without it, or for a sha no manifest there has, it says so instead of guessing."""
    sha = hashlib.sha256((trained_family / "manifest.json").read_bytes()).hexdigest()
    skill = decode_manifest((trained_family / "manifest.json").read_bytes()).return_skill
    assert skill is not None
    path = tmp_path / "decisions.jsonl"
    lines = [{**_decision(i, "edge"), "model_sha": sha} for i in range(3)]
    lines.append({**_decision(3, "edge"), "model_sha": "f" * 64})
    path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    parser = argparse.ArgumentParser()
    add_report_args(parser)
    args = [str(path), "--out", str(tmp_path / "r"), "--no-plots", "--models", str(trained_family)]
    assert main_report(parser.parse_args(args)) == 0
    text = capsys.readouterr().out
    assert f"model {sha[:12]} (3 bars): return head {skill.text()}" in text
    assert "model ffffffffffff (1 bars): return head unknown: no manifest with this sha256 under" in text
    models = json.loads((tmp_path / "r" / "report.json").read_text())["models"]
    assert models[0]["return_skill"] == msgspec.to_builtins(skill)
    assert models[0]["no_skill"] == skill.no_skill
    report = run_report(path, tmp_path / "r2", plots=False)
    assert report["models"][0]["return_skill"] is None
    assert "pass --models DIR" in report["models"][0]["note"]
