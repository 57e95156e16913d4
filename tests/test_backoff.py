"""The one backoff policy shared by the websocket feed and the REST client."""

from __future__ import annotations

import pytest

from bot.bybit.backoff import Backoff


def test_cap_doubles_per_attempt_up_to_max() -> None:
    """Before jitter the delay is initial * 2**attempt, capped at max_s."""
    b = Backoff(0.5, 3.0)
    assert [b.cap_s(a) for a in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert b.cap_s(5000) == 3.0  # no overflow for a very long outage


def test_jitter_stays_within_half_to_full_cap() -> None:
    """The jittered delay is in [jitter_low * cap, cap]; the bounds come from the injected source."""
    low = Backoff(1.0, 8.0, rand=lambda a, b: a)
    high = Backoff(1.0, 8.0, rand=lambda a, b: b)
    assert [low.delay_s(a) for a in range(4)] == [0.5, 1.0, 2.0, 4.0]
    assert [high.delay_s(a) for a in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    real = Backoff(1.0, 8.0)
    for attempt in range(6):
        d = real.delay_s(attempt)
        assert real.cap_s(attempt) * 0.5 <= d <= real.cap_s(attempt)


def test_no_jitter_when_jitter_low_is_one() -> None:
    """jitter_low=1 makes the policy deterministic."""
    assert Backoff(0.25, 1.0, jitter_low=1.0).delay_s(1) == 0.5


@pytest.mark.parametrize(
    ("initial_s", "max_s", "match"),
    [(0.0, 1.0, "0 < initial_s <= max_s"), (2.0, 1.0, "0 < initial_s <= max_s")],
)
def test_bad_parameters_say_what_is_expected(initial_s: float, max_s: float, match: str) -> None:
    """A non-positive start or a cap below the start is refused with the rule in the message."""
    with pytest.raises(ValueError, match=match):
        Backoff(initial_s, max_s)


def test_negative_attempt_is_refused() -> None:
    """Attempts count from 0."""
    with pytest.raises(ValueError, match="attempt must be >= 0"):
        Backoff(1.0, 2.0).delay_s(-1)
