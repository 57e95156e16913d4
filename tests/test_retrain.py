"""`python -m offline retrain` against the replay exchange on 127.0.0.1: champion/challenger with real
training, real ONNX families and a real models store; `current` moves only for a winner."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import signal
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from bot.config import Config, load_config
from bot.ledger.writer import Ledger
from bot.models import store as modelstore
from bot.models.family import TierFamily
from bot.sim.replay.server import ReplayExchange
from offline.__main__ import main
from offline.data import synthetic_bars
from offline.holdout import decide
from offline.retrain import merge_recorded

HISTORY = 3000
HOLDOUT = 600

#: Tiny tiers and a short, deterministic distillation; `{...}` are filled per test.
TOML = """
[market]
symbols = ["SYNTHUSDT"]
[exchange]
rest_url = "{url}"
rest_max_retries = 0
rest_timeout_s = 5.0
[tiers.research]
layers = 3
width = 24
[tiers.staging]
layers = 2
width = 16
[tiers.production]
layers = 2
width = 12
[tiers.edge]
layers = 1
width = 8
[distill]
epochs = {epochs}
learning_rate = {lr}
embargo_bars = {embargo}
[models]
dir = "{models}"
[ledger]
path = "{ledger}"
[retrain]
history_bars = {history}
holdout_bars = {holdout}
qlike_tolerance = {qtol}
ic_tolerance = {ictol}
reports_dir = "{reports}"
"""
# Per-tier IC and QLIKE on 600 bars are noisy (test_decide_rule pins the per-tier tolerances): the good
# config lets the routed forecast alone decide, the crippled one allows no slack at all.
GOOD = {"epochs": 30, "lr": 0.001, "qtol": 10.0, "ictol": 2.0}
CRIPPLED = {"epochs": 1, "lr": 0.05, "qtol": 0.0, "ictol": 0.0}  # one epoch at a learning rate 50x too high


@pytest.fixture
async def exchange() -> AsyncIterator[ReplayExchange]:
    """A paused wall-clock exchange: HISTORY closed 5-minute bars up to now, served over REST."""
    async with ReplayExchange(
        symbols=["SYNTHUSDT"],
        bar_seconds=300.0,
        history_bars=HISTORY,
        clock="wall",
        latency_ms=0.0,
        book=False,
    ) as ex:
        yield ex


def write_config(tmp: Path, url: str, name: str = "c.toml", **over: Any) -> Path:
    values: dict[str, Any] = {
        "url": url,
        "models": tmp / "models",
        "reports": tmp / "reports",
        "ledger": tmp / "ledger.sqlite",
        "history": HISTORY,
        "holdout": HOLDOUT,
        "embargo": 10,
        **GOOD,
        **over,
    }
    path = tmp / name
    path.write_text(TOML.format(**values), encoding="utf-8")
    return path


async def retrain(capsys: pytest.CaptureFixture[str], config: Path, *extra: str) -> tuple[int, str, str]:
    rc = await asyncio.to_thread(main, ["retrain", "--config", str(config), *extra])
    out, err = capsys.readouterr()
    return rc, out, err


def snapshot(root: Path) -> dict[str, str]:
    """Every path under `root` (links as their target) -> sha256 of its bytes."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_file():
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                out[rel] = "dir"
    return out


def summaries(tmp: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((tmp / "reports").glob("retrain-*.json"))]


async def test_champion_challenger_promotes_only_a_winner(
    exchange: ReplayExchange, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No champion: promoted; a better challenger replaces a crippled champion; a crippled one is kept out."""
    models = tmp_path / "models"
    crippled = write_config(tmp_path, exchange.rest_url, "crippled.toml", **CRIPPLED)
    good = write_config(tmp_path, exchange.rest_url, "good.toml")

    rc, out, _ = await retrain(capsys, crippled)
    assert rc == 0, out
    first = modelstore.current_version(models)
    assert first is not None
    assert out.strip().splitlines()[-1].startswith(f"promoted {first} (was none): no champion yet")
    assert (models / first / "retrain.json").is_file()
    assert "no champion yet" in (models / first / "retrain.txt").read_text()
    champion_files = snapshot(models / first)
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE((models / first).stat().st_mode) == 0o777 & ~mask  # not tempfile's 0700

    rc, out, _ = await retrain(capsys, good)
    assert rc == 0, out
    second = modelstore.current_version(models)
    assert second is not None
    assert second != first, out
    assert out.strip().splitlines()[-1].startswith(f"promoted {second} (was {first})")
    report = json.loads((models / second / "retrain.json").read_text())
    assert report["outcome"] == "promoted"
    new, old = report["challenger_scores"]["routed"], report["champion_scores"]["routed"]
    assert new["vol_qlike_bc"] < old["vol_qlike_bc"]
    assert report["challenger_scores"]["holdout_rows"]["SYNTHUSDT"] > HOLDOUT - 30
    assert report["champion_saw_holdout"] is False  # the window is held out from both
    # routes = "auto": each family is scored on its own chosen routes
    for who, version in (("challenger", second), ("champion", first)):
        manifest = json.loads((models / version / "manifest.json").read_text())
        assert report[f"{who}_scores"]["routes"] == manifest["routes"]["routes"]
    assert "challenger routes: calm_trend -> " in (models / second / "retrain.txt").read_text()
    assert report["recorded"]["skipped"] == "no ledger at [ledger] path"  # REST bars only here
    # the old champion is still there, byte for byte, beside the new one
    assert snapshot(models / first) == champion_files
    TierFamily.load(models).check_fit(load_config(good))  # what the service will load now

    champion_files = snapshot(models / second)
    rc, out, _ = await retrain(capsys, crippled)
    assert rc == 0, out
    assert modelstore.current_version(models) == second
    last = out.strip().splitlines()[-1]
    assert last.startswith(f"kept champion {second}; challenger ")
    assert "routed vol QLIKE" in last
    assert "not better" in last
    third = [v for v in modelstore.versions(models) if v not in (first, second)]
    assert len(third) == 1  # the loser stays as an unpromoted version, with its report
    assert json.loads((models / third[0] / "retrain.json").read_text())["outcome"] == "kept"
    assert snapshot(models / second) == champion_files
    assert [s["outcome"] for s in summaries(tmp_path)] == ["promoted", "promoted", "kept"]


async def test_failures_leave_current_untouched(
    exchange: ReplayExchange, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A corrupt challenger (4), a failed distillation (4) and a failed fetch (3) leave the champion as is;
    a champion that no longer fits the config gives way to a verified challenger."""
    models = tmp_path / "models"
    cfg = write_config(tmp_path, exchange.rest_url, epochs=5)
    rc, out, _ = await retrain(capsys, cfg)
    assert rc == 0, out
    champion = modelstore.current_version(models)
    assert champion is not None

    # a challenger whose ONNX bytes were altered after export: refused by the service's own verification
    corrupt = "20990101T000000Z-0badc0de"
    shutil.copytree(models / champion, models / corrupt)
    onnx_file = models / corrupt / "edge.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes()[:-8] + b"\0" * 8)
    before = snapshot(models)
    rc, out, err = await retrain(capsys, cfg, "--challenger", corrupt)
    assert rc == 4
    assert f"challenger {corrupt} refused: tier 'edge': sha256 mismatch" in err
    assert "champion and" in err
    assert out == ""
    assert snapshot(models) == before  # nothing written into the store on a refusal

    # a distillation that cannot split its data (embargo too long for the bars): exit 4
    bad = write_config(tmp_path, exchange.rest_url, "bad.toml", embargo=1000)
    rc, _, err = await retrain(capsys, bad)
    assert rc == 4
    assert "distilling the challenger failed" in err
    assert "too few usable rows" in err
    assert modelstore.current_version(models) == champion
    assert sorted(modelstore.versions(models)) == sorted([champion, corrupt])

    # an exchange that is not there: exit 3
    gone = write_config(tmp_path, "http://127.0.0.1:9", "gone.toml")
    rc, _, err = await retrain(capsys, gone)
    assert rc == 3
    assert err.startswith("error: fetching bars from http://127.0.0.1:9 failed")
    assert err.count("\n") == 1
    assert modelstore.current_version(models) == champion

    failed = [s for s in summaries(tmp_path) if s["outcome"] == "failed"]
    assert [s["exit_code"] for s in failed] == [4, 4, 3]

    # the config moved on (2-bar horizon): a champion that no longer fits it is replaced by a valid challenger
    moved = write_config(tmp_path, exchange.rest_url, "moved.toml", epochs=5)
    moved.write_text(moved.read_text().replace("[distill]\n", "[distill]\nhorizon_bars = 2\n"))
    rc, out, _ = await retrain(capsys, moved)
    assert rc == 0
    assert modelstore.current_version(models) not in (champion, corrupt)
    assert f"champion {champion} unusable: " in out
    assert "predicts 1 bar(s) ahead" in out


async def test_dry_run_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--dry-run fetches two symbols, distils one pooled family, scores it on both in a temporary directory
    and writes nothing anywhere; --ledger names the ledger to merge instead of [ledger] path."""
    symbols = ["SYNTHUSDT", "SYNTHBUSDT"]
    async with ReplayExchange(
        symbols=symbols, bar_seconds=300.0, history_bars=HISTORY, clock="wall", latency_ms=0.0, book=False
    ) as ex:
        cfg = write_config(tmp_path, ex.rest_url, epochs=5)
        text = cfg.read_text().replace('symbols = ["SYNTHUSDT"]', f"symbols = {json.dumps(symbols)}")
        cfg.write_text(text)
        before = snapshot(tmp_path)
        snap = tmp_path / "snapshot.sqlite"
        rc, out, err = await retrain(capsys, cfg, "--dry-run", "--ledger", str(snap))
    assert rc == 0, err
    assert f"REST bars only (no ledger at [ledger] path: {snap})" in err
    lines = out.strip().splitlines()
    assert lines[-1].startswith("dry run: would promote challenger (no champion yet)")
    rows = dict(part.split() for part in lines[1].removeprefix("held-out rows: ").split(", "))
    assert sorted(rows) == sorted(symbols)
    assert all(int(n) > HOLDOUT - 30 for n in rows.values())
    assert snapshot(tmp_path) == before
    assert not (tmp_path / "models").exists()
    assert not (tmp_path / "reports").exists()


async def _signal_retrain(
    cfg: Path, marker: bytes, sig: signal.Signals, env: dict[str, str] | None = None
) -> tuple[int | None, str]:
    """Run `offline retrain --config cfg`, send `sig` at the first stderr line starting with `marker`; returns
    the exit code and everything it printed on stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "offline",
        "retrain",
        "--config",
        str(cfg),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert proc.stderr is not None
    seen = []
    while line := await proc.stderr.readline():
        seen.append(line.decode())
        if line.startswith(marker):
            proc.send_signal(sig)
            break
    _, err = await proc.communicate()
    return proc.returncode, "".join(seen) + err.decode()


async def test_interrupted_while_scoring_leaves_the_store_as_found(
    exchange: ReplayExchange, tmp_path: Path
) -> None:
    """SIGINT while the challenger is scored: exit 130, its version removed, models dir as before (none)."""
    cfg = write_config(tmp_path, exchange.rest_url, epochs=5)
    # scoring 3000 bars through the engine takes > 0.2 s
    code, err = await _signal_retrain(cfg, b"retrain: scoring challenger", signal.SIGINT)
    assert code == 130, err
    assert "offline retrain stopped while scoring challenger" in err
    assert not (tmp_path / "models").exists()
    assert not list((tmp_path / "reports").glob("retrain-*.json"))


@pytest.mark.parametrize(
    ("phase", "sig"),
    [
        ("data", signal.SIGTERM),
        ("training", signal.SIGINT),
        ("export", signal.SIGINT),
        ("promote", signal.SIGTERM),
    ],
)
async def test_interrupted_at_each_phase_leaves_the_store_as_found(
    exchange: ReplayExchange, tmp_path: Path, phase: str, sig: signal.Signals
) -> None:
    """A real signal while the run is paused at each phase (offline.interrupts PAUSE_ENV): exit 128 + signal,
    the line names the phase, no models dir (no champion before, none after), no retrain report."""
    cfg = write_config(tmp_path, exchange.rest_url, epochs=5)
    env = {**os.environ, "PROGDISTILL_PAUSE_AT": phase}
    code, err = await _signal_retrain(cfg, f"paused at phase {phase} ".encode(), sig, env)
    assert code == 128 + sig, err
    assert f"interrupted by {sig.name}: offline retrain stopped while " in err
    assert not (tmp_path / "models").exists()
    assert not list((tmp_path / "reports").glob("retrain-*.json"))


def test_bad_config_exits_2_naming_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A holdout over half the history, or a --challenger that is no version: exit 2, one line, no files."""
    cfg = write_config(tmp_path, "http://127.0.0.1:9", holdout=2000)
    assert main(["retrain", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "$.retrain.holdout_bars: at most half of history_bars (3000), got 2000" in err
    text = (tmp_path / "c.toml").read_text().replace("holdout_bars = 2000", "holdout_bars = 600")
    (tmp_path / "c.toml").write_text(text)
    assert main(["retrain", "--config", str(cfg), "--challenger", "../elsewhere"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --challenger ../elsewhere: not a version in {tmp_path / 'models'}")
    assert err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml"]


def _scores(routed_qlike: float, tiers: dict[str, tuple[float, float]]) -> dict[str, Any]:
    return {
        "vol_head": True,
        "routed": {"ic": 0.05, "vol_qlike_bc": routed_qlike},
        "tiers": {n: {"ic": ic, "vol_qlike_bc": q} for n, (ic, q) in tiers.items()},
    }


def test_decide_rule() -> None:
    """Routed QLIKE must improve by min_improvement; each shared tier within its QLIKE and IC tolerance."""
    cfg = Config()
    cfg = msgspec.structs.replace(
        cfg, retrain=msgspec.structs.replace(cfg.retrain, qlike_tolerance=0.1, ic_tolerance=0.02)
    )
    champ = _scores(1.0, {"a": (0.10, 1.0), "b": (0.10, 2.0)})
    assert decide(champ, _scores(0.9, {"a": (0.09, 1.09), "b": (0.08, 2.19), "new": (-1, 9)}), cfg)[0]
    assert not decide(champ, _scores(1.0, {"a": (0.2, 0.5)}), cfg)[0]  # a tie keeps the champion
    promote, reasons = decide(champ, _scores(0.5, {"a": (0.10, 1.11), "b": (0.10, 2.0)}), cfg)
    assert not promote
    assert reasons[1].startswith("tier a: vol QLIKE 1.1100 > champion 1.0000")
    promote, reasons = decide(champ, _scores(0.5, {"a": (0.079, 1.0)}), cfg)
    assert not promote
    assert reasons[1].startswith("tier a: IC 0.0790 < champion 0.1000 - 0.02")
    stricter = msgspec.structs.replace(cfg, retrain=msgspec.structs.replace(cfg.retrain, min_improvement=0.2))
    assert not decide(champ, _scores(0.85, {}), stricter)[0]
    assert decide(champ, _scores(0.79, {}), stricter)[0]
    missing = _scores(0.5, {"a": (0.1, 1.0)})
    missing["tiers"]["a"]["ic"] = None  # a constant forecast has no IC: counts as worse
    assert not decide(champ, missing, cfg)[0]


def test_recorded_bars_fill_what_rest_lacks(tmp_path: Path) -> None:
    """Bars the service recorded in its (real SQLite) ledger fill the REST fetch's holes inside its window."""
    bars = synthetic_bars(400, seed=3)
    symbol = bars[0].symbol
    with Ledger.open(tmp_path / "ledger.sqlite") as led:
        for b in bars[:300]:  # the service ran a while, then stopped
            led.record_bar(b)
    rest = bars[50:120] + bars[130:]  # the REST answer: a later window with a 10-bar hole
    cfg = msgspec.structs.replace(
        Config(),
        market=msgspec.structs.replace(Config().market, symbols=[symbol]),
        ledger=msgspec.structs.replace(Config().ledger, path=str(tmp_path / "ledger.sqlite")),
    )
    series = {symbol: list(rest)}
    info = merge_recorded(cfg, series)
    assert info["added"] == {symbol: 10}
    assert series[symbol] == bars[50:]  # the hole filled; nothing from before the window
    missing = merge_recorded(cfg, {symbol: list(rest)}, ledger_path=tmp_path / "none.sqlite")
    assert missing["skipped"] == "no ledger at [ledger] path"
    (tmp_path / "junk.sqlite").write_bytes(b"not a database")
    junk = merge_recorded(cfg, {symbol: list(rest)}, ledger_path=tmp_path / "junk.sqlite")
    assert junk["skipped"].startswith("cannot read the ledger")


async def test_a_selection_is_resolved_on_the_exchange_before_the_fetch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`[market] symbols = { all = true, exclude = [...] }` with `[models] symbols = "any"`: the retrain
    resolves it from instruments-info and tickers as the service does, fetches and distils the chosen
    symbols as one pooled family (--dry-run) and scores it on each; one that leaves nothing exits 2."""
    symbols = ["SYNTHUSDT", "SYNTHBUSDT", "SYNTHCUSDT"]
    async with ReplayExchange(
        symbols=symbols, bar_seconds=300.0, history_bars=HISTORY, clock="wall", latency_ms=0.0, book=False
    ) as ex:
        cfg = write_config(tmp_path, ex.rest_url, epochs=2)
        selection = 'symbols = { all = true, exclude = ["SYNTHBUSDT"] }'
        text = cfg.read_text().replace('symbols = ["SYNTHUSDT"]', selection)
        cfg.write_text(text.replace("[models]\n", '[models]\nsymbols = "any"\n'))
        rc, out, err = await retrain(capsys, cfg, "--dry-run")
        none = cfg.read_text().replace("all = true,", "all = true, min_turnover_usd = 1e30,")
        (tmp_path / "none.toml").write_text(none)
        rc_none, _, err_none = await retrain(capsys, tmp_path / "none.toml", "--dry-run")
    assert rc == 0, err
    assert "retrain: [market] symbols selects 2 of 3 Trading USDT perpetuals" in err
    lines = out.strip().splitlines()
    rows = dict(part.split() for part in lines[1].removeprefix("held-out rows: ").split(", "))
    assert sorted(rows) == ["SYNTHCUSDT", "SYNTHUSDT"]
    assert lines[-1].startswith("dry run: would promote challenger (no champion yet)")
    assert rc_none == 2
    assert "$.market.symbols: the selection" in err_none
    assert "leaves no symbol" in err_none
