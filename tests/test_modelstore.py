"""Versioned models, atomic promotion and hot reload at a bar boundary (issue 14)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import msgspec
import pytest
import support

from bot.app import Service, install_signal_handlers
from bot.core.decision import decode_line
from bot.core.errors import ModelError
from bot.ledger.writer import Ledger
from bot.models import store as modelstore
from bot.models.family import TierFamily
from bot.observe import logs
from bot.sim.replay import ReplayExchange
from offline.pipeline import pipeline_distill

SYMBOL = "SYNTHUSDT"


def add_version(
    store: Path, family: Path, name: str, *, note: str | None = None, corrupt: bool = False
) -> Path:
    """Copy a trained family into `store/name`; `note` changes the manifest (so its sha), `corrupt` a tier."""
    dst = store / name
    shutil.copytree(family, dst)
    if note is not None:
        m = json.loads((dst / "manifest.json").read_text())
        m["provenance"]["note"] = note
        (dst / "manifest.json").write_text(json.dumps(m))
    if corrupt:
        onnx = dst / "edge.onnx"
        onnx.write_bytes(onnx.read_bytes()[:-1] + b"\x00")
    return dst


def test_promote_resolve_and_the_plain_layout(trained_family: Path, tmp_path: Path) -> None:
    store = tmp_path / "models"
    store.mkdir()
    add_version(store, trained_family, "v1")
    add_version(store, trained_family, "v2", note="second")
    assert modelstore.resolve(store) == store  # no pointer yet: the plain layout
    modelstore.promote(store, "v1")
    assert modelstore.current_version(store) == "v1"
    assert TierFamily.load(store).models_dir == (store / "v1").resolve()
    modelstore.promote(store, "v2")
    assert modelstore.current_version(store) == "v2"
    assert modelstore.versions(store) == ["v1", "v2"]
    assert TierFamily.load(store).model_sha != TierFamily.load(store / "v1").model_sha
    assert TierFamily.load(trained_family).models_dir == trained_family  # today's layout still loads
    with pytest.raises(ModelError, match="not a complete version"):
        modelstore.promote(store, "v3")
    assert modelstore.current_version(store) == "v2"
    os.remove(store / "current")
    os.symlink("gone", store / "current")
    with pytest.raises(ModelError, match=r"holds no manifest\.json"):
        TierFamily.load(store)


def test_distill_adds_versions_and_promotes_only_when_asked(tmp_path: Path) -> None:
    """Two runs into one store: two versions side by side, never written over; --no-promote keeps current."""
    store = tmp_path / "models"
    cfg = support.small_config(distill={"quick_bars": 3000, "quick_epochs": 2})
    first = pipeline_distill(cfg, data="synthetic", out_dir=store, quick=True, versioned=True)
    assert modelstore.current_version(store) == first["version"]
    v1 = store / first["version"]
    before = {p.name: p.read_bytes() for p in v1.iterdir()}
    second = pipeline_distill(
        cfg, data="synthetic", out_dir=store, quick=True, seed=9, versioned=True, promote=False
    )
    assert second["version"] != first["version"]
    assert modelstore.current_version(store) == first["version"]
    assert modelstore.versions(store) == sorted([first["version"], second["version"]])
    assert {p.name: p.read_bytes() for p in v1.iterdir()} == before
    assert not [p for p in store.iterdir() if p.name.startswith(".")]  # no staging left behind


def _events(buf: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(x) for x in buf.getvalue().splitlines() if x.startswith("{")]


async def test_hot_reload_switches_at_a_bar_and_refuses_a_corrupt_family(
    trained_family: Path, tmp_path: Path
) -> None:
    """While a replay runs: promoting a new version switches the deciding family at a bar boundary (every
    later record carries its model_sha); SIGHUP after promoting a corrupt version is refused with one line
    and the good family keeps deciding; no bar is missed or decided twice."""
    store = tmp_path / "models"
    store.mkdir()
    add_version(store, trained_family, "a")
    modelstore.promote(store, "a")
    buf = io.StringIO()
    async with ReplayExchange(
        symbols=[SYMBOL],
        data="synthetic",
        seed=17,
        bar_seconds=0.02,
        updates_per_bar=1,
        history_bars=200,
        book=False,
    ) as ex:
        base = support.loop_config(ex.rest_url, ex.ws_url, store, tmp_path / "state", use_book=False)
        cfg = msgspec.structs.replace(base, models=msgspec.structs.replace(base.models, reload_poll_s=0.05))
        logs.configure_logging(fmt="json", decisions_path=cfg.logging.decisions_path, stream=buf)
        try:
            service = Service(cfg)
            stop = asyncio.Event()
            task = asyncio.create_task(service.run(stop))
            await asyncio.wait_for(service.ready_event.wait(), timeout=30)
            install_signal_handlers(stop, service)
            sha_a = TierFamily.load(store).model_sha
            await _decisions_past(service, 20)
            add_version(store, trained_family, "b", note="b")
            modelstore.promote(store, "b")
            sha_b = TierFamily.load(store).model_sha
            await _until(lambda: any(e["event"] == logs.MODEL_SWITCHED for e in _events(buf)))
            await _decisions_past(service, 20)
            add_version(store, trained_family, "c", note="c", corrupt=True)
            modelstore.promote(store, "c")
            os.kill(os.getpid(), signal.SIGHUP)
            await _until(lambda: any(e["event"] == logs.MODEL_RELOAD_REFUSED for e in _events(buf)))
            await _decisions_past(service, 20)
            stop.set()
            await asyncio.wait_for(task, timeout=30)
        finally:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            logs.close_logging()
    events = _events(buf)
    switched = [e for e in events if e["event"] == logs.MODEL_SWITCHED]
    assert len(switched) == 1
    assert switched[0]["model_sha"] == sha_b[:12]
    assert switched[0]["previous"] == sha_a[:12]
    refused = [e for e in events if e["event"] == logs.MODEL_RELOAD_REFUSED]
    assert 1 <= len(refused) <= 2  # the poll's attempt and SIGHUP's: no line per poll
    assert "sha256 mismatch" in refused[0]["error"]
    records = [
        decode_line(x)
        for x in (tmp_path / "state" / "decisions.jsonl").read_text().splitlines()
        if '"bar_decided"' in x
    ]
    shas = [r.model_sha for r in records]
    k = shas.index(sha_b)
    assert set(shas[:k]) == {sha_a}
    assert set(shas[k:]) == {sha_b}  # never the corrupt one, never a mix
    assert records[k].start_ms == switched[0]["from_start_ms"]
    with Ledger.open(tmp_path / "state" / "ledger.sqlite") as led:
        keys = led.decided_keys(SYMBOL)
        assert [d.model_sha for d in led.decisions(SYMBOL)] == shas
    assert keys == list(range(keys[0], keys[-1] + 300_000, 300_000))


async def _until(pred: Any, timeout_s: float = 30.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not pred():  # noqa: ASYNC110 - polls the log buffer
            await asyncio.sleep(0.02)


async def _decisions_past(service: Service, n: int) -> None:
    target = service.summary.decisions + n
    await _until(lambda: service.summary.decisions >= target)
