"""Liveness by decisions (issue 15): the lag bookkeeping, and a service whose pipeline is made to stall."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import msgspec
import pytest
import support

from bot.app import Service
from bot.core.bars import interval_ms
from bot.core.errors import PipelineStalledError
from bot.core.liveness import DecisionLag
from bot.ledger.writer import Ledger
from bot.observe import logs
from bot.sim.replay import ReplayExchange

SYMBOL = "SYNTHUSDT"
STEP = interval_ms("5")


# ---- DecisionLag (pure) ----------------------------------------------------------------------------


def test_lag_counts_closed_bars_not_yet_decided() -> None:
    lag = DecisionLag(STEP, warn_bars=2, restart_bars=3)
    assert lag.update("A", None, None).lag_bars == 0  # nothing closed yet
    assert lag.update("A", 10 * STEP, None).lag_bars == 1  # one closed, nothing decided
    assert lag.update("A", 10 * STEP, 10 * STEP).lag_bars == 0
    st = lag.update("A", 12 * STEP, 10 * STEP)
    assert (st.lag_bars, st.lagging, st.crossed) == (2, False, False)  # at the threshold: not lagging


def test_lag_warns_once_per_crossing_and_recovers() -> None:
    lag = DecisionLag(STEP, warn_bars=2, restart_bars=10)
    st = lag.update("A", 13 * STEP, 10 * STEP)
    assert (st.lagging, st.crossed, st.recovered) == (True, True, False)
    assert lag.any_lagging
    st = lag.update("A", 14 * STEP, 10 * STEP)
    assert (st.lagging, st.crossed) == (True, False)  # still lagging: no second warning
    st = lag.update("A", 14 * STEP, 14 * STEP)
    assert (st.lagging, st.recovered) == (False, True)
    assert not lag.any_lagging


def test_stalled_only_when_restart_bars_close_with_no_decision() -> None:
    lag = DecisionLag(STEP, warn_bars=1, restart_bars=3)
    assert not lag.update("A", 12 * STEP, 10 * STEP).stalled  # crossing at closed=12
    assert not lag.update("A", 14 * STEP, 10 * STEP).stalled  # two more closed
    assert lag.update("A", 15 * STEP, 10 * STEP).stalled  # three more closed, none decided


def test_a_backlog_being_worked_off_is_not_a_stall() -> None:
    lag = DecisionLag(STEP, warn_bars=1, restart_bars=3)
    lag.update("A", 20 * STEP, 10 * STEP)
    for decided in range(11, 17):  # each update decided one more bar while one more closed
        st = lag.update("A", (20 + decided - 10) * STEP, decided * STEP)
        assert st.lagging
        assert not st.stalled


def test_symbols_are_independent() -> None:
    lag = DecisionLag(STEP, warn_bars=1, restart_bars=3)
    lag.update("A", 15 * STEP, 10 * STEP)
    lag.update("B", 15 * STEP, 15 * STEP)
    assert lag.any_lagging
    assert lag.lag_bars == {"A": 5, "B": 0}
    lag.update("A", 15 * STEP, 15 * STEP)
    assert not lag.any_lagging


def test_a_stall_also_needs_the_time_floor() -> None:
    """On an accelerated clock many bars close within a REST round trip: no stall before `min_stall_s`."""
    now = [0.0]
    lag = DecisionLag(STEP, warn_bars=1, restart_bars=3, min_stall_s=5.0, clock=lambda: now[0])
    lag.update("A", 12 * STEP, 10 * STEP)
    now[0] = 1.0
    assert not lag.update("A", 20 * STEP, 10 * STEP).stalled  # bars say stalled, the clock says too soon
    now[0] = 5.0
    assert lag.update("A", 21 * STEP, 10 * STEP).stalled


def test_thresholds_must_be_positive() -> None:
    with pytest.raises(ValueError, match="warn_bars"):
        DecisionLag(STEP, warn_bars=0, restart_bars=3)


# ---- a service made to stall ----------------------------------------------------------------------


@pytest.fixture
def log_buf() -> Iterator[io.StringIO]:
    buf = io.StringIO()
    yield buf
    logs.close_logging()


def _events(buf: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buf.getvalue().splitlines() if line.startswith("{")]


async def test_stalled_pipeline_fails_health_and_exits_then_restart_resumes_exactly_once(
    trained_family: Path, tmp_path: Path, log_buf: io.StringIO
) -> None:
    """REST keeps answering 10006 while a gap waits to be filled: confirms pile up behind the gap, nothing
    is decided. The lag gauge crosses the warning (one log line), /healthz turns 503 and the watchdog
    withholds its ping; after `decision_lag_restart_bars` more closed bars the service raises
    PipelineStalledError (exit 4 from the CLI). A restart on the same ledger with REST healthy again
    decides every missed bar exactly once, with no gap."""
    async with ReplayExchange(
        symbols=[SYMBOL],
        data="synthetic",
        seed=23,
        bar_seconds=0.08,
        updates_per_bar=2,
        history_bars=200,
        book=False,
    ) as ex:
        base = support.loop_config(ex.rest_url, ex.ws_url, trained_family, tmp_path, use_book=False)
        cfg = msgspec.structs.replace(
            base,
            exchange=msgspec.structs.replace(
                base.exchange,
                rest_max_retries=1000,
                rest_backoff_initial_s=0.01,
                rest_backoff_max_s=0.02,
                bar_overdue_s=0.05,
            ),
            service=msgspec.structs.replace(
                base.service,
                metrics_enabled=True,
                metrics_port=0,
                decision_lag_warn_bars=2,
                decision_lag_restart_bars=5,
                decision_stall_min_s=0.3,
            ),
        )
        logs.configure_logging(fmt="json", decisions_path=cfg.logging.decisions_path, stream=log_buf)
        service = Service(cfg)
        task = asyncio.create_task(service.run(asyncio.Event()))
        async with asyncio.timeout(30):
            while service.summary.decisions < 5:  # noqa: ASYNC110 - a counter the service owns
                await asyncio.sleep(0.02)
        assert service.watchdog.is_fresh()
        ex.rest_fault("10006", n=100_000, value=0.01)  # REST rate-limited from now on
        ex.skip_confirms(1)  # a gap only REST can fill
        decided_before_stall = service.summary.decisions

        unhealthy: dict[str, object] = {}
        async with aiohttp.ClientSession() as http:
            async with asyncio.timeout(30):
                while not unhealthy and not task.done():
                    await asyncio.sleep(0.02)
                    if not service.lag.any_lagging:
                        continue
                    url = f"http://127.0.0.1:{service.metrics_port}/healthz"
                    async with http.get(url) as resp:
                        if resp.status == 503:
                            unhealthy = await resp.json()
                            assert not service.watchdog.is_fresh()
                            async with http.get(f"http://127.0.0.1:{service.metrics_port}/metrics") as m:
                                text = await m.text()
        assert unhealthy["status"] == "lagging"
        assert unhealthy["lagging"] == [SYMBOL]
        lag_lines = [x for x in text.splitlines() if x.startswith("progdistill_decision_lag_bars{")]
        assert lag_lines
        assert float(lag_lines[0].split()[-1]) > 2

        with pytest.raises(ExceptionGroup) as info:
            await asyncio.wait_for(task, timeout=30)
        assert info.group_contains(PipelineStalledError)
        events = _events(log_buf)
        names = [e["event"] for e in events]
        assert names.count(logs.DECISION_LAG) == 1
        assert names[-1] == logs.SERVICE_STOPPED
        # nothing was decided past the gap while it stalled
        assert service.summary.decisions <= decided_before_stall + 1

        # systemd restarts it; REST is healthy again
        ex.clear_rest_faults()
        closed_at_restart = ex.closed_keys(SYMBOL)[-1]
        restarted = Service(cfg)
        stop = asyncio.Event()
        task = asyncio.create_task(restarted.run(stop))
        ledger_path = Path(cfg.ledger.path)
        async with asyncio.timeout(60):
            await restarted.ready_event.wait()
            while restarted.summary.decisions < 3:  # noqa: ASYNC110 - a counter the service owns
                await asyncio.sleep(0.02)
        stop.set()
        await asyncio.wait_for(task, timeout=30)
    ledger = Ledger.open(ledger_path)
    try:
        keys = ledger.decided_keys(SYMBOL)
        live_from = ledger.live_from(SYMBOL)
    finally:
        ledger.close()
    assert keys[0] == live_from
    assert keys == list(range(keys[0], keys[-1] + STEP, STEP)), "a bar was skipped or decided twice"
    assert keys[-1] >= closed_at_restart
    later = [e["event"] for e in _events(log_buf)[len(events) :]]
    assert logs.SERVICE_READY in later, [x for x in later if x != "bar_decided"][:30]


def test_cli_maps_a_stall_to_exit_4(capsys: pytest.CaptureFixture[str]) -> None:
    from bot.__main__ import EXIT_STALLED, _report_error

    group = ExceptionGroup("taskgroup", [PipelineStalledError("BTCUSDT: 8 closed bars not decided")])
    assert _report_error(group) == EXIT_STALLED == 4
    err = capsys.readouterr().err
    assert err.startswith("stalled: BTCUSDT")
    assert "Traceback" not in err
