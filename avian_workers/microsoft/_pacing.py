"""Pacing of one tenant's calls: a rolling-minute call limiter, a retry budget, Retry-After."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from avian_workers.microsoft._errors import RetryBudgetExceededError

Clock = Callable[[], float]
Sleep = Callable[[float], None]


class SlidingWindowLimiter:
    """At most `calls` calls in any `period` seconds, waiting as long as needed for a free slot.

    A token bucket would let up to twice the budget through within one minute (a full bucket
    plus its refill); Defender counts calls per rolling minute, so this keeps the timestamps.
    """

    def __init__(self, calls: int, period: float, *, clock: Clock, sleep: Sleep) -> None:
        if calls < 1 or period <= 0:
            raise ValueError("a limiter needs at least one call per positive period")
        self._calls = calls
        self._period = period
        self._clock = clock
        self._sleep = sleep
        self._stamps: deque[float] = deque()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take a slot, first sleeping until one is free; returns the seconds waited."""
        waited = 0.0
        with self._lock:
            now = self._clock()
            while True:
                while self._stamps and self._stamps[0] <= now - self._period:
                    self._stamps.popleft()
                if len(self._stamps) < self._calls:
                    break
                delay = self._stamps[0] + self._period - now
                self._sleep(delay)
                waited += delay
                now = self._clock()
            self._stamps.append(now)
        return waited


class RetryBudget:
    """Seconds a tenant may lose to failed attempts and retry waits before it gives up."""

    def __init__(self, seconds: float) -> None:
        self._total = seconds
        self._spent = 0.0
        self._lock = threading.Lock()

    @property
    def spent(self) -> float:
        return self._spent

    def record_loss(self, seconds: float) -> None:
        """Charge time already lost (a timed-out or failed attempt)."""
        with self._lock:
            self._spent += max(0.0, seconds)

    def reserve(self, seconds: float) -> None:
        """Charge a wait about to happen, or raise if the budget cannot cover it."""
        with self._lock:
            if self._spent + seconds > self._total:
                raise RetryBudgetExceededError(
                    f"retry budget of {self._total:g}s exhausted: {self._spent:.1f}s already "
                    f"spent on retries, next wait would be {seconds:.1f}s"
                )
            self._spent += seconds


def retry_after_seconds(
    value: str | None,
    *,
    response_date: str | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> float | None:
    """Seconds a `Retry-After` header asks for (delay-seconds or HTTP-date), None if unusable.

    An HTTP date is measured from the response's own `Date` header when there is one, so a
    skewed local clock does not stretch or cancel the wait.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if seconds >= 0 else None
    when = _http_date(text)
    if when is None:
        return None
    reference = _http_date(response_date) if response_date else None
    return max(0.0, (when - (reference or now())).total_seconds())


def _http_date(text: str) -> datetime | None:
    try:
        parsed = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
