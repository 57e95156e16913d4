"""Shutdown budget (`service.shutdown_timeout_s`): a hung step is abandoned at the budget, logged, exit 5."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import support

from bot.app import Service
from bot.bybit.feed import MarketFeed
from bot.ledger.writer import Ledger
from bot.observe import logs
from bot.shutdown import ShutdownBudget, ShutdownTimeoutError
from bot.sim.replay import ReplayExchange

SYMBOL = "SYNTHUSDT"
BUDGET_S = 0.6
MARGIN_S = 1.0  # scheduling slack on a loaded 2-core CI box


class _Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def error(self, event: str, **kw: Any) -> None:
        self.lines.append((event, kw))

    warning = error


async def _forever() -> None:
    await asyncio.Event().wait()


async def _stubborn(release: asyncio.Event | None = None) -> None:
    """Awaits until `release` is set (forever without one) and swallows every cancellation until then."""
    while release is None or not release.is_set():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            continue


# ---- ShutdownBudget -----------------------------------------------------------------------------


async def test_a_step_that_never_returns_is_abandoned_at_the_budget() -> None:
    """The hung step is cancelled and left at the deadline; later steps still run; the error names it."""
    log = _Log()
    budget = ShutdownBudget(0.2, log)
    ran: list[str] = []
    release = asyncio.Event()

    async def quick() -> None:
        ran.append("quick")

    t0 = time.monotonic()
    assert await budget.step("hung", _stubborn(release)) is None  # ignores cancellation: still abandoned
    await budget.close("after", quick())
    budget.run_sync("ledger", lambda: ran.append("ledger"))
    assert 0.2 <= time.monotonic() - t0 < 0.2 + MARGIN_S
    assert ran == ["quick", "ledger"]  # late steps still ran (within late_grace_s)
    assert budget.abandoned == ["hung"]
    assert [(e, kw["step"], kw["late"]) for e, kw in log.lines] == [(logs.SHUTDOWN_TIMEOUT, "hung", False)]
    with pytest.raises(ShutdownTimeoutError, match=r"\['hung'\].*shutdown_timeout_s = 0.2 s"):
        budget.raise_if_abandoned()
    release.set()  # let the test loop's teardown end the abandoned task


async def test_steps_within_budget_share_it_and_failures_are_logged() -> None:
    """Steps in time raise nothing; a step that fails is logged and the shutdown goes on."""
    log = _Log()
    budget = ShutdownBudget(5.0, log)

    async def boom() -> None:
        raise OSError("socket already gone")

    await budget.close("feed", asyncio.sleep(0.01))
    await budget.close("metrics", boom())
    budget.run_sync("ledger", lambda: None)
    budget.raise_if_abandoned()
    assert budget.abandoned == []
    assert log.lines == [
        (logs.SHUTDOWN_STEP_FAILED, {"step": "metrics", "error": "OSError: socket already gone"})
    ]
    assert 0 < budget.elapsed_s < 5.0


async def test_late_steps_get_a_short_grace_and_a_slow_sync_step_is_reported() -> None:
    """After the deadline a slow step is abandoned after late_grace_s; a sync step that outlasts the
    deadline is reported (it cannot be interrupted)."""
    log = _Log()
    budget = ShutdownBudget(0.05, log, late_grace_s=0.05)
    budget.run_sync("slow_sync", lambda: time.sleep(0.1))
    t0 = time.monotonic()
    assert await budget.step("late_hung", _forever()) is None
    assert time.monotonic() - t0 < 0.05 + MARGIN_S
    assert [(kw["step"], kw["late"]) for _, kw in log.lines] == [("slow_sync", False), ("late_hung", True)]
    assert budget.abandoned == ["slow_sync", "late_hung"]


def test_budget_must_be_positive() -> None:
    """A zero budget is refused with what is expected."""
    with pytest.raises(ValueError, match="positive number of seconds, got 0"):
        ShutdownBudget(0, _Log())


# ---- a real service whose shutdown step hangs -------------------------------------------------


@pytest.fixture
def log_buf() -> Iterator[io.StringIO]:
    buf = io.StringIO()
    yield buf
    logs.close_logging()


def _events(buf: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buf.getvalue().splitlines() if line.startswith("{")]


@pytest.mark.parametrize("step", ["feed", "metrics"])
async def test_service_with_a_hung_close_ends_within_the_budget(
    step: str,
    trained_family: Path,
    tmp_path: Path,
    log_buf: io.StringIO,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A real service on the replay exchange whose feed (or metrics) close awaits forever: after `stop` it
    ends within shutdown_timeout_s + a margin with ShutdownTimeoutError, logs `shutdown_timeout` naming the
    step, still closes the ledger (every decision committed) and logs `service_stopped` last."""
    async with ReplayExchange(
        symbols=[SYMBOL], data="synthetic", seed=5, bar_seconds=0.05, history_bars=150, book=False
    ) as ex:
        base = support.loop_config(ex.rest_url, ex.ws_url, trained_family, tmp_path, use_book=False)
        cfg = msgspec.structs.replace(
            base,
            service=msgspec.structs.replace(
                base.service, shutdown_timeout_s=BUDGET_S, metrics_enabled=True, metrics_port=0
            ),
        )
        logs.configure_logging(fmt="json", decisions_path=cfg.logging.decisions_path, stream=log_buf)
        service = Service(cfg)
        real_metrics_stop = service.metrics.stop
        if step == "metrics":
            monkeypatch.setattr(service.metrics, "stop", _forever)
        else:
            real_aclose = MarketFeed.aclose

            async def hung_aclose(feed: MarketFeed) -> None:
                await real_aclose(feed)  # the sockets close; then the step never returns
                await _forever()

            monkeypatch.setattr(MarketFeed, "aclose", hung_aclose)
        stop = asyncio.Event()
        task = asyncio.create_task(service.run(stop))
        async with asyncio.timeout(30):
            while service.summary.decisions < 3:  # noqa: ASYNC110 - a counter the service owns
                await asyncio.sleep(0.02)
        t0 = time.monotonic()
        stop.set()
        with pytest.raises(ShutdownTimeoutError, match=rf"\['{step}'\]"):
            await asyncio.wait_for(task, timeout=BUDGET_S + 10)
        took_s = time.monotonic() - t0
        await real_metrics_stop()  # what the hung step left open (the test's loop must end clean)
    assert BUDGET_S <= took_s < BUDGET_S + MARGIN_S
    events = _events(log_buf)
    timeouts = [e for e in events if e["event"] == logs.SHUTDOWN_TIMEOUT]
    assert [e["step"] for e in timeouts] == [step]
    assert timeouts[0]["budget_s"] == BUDGET_S
    assert events[-1]["event"] == logs.SERVICE_STOPPED
    assert events[-1]["abandoned"] == [step]
    ledger = Ledger.open(cfg.ledger.path)  # closed by the service: reopens, every decision is there
    try:
        assert len(ledger.decided_keys(SYMBOL)) == service.summary.decisions
    finally:
        ledger.close()


def test_cli_maps_a_shutdown_timeout_to_exit_5(capsys: pytest.CaptureFixture[str]) -> None:
    """ShutdownTimeoutError is exit code 5 with a one-line message."""
    from bot.__main__ import EXIT_SHUTDOWN, _report_error

    assert EXIT_SHUTDOWN == 5
    assert _report_error(ShutdownTimeoutError("shutdown step(s) ['feed'] ...")) == 5
    assert "shutdown timeout: shutdown step(s) ['feed']" in capsys.readouterr().err


def test_cli_loop_leaves_a_task_that_ignores_cancellation_behind() -> None:
    """After the service returns, the CLI's loop does not wait forever for an abandoned stubborn task."""
    from bot.__main__ import _run_loop

    async def main() -> int:
        asyncio.get_running_loop().create_task(_stubborn())
        await asyncio.sleep(0)
        return 7

    t0 = time.monotonic()
    assert _run_loop(main(), cleanup_s=0.2) == 7
    assert time.monotonic() - t0 < 0.2 + MARGIN_S
