"""`python -m offline models list|promote|prune` and the retrain's pruning, on a real models store made of
copies of a really trained family (tests/test_modelstore.py's `add_version`)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import msgspec
import pytest
import support
from test_modelstore import add_version

from bot.config import load_config
from bot.models import store as modelstore
from bot.models.family import TierFamily
from bot.sim.replay.server import ReplayExchange
from offline.__main__ import main
from offline.retrain import prune_store, retrain

SYNTH = {"symbols": ["SYNTHUSDT"]}
NAMES = [f"20261201T0{h}0000Z-0000000{h}" for h in range(6)]  # version_name's shape, oldest first


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def make_store(root: Path, family: Path, n: int) -> Path:
    """`n` versions, each with its own manifest sha."""
    store = root / "models"
    store.mkdir()
    for i, name in enumerate(NAMES[:n]):
        add_version(store, family, name, note=name if i else None)
    return store


def test_list_shows_versions_current_previous_and_the_retrain_verdict(
    trained_family: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One line per version, oldest first: current/previous marker, sha prefix, tiers, symbols, retrain
    outcome; --json carries the same and the full verdict; a broken manifest is listed, flagged."""
    store = make_store(tmp_path, trained_family, 3)
    modelstore.promote(store, NAMES[0])
    modelstore.promote(store, NAMES[1])
    verdict = f"promoted {NAMES[1]} (was {NAMES[0]}): routed vol QLIKE better"
    (store / NAMES[1] / "retrain.json").write_text(json.dumps({"outcome": "promoted", "verdict": verdict}))
    (store / NAMES[2] / "manifest.json").write_text("{not json")
    rc, out, err = run(capsys, "models", "--dir", str(store), "list")
    assert (rc, err) == (0, "")
    lines = out.splitlines()
    assert [x.split()[0] for x in lines] == NAMES[:3]
    sha1 = TierFamily.load(store / NAMES[1]).model_sha
    assert lines[0].split()[1] == "previous"
    assert lines[1].split()[1:4:2] == ["current", sha1[:12]]
    assert "tiers research,staging,production,edge" in lines[1]
    assert lines[1].endswith("retrain: promoted")
    assert "retrain" not in lines[0]
    assert "unreadable: " in lines[2]
    assert "cannot read manifest" in lines[2]

    rc, out, _ = run(capsys, "models", "--dir", str(store), "list", "--json")
    rows = json.loads(out)
    assert [r["version"] for r in rows] == NAMES[:3]
    assert [r["current"] for r in rows] == [False, True, False]
    assert rows[1]["manifest_sha256"] == sha1
    assert rows[1]["retrain"] == {"outcome": "promoted", "verdict": verdict}
    assert rows[0]["tiers"] == ["research", "staging", "production", "edge"]
    assert 0 <= rows[0]["age_s"] < 3600  # created by the fixture minutes ago
    assert rows[2]["error"] is not None


def test_promote_verifies_and_refuses_a_corrupt_version(
    trained_family: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A good version becomes current (the old one `.previous`) and the line says what the bot does next; a
    corrupt one, or one that does not fit --config, is refused with one line, exit 3, current unchanged."""
    store = make_store(tmp_path, trained_family, 2)
    add_version(store, trained_family, "corrupt", note="c", corrupt=True)
    modelstore.promote(store, NAMES[0])
    rc, out, err = run(capsys, "models", "--dir", str(store), "promote", NAMES[1])
    assert (rc, err) == (0, "")
    assert modelstore.current_version(store) == NAMES[1]
    assert modelstore.previous_version(store) == NAMES[0]
    assert f"promoted {NAMES[1]} (was {NAMES[0]}" in out
    assert "systemctl reload progdistill" in out

    rc, out, err = run(capsys, "models", "--dir", str(store), "promote", "corrupt")
    assert rc == 3
    assert out == ""
    assert err.count("\n") == 1
    assert "corrupt refused: tier 'edge': sha256 mismatch for edge.onnx" in err
    assert f"current is unchanged ({NAMES[1]})" in err
    assert modelstore.current_version(store) == NAMES[1]

    # a family trained for a 5-minute interval does not fit a 1-minute config: refused as at start-up
    cfg = tmp_path / "c.toml"
    cfg.write_text(support.to_toml(support.small_config(market={**SYNTH, "interval": "1"})))
    rc, _, err = run(capsys, "models", "--dir", str(store), "promote", NAMES[0], "--config", str(cfg))
    assert rc == 3
    assert "interval" in err
    assert err.count("\n") == 1
    assert modelstore.current_version(store) == NAMES[1]

    # roll back with a fitting config: polls are named from it
    cfg.write_text(support.to_toml(support.small_config(market=SYNTH, models={"reload_poll_s": 7.0})))
    rc, out, _ = run(capsys, "models", "--dir", str(store), "promote", NAMES[0], "--config", str(cfg))
    assert rc == 0
    assert "reload_poll_s (7 s)" in out
    assert (modelstore.current_version(store), modelstore.previous_version(store)) == (NAMES[0], NAMES[1])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--dir", "{tmp}/nope", "list"], "--dir {tmp}/nope: no such directory"),
        (["--dir", "{tmp}/models", "promote", "v9"], "promote v9: not a version in {tmp}/models"),
        (["--dir", "{tmp}/models", "promote", "../models"], "promote ../models: not a version"),
        (
            ["--dir", "{tmp}/models", "prune", "--keep", "0"],
            "--keep: expected at least 1 version to keep, got 0",
        ),
        (["--dir", "{tmp}/file", "prune", "--keep", "2"], "--dir {tmp}/file: is not a directory"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    """A missing directory, an unknown version and --keep < 1: one `error:` line naming it, exit 2."""
    (tmp_path / "models").mkdir()
    (tmp_path / "file").write_text("x")
    rc, out, err = run(capsys, "models", *[a.format(tmp=tmp_path) for a in argv])
    assert rc == 2
    assert out == ""
    assert err.startswith("error: " + message.format(tmp=tmp_path))
    assert err.count("\n") == 1


def test_prune_keeps_the_newest_current_and_previous(
    trained_family: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--dry-run deletes nothing; prune keeps the newest N plus current and previous (rolled back to old
    versions), removes a stale `.trash-*`, leaves none, and never touches what is not a version."""
    store = make_store(tmp_path, trained_family, 6)
    modelstore.promote(store, NAMES[1])
    modelstore.promote(store, NAMES[0])  # rolled back: current is the oldest, previous the second oldest
    (store / "notes").mkdir()  # not a version (no manifest): never a candidate
    (store / ".trash-leftover").mkdir()  # what an interrupted prune leaves
    (store / ".trash-leftover" / "x.onnx").write_bytes(b"x")
    before = sorted(p.name for p in store.iterdir())

    rc, out, _ = run(capsys, "models", "--dir", str(store), "prune", "--keep", "2", "--dry-run")
    assert rc == 0
    assert out.splitlines()[:-1] == [f"would delete {n}" for n in NAMES[2:4]]
    assert sorted(p.name for p in store.iterdir()) == before

    rc, out, _ = run(capsys, "models", "--dir", str(store), "prune", "--keep", "2")
    assert rc == 0
    assert out.splitlines() == [
        f"deleted {NAMES[2]}",
        f"deleted {NAMES[3]}",
        "deleted 2 version(s); 4 left (the newest 2, and always current and the one before it)",
    ]
    assert modelstore.versions(store) == [NAMES[0], NAMES[1], NAMES[4], NAMES[5]]
    assert not [p for p in store.iterdir() if p.name.startswith(".trash-")]
    assert (store / "notes").is_dir()
    assert TierFamily.load(store).models_dir == (store / NAMES[0]).resolve()  # current still loads

    assert modelstore.prune(store, 1) == [NAMES[4]]  # current and previous are kept even at keep=1
    assert modelstore.versions(store) == [NAMES[0], NAMES[1], NAMES[5]]
    assert modelstore.prune(store, 1) == []


def test_a_trashed_version_is_no_version(trained_family: Path, tmp_path: Path) -> None:
    """A version renamed to `.trash-<name>` (mid-prune) still holds its manifest but is no version to any
    reader, and cannot be promoted."""
    store = make_store(tmp_path, trained_family, 2)
    os.rename(store / NAMES[0], store / f".trash-{NAMES[0]}")
    assert modelstore.versions(store) == [NAMES[1]]
    assert [r["version"] for r in modelstore.describe(store)] == [NAMES[1]]
    with pytest.raises(Exception, match="not a complete version"):
        modelstore.promote(store, f".trash-{NAMES[0]}")


def test_prune_hook_of_the_retrain(trained_family: Path, tmp_path: Path) -> None:
    """`prune_store` (what a non-dry retrain runs last) prunes to keep_versions and reports it; a store it
    cannot write to is reported, not raised."""
    store = make_store(tmp_path, trained_family, 5)
    modelstore.promote(store, NAMES[4])
    said: list[str] = []
    info = prune_store(store, 2, log=said.append)
    assert info == {"keep": 2, "deleted": NAMES[:3]}
    assert modelstore.versions(store) == NAMES[3:5]
    assert said == [f"retrain: pruned 3 old version(s) (keep_versions = 2): {', '.join(NAMES[:3])}"]
    add_version(store, trained_family, "00-oldest", note="o")
    (store / ".trash-00-oldest").write_text("a file where the victim's trash dir goes: the rename fails")
    info = prune_store(store, 2, log=said.append)
    assert info["deleted"] == []
    assert "Not a directory" in info["error"]
    assert "the next run tries again" in said[-1]
    assert "00-oldest" in modelstore.versions(store)


async def test_retrain_prunes_the_store_after_a_run(trained_family: Path, tmp_path: Path) -> None:
    """A real (non-dry) retrain scoring an existing challenger ends by pruning to [retrain] keep_versions;
    its summary lists what was deleted; current and the champion before it stay."""
    store = make_store(tmp_path, trained_family, 5)
    modelstore.promote(store, NAMES[0])
    async with ReplayExchange(
        symbols=["SYNTHUSDT"], bar_seconds=300.0, history_bars=1200, clock="wall", latency_ms=0.0, book=False
    ) as ex:
        base = support.small_config(
            market={"symbols": ["SYNTHUSDT"]},
            exchange={"rest_url": ex.rest_url, "rest_max_retries": 0},
            models={"dir": str(store)},
            ledger={"path": str(tmp_path / "ledger.sqlite")},
            retrain={
                "history_bars": 1200,
                "holdout_bars": 300,
                "reports_dir": str(tmp_path / "reports"),
                "keep_versions": 2,
            },
        )
        path = tmp_path / "c.toml"
        path.write_text(support.to_toml(base))
        cfg = load_config(path)
        assert cfg.retrain.keep_versions == 2
        outcome = await asyncio.to_thread(retrain, cfg, models=store, challenger=NAMES[3])
    assert outcome.report["challenger_scores"]["holdout_rows"]["SYNTHUSDT"] > 0  # really scored
    # the newest two, and the champion (current, or previous when the challenger won)
    assert modelstore.versions(store) == [NAMES[0], NAMES[3], NAMES[4]]
    assert NAMES[0] in {modelstore.current_version(store), modelstore.previous_version(store)}
    assert outcome.promoted == (modelstore.current_version(store) == NAMES[3])
    deleted = [NAMES[1], NAMES[2]]
    (summary,) = [json.loads(p.read_text()) for p in (tmp_path / "reports").glob("retrain-*.json")]
    assert summary["pruned"] == {"keep": 2, "deleted": deleted}
    assert msgspec.json.decode((store / NAMES[3] / "retrain.json").read_bytes())["challenger"] == NAMES[3]
