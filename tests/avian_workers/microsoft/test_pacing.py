"""Pacing: the rolling-minute limiter, the retry budget and Retry-After parsing."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from avian_workers.microsoft import RetryBudgetExceededError
from avian_workers.microsoft._pacing import RetryBudget, SlidingWindowLimiter, retry_after_seconds
from tests.avian_workers.microsoft.conftest import FakeClock


def busiest_minute(stamps: list[float]) -> int:
    """The most calls that fall in any window [t, t + 60) starting at a call."""
    return max(sum(1 for s in stamps if start <= s < start + 60) for start in stamps)


def test_limiter_never_lets_more_than_the_budget_through_in_any_minute(clock: FakeClock) -> None:
    limiter = SlidingWindowLimiter(100, 60, clock=clock, sleep=clock.sleep)
    stamps = []
    for _ in range(350):
        limiter.acquire()
        stamps.append(clock())

    assert busiest_minute(stamps) == 100


def test_limiter_waits_exactly_until_the_oldest_call_leaves_the_window(clock: FakeClock) -> None:
    limiter = SlidingWindowLimiter(3, 60, clock=clock, sleep=clock.sleep)
    for step in (0.0, 10.0, 5.0):
        clock.now += step
        limiter.acquire()

    waited = limiter.acquire()

    assert waited == pytest.approx(45.0)
    assert clock.sleeps == [pytest.approx(45.0)]


def test_limiter_does_not_slow_calls_that_stay_under_the_budget(clock: FakeClock) -> None:
    limiter = SlidingWindowLimiter(4, 2.0, clock=clock, sleep=clock.sleep)
    for _ in range(100):
        limiter.acquire()
        clock.now += 0.5  # exactly at the budget, in steps a float holds exactly

    assert clock.sleeps == []


def test_retry_budget_refuses_a_wait_it_cannot_cover() -> None:
    budget = RetryBudget(10)
    budget.reserve(6)

    with pytest.raises(RetryBudgetExceededError, match="retry budget of 10s exhausted"):
        budget.reserve(5)

    assert budget.spent == 6


def test_retry_budget_counts_time_lost_in_failed_attempts() -> None:
    budget = RetryBudget(10)
    budget.record_loss(8)

    with pytest.raises(RetryBudgetExceededError):
        budget.reserve(3)


@pytest.mark.parametrize(
    ("header", "response_date", "seconds"),
    [
        ("7", None, 7.0),
        ("0", None, 0.0),
        ("2.5", None, 2.5),
        ("Wed, 21 Oct 2015 07:28:12 GMT", "Wed, 21 Oct 2015 07:28:00 GMT", 12.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", "Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
        ("-5", None, None),
        ("soon", None, None),
        ("", None, None),
        (None, None, None),
    ],
)
def test_retry_after_seconds_reads_both_header_forms(
    header: str | None, response_date: str | None, seconds: float | None
) -> None:
    assert retry_after_seconds(header, response_date=response_date) == seconds


def test_retry_after_date_without_a_date_header_is_measured_from_now() -> None:
    now = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC)

    waited = retry_after_seconds("Wed, 21 Oct 2015 07:28:30 GMT", now=lambda: now)

    assert waited == 30.0
