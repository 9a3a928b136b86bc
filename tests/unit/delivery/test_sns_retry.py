"""The shared retry policy: exponential ceiling, full jitter, validated settings."""

from __future__ import annotations

import random
import threading

import pytest

from sqla_audit.errors import ConfigurationError
from sqla_audit.retry import RetryPolicy, interruptible_sleeper


def test_ceiling_doubles_up_to_the_cap() -> None:
    """The pause ceiling doubles per attempt and stops at max_delay."""
    policy = RetryPolicy(base_delay=0.1, max_delay=1.0)
    assert [policy.ceiling(n) for n in range(1, 6)] == [0.1, 0.2, 0.4, 0.8, 1.0]
    assert policy.ceiling(10_000) == 1.0


def test_delay_is_jittered_below_the_ceiling() -> None:
    """Delays are drawn in [0, ceiling] and differ between draws (full jitter)."""
    policy = RetryPolicy(base_delay=1.0, max_delay=8.0, rng=random.Random(7))
    draws = [policy.delay(4) for _ in range(200)]
    assert all(0.0 <= d <= 8.0 for d in draws)
    assert len(set(draws)) > 150
    assert min(draws) < 2.0 < 6.0 < max(draws)


@pytest.mark.parametrize(
    "kwargs",
    [{"max_attempts": 0}, {"base_delay": -1.0}, {"base_delay": 2.0, "max_delay": 1.0}],
)
def test_invalid_policies_are_configuration_errors(kwargs: dict[str, float]) -> None:
    """Zero attempts, negative delays or a cap below the base are refused."""
    with pytest.raises(ConfigurationError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_attempt_numbers_start_at_one() -> None:
    """Asking for the delay of attempt 0 is a programming error."""
    with pytest.raises(ValueError, match="start at 1"):
        RetryPolicy().ceiling(0)


def test_interruptible_sleeper_reports_the_stop() -> None:
    """The sleeper returns True at once when its stop event is set."""
    stop = threading.Event()
    sleep = interruptible_sleeper(stop)
    assert sleep(0) is False
    stop.set()
    assert sleep(60) is True
