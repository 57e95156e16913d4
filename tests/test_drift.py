"""Feature drift: PSI against the manifest's training bins (pure), the bins in a real export, and a service
whose live market left the training distribution warning once and exporting the gauge over real HTTP."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import math
import re
import shutil
from pathlib import Path

import aiohttp
import msgspec
import numpy as np
import pytest
import support

from bot.app import Service
from bot.config import Config, parse_config
from bot.core.drift import PSI_EPS, DriftMonitor, fit_bins, monitored_features
from bot.core.errors import ConfigError, ModelError
from bot.core.features import FEATURE_NAMES, FEATURE_SETS
from bot.models import store as modelstore
from bot.models.family import TierFamily
from bot.models.manifest import MANIFEST_NAME, decode_manifest
from bot.observe import logs
from bot.observe.monitors import drift_monitor
from bot.observe.status import FamilyInfo, StatusBoard
from bot.observe.status_page import DRIFT_UNAVAILABLE, render_status
from bot.sim.replay import ReplayExchange
from bot.sim.synthetic import SyntheticMarket

SYMBOL = "SYNTHUSDT"
TRAIN = np.arange(1000, dtype=np.float64)  # deciles: bin i holds exactly 100..100i+99


def one_feature(window_bars: int, *, warn_psi: float = 0.25, min_rows: int | None = None) -> DriftMonitor:
    """A monitor of one feature 'a' (column 0) binned on TRAIN."""
    return DriftMonitor(
        {"a": fit_bins(TRAIN, 10)}, {"a": 0}, window_bars=window_bars, warn_psi=warn_psi, min_rows=min_rows
    )


def feed(m: DriftMonitor, values: np.ndarray, symbol: str = "S") -> list[tuple[str, float, str]]:
    """Update with each value; the (feature, psi, crossed|recovered) events in order."""
    events = []
    for v in values:
        up = m.update(symbol, np.array([float(v)]))
        events += [(f, p, "crossed") for f, p in up.crossed] + [(f, p, "recovered") for f, p in up.recovered]
    return events


def test_fit_bins_gives_deciles_and_exact_training_shares() -> None:
    """Ten equal bins of 0..999 (edges between the deciles' neighbours); tied quantiles merge into fewer,
    strictly increasing edges, with each bin's real share of the training rows."""
    edges, frac = fit_bins(TRAIN, 10)
    assert len(edges) == 9
    assert frac == pytest.approx([0.1] * 10)
    skewed = np.r_[np.zeros(700), np.arange(1, 301, dtype=np.float64)]  # 70 % zeros
    e, f = fit_bins(skewed, 10)
    assert all(b > a for a, b in itertools.pairwise(e))
    assert e[0] == 0.0
    assert f[0] == pytest.approx(0.7)
    assert sum(f) == pytest.approx(1.0)


def test_psi_of_the_training_distribution_is_zero() -> None:
    """A window holding the training rows themselves (shuffled) has exactly the training shares: PSI 0."""
    m = one_feature(1000)
    feed(m, np.random.default_rng(0).permutation(TRAIN))
    psi = m.psi("S")
    assert psi is not None
    assert psi["a"] == pytest.approx(0.0, abs=1e-12)


def test_psi_of_a_shifted_window_equals_the_hand_computation() -> None:
    """Half the window in the lowest decile, half in the highest, eight bins empty (floored at eps)."""
    m = one_feature(100)
    feed(m, np.r_[np.full(50, 5.0), np.full(50, 995.0)])
    want = 2 * (0.5 - 0.1) * math.log(0.5 / 0.1) + 8 * (PSI_EPS - 0.1) * math.log(PSI_EPS / 0.1)
    psi = m.psi("S")
    assert psi is not None
    assert psi["a"] == pytest.approx(want, rel=1e-12)
    assert m.worst("S") == ("a", pytest.approx(want))


def test_no_psi_before_the_window_is_full() -> None:
    """287 rows of a 288-row window: collecting (None); the 288th row reports."""
    m = one_feature(288)
    feed(m, np.full(287, 5.0))
    assert m.psi("S") is None
    assert m.worst("S") is None
    assert m.rows("S") == 287
    assert m.update("S", np.array([5.0])).psi is not None


def test_window_forgets_and_warns_once_per_crossing() -> None:
    """100 shifted rows cross once (not a line per bar); 100 training-like rows later the window holds none
    of the shifted ones: PSI back to 0 and one recovery; a second shift crosses again."""
    m = one_feature(100)
    shifted = np.full(100, 995.0)
    matched = np.random.default_rng(1).permutation(np.arange(5, 1000, 10, dtype=np.float64))  # 10 per bin
    events = feed(m, shifted)
    assert [(f, e) for f, _, e in events] == [("a", "crossed")]
    assert m.drifting("S") == ("a",)
    events = feed(m, matched)
    assert [(f, e) for f, _, e in events] == [("a", "recovered")]
    psi = m.psi("S")
    assert psi is not None
    assert psi["a"] == pytest.approx(0.0, abs=1e-12)
    assert m.drifting("S") == ()
    assert [e for _, _, e in feed(m, shifted)] == ["crossed"]


def test_a_feature_warns_from_its_training_baseline_when_higher() -> None:
    """The half-and-half window (PSI ~6.8) warns under a baseline of 6 but not under one of 7; the
    threshold is max(warn_psi, baseline) and recovery is below 0.8 x the threshold."""
    window = np.r_[np.full(50, 5.0), np.full(50, 995.0)]
    for base, warns in ((6.0, True), (7.0, False), (0.1, True)):
        m = DriftMonitor(
            {"a": fit_bins(TRAIN, 10)}, {"a": 0}, window_bars=100, warn_psi=0.25, baseline={"a": base}
        )
        assert m.threshold_of("a") == max(0.25, base)
        assert bool(feed(m, window)) is warns, base
    assert m.thresholds() == {"a": 0.25}


def test_symbols_have_their_own_windows() -> None:
    """A shifted symbol does not move another symbol's PSI."""
    m = one_feature(100)
    feed(m, np.full(100, 995.0), symbol="A")
    feed(m, np.arange(5, 1000, 10, dtype=np.float64), symbol="B")
    a, b = m.psi("A"), m.psi("B")
    assert a is not None
    assert b is not None
    assert a["a"] > 2.0
    assert b["a"] == pytest.approx(0.0, abs=1e-12)


def test_non_finite_rows_are_skipped() -> None:
    """A NaN in a monitored column neither counts nor shifts the window."""
    m = one_feature(100, min_rows=1)
    m.update("S", np.array([5.0]))
    m.update("S", np.array([math.nan]))
    assert m.rows("S") == 1


def test_calendar_features_are_not_monitored() -> None:
    """Hour and weekday features never drift-alarm (a day-long window never looks like weeks of training)."""
    got = monitored_features(FEATURE_NAMES)
    assert set(got) == set(FEATURE_SETS["no_calendar"])
    assert "hour_sin" not in got
    assert "dow_cos" not in got


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("drift_window_bars", 99, "expected int >= 100, got 99"),
        ("drift_window_bars", 20_001, "expected int <= 20000, got 20001"),
        ("drift_psi_warn", 0.0, "expected float > 0.0, got 0.0"),
    ],
)
def test_drift_config_ranges_name_the_key(key: str, value: float, message: str) -> None:
    """An out-of-range drift key is a ConfigError naming $.service.<key> and the range."""
    with pytest.raises(ConfigError, match=re.escape(f"$.service.{key}: {message}")):
        parse_config({"service": {key: value}})


# ---- the manifest --------------------------------------------------------------------------------------
def test_exported_manifest_carries_monotone_training_bins(trained_family: Path) -> None:
    """A family exported by the real offline pipeline stores, per monitored input, strictly increasing
    edges and the training shares, and the bot reads them back unchanged."""
    family = TierFamily.load(trained_family)
    ref = family.manifest.drift
    assert ref is not None
    used = {f for t in family.manifest.tiers for f in t.features}
    assert list(ref.features) == list(monitored_features(used))
    assert ref.bins == 10
    assert ref.rows > 1000
    assert ref.window_bars == support.small_config().service.drift_window_bars
    for name, fb in ref.features.items():
        assert fb.train_psi_max is not None
        assert fb.train_psi_max >= 0.0
        assert len(fb.edges) >= 1, name
        assert all(b > a for a, b in itertools.pairwise(fb.edges)), name
        assert len(fb.train_frac) == len(fb.edges) + 1
        assert sum(fb.train_frac) == pytest.approx(1.0)
    raw = json.loads((family.models_dir / MANIFEST_NAME).read_text())
    assert raw["drift"]["features"]["ret_1"]["edges"] == ref.features["ret_1"].edges
    # a day-long window of a regime-switching market is far from the whole training mix on slow inputs
    assert max(fb.train_psi_max or 0.0 for fb in ref.features.values()) > 0.25


def test_service_thresholds_use_the_baseline_of_the_same_window(trained_family: Path) -> None:
    """With the export's window each feature warns from max(drift_psi_warn, its train_psi_max); with
    another window the baselines do not apply and every feature warns from drift_psi_warn."""
    family = TierFamily.load(trained_family)
    ref = family.manifest.drift
    assert ref is not None
    cfg = support.small_config()
    same = drift_monitor(family, cfg.service)
    assert same is not None
    for name, fb in ref.features.items():
        assert same.threshold_of(name) == max(0.25, fb.train_psi_max or 0.0)
    other = drift_monitor(family, msgspec.structs.replace(cfg.service, drift_window_bars=1000))
    assert other is not None
    assert set(other.thresholds().values()) == {0.25}


@pytest.mark.parametrize(
    ("edit", "where"),
    [
        (lambda fb: fb.update(edges=fb["edges"][::-1]), "edges"),
        (lambda fb: fb.update(train_frac=fb["train_frac"][:-1]), "train_frac"),
        (lambda fb: fb.update(train_frac=[x * 2 for x in fb["train_frac"]]), "train_frac"),
    ],
)
def test_bad_bins_are_refused_naming_the_field(trained_family: Path, edit: object, where: str) -> None:
    """Non-monotone edges or shares that are not a distribution: ModelError naming $.drift.features.ret_1."""
    raw = json.loads((trained_family / MANIFEST_NAME).read_text())
    edit(raw["drift"]["features"]["ret_1"])  # type: ignore[operator]
    with pytest.raises(ModelError, match=rf"\$\.drift\.features\.ret_1\.{where}: expected"):
        decode_manifest(json.dumps(raw).encode())


def test_old_manifest_without_bins_loads_and_drift_is_unavailable(
    trained_family: Path, tmp_path: Path
) -> None:
    """A manifest from before the drift block loads; the service has no monitor and the page says so."""
    old = tmp_path / "old"
    shutil.copytree(trained_family, old)
    strip_drift(old)
    family = TierFamily.load(old)
    assert family.manifest.drift is None
    cfg = support.small_config()
    assert drift_monitor(family, cfg.service) is None
    board = StatusBoard([SYMBOL])
    board.set_family(FamilyInfo.of_family(family))
    board.set_drift(None)
    assert DRIFT_UNAVAILABLE in render_status(board, 0)


def strip_drift(models: Path) -> None:
    """Rewrite `models`'s manifest.json without its drift block (as written before it existed)."""
    path = models / MANIFEST_NAME
    raw = json.loads(path.read_text())
    del raw["drift"]
    path.write_text(json.dumps(raw, indent=2))


# ---- the service ---------------------------------------------------------------------------------------
def scaled_market_csv(path: Path, *, n_bars: int, seed: int, vol_scale: float) -> Path:
    """The synthetic market with every log price move scaled by `vol_scale` (p -> p0 * (p / p0)^k keeps
    high >= open, close >= low), as a klines CSV the replay exchange serves."""
    path.parent.mkdir(parents=True, exist_ok=True)
    steps = SyntheticMarket(seed=seed, symbol=SYMBOL).generate(n_bars)
    p0 = steps[0].bar.open
    lines = ["start_ms,open,high,low,close,volume,turnover"]
    for st in steps:
        b = st.bar
        px = [round(p0 * (p / p0) ** vol_scale, 2) for p in (b.open, b.high, b.low, b.close)]
        lines.append(f"{b.start_ms},{px[0]},{px[1]},{px[2]},{px[3]},{b.volume},{b.volume * px[3]:.4f}")
    path.write_text("\n".join(lines) + "\n")
    return path


def drift_config(ex: ReplayExchange, models: Path, out: Path) -> Config:
    """The loopback config with metrics on a free port and a 120-bar drift window. The backfill (200 bars,
    all the replay's history) leaves more warm feature rows in the ledger than the window, however few bars
    the market closes while the service starts (an idle machine starts fast)."""
    cfg = support.loop_config(ex.rest_url, ex.ws_url, models, out, symbol=SYMBOL, backfill_bars=200)
    service = msgspec.structs.replace(
        cfg.service, metrics_enabled=True, metrics_port=0, drift_window_bars=120
    )
    return msgspec.structs.replace(cfg, service=service)


async def serve(cfg: Config, *, decisions: int) -> tuple[Service, str, str]:
    """Run a service until `decisions` bars are decided; /metrics and /status as fetched over HTTP."""
    stop = asyncio.Event()
    service = Service(cfg)
    task = asyncio.create_task(service.run(stop))
    try:
        await asyncio.wait_for(service.ready_event.wait(), timeout=30)
        async with asyncio.timeout(60):
            while service.summary.decisions < decisions:  # noqa: ASYNC110 - a plain counter
                await asyncio.sleep(0.01)
        base = f"http://127.0.0.1:{service.metrics_port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/metrics") as resp:
                metrics = await resp.text()
            async with http.get(f"{base}/status") as resp:
                status = await resp.text()
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=60)
    return service, metrics, status


def replay(data: Path) -> ReplayExchange:
    """The replay exchange serving `data`, 100 bars a second."""
    return ReplayExchange(
        symbols=[SYMBOL], data=data, bar_seconds=0.01, updates_per_bar=1, history_bars=200, latency_ms=0
    )


async def run_until(models: Path, data: Path, out: Path, *, decisions: int) -> tuple[Service, str, str, str]:
    """Run the service against the replay exchange serving `data` until `decisions` bars are decided;
    returns the service, the log text, /metrics and /status as fetched over loopback HTTP."""
    stream = io.StringIO()
    async with replay(data) as ex:
        cfg = drift_config(ex, models, out)
        logs.configure_logging(fmt="json", decisions_path=cfg.logging.decisions_path, stream=stream)
        service, metrics, status = await serve(cfg, decisions=decisions)
    return service, stream.getvalue(), metrics, status


async def test_a_restart_measures_drift_from_its_first_decision(trained_family: Path, tmp_path: Path) -> None:
    """The drift window is rebuilt from the ledger's bars at start-up: after a restart the first decided
    bar already has a PSI over a full window, and the drifting inputs are warned about again."""
    data = scaled_market_csv(tmp_path / f"{SYMBOL}_5m.csv", n_bars=700, seed=5, vol_scale=4.0)
    stream = io.StringIO()
    async with replay(data) as ex:
        cfg = drift_config(ex, trained_family, tmp_path / "state")
        logs.configure_logging(fmt="json", decisions_path=cfg.logging.decisions_path, stream=stream)
        first, _, _ = await serve(cfg, decisions=40)
        assert first.drift is not None
        assert first.drift.psi(SYMBOL) is None  # 40 decided bars: collecting
        mark = len(stream.getvalue())
        second, metrics, _ = await serve(cfg, decisions=1)
    assert second.summary.replayed_bars >= 120
    assert second.drift is not None
    assert second.drift.rows(SYMBOL) == 120
    psi = second.drift.psi(SYMBOL)
    assert psi is not None
    assert psi["ret_1"] > 0.25
    after = [json.loads(x) for x in stream.getvalue()[mark:].splitlines() if x.startswith("{")]
    assert "ret_1" in {x["feature"] for x in after if x.get("event") == logs.DRIFT}
    assert 'progdistill_feature_psi_max{feature="ret_1"}' in metrics


async def test_a_reload_keeps_the_drift_window(trained_family: Path, tmp_path: Path) -> None:
    """A hot reload brings the new family's bins; its monitor starts from the last window of rows, so the
    PSI is reported from the first bar the new family decides, not a window later."""
    store = tmp_path / "models"
    store.mkdir()
    for name in ("a", "b"):
        shutil.copytree(trained_family, store / name)
    edit_manifest = json.loads((store / "b" / MANIFEST_NAME).read_text())
    edit_manifest["provenance"]["note"] = "b"
    (store / "b" / MANIFEST_NAME).write_text(json.dumps(edit_manifest))
    modelstore.promote(store, "a")
    data = scaled_market_csv(tmp_path / f"{SYMBOL}_5m.csv", n_bars=700, seed=5, vol_scale=4.0)
    stream = io.StringIO()
    async with replay(data) as ex:
        cfg = drift_config(ex, store, tmp_path / "state")
        cfg = msgspec.structs.replace(cfg, models=msgspec.structs.replace(cfg.models, reload_poll_s=0.02))
        logs.configure_logging(fmt="json", decisions_path=cfg.logging.decisions_path, stream=stream)
        stop = asyncio.Event()
        service = Service(cfg)
        task = asyncio.create_task(service.run(stop))
        try:
            await asyncio.wait_for(service.ready_event.wait(), timeout=30)
            async with asyncio.timeout(60):
                while service.drift is None or service.drift.psi(SYMBOL) is None:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
                before = service.drift
                modelstore.promote(store, "b")
                while service.drift is before:  # noqa: ASYNC110 - the first bar of the new family
                    await asyncio.sleep(0.005)
            after = service.drift
        finally:
            stop.set()
            await asyncio.wait_for(task, timeout=60)
    assert any(f'"event":"{logs.MODEL_SWITCHED}"' in x for x in stream.getvalue().splitlines())
    assert after is not None
    assert after.rows(SYMBOL) == 120
    assert after.psi(SYMBOL) is not None


#: Candle-shape and z-score inputs: unchanged by scaling every price move (ratios of moves, or z-scores).
SCALE_FREE = ("body", "upper_wick", "lower_wick", "close_pos", "range_z_24", "volume_z_24")


async def test_service_on_a_more_volatile_market_warns_and_exports_psi(
    trained_family: Path, tmp_path: Path
) -> None:
    """The live market is the synthetic one with 4x the price moves: one-bar returns leave their training
    bins (PSI far above the same market unscaled), each drifting (symbol, feature) logs one `drift` warning
    (not one per bar), its gauge on /metrics is above drift_psi_warn, /status names the worst feature; the
    scale-free inputs (candle shape, z-scores) do not warn."""
    runs = {}
    for scale in (1.0, 4.0):
        data = scaled_market_csv(
            tmp_path / f"x{scale:g}" / f"{SYMBOL}_5m.csv", n_bars=700, seed=5, vol_scale=scale
        )
        runs[scale] = await run_until(trained_family, data, tmp_path / f"state{scale:g}", decisions=170)
    service, text, metrics, status = runs[4.0]
    warn = service.cfg.service.drift_psi_warn
    lines = [json.loads(x) for x in text.splitlines() if x.startswith("{")]
    drift = [x for x in lines if x.get("event") == logs.DRIFT]
    assert all(x["level"] == "warning" and x["symbol"] == SYMBOL and x["psi"] >= warn for x in drift)
    recovered = [x for x in lines if x.get("event") == logs.DRIFT_RECOVERED]
    pairs = [(x["symbol"], x["feature"]) for x in drift]
    assert len(pairs) <= len(set(pairs)) + len(recovered)  # a pair warns again only after recovering
    warned = {f for _, f in pairs}
    assert {"ret_1", "ret_lag1", "range_vol"} <= warned
    assert not warned & set(SCALE_FREE)
    gauges = {
        m.group(1): float(m.group(2))
        for m in re.finditer(r'progdistill_feature_psi_max\{feature="(\w+)"\} (\S+)', metrics)
    }
    assert service.drift is not None
    assert set(gauges) == set(service.drift.features)
    assert gauges["ret_1"] > warn
    calm = runs[1.0][0].drift
    assert calm is not None
    calm_psi = calm.psi(SYMBOL)
    assert calm_psi is not None
    assert gauges["ret_1"] > 4 * calm_psi["ret_1"]
    # one symbol: ret_1 drifts on it or not (the service ran on after the scrape, so compare no live state)
    drifting = re.search(r'progdistill_feature_drifting_symbols\{feature="ret_1"\} (\S+)', metrics)
    anywhere = re.search(r"^progdistill_drifting_symbols (\S+)$", metrics, re.M)
    assert drifting is not None
    assert anywhere is not None
    assert float(drifting.group(1)) <= float(anywhere.group(1)) <= 1.0
    assert f"{SYMBOL}: max " in status
    assert re.search(r'class="warn">[^<]*drifting: [^<]*ret_1', status)


async def test_service_with_an_old_manifest_shows_drift_unavailable(
    trained_family: Path, tmp_path: Path
) -> None:
    """A family whose manifest has no bins decides as before; /status says drift is unavailable and no PSI
    gauge is exported."""
    old = tmp_path / "old"
    shutil.copytree(trained_family, old)
    strip_drift(old)
    data = scaled_market_csv(tmp_path / f"{SYMBOL}_5m.csv", n_bars=400, seed=5, vol_scale=4.0)
    service, text, metrics, status = await run_until(old, data, tmp_path / "state", decisions=60)
    assert service.summary.decisions >= 60
    assert service.drift is None
    assert "progdistill_feature_psi_max{" not in metrics
    assert DRIFT_UNAVAILABLE in status
    events = {json.loads(x).get("event") for x in text.splitlines() if x.startswith("{")}
    assert logs.SERVICE_READY in events
    assert logs.DRIFT not in events
