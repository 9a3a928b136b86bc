"""Exponential backoff with full jitter, shared by every component that retries.

Why full jitter: when SNS throttles, every producer of a fleet sees the throttle at about
the same moment. Retrying after a fixed ``base * 2**attempt`` makes them come back in
lock-step and throttle again; drawing the delay uniformly from ``[0, base * 2**attempt]``
(capped) spreads them out. This is the "full jitter" variant of the AWS Architecture Blog
article *Exponential Backoff And Jitter*, which completes the same work with the fewest
calls among the variants it compares.

A :class:`RetryPolicy` is a frozen value: ``max_attempts`` is the *retry budget* of one
operation (the first try included). What happens when the budget is spent is the caller's
decision -- the SNS publisher spills to its spool, the outbox relay leaves the rows in place
and polls again later.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from sqla_audit.errors import ConfigurationError

#: A sleep that can be cut short: returns True when it was interrupted (time to stop).
Sleeper = Callable[[float], bool]


def interruptible_sleeper(stop: threading.Event) -> Sleeper:
    """A :data:`Sleeper` that wakes up early when ``stop`` is set."""
    return stop.wait


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to retry one operation.

    ``delay(attempt)`` is the pause after failed attempt number ``attempt`` (1-based):
    uniform in ``[0, min(max_delay, base_delay * 2 ** (attempt - 1))]``.
    """

    max_attempts: int = 5
    base_delay: float = 0.1
    max_delay: float = 5.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigurationError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ConfigurationError("retry delays must not be negative")
        if self.max_delay < self.base_delay:
            raise ConfigurationError(
                f"max_delay ({self.max_delay}) must be >= base_delay ({self.base_delay})"
            )

    @classmethod
    def outage(cls) -> RetryPolicy:
        """Probing a service that is down: practically unlimited attempts, 0.5 s growing to
        at most 30 s between them (the SNS publisher's and the outbox relay's default)."""
        return cls(max_attempts=1_000_000_000, base_delay=0.5, max_delay=30.0)

    def ceiling(self, attempt: int) -> float:
        """The largest pause after failed attempt ``attempt`` (before jitter)."""
        if attempt < 1:
            raise ValueError(f"attempt numbers start at 1, got {attempt}")
        # 2 ** 60 is far past any cap; avoid building huge floats for long outages.
        return float(min(self.max_delay, self.base_delay * (2 ** min(attempt - 1, 60))))

    def delay(self, attempt: int) -> float:
        """The jittered pause after failed attempt ``attempt``."""
        return self.rng.uniform(0.0, self.ceiling(attempt))


__all__ = ["RetryPolicy", "Sleeper", "interruptible_sleeper"]
