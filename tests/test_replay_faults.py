"""bot.sim.replay.faults: the replay exchange's fault plan, consumed one fault at a time."""

from __future__ import annotations

from bot.sim.replay.faults import FaultPlan, RestFault

IV = 300_000


def test_confirm_plan_skips_then_duplicates_and_schedules_late_copies() -> None:
    """A skip consumes only itself; duplicates send twice; a late copy is due `lag_bars` bars later, once."""
    plan = FaultPlan()
    plan.skip_confirms(1)
    plan.duplicate_confirms(1)
    plan.late_confirms(1, lag_bars=2)
    assert plan.confirm_copies("BTCUSDT", 0, IV, b"a") == 0
    assert plan.confirm_copies("BTCUSDT", IV, IV, b"b") == 2
    assert plan.confirm_copies("BTCUSDT", 2 * IV, IV, b"c") == 1
    assert plan.take_late(2 * IV) == []
    assert plan.take_late(3 * IV) == [("BTCUSDT", b"b")]
    assert plan.take_late(10 * IV) == []


def test_confirm_faults_for_one_symbol_leave_the_other_symbols_alone() -> None:
    """A skip, duplicate or late copy aimed at one symbol waits for that symbol's confirm; others pass."""
    plan = FaultPlan()
    plan.skip_confirms(1, "ETHUSDT")
    plan.duplicate_confirms(1, "ETHUSDT")
    plan.late_confirms(1, 1, "SOLUSDT")
    assert plan.confirm_copies("BTCUSDT", 0, IV, b"a") == 1
    assert plan.confirm_copies("SOLUSDT", 0, IV, b"s") == 1
    assert plan.confirm_copies("ETHUSDT", 0, IV, b"e0") == 0
    assert plan.confirm_copies("BTCUSDT", IV, IV, b"b") == 1
    assert plan.confirm_copies("ETHUSDT", IV, IV, b"e1") == 2
    assert plan.confirm_copies("ETHUSDT", 2 * IV, IV, b"e2") == 1
    assert plan.take_late(IV) == [("SOLUSDT", b"s")]
    assert plan.take_late(10 * IV) == []


def test_drop_stages_and_rest_faults_are_taken_in_order() -> None:
    """Drop stages and REST faults come out first in, first out, then None; clearing forgets REST faults."""
    plan = FaultPlan()
    plan.drop_next(1, "handshake")
    plan.drop_next(1, "subscribe")
    assert [plan.take_drop_stage() for _ in range(3)] == ["handshake", "subscribe", None]
    plan.rest_fault("10006", 1, 2.0)
    plan.rest_fault("5xx", 2, 0.0)
    assert plan.take_rest_fault() == RestFault("10006", 2.0)
    plan.clear_rest_faults()
    assert plan.take_rest_fault() is None
